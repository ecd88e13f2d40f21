//! The AOR table: slab slots, their timers and the pending-AOR tracking behind coverage and lag.

use super::*;

impl Mirror {
    pub(super) fn forget_relocated(&mut self, txn: u32) {
        if !self.relocated.is_empty() {
            self.relocated.remove(&txn);
        }
    }

    pub(super) fn alloc_aor(&mut self, user: &str) -> u32 {
        let name: Arc<str> = Arc::from(user);
        let n = self.nodes.len();
        let slot = match self.free_aors.pop() {
            Some(s) => {
                let a = &mut self.aors[s as usize];
                a.name = Some(name.clone());
                a.gen = a.gen.wrapping_add(1);
                s
            }
            None => {
                self.aors.push(Aor {
                    name: Some(name.clone()),
                    gen: 0,
                    live_until: None,
                    last_time_us: None,
                    credential: None,
                    removed: false,
                    missing_reported: false,
                    scheduled: None,
                    changed: None,
                    paced: false,
                    cred_from_txn: 0,
                });
                self.bindings.extend((0..n).map(|_| Binding::default()));
                (self.aors.len() - 1) as u32
            }
        };
        self.by_name.insert(name, slot);
        slot
    }

    pub(super) fn free_aor(&mut self, slot: u32) {
        let n = self.nodes.len();
        for idx in slot as usize * n..(slot as usize + 1) * n {
            self.untrack(idx);
        }
        let a = &mut self.aors[slot as usize];
        if let Some(name) = a.name.take() {
            self.by_name.remove(&name);
        }
        a.live_until = None;
        a.last_time_us = None;
        a.credential = None;
        a.removed = false;
        a.missing_reported = false;
        a.scheduled = None;
        a.changed = None;
        a.paced = false;
        self.free_aors.push(slot);
    }

    pub(super) fn reschedule_aor(&mut self, slot: u32) {
        let a = &mut self.aors[slot as usize];
        if a.live_until != a.scheduled {
            a.scheduled = a.live_until;
            if let Some(t) = a.live_until {
                self.queue.push(Reverse((t, slot | AOR_TIMER)));
            }
        }
    }

    /// Brings every binding of the AOR towards its desired state; frees the AOR when done.
    pub(super) fn drive_aor(&mut self, now: Instant, slot: u32) {
        let n = self.nodes.len();
        let a = &mut self.aors[slot as usize];
        let live = a.is_live(now);
        if live && a.credential.is_none() && !a.missing_reported {
            a.missing_reported = true;
            if let Some(name) = a.name.clone() {
                self.events
                    .push_back(Event::CredentialMissing { aor: name });
            }
        }
        for node in 0..n {
            self.drive(now, slot as usize * n + node);
        }
        self.maybe_free_aor(now, slot);
    }

    pub(super) fn maybe_free_aor(&mut self, now: Instant, slot: u32) {
        let n = self.nodes.len();
        let a = &self.aors[slot as usize];
        if a.name.is_none() || a.is_live(now) {
            return;
        }
        let base = slot as usize * n;
        if self.bindings[base..base + n]
            .iter()
            .all(|b| b.phase == Phase::Absent)
        {
            self.free_aor(slot);
        }
    }

    pub(super) fn wants_registration(&self, now: Instant, idx: usize) -> bool {
        let a = &self.aors[idx / self.nodes.len()];
        a.is_live(now) && a.credential.is_some()
    }

    /// Coverage bookkeeping after the binding, its AOR or its node changed (`Coverage`): counts
    /// it as desired while its AOR is live, and makes it pending when it is desired and its node
    /// may not hold it. Only the node's 2xx (`unpend` in `on_success`) or no longer being
    /// desired ends that: a binding being replayed counts again once it landed.
    pub(super) fn track(&mut self, now: Instant, idx: usize) {
        let n = self.nodes.len();
        // Without a credential yet too: the lookup's wait (held in a storm) is lag as well.
        if !self.aors[idx / n].is_live(now) {
            self.untrack(idx);
            return;
        }
        let ns = &mut self.nodes[idx % n];
        let b = &mut self.bindings[idx];
        if !b.desired {
            b.desired = true;
            ns.desired += 1;
        }
        if !holds(ns, b) {
            self.pend(now, idx);
        }
        self.recount(idx);
    }

    /// Brings the binding's entry in its node's `BindingCounts` up to date; called wherever a
    /// binding's state, queue or desire may have changed.
    pub(super) fn recount(&mut self, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        let key = BindingCounts::key(b);
        if key != b.counted {
            self.nodes[idx % n].counts.recount(b.counted, key);
            b.counted = key;
        }
    }

    /// A desired binding the node may not hold: pending from `now` unless it already is.
    pub(super) fn pend(&mut self, now: Instant, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if !b.desired || b.pending_since.is_some() {
            return;
        }
        b.pending_since = Some(now);
        let node = idx % n;
        let ns = &mut self.nodes[node];
        ns.pending += 1;
        ns.lag.push(Reverse((now, (idx / n) as u32)));
        // Stale entries below the top stay until they reach it; rebuild when they dominate.
        if ns.lag.len() > 64 + 2 * ns.pending {
            let bindings = &self.bindings;
            ns.lag
                .retain(|&Reverse((t, slot))| pending_at(bindings, n, node, slot, t));
        }
    }

    /// The binding is no longer desired on its node (its AOR died, or its slot is freed).
    pub(super) fn untrack(&mut self, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.desired {
            b.desired = false;
            let ns = &mut self.nodes[idx % n];
            ns.desired = ns.desired.saturating_sub(1);
        }
        self.unpend(idx);
        self.recount(idx);
    }

    /// Ends the binding's pending time (confirmed, or no longer desired).
    pub(super) fn unpend(&mut self, idx: usize) {
        if self.bindings[idx].pending_since.take().is_none() {
            return;
        }
        let n = self.nodes.len();
        let node = idx % n;
        let bindings = &self.bindings;
        let ns = &mut self.nodes[node];
        ns.pending = ns.pending.saturating_sub(1);
        // Keep the top valid, so reading the lag is a peek.
        while let Some(&Reverse((t, slot))) = ns.lag.peek() {
            if pending_at(bindings, n, node, slot, t) {
                break;
            }
            ns.lag.pop();
        }
        if ns.lag.is_empty() && ns.lag.capacity() > SHRINK_ABOVE {
            ns.lag.shrink_to(SHRINK_ABOVE);
        }
    }
}
