//! Farm membership and the whole-state checks: nodes added and removed (the binding table
//! relaid out), `reconcile` against Kamailio's `location`, `audit` against a node's contacts.

use super::*;

impl Mirror {
    /// Adds a node at run time: it gets every live binding through its paced replay queue.
    pub fn add_node(&mut self, now: Instant, node: Node) -> NodeId {
        self.ensure_started(now);
        let n = self.nodes.len();
        self.relayout(n + 1, Some);
        let uid = self.next_node_uid;
        self.next_node_uid = self.next_node_uid.wrapping_add(1);
        let mut ns = NodeState::new(node, uid);
        if self.cfg.farm.probe_interval.is_some() {
            ns.health.next_probe = Some(now);
        }
        self.nodes.push(ns);
        self.replay_node(now, n);
        n as NodeId
    }

    /// Takes a node out of the farm. Its bindings are forgotten, not unregistered (the node is
    /// leaving). Later nodes' ids shift down by one.
    pub fn remove_node(&mut self, now: Instant, node: NodeId) -> Option<Node> {
        let gone = usize::from(node);
        let n = self.nodes.len();
        if gone >= n || n == 1 {
            return None;
        }
        self.relayout(n - 1, |old| match old.cmp(&gone) {
            std::cmp::Ordering::Less => Some(old),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(old - 1),
        });
        let ns = self.nodes.remove(gone);
        for slot in 0..self.aors.len() as u32 {
            self.maybe_free_aor(now, slot);
        }
        Some(ns.node)
    }

    /// The complete desired state, from Kamailio's `location` table read at `now`: each entry
    /// is an AOR with the time until its last contact expires. AORs not listed are gone
    /// (unregistered), except those a notification updated at or after `now` (newer than the
    /// snapshot). AORs new to the mirror register through the paced queue.
    ///
    /// A snapshot that would drop more than `reconcile_max_drop` of the live AORs is refused
    /// whole ([`drop_refused`]): nothing changes, and the bindings still end at their own expiry.
    pub fn reconcile(
        &mut self,
        now: Instant,
        live: &[(String, Duration)],
    ) -> Result<(), ReconcileRefused> {
        self.ensure_started(now);
        // Known AORs the snapshot lists (AORs new to the mirror are added below).
        let mut seen = vec![false; self.aors.len()];
        for (aor, expires) in live {
            let slot = user_part(aor).and_then(|u| self.by_name.get(u));
            if let (Some(&s), false) = (slot, expires.is_zero()) {
                seen[s as usize] = true;
            }
        }
        let (mut live_now, mut dropping) = (0usize, 0usize);
        for (slot, a) in self.aors.iter().enumerate() {
            if a.name.is_none() || a.live_until.is_none() {
                continue;
            }
            live_now += 1;
            if !seen[slot] && a.changed.is_none_or(|c| c < now) {
                dropping += 1;
            }
        }
        if drop_refused(live_now, dropping, self.cfg.reconcile_max_drop) {
            return Err(ReconcileRefused {
                live: live_now,
                dropping,
            });
        }
        for (aor, expires) in live {
            let Some(user) = user_part(aor) else {
                self.counters.invalid_aors += 1;
                continue;
            };
            if expires.is_zero() {
                continue;
            }
            let slot = match self.by_name.get(user) {
                Some(&s) => s,
                None => {
                    let s = self.alloc_aor(user);
                    self.aors[s as usize].paced = true;
                    s
                }
            };
            if seen.len() <= slot as usize {
                seen.resize(slot as usize + 1, false);
            }
            seen[slot as usize] = true;
            let a = &mut self.aors[slot as usize];
            if a.changed.is_some_and(|c| c >= now) {
                continue;
            }
            if !a.is_live(now) {
                a.paced = true;
            }
            a.live_until = Some(now + *expires);
            self.reschedule_aor(slot);
            self.drive_aor(now, slot);
        }
        for slot in 0..self.aors.len() {
            let a = &mut self.aors[slot];
            if a.name.is_none()
                || seen.get(slot).copied().unwrap_or(false)
                || a.live_until.is_none()
                || a.changed.is_some_and(|c| c >= now)
            {
                continue;
            }
            a.live_until = None;
            self.reschedule_aor(slot as u32);
            self.drive_aor(now, slot as u32);
        }
        self.reconciled = true;
        Ok(())
    }

    /// Compares `node`'s actual contacts (users whose contact points at our `contact_host`)
    /// with the desired state and repairs: confirmed bindings whose contact is missing are
    /// re-registered at once; contacts of users that are not live are unregistered (only once
    /// a reconciliation succeeded: before that the mirror does not know what is live).
    pub fn audit(
        &mut self,
        now: Instant,
        node: NodeId,
        actual_users: &HashSet<String>,
    ) -> AuditResult {
        let mut r = AuditResult::default();
        let Some(node) = self.audited_node(now, node) else {
            return r;
        };
        let n = self.nodes.len();
        for slot in 0..self.aors.len() {
            let listed = match self.aors[slot].name.as_deref() {
                Some(name) => actual_users.contains(name),
                None => continue,
            };
            if !listed && self.repair_missing(now, slot * n + node) {
                r.missing += 1;
            }
        }
        if self.reconciled {
            for user in actual_users {
                if self.repair_stale(now, node, user) {
                    r.stale += 1;
                }
            }
        }
        self.counters.drift_repaired += (r.missing + r.stale) as u64;
        r
    }

    /// One change of `user`'s contact on `node` as the node reported it (Asterisk's
    /// `ContactStatus` events): a contact of a confirmed binding removed behind our back is
    /// registered again at once; one of a user that is not live is unregistered. The same
    /// repairs as [`Mirror::audit`], for one user, without listing the node.
    pub fn contact_changed(
        &mut self,
        now: Instant,
        node: NodeId,
        user: &str,
        present: bool,
    ) -> AuditResult {
        let mut r = AuditResult::default();
        let Some(node) = self.audited_node(now, node) else {
            return r;
        };
        let n = self.nodes.len();
        if present {
            if self.reconciled && self.repair_stale(now, node, user) {
                r.stale += 1;
            }
        } else if let Some(&slot) = self.by_name.get(user) {
            if self.repair_missing(now, slot as usize * n + node) {
                r.missing += 1;
            }
        }
        self.counters.drift_repaired += (r.missing + r.stale) as u64;
        r
    }

    /// `node`'s index when what it says of its contacts can be acted on (it exists and is up).
    fn audited_node(&mut self, now: Instant, node: NodeId) -> Option<usize> {
        self.ensure_started(now);
        let node = usize::from(node);
        (node < self.nodes.len() && self.nodes[node].health.up).then_some(node)
    }

    /// Binding `idx`'s contact is not on its node: a confirmed binding that is still wanted is
    /// registered again at once. Whether it was.
    fn repair_missing(&mut self, now: Instant, idx: usize) -> bool {
        if self.bindings[idx].phase != Phase::Registered || !self.wants_registration(now, idx) {
            return false;
        }
        let before = self.bindings[idx].state();
        self.bindings[idx].confirmed = false;
        self.start_op(now, idx, Op::Register);
        self.emit_change(idx, before, Some("missing on node".into()));
        self.schedule(idx);
        self.track(now, idx);
        true
    }

    /// `user` has a contact of ours on `node`: unregistered unless the user is live or the
    /// binding is already on its way out. Whether it was.
    fn repair_stale(&mut self, now: Instant, node: usize, user: &str) -> bool {
        if !valid_user_part(user) {
            return false;
        }
        let n = self.nodes.len();
        let slot = match self.by_name.get(user) {
            Some(&s) if self.aors[s as usize].is_live(now) => return false,
            Some(&s) => s,
            None => {
                let s = self.alloc_aor(user);
                let a = &mut self.aors[s as usize];
                // Unregistering needs the user's credential.
                a.missing_reported = true;
                if let Some(name) = a.name.clone() {
                    self.events
                        .push_back(Event::CredentialMissing { aor: name });
                }
                s
            }
        };
        let idx = slot as usize * n + node;
        if self.bindings[idx].phase != Phase::Absent {
            return false; // already on its way out
        }
        let b = &mut self.bindings[idx];
        b.server_bound = true;
        b.op = Op::Unregister;
        b.phase = Phase::Backoff; // not Absent, so the unregister starts
        self.start_op(now, idx, Op::Unregister);
        self.emit_change(idx, None, Some("stale on node".into()));
        self.schedule(idx);
        self.track(now, idx);
        true
    }

    /// Changes the number of nodes: `map` gives each old node's new index (`None` = dropped).
    /// Transactions in flight keep their branches; `relocated` finds them.
    pub(super) fn relayout(&mut self, new_n: usize, map: impl Fn(usize) -> Option<usize>) {
        let old_n = self.nodes.len();
        let remap = |i: u32| -> Option<u32> {
            let (slot, node) = (i as usize / old_n, i as usize % old_n);
            map(node).map(|nn| (slot * new_n + nn) as u32)
        };
        let relocated: HashMap<u32, u32> = std::mem::take(&mut self.relocated)
            .into_iter()
            .filter_map(|(id, i)| remap(i).map(|ni| (id, ni)))
            .collect();
        self.relocated = relocated;
        let old = std::mem::take(&mut self.bindings);
        let mut bindings: Vec<Binding> = (0..self.aors.len() * new_n)
            .map(|_| Binding::default())
            .collect();
        for (i, mut b) in old.into_iter().enumerate() {
            let Some(ni) = remap(i as u32) else { continue };
            if let Some(t) = &b.txn {
                self.relocated.insert(t.id, ni);
            }
            b.scheduled = None;
            bindings[ni as usize] = b;
        }
        self.bindings = bindings;
        for ns in &mut self.nodes {
            let w: VecDeque<u32> = ns.waiting.drain(..).filter_map(&remap).collect();
            ns.waiting = w;
            let f: VecDeque<u32> = ns.refreshes.drain(..).filter_map(&remap).collect();
            ns.refreshes = f;
            let r: VecDeque<u32> = ns.replay.drain(..).filter_map(&remap).collect();
            ns.replay = r;
        }
        let aor_timers: Vec<_> = std::mem::take(&mut self.queue)
            .into_vec()
            .into_iter()
            .filter(|Reverse((_, key))| key & AOR_TIMER != 0)
            .collect();
        self.queue = BinaryHeap::from(aor_timers);
        for idx in 0..self.bindings.len() {
            self.schedule(idx);
        }
    }
}
