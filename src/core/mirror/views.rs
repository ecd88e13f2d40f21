//! Read-only views of the mirror: bindings, stats, node health, coverage.

use super::*;

impl Mirror {
    pub fn bindings(&self) -> impl Iterator<Item = BindingView<'_>> {
        self.bindings
            .iter()
            .enumerate()
            .filter_map(move |(idx, b)| self.view(idx, b))
    }

    fn view<'a>(&'a self, idx: usize, b: &Binding) -> Option<BindingView<'a>> {
        let n = self.nodes.len();
        let a = &self.aors[idx / n];
        Some(BindingView {
            aor: a.name.as_ref()?,
            node: (idx % n) as NodeId,
            state: b.state()?,
            last_result: b.last,
            next_action: b.deadline(),
            failures: b.failures,
            granted_expires: b.granted,
            waiting_since: b.pending_since,
        })
    }

    /// Entries in the binding table (AOR slots x nodes): `binding_at` takes `0..` this.
    pub fn binding_slots(&self) -> usize {
        self.bindings.len()
    }

    /// The binding at `idx` of the binding table, if that entry holds one.
    pub fn binding_at(&self, idx: usize) -> Option<BindingView<'_>> {
        self.bindings.get(idx).and_then(|b| self.view(idx, b))
    }

    /// The binding of `aor` on `node`, if any.
    pub fn binding(&self, aor: &str, node: NodeId) -> Option<BindingView<'_>> {
        let slot = *self.by_name.get(user_part(aor)?)? as usize;
        let n = self.nodes.len();
        if usize::from(node) >= n {
            return None;
        }
        let idx = slot * n + usize::from(node);
        self.view(idx, &self.bindings[idx])
    }

    /// Whether the mirror considers `aor` live at `now`.
    pub fn is_live(&self, now: Instant, aor: &str) -> bool {
        user_part(aor)
            .and_then(|u| self.by_name.get(u))
            .is_some_and(|&s| self.aors[s as usize].is_live(now))
    }

    /// Every figure, the bindings counted by state included.
    pub fn stats(&self) -> MirrorStats {
        let mut s = self.counter_stats();
        for c in self.nodes.iter().map(|ns| &ns.counts) {
            s.queued += c.queued;
            s.registering += c.registering;
            s.registered += c.registered;
            s.unregistering += c.unregistering;
            s.failed += c.failed;
        }
        s
    }

    /// The counters, the per-node sums and the live AORs, without the bindings by state
    /// (`registering`, `registered`, `unregistering`, `failed` and `queued` are 0).
    pub fn counter_stats(&self) -> MirrorStats {
        let c = &self.counters;
        let mut s = MirrorStats {
            aors: self.by_name.len(),
            transactions: c.transactions,
            retransmits: c.retransmits,
            timeouts: c.timeouts,
            challenges: c.challenges,
            credential_rejected: c.credential_rejected,
            stray_responses: c.stray_responses,
            stale_snapshots: c.stale_snapshots,
            invalid_aors: c.invalid_aors,
            replayed: c.replayed,
            drift_repaired: c.drift_repaired,
            refreshes_deferred: c.refreshes_deferred,
            ..Default::default()
        };
        for ns in &self.nodes {
            s.nodes_down += usize::from(!ns.health.up);
            s.replay_pending += ns.replay.len();
            s.probes_sent += ns.health.probes_sent;
            s.probes_failed += ns.health.probes_failed;
            s.preemptive += ns.preemptive;
            s.preemptive_challenged += ns.preemptive_challenged;
        }
        // Every live AOR is desired on every node (kept as AORs come and go).
        s.live_aors = self.nodes.first().map_or(0, |ns| ns.desired);
        s
    }

    /// Whether the node is considered up.
    pub fn node_up(&self, node: NodeId) -> bool {
        self.nodes
            .get(usize::from(node))
            .is_some_and(|n| n.health.up)
    }

    pub fn node_health(&self, node: NodeId) -> Option<NodeHealthView> {
        let ns = self.nodes.get(usize::from(node))?;
        Some(NodeHealthView {
            up: ns.health.up,
            probe_failures: ns.health.failures,
            last_heard: ns.health.last_heard,
            since: ns.health.since,
            replay_pending: ns.replay.len(),
            inflight: ns.inflight,
            window: ns.budget(&self.cfg),
            challenges: ns.challenges,
            preemptive: ns.preemptive,
            preemptive_challenged: ns.preemptive_challenged,
            coverage: Coverage {
                desired: ns.desired,
                confirmed: ns.desired.saturating_sub(ns.pending),
                oldest_pending: ns.lag.peek().map(|Reverse((t, _))| *t),
            },
            counts: ns.counts,
        })
    }

    /// AORs the mirror considers live at `now` (whether or not a credential is known).
    pub fn live_aors(&self, now: Instant) -> impl Iterator<Item = &Arc<str>> {
        self.aors
            .iter()
            .filter(move |a| a.is_live(now))
            .filter_map(|a| a.name.as_ref())
    }

    /// REGISTER operations in flight on nodes that are up (a challenge round trip included):
    /// what a graceful shutdown waits for.
    pub fn operations_in_flight(&self) -> usize {
        self.nodes.iter().map(|ns| ns.inflight).sum()
    }

    /// Whether a reconciliation has succeeded since start.
    pub fn is_reconciled(&self) -> bool {
        self.reconciled
    }

    /// Recounts every node's `Coverage` from the bindings at `now` (no timer due unhandled) and
    /// compares it with the incremental one; also that no binding counted confirmed is one its
    /// node may not hold. For tests: this walks everything.
    #[cfg(any(test, feature = "testing"))]
    pub fn check_coverage(&self, now: Instant) -> Result<(), String> {
        let n = self.nodes.len();
        for (node, ns) in self.nodes.iter().enumerate() {
            let (mut desired, mut pending, mut oldest) = (0, 0, None::<Instant>);
            for (slot, a) in self.aors.iter().enumerate() {
                let b = &self.bindings[slot * n + node];
                let name = a.name.as_deref().unwrap_or("(free)");
                if b.desired != a.is_live(now) {
                    return Err(format!("{name} on node {node}: desired {}", b.desired));
                }
                if b.pending_since.is_some() && !b.desired {
                    return Err(format!("{name} on node {node}: pending, not desired"));
                }
                if b.desired && b.pending_since.is_none() && !holds(ns, b) {
                    return Err(format!("{name} on node {node}: confirmed, not held: {b:?}"));
                }
                desired += usize::from(b.desired);
                if let Some(t) = b.pending_since {
                    pending += 1;
                    oldest = Some(oldest.map_or(t, |o| o.min(t)));
                }
            }
            let mut counts = BindingCounts::default();
            for slot in 0..self.aors.len() {
                let b = &self.bindings[slot * n + node];
                if b.counted != BindingCounts::key(b) {
                    return Err(format!("slot {slot} on node {node}: counted {}", b.counted));
                }
                counts.recount(0, b.counted);
            }
            if counts != ns.counts {
                return Err(format!(
                    "node {node}: counts {:?}, recounted {counts:?}",
                    ns.counts
                ));
            }
            let top = ns.lag.peek().map(|Reverse((t, _))| *t);
            if (desired, pending, oldest) != (ns.desired, ns.pending, top) {
                return Err(format!(
                    "node {node}: counted (desired, pending, oldest) {:?}, recounted {:?}",
                    (ns.desired, ns.pending, top),
                    (desired, pending, oldest)
                ));
            }
        }
        Ok(())
    }
}
