//! Per-node concerns: OPTIONS probes and health, down and back up (replay through the paced
//! queue), the send budget and its congestion window.

use super::*;
use crate::core::congestion::Window;
use crate::core::sip::OptionsRequest;

#[derive(Debug)]
pub(super) struct NodeState {
    pub(super) node: Node,
    /// Stable across `add_node`/`remove_node` (Call-IDs use it, not the index).
    pub(super) uid: u32,
    pub(super) inflight: usize,
    /// Congestion window (`farm.latency_target`).
    pub(super) window: Window,
    pub(super) waiting: VecDeque<u32>,
    /// Refreshes of bindings the node holds, started before anything in `waiting`: they have a
    /// deadline (the node's expiry), so a storm of new registrations queued behind the send
    /// budget or `max_register_rate` must not let existing contacts lapse.
    pub(super) refreshes: VecDeque<u32>,
    /// Paced queue: replays after the node comes up or is added, reconciliation additions.
    pub(super) replay: VecDeque<u32>,
    pub(super) pacer: Pacer,
    /// `farm.max_register_rate`: every operation start, replays included.
    pub(super) rate: Pacer,
    pub(super) health: Health,
    /// Latest challenge per realm, answered by every binding on the node (`Binding::realm`).
    pub(super) nonces: Vec<NodeNonce>,
    pub(super) challenges: u64,
    pub(super) preemptive: u64,
    pub(super) preemptive_challenged: u64,
    /// Bindings desired on the node, and how many of them are pending (`Coverage`).
    pub(super) desired: usize,
    pub(super) pending: usize,
    /// `(pending since, AOR slot)` of the node's pending bindings, oldest on top. An entry whose
    /// binding no longer has that `pending_since` is stale; none is left on top (`unpend`), so
    /// the top is the lag. Slots, not binding indices: they survive `relayout`.
    pub(super) lag: BinaryHeap<Reverse<(Instant, u32)>>,
    /// The node's bindings by state (`Mirror::recount`).
    pub(super) counts: BindingCounts,
}

impl NodeState {
    pub(super) fn new(node: Node, uid: u32) -> Self {
        NodeState {
            node,
            uid,
            inflight: 0,
            window: Window::default(),
            waiting: VecDeque::new(),
            refreshes: VecDeque::new(),
            replay: VecDeque::new(),
            pacer: Pacer::default(),
            rate: Pacer::default(),
            health: Health::new(),
            nonces: Vec::new(),
            challenges: 0,
            preemptive: 0,
            preemptive_challenged: 0,
            desired: 0,
            pending: 0,
            lag: BinaryHeap::new(),
            counts: BindingCounts::default(),
        }
    }

    /// Operations the node may have in flight now: the fixed budget, or the congestion window.
    pub(super) fn budget(&self, cfg: &MirrorConfig) -> usize {
        self.window
            .budget(cfg.max_inflight_per_node, cfg.farm.latency_target)
    }

    /// Makes the challenges of `chosen`'s realm the node's latest nonce for that realm; returns
    /// its `Binding::realm` number.
    pub(super) fn remember_nonce(
        &mut self,
        now: Instant,
        challenges: &[Challenge],
        chosen: &Challenge,
        proxy: bool,
    ) -> u8 {
        let entry = NodeNonce {
            challenges: challenges
                .iter()
                .filter(|c| c.realm == chosen.realm)
                .cloned()
                .collect(),
            proxy,
            received: now,
            nc: 0,
        };
        let nonces = &mut self.nonces;
        let i = match nonces
            .iter()
            .position(|e| e.proxy == proxy && e.realm() == chosen.realm)
        {
            Some(i) => i,
            None if nonces.len() < NODE_REALMS => {
                nonces.push(entry);
                return nonces.len() as u8;
            }
            // Full: replace the oldest (bindings pointing at it guess wrong once, then relearn).
            None => (0..nonces.len())
                .min_by_key(|&i| nonces[i].received)
                .unwrap_or(0),
        };
        nonces[i] = entry;
        i as u8 + 1
    }

    /// Which of a node's nonces a binding answers: the realm that challenged it last; else, for a
    /// stored HA1, its realm; else the newest. A wrong guess costs one challenge, then it is learnt.
    pub(super) fn pick_nonce(&self, known: u8, secret: &Secret) -> Option<usize> {
        let nonces = &self.nonces;
        let fits = |e: &NodeNonce| match secret {
            Secret::Ha1Md5 { realm, .. } => e.realm() == realm,
            Secret::Password(_) => true,
        };
        let known = usize::from(known)
            .checked_sub(1)
            .filter(|&i| nonces.get(i).is_some_and(fits));
        known.or_else(|| {
            (0..nonces.len())
                .filter(|&i| fits(&nonces[i]))
                .max_by_key(|&i| nonces[i].received)
        })
    }
}

impl Mirror {
    /// Schedules the first probes once a time is known.
    pub(super) fn ensure_started(&mut self, now: Instant) {
        if self.started {
            return;
        }
        self.started = true;
        if self.cfg.farm.probe_interval.is_some() {
            for ns in &mut self.nodes {
                ns.health.next_probe = Some(now);
            }
        }
    }

    pub(super) fn node_timer(&mut self, now: Instant, node: usize) {
        loop {
            let action = self.nodes[node]
                .health
                .on_timer(now, &self.cfg.farm, self.timers.t2);
            match action {
                HealthAction::None => break,
                HealthAction::SendProbe => self.send_probe(now, node),
                HealthAction::Retransmit => {
                    let ns = &self.nodes[node];
                    if let Some(p) = &ns.health.probe {
                        self.transmits.push_back(Transmit {
                            dest: ns.node.addr,
                            transport: ns.node.transport,
                            payload: p.payload.clone(),
                        });
                    }
                }
                HealthAction::ProbeFailed(true) => self.on_node_down(now, node),
                HealthAction::ProbeFailed(false) => {}
            }
        }
        self.pump_waiting(now, node);
    }

    pub(super) fn send_probe(&mut self, now: Instant, node: usize) {
        let id = self.next_txn;
        self.next_txn = self.next_txn.wrapping_add(1);
        let ns = &mut self.nodes[node];
        ns.health.cseq = ns.health.cseq.wrapping_add(1);
        ns.health.probes_sent += 1;
        let tcp = ns.node.transport == Transport::Tcp;
        let br = branch(self.prefix, PROBE_SLOT + (ns.uid & 0xFFFF), id);
        let (addr, prefix, uid) = (ns.node.addr, self.prefix, ns.uid);
        let payload = OptionsRequest {
            request_uri: &format!("sip:{addr}"),
            tcp,
            local_addr: self.cfg.local_addr,
            branch: br.as_str(),
            from_uri: &format!("sip:regmirror@{}", self.cfg.domain),
            from_tag: &format!("{prefix:08x}p{uid:x}"),
            to_uri: &format!("sip:{addr}"),
            call_id: &format!("{prefix:08x}-probe-{uid:x}"),
            cseq: ns.health.cseq,
            extra: None,
            user_agent: &self.cfg.user_agent,
        }
        .to_bytes();
        self.transmits.push_back(Transmit {
            dest: ns.node.addr,
            transport: ns.node.transport,
            payload: payload.clone(),
        });
        let t1 = self.timers.t1;
        ns.health.probe = Some(Probe {
            id,
            cseq: ns.health.cseq,
            retransmit_at: (!tcp).then(|| now + t1),
            interval: t1,
            deadline: now + self.cfg.farm.probe_timeout,
            payload,
        });
    }

    /// A response to a probe: true when the response was one (matched or not).
    pub(super) fn match_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        info: &ResponseInfo<'_>,
    ) -> bool {
        let Some((slot, id)) = info.branch.and_then(|b| parse_branch(b, self.prefix)) else {
            return false;
        };
        if slot < PROBE_SLOT {
            return false;
        }
        let uid = slot - PROBE_SLOT;
        let Some(node) = self.nodes.iter().position(|ns| ns.uid & 0xFFFF == uid) else {
            self.counters.stray_responses += 1;
            return true;
        };
        let matched = self.nodes.get(node).is_some_and(|ns| {
            ns.node.addr.ip() == from.ip()
                && ns
                    .health
                    .probe
                    .as_ref()
                    .is_some_and(|p| p.id == id && info.cseq == Some(p.cseq))
        });
        if !matched {
            self.counters.stray_responses += 1;
            return true;
        }
        if info.code >= 200 {
            self.nodes[node].health.probe_answered(now, &self.cfg.farm);
        }
        self.node_heard(now, node);
        true
    }

    pub(super) fn node_heard(&mut self, now: Instant, node: usize) {
        if self.nodes[node].health.heard(now) {
            self.events.push_back(Event::NodeUp {
                node: node as NodeId,
            });
            self.replay_node(now, node);
        }
    }

    /// The node is down: abort its transactions and park every binding on it. Its confirmed
    /// bindings turn pending: the node may come back without them.
    pub(super) fn on_node_down(&mut self, now: Instant, node: usize) {
        self.events.push_back(Event::NodeDown {
            node: node as NodeId,
        });
        let n = self.nodes.len();
        for slot in 0..self.aors.len() {
            let idx = slot * n + node;
            self.track(now, idx);
            let b = &mut self.bindings[idx];
            if b.phase != Phase::InFlight {
                continue;
            }
            if let Some(t) = b.txn.take() {
                if t.expires > 0 {
                    b.server_bound = true; // it may have arrived
                }
                if !self.relocated.is_empty() {
                    self.relocated.remove(&t.id);
                }
            }
            b.phase = Phase::Queued;
            b.rounds = 0;
            self.schedule(idx);
        }
        let ns = &mut self.nodes[node];
        ns.inflight = 0;
        ns.waiting.clear();
        ns.refreshes.clear();
        ns.replay.clear();
        ns.pacer = Pacer::default();
        ns.window = Window::default();
    }

    /// Queues every binding of `node` for a paced replay, newest changed AOR first: registers
    /// the live ones, unregisters those the node may still hold.
    pub(super) fn replay_node(&mut self, now: Instant, node: usize) {
        let n = self.nodes.len();
        let mut list: Vec<(Option<Instant>, Option<Instant>, u32)> = Vec::new();
        for slot in 0..self.aors.len() {
            if self.aors[slot].name.is_none() {
                continue;
            }
            let idx = slot * n + node;
            if self.bindings[idx].phase == Phase::InFlight {
                continue;
            }
            // Pending on an added node; on one back up since it went down (`on_node_down`).
            self.track(now, idx);
            let b = &self.bindings[idx];
            let before = b.state();
            let op = if self.wants_registration(now, idx) {
                Op::Register
            } else if b.server_bound {
                Op::Unregister
            } else {
                if b.phase != Phase::Absent {
                    self.remove_binding(idx);
                    self.emit_change(idx, before, None);
                }
                continue;
            };
            let a = &self.aors[slot];
            let b = &mut self.bindings[idx];
            b.op = op;
            b.failures = 0;
            b.action_at = None;
            b.phase = Phase::Queued;
            list.push((a.changed, a.live_until, idx as u32));
            self.emit_change(idx, before, Some("replay".into()));
            self.schedule(idx);
        }
        // Newest notification first, then the longest-lived (the most recently saved).
        list.sort_unstable_by_key(|&(changed, until, _)| Reverse((changed, until)));
        let ns = &mut self.nodes[node];
        // A binding also in `waiting` is harmless: whichever queue pops it first starts it.
        ns.replay.extend(list.into_iter().map(|(_, _, i)| i));
        self.pump_replay(now, node);
    }

    /// Sends from the replay queue as fast as the pacer and the send budget allow.
    pub(super) fn pump_replay(&mut self, now: Instant, node: usize) {
        if self.storm_holding(now) {
            return;
        }
        loop {
            let ns = &mut self.nodes[node];
            if !ns.health.up || ns.inflight >= ns.budget(&self.cfg) {
                return;
            }
            let Some(&idx) = ns.replay.front() else {
                return;
            };
            if self.bindings[idx as usize].phase != Phase::Queued {
                ns.replay.pop_front(); // started or dropped meanwhile
                continue;
            }
            let rate = self.cfg.farm.max_register_rate;
            if !ns.rate.ready(now, rate)
                || !ns.pacer.take(now, self.cfg.farm.replay_rate, &mut self.rng)
            {
                return;
            }
            ns.rate.take(now, rate, &mut self.rng);
            ns.replay.pop_front();
            self.launch_queued(now, idx as usize);
            self.counters.replayed += 1;
        }
    }

    /// A binding taken off one of its node's queues goes in flight.
    pub(super) fn launch_queued(&mut self, now: Instant, idx: usize) {
        let node = idx % self.nodes.len();
        self.nodes[node].inflight += 1;
        let before = self.bindings[idx].state();
        self.bindings[idx].launch();
        self.send_request(now, idx);
        self.emit_change(idx, before, None);
        self.schedule(idx);
    }

    /// Adjusts the node's window from one answer's round trip (`None` = no answer at all).
    pub(super) fn congestion_feedback(&mut self, now: Instant, node: usize, rtt: Option<Duration>) {
        let (target, max) = (self.cfg.farm.latency_target, self.cfg.max_inflight_per_node);
        self.nodes[node].window.feedback(now, rtt, target, max);
    }

    /// A REGISTER got no answer for Timer F: with probing on, a node silent that long is down.
    pub(super) fn register_timed_out(&mut self, now: Instant, node: usize) {
        if self.cfg.farm.probe_interval.is_none() {
            return; // nothing would bring it back up
        }
        let silent_since = now.checked_sub(self.timers.timer_f);
        let h = &self.nodes[node].health;
        let silent = match (h.last_heard, silent_since) {
            (Some(t), Some(s)) => t < s,
            (None, _) => true,
            (Some(_), None) => false,
        };
        if silent && self.nodes[node].health.mark_down(now) {
            self.on_node_down(now, node);
        }
    }
}

/// Whether the node holds the binding's registration, as far as the mirror knows: it confirmed
/// it, is up, and no failure or unregister happened since (a refresh may be queued or in flight).
pub(super) fn holds(ns: &NodeState, b: &Binding) -> bool {
    ns.health.up
        && b.confirmed
        && b.op == Op::Register
        && matches!(b.phase, Phase::Registered | Phase::Queued | Phase::InFlight)
}

/// Whether a lag-heap entry `(since, slot)` of `node` is current: that binding is still
/// pending since then.
pub(super) fn pending_at(
    bindings: &[Binding],
    nodes: usize,
    node: usize,
    slot: u32,
    since: Instant,
) -> bool {
    bindings
        .get(slot as usize * nodes + node)
        .is_some_and(|b| b.pending_since == Some(since))
}
