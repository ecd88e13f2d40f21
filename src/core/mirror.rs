//! Desired state (live AORs x nodes) driving every binding. Sans-IO: feed snapshots, responses
//! and timeouts in; drain transmits and events out; sleep until `poll_timeout`.
//!
//! Layout for scale: AORs live in a slab and their bindings in one dense `Vec`, binding slot =
//! `aor_slot * nodes + node`, so a response's Via branch (which encodes the slot) finds its
//! binding without a map. One timer-queue entry per binding (lazy deletion). Each node has a
//! send budget (`max_inflight_per_node`): bindings beyond it wait in a FIFO.
//!
//! Farm resilience (`farm`): each node is probed with OPTIONS; a node that stops answering is
//! down and its bindings are parked (no REGISTER storm, only probes go out). When it answers
//! again, or a node is added, every binding on it is replayed through a paced queue, newest
//! changed AOR first. `reconcile` takes the complete desired state from Kamailio's `location`;
//! `audit` compares a node's actual contacts with it and repairs the drift.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::binding::{
    backoff, first_refresh_delay, refresh_delay, valid_user, AuthNext, AuthSent, Binding,
    NodeNonce, Op, Phase, RegisterRequest, Txn, NODE_REALMS,
};
pub use super::binding::{BindingState, LastResult};
use super::digest::{self, Challenge, RequestInfo, Secret};
pub use super::farm::FarmConfig;
use super::farm::{Health, HealthAction, Pacer, Probe, StormGate};
use super::response::ResponseInfo;
use super::transaction::{branch, parse_branch, Id, NonInviteClient, TimerAction, Timers};

pub type NodeId = u16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Drops below this many AORs are never refused: a small installation may well lose most of
/// its few phones at once.
pub const RECONCILE_DROP_FLOOR: usize = 10;

/// True when dropping `dropping` of `live` AORs at once is too much to trust (more than
/// `max_share` of them, and more than [`RECONCILE_DROP_FLOOR`]).
pub fn drop_refused(live: usize, dropping: usize, max_share: f64) -> bool {
    dropping > RECONCILE_DROP_FLOOR && dropping as f64 > max_share * live as f64
}

/// A reconciliation snapshot refused by the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("snapshot would drop {dropping} of {live} live users")]
pub struct ReconcileRefused {
    pub live: usize,
    pub dropping: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// SIP domain and realm: R-URI `sip:<domain>`, To/From `sip:<user>@<domain>`.
    pub domain: String,
    /// Kamailio `host[:port]` for the Contact.
    pub contact_host: String,
    /// Via sent-by.
    pub local_addr: SocketAddr,
    pub register_expires: u32,
    pub t1: Duration,
    pub t2: Duration,
    pub timer_f: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub user_agent: String,
    /// Send budget: operations (a REGISTER with its auth round trips) in flight per node.
    pub max_inflight_per_node: usize,
    /// Failed unregister attempts after which a binding is forgotten anyway.
    pub unregister_attempts: u16,
    /// Reconciliation circuit breaker: the largest share of live AORs one snapshot may drop
    /// ([`drop_refused`]).
    pub reconcile_max_drop: f64,
    /// Node health probes and replay pacing.
    pub farm: FarmConfig,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            domain: "localhost".into(),
            contact_host: "127.0.0.1:5060".into(),
            local_addr: SocketAddr::from(([127, 0, 0, 1], 5070)),
            register_expires: 600,
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            timer_f: Duration::from_secs(32),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(1800),
            user_agent: concat!("regmirror/", env!("CARGO_PKG_VERSION")).into(),
            max_inflight_per_node: 512,
            unregister_attempts: 3,
            reconcile_max_drop: 0.9,
            farm: FarmConfig::default(),
        }
    }
}

/// An AOR's digest credential. `Debug` shows the username only (`Secret` redacts itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dest: SocketAddr,
    pub transport: Transport,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    BindingChanged {
        aor: Arc<str>,
        node: NodeId,
        state: BindingState,
        reason: String,
    },
    /// The node rejected the credential: refetch it and call `set_credential`.
    CredentialRejected { aor: Arc<str>, node: NodeId },
    /// The AOR is live but no credential is known: look it up and call `set_credential`.
    CredentialMissing { aor: Arc<str> },
    /// Unregistered (or given up) and forgotten.
    BindingRemoved { aor: Arc<str>, node: NodeId },
    /// The node stopped answering: its bindings wait, only probes go out.
    NodeDown { node: NodeId },
    /// The node answers again: every binding on it is being replayed.
    NodeUp { node: NodeId },
    /// A binding starts again after an error response or a timeout (RFC 5626 backoff).
    Retrying { node: NodeId },
    /// A REGISTER transaction got its final response: the round trip from its first send.
    TransactionDone {
        node: NodeId,
        round_trip: Duration,
        code: u16,
    },
}

/// Drift found (and repaired) by one `audit` of a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditResult {
    /// Live bindings the node had lost: re-registered at once.
    pub missing: usize,
    /// Contacts of users that are not live: unregistered.
    pub stale: usize,
}

/// One node's health, for status pages.
#[derive(Debug, Clone)]
pub struct NodeHealthView {
    pub up: bool,
    /// Consecutive failed probes.
    pub probe_failures: u32,
    pub last_heard: Option<Instant>,
    /// Last up/down transition.
    pub since: Option<Instant>,
    /// Bindings waiting in the paced replay queue.
    pub replay_pending: usize,
    pub inflight: usize,
    /// Operations allowed in flight now (`max_inflight_per_node`, or less while the node is
    /// congested: `farm.latency_target`).
    pub window: usize,
    /// Digest challenges (401/407) received from the node.
    pub challenges: u64,
    /// REGISTERs sent with the node's latest nonce preemptively.
    pub preemptive: u64,
    /// Of those, the ones the node challenged again (nonce expired or another realm).
    pub preemptive_challenged: u64,
    pub coverage: Coverage,
}

/// How much of the desired state a node holds, kept incrementally as bindings change (reading
/// it walks nothing).
///
/// A binding is *desired* on a node while its AOR is live per Kamailio and not found unknown or
/// removed: its credential is known or still being looked up (a lookup answered "no such user"
/// ends it, so an unknown user does not hold coverage below 1). It is *confirmed* once the node
/// answered 2xx to its REGISTER (refreshes in flight keep it confirmed) and nothing since said
/// the node may have lost it: a failed attempt, the node going down (and its replay), the audit
/// finding the contact missing. A desired binding that is not confirmed is *pending*, from the
/// moment it became desired or lost its confirmation until the node's next 2xx for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    pub desired: usize,
    pub confirmed: usize,
    /// When the oldest pending binding became pending (`None`: none is).
    pub oldest_pending: Option<Instant>,
}

impl Coverage {
    /// `confirmed / desired`, 1 when nothing is desired.
    pub fn ratio(&self) -> f64 {
        coverage_ratio(self.desired as u64, self.confirmed as u64)
    }

    /// Age of the oldest pending binding at `now`: zero when every desired one is confirmed.
    pub fn lag(&self, now: Instant) -> Duration {
        self.oldest_pending
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }
}

/// `confirmed / desired` of a node, 1 when nothing is desired (also for views that only carry
/// the two counts).
pub fn coverage_ratio(desired: u64, confirmed: u64) -> f64 {
    if desired == 0 {
        1.0
    } else {
        confirmed.min(desired) as f64 / desired as f64
    }
}

/// One binding, for status pages.
#[derive(Debug, Clone)]
pub struct BindingView<'a> {
    pub aor: &'a Arc<str>,
    pub node: NodeId,
    pub state: BindingState,
    pub last_result: LastResult,
    /// Next retransmission, timeout, refresh or retry.
    pub next_action: Option<Instant>,
    pub failures: u16,
    /// Expiry granted by the node on the last 200 (seconds).
    pub granted_expires: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MirrorStats {
    pub aors: usize,
    pub live_aors: usize,
    pub registering: usize,
    pub registered: usize,
    pub unregistering: usize,
    pub failed: usize,
    /// Bindings waiting for their node's send budget.
    pub queued: usize,
    pub transactions: u64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub challenges: u64,
    /// REGISTERs that answered a node's latest nonce preemptively, and the ones challenged again.
    pub preemptive: u64,
    pub preemptive_challenged: u64,
    pub credential_rejected: u64,
    pub stray_responses: u64,
    pub stale_snapshots: u64,
    pub invalid_aors: u64,
    pub nodes_down: usize,
    /// Bindings waiting in replay queues.
    pub replay_pending: usize,
    /// Requests sent from replay queues.
    pub replayed: u64,
    pub probes_sent: u64,
    pub probes_failed: u64,
    /// Bindings re-registered or contacts unregistered by `audit`.
    pub drift_repaired: u64,
    /// Refreshes that fell due in a storm hold and waited (`FarmConfig::storm_hold`).
    pub refreshes_deferred: u64,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: u64,
    retransmits: u64,
    timeouts: u64,
    challenges: u64,
    credential_rejected: u64,
    stray_responses: u64,
    stale_snapshots: u64,
    invalid_aors: u64,
    replayed: u64,
    drift_repaired: u64,
    refreshes_deferred: u64,
}

/// Immediate re-sends (challenges, 423) allowed in one attempt before it counts as failed.
const MAX_ROUNDS: u8 = 4;
/// The longest `Retry-After` honoured (seconds): RFC 5626's longest backoff.
const MAX_RETRY_AFTER_S: u32 = 1800;

/// Refresh this long before the granted expiry, beyond Timer F.
const REFRESH_SLACK: Duration = Duration::from_secs(4);
/// Output queues drained to empty give back capacity beyond this.
const SHRINK_ABOVE: usize = 1024;
/// Timer-queue keys with this bit are AOR expiry timers.
const AOR_TIMER: u32 = 1 << 31;
/// Branch slots from here on are probes (slot - PROBE_SLOT = node uid), never bindings.
const PROBE_SLOT: u32 = 0xFFFF_0000;

#[derive(Debug)]
struct Aor {
    /// The user part, registered on every node. `None` = free slot.
    name: Option<Arc<str>>,
    /// Bumped when the slot is reused, so Call-IDs differ between occupants.
    gen: u32,
    live_until: Option<Instant>,
    last_time_us: Option<u64>,
    credential: Option<Credential>,
    /// `set_credential(None)`: the user is gone; unregister and forget.
    removed: bool,
    missing_reported: bool,
    scheduled: Option<Instant>,
    /// Last notification (replays go newest first); `None` = known from reconciliation only.
    changed: Option<Instant>,
    /// Added by reconciliation: first registrations go through the paced queue.
    paced: bool,
    /// Transactions from this id on were signed with the current credential; a rejection of
    /// an older one (the credential changed meanwhile) is retried at once with the new one.
    cred_from_txn: u32,
}

impl Aor {
    fn is_live(&self, now: Instant) -> bool {
        !self.removed && self.live_until.is_some_and(|t| t > now)
    }
}

#[derive(Debug)]
struct NodeState {
    node: Node,
    /// Stable across `add_node`/`remove_node` (Call-IDs use it, not the index).
    uid: u32,
    inflight: usize,
    /// Congestion window (`farm.latency_target`): operations allowed in flight.
    window: f64,
    /// No second cut of the window before this (one per target interval).
    cut_until: Option<Instant>,
    /// Fastest answer of the previous and of the current base period: the node's unloaded
    /// round trip, so a distant node is not mistaken for a congested one.
    base_prev: Option<Duration>,
    base_cur: Option<Duration>,
    base_period_end: Option<Instant>,
    waiting: VecDeque<u32>,
    /// Refreshes of bindings the node holds, started before anything in `waiting`: they have a
    /// deadline (the node's expiry), so a storm of new registrations queued behind the send
    /// budget or `max_register_rate` must not let existing contacts lapse.
    refreshes: VecDeque<u32>,
    /// Paced queue: replays after the node comes up or is added, reconciliation additions.
    replay: VecDeque<u32>,
    pacer: Pacer,
    /// `farm.max_register_rate`: every operation start, replays included.
    rate: Pacer,
    health: Health,
    /// Latest challenge per realm, answered by every binding on the node (`Binding::realm`).
    nonces: Vec<NodeNonce>,
    challenges: u64,
    preemptive: u64,
    preemptive_challenged: u64,
    /// Bindings desired on the node, and how many of them are pending (`Coverage`).
    desired: usize,
    pending: usize,
    /// `(pending since, AOR slot)` of the node's pending bindings, oldest on top. An entry whose
    /// binding no longer has that `pending_since` is stale; none is left on top (`unpend`), so
    /// the top is the lag. Slots, not binding indices: they survive `relayout`.
    lag: BinaryHeap<Reverse<(Instant, u32)>>,
}

impl NodeState {
    fn new(node: Node, uid: u32) -> Self {
        NodeState {
            node,
            uid,
            inflight: 0,
            window: f64::MAX,
            cut_until: None,
            base_prev: None,
            base_cur: None,
            base_period_end: None,
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
        }
    }
}

pub struct Mirror {
    cfg: MirrorConfig,
    /// `sip:<domain>`, the REGISTERs' Request-URI (and digest uri).
    request_uri: String,
    timers: Timers,
    nodes: Vec<NodeState>,
    rng: StdRng,
    /// Per-instance random prefix of branches, Call-IDs and tags.
    prefix: u32,
    aors: Vec<Aor>,
    free_aors: Vec<u32>,
    by_name: HashMap<Arc<str>, u32>,
    bindings: Vec<Binding>,
    queue: BinaryHeap<Reverse<(Instant, u32)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_txn: u32,
    counters: Counters,
    storm: StormGate,
    /// Probes are scheduled from the first call that brings a time.
    started: bool,
    /// A reconciliation succeeded: the mirror knows the complete desired state, so `audit`
    /// may unregister contacts it does not know.
    reconciled: bool,
    next_node_uid: u32,
    /// Transactions in flight when the layout changed (txn id -> new binding index): their
    /// branches still carry the old index.
    relocated: HashMap<u32, u32>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("nodes", &self.nodes.len())
            .field("aors", &self.by_name.len())
            .field("timers", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Mirror {
    pub fn new(config: MirrorConfig, nodes: Vec<Node>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let prefix = rng.gen();
        let timers = Timers {
            t1: config.t1,
            t2: config.t2,
            timer_f: config.timer_f,
        };
        let nodes: Vec<NodeState> = nodes
            .into_iter()
            .enumerate()
            .map(|(i, node)| NodeState::new(node, i as u32))
            .collect();
        Mirror {
            request_uri: format!("sip:{}", config.domain),
            cfg: config,
            timers,
            next_node_uid: nodes.len() as u32,
            nodes,
            rng,
            prefix,
            aors: Vec::new(),
            free_aors: Vec::new(),
            by_name: HashMap::new(),
            bindings: Vec::new(),
            queue: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_txn: 0,
            counters: Counters::default(),
            storm: StormGate::default(),
            started: false,
            reconciled: false,
            relocated: HashMap::new(),
        }
    }

    pub fn config(&self) -> &MirrorConfig {
        &self.cfg
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().map(|n| &n.node)
    }

    /// Snapshot from Kamailio (or reconciliation): the AOR lives `expires` from `now`
    /// (zero = no live contact). `credential` `None` keeps the cached one. `aor` may be
    /// `user`, `user@domain` or `sip:user@domain`; the user part is what gets registered.
    pub fn aor_update(
        &mut self,
        now: Instant,
        aor: &str,
        expires: Duration,
        time_us: Option<u64>,
        credential: Option<Credential>,
    ) {
        self.ensure_started(now);
        if self.storm_gated() {
            self.storm.arrival(now, self.cfg.farm.max_register_rate);
        }
        let Some(user) = user_part(aor) else {
            self.counters.invalid_aors += 1;
            return;
        };
        let slot = match self.by_name.get(user) {
            Some(&s) => s,
            // Nothing to undo for an AOR we never saw.
            None if expires.is_zero() => return,
            None => self.alloc_aor(user),
        };
        let a = &mut self.aors[slot as usize];
        if let (Some(t), Some(last)) = (time_us, a.last_time_us) {
            if t < last {
                self.counters.stale_snapshots += 1;
                return;
            }
        }
        if time_us.is_some() {
            a.last_time_us = time_us;
        }
        a.changed = Some(now);
        a.paced = false;
        if let Some(c) = credential {
            a.credential = Some(c);
            a.missing_reported = false;
        }
        if expires.is_zero() {
            a.live_until = None;
        } else {
            a.live_until = Some(now + expires);
            if a.removed {
                // Kamailio just authenticated the user, so it exists again: ask for a fresh credential.
                a.removed = false;
                a.missing_reported = false;
                let name = a.name.clone();
                if let Some(name) = name {
                    self.events
                        .push_back(Event::CredentialMissing { aor: name });
                    self.aors[slot as usize].missing_reported = true;
                }
            }
        }
        self.reschedule_aor(slot);
        self.drive_aor(now, slot);
    }

    /// Credential for an AOR (after `CredentialMissing`/`CredentialRejected`). `None` = the user
    /// is unknown or removed: unregister everywhere (with the cached credential) and forget.
    pub fn set_credential(&mut self, now: Instant, aor: &str, credential: Option<Credential>) {
        self.ensure_started(now);
        let Some(user) = user_part(aor) else {
            self.counters.invalid_aors += 1;
            return;
        };
        let Some(&slot) = self.by_name.get(user) else {
            return;
        };
        match credential {
            Some(c) => {
                let next_txn = self.next_txn;
                let a = &mut self.aors[slot as usize];
                // The driver refetches after a rejection; getting the same secret back must
                // not restart the attempt, or a node that keeps refusing it is hammered.
                let changed = a.credential.as_ref() != Some(&c);
                if changed {
                    a.cred_from_txn = next_txn;
                }
                a.credential = Some(c);
                a.removed = false;
                a.missing_reported = false;
                // Attempts that failed for want of a (right) credential retry now.
                self.retry_in_backoff(now, slot, |last| match last {
                    LastResult::NoCredential => true,
                    LastResult::CredentialRejected | LastResult::NoUsableChallenge => changed,
                    _ => false,
                });
            }
            None => self.aors[slot as usize].removed = true,
        }
        self.drive_aor(now, slot);
    }

    /// The credential store was unreachable and answers again: bindings the nodes rejected
    /// meanwhile retry at once with the credential known, even if it did not change (the nodes
    /// read the same database, so their rejections may have been the outage).
    pub fn retry_credential_failures(&mut self, now: Instant, aor: &str) {
        let Some(&slot) = user_part(aor).and_then(|u| self.by_name.get(u)) else {
            return;
        };
        if self.aors[slot as usize].credential.is_none() {
            return;
        }
        self.retry_in_backoff(now, slot, |last| {
            matches!(
                last,
                LastResult::CredentialRejected | LastResult::NoUsableChallenge
            )
        });
        self.drive_aor(now, slot);
    }

    /// Restarts the AOR's bindings waiting in backoff whose last result `retry` accepts.
    fn retry_in_backoff(&mut self, now: Instant, slot: u32, retry: impl Fn(LastResult) -> bool) {
        let n = self.nodes.len();
        for node in 0..n {
            let idx = slot as usize * n + node;
            let b = &self.bindings[idx];
            if b.phase == Phase::Backoff && retry(b.last) {
                let op = b.op;
                self.events.push_back(Event::Retrying {
                    node: node as NodeId,
                });
                self.start_op(now, idx, op);
            }
        }
    }

    /// A response from the network. Responses that match no transaction in flight are counted.
    pub fn handle_response(&mut self, now: Instant, from: SocketAddr, response: &rsip::Response) {
        self.handle_response_info(now, from, &ResponseInfo::from_response(response));
    }

    /// [`Mirror::handle_response`] for a response already read by `sip::parse_incoming`.
    pub fn handle_response_info(
        &mut self,
        now: Instant,
        from: SocketAddr,
        info: &ResponseInfo<'_>,
    ) {
        self.ensure_started(now);
        if self.match_probe(now, from, info) {
            return;
        }
        let Some(idx) = self.match_transaction(from, info) else {
            self.counters.stray_responses += 1;
            // Any answer at all says the node is alive.
            if let Some(node) = self.nodes.iter().position(|n| n.node.addr == from) {
                self.node_heard(now, node);
            }
            return;
        };
        self.node_heard(now, idx % self.nodes.len());
        if info.code < 200 {
            if let Some(t) = self.bindings[idx].txn.as_mut() {
                t.timers.on_provisional();
            }
            return;
        }
        let before = self.bindings[idx].state();
        let Some(txn) = self.bindings[idx].txn.take() else {
            return;
        };
        let round_trip = now - txn.sent_at;
        self.congestion_feedback(now, idx % self.nodes.len(), Some(round_trip));
        self.events.push_back(Event::TransactionDone {
            node: (idx % self.nodes.len()) as NodeId,
            round_trip,
            code: info.code,
        });
        self.forget_relocated(txn.id);
        self.on_final(now, idx, *txn, info);
        self.emit_change(idx, before, None);
        self.schedule(idx);
        self.track(now, idx);
        self.maybe_free_aor(now, (idx / self.nodes.len()) as u32);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.ensure_started(now);
        if self.storm_gated() {
            self.storm.tick(now, self.cfg.farm.max_register_rate);
        }
        while let Some(&Reverse((at, key))) = self.queue.peek() {
            if at > now {
                break;
            }
            self.queue.pop();
            if key & AOR_TIMER != 0 {
                let slot = key & !AOR_TIMER;
                let a = &mut self.aors[slot as usize];
                if a.scheduled == Some(at) {
                    a.scheduled = None;
                    if a.live_until.is_some_and(|t| t <= now) {
                        a.live_until = None;
                    }
                    self.drive_aor(now, slot);
                }
            } else if self
                .bindings
                .get(key as usize)
                .is_some_and(|b| b.scheduled == Some(at))
            {
                self.bindings[key as usize].scheduled = None;
                self.fire(now, key as usize);
                self.schedule(key as usize);
            }
        }
        for node in 0..self.nodes.len() {
            self.node_timer(now, node);
        }
        // Lazy deletion leaves dead entries behind; rebuild when they dominate.
        if self.queue.len() > 64 + 2 * (self.bindings.len() + self.aors.len()) {
            self.compact_queue();
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let t = self.transmits.pop_front();
        if t.is_none() && self.transmits.capacity() > SHRINK_ABOVE {
            // A burst should not pin its peak memory for ever.
            self.transmits.shrink_to(SHRINK_ABOVE);
        }
        t
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() && self.events.capacity() > SHRINK_ABOVE {
            self.events.shrink_to(SHRINK_ABOVE);
        }
        e
    }

    /// Whether a registration storm holds new work at `now` (`FarmConfig::storm_hold`).
    pub fn storm_holding(&self, now: Instant) -> bool {
        self.storm_gated() && self.storm.holding(now, self.cfg.farm.storm_hold)
    }

    fn storm_gated(&self) -> bool {
        self.cfg.farm.max_register_rate > 0 && !self.cfg.farm.storm_hold.is_zero()
    }

    /// Earliest timer (may be one that turns out to be cancelled: waking then is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.queue.peek().map(|Reverse((at, _))| *at);
        let limited = self.cfg.farm.max_register_rate > 0;
        // Held: only refreshes may go; the hold's end is a timer of its own.
        let now = self.storm.now_hint();
        let held = now.is_some_and(|now| self.storm_holding(now));
        let storm_end = now.and_then(|now| self.storm.deadline(now, self.cfg.farm.storm_hold));
        for ns in &self.nodes {
            // With the send budget full the next slot waits for an answer, not the clock: a
            // past slot time here would wake the driver in a loop (found by the replay bench).
            let can_send = ns.health.up && ns.inflight < budget(&self.cfg, ns);
            let rate = ns.rate.next_at.filter(|_| limited);
            let replay = (can_send && !held && !ns.replay.is_empty())
                .then(|| ns.pacer.next_at.max(rate))
                .flatten();
            let queued = !ns.refreshes.is_empty() || (!held && !ns.waiting.is_empty());
            let waiting = (can_send && queued).then_some(rate).flatten();
            for d in [ns.health.deadline(), replay, waiting, storm_end]
                .into_iter()
                .flatten()
            {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        }
        t
    }

    pub fn bindings(&self) -> impl Iterator<Item = BindingView<'_>> {
        let n = self.nodes.len();
        self.bindings
            .iter()
            .enumerate()
            .filter_map(move |(idx, b)| {
                let state = b.state()?;
                let aor = self.aors[idx / n].name.as_ref()?;
                Some(BindingView {
                    aor,
                    node: (idx % n) as NodeId,
                    state,
                    last_result: b.last,
                    next_action: b.deadline(),
                    failures: b.failures,
                    granted_expires: b.granted,
                })
            })
    }

    /// The binding of `aor` on `node`, if any.
    pub fn binding(&self, aor: &str, node: NodeId) -> Option<BindingView<'_>> {
        let slot = *self.by_name.get(user_part(aor)?)? as usize;
        let n = self.nodes.len();
        if usize::from(node) >= n {
            return None;
        }
        let b = &self.bindings[slot * n + usize::from(node)];
        Some(BindingView {
            aor: self.aors[slot].name.as_ref()?,
            node,
            state: b.state()?,
            last_result: b.last,
            next_action: b.deadline(),
            failures: b.failures,
            granted_expires: b.granted,
        })
    }

    /// Whether the mirror considers `aor` live at `now`.
    pub fn is_live(&self, now: Instant, aor: &str) -> bool {
        user_part(aor)
            .and_then(|u| self.by_name.get(u))
            .is_some_and(|&s| self.aors[s as usize].is_live(now))
    }

    pub fn stats(&self) -> MirrorStats {
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
        s.live_aors = self
            .aors
            .iter()
            .filter(|a| a.name.is_some() && !a.removed && a.live_until.is_some())
            .count();
        for b in &self.bindings {
            if b.phase == Phase::Queued {
                s.queued += 1;
            }
            match b.state() {
                Some(BindingState::Registering) => s.registering += 1,
                Some(BindingState::Registered) => s.registered += 1,
                Some(BindingState::Unregistering) => s.unregistering += 1,
                Some(BindingState::Failed) => s.failed += 1,
                None => {}
            }
        }
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
            window: budget(&self.cfg, ns),
            challenges: ns.challenges,
            preemptive: ns.preemptive,
            preemptive_challenged: ns.preemptive_challenged,
            coverage: Coverage {
                desired: ns.desired,
                confirmed: ns.desired.saturating_sub(ns.pending),
                oldest_pending: ns.lag.peek().map(|Reverse((t, _))| *t),
            },
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
        self.ensure_started(now);
        let node = usize::from(node);
        let n = self.nodes.len();
        let mut r = AuditResult::default();
        if node >= n || !self.nodes[node].health.up {
            return r;
        }
        for slot in 0..self.aors.len() {
            let Some(name) = self.aors[slot].name.as_deref() else {
                continue;
            };
            let idx = slot * n + node;
            if self.bindings[idx].phase == Phase::Registered
                && !actual_users.contains(name)
                && self.wants_registration(now, idx)
            {
                let before = self.bindings[idx].state();
                self.bindings[idx].confirmed = false;
                self.start_op(now, idx, Op::Register);
                self.emit_change(idx, before, Some("missing on node".into()));
                self.schedule(idx);
                self.track(now, idx);
                r.missing += 1;
            }
        }
        if self.reconciled {
            for user in actual_users {
                if !valid_user(user) {
                    continue;
                }
                let slot = match self.by_name.get(user.as_str()) {
                    Some(&s) if self.aors[s as usize].is_live(now) => continue,
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
                    continue; // already on its way out
                }
                let b = &mut self.bindings[idx];
                b.server_bound = true;
                b.op = Op::Unregister;
                b.phase = Phase::Backoff; // not Absent, so the unregister starts
                self.start_op(now, idx, Op::Unregister);
                self.emit_change(idx, None, Some("stale on node".into()));
                self.schedule(idx);
                self.track(now, idx);
                r.stale += 1;
            }
        }
        self.counters.drift_repaired += (r.missing + r.stale) as u64;
        r
    }

    // ---- internals ----

    /// Schedules the first probes once a time is known.
    fn ensure_started(&mut self, now: Instant) {
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

    fn node_timer(&mut self, now: Instant, node: usize) {
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

    fn send_probe(&mut self, now: Instant, node: usize) {
        let id = self.next_txn;
        self.next_txn = self.next_txn.wrapping_add(1);
        let ns = &mut self.nodes[node];
        ns.health.cseq = ns.health.cseq.wrapping_add(1);
        ns.health.probes_sent += 1;
        let tcp = ns.node.transport == Transport::Tcp;
        let br = branch(self.prefix, PROBE_SLOT + (ns.uid & 0xFFFF), id);
        let mut payload = String::with_capacity(400);
        // Writing to a String cannot fail; every part is validated config.
        let _ = std::fmt::Write::write_fmt(
            &mut payload,
            format_args!(
                "OPTIONS sip:{addr} SIP/2.0\r\n\
                 Via: SIP/2.0/{t} {local};branch={br};rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:regmirror@{domain}>;tag={prefix:08x}p{uid:x}\r\n\
                 To: <sip:{addr}>\r\n\
                 Call-ID: {prefix:08x}-probe-{uid:x}\r\n\
                 CSeq: {cseq} OPTIONS\r\n\
                 User-Agent: {ua}\r\n\
                 Content-Length: 0\r\n\r\n",
                addr = ns.node.addr,
                t = if tcp { "TCP" } else { "UDP" },
                local = self.cfg.local_addr,
                domain = self.cfg.domain,
                prefix = self.prefix,
                uid = ns.uid,
                cseq = ns.health.cseq,
                ua = self.cfg.user_agent,
            ),
        );
        let payload = payload.into_bytes();
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
    fn match_probe(&mut self, now: Instant, from: SocketAddr, info: &ResponseInfo<'_>) -> bool {
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

    fn node_heard(&mut self, now: Instant, node: usize) {
        if self.nodes[node].health.heard(now) {
            self.events.push_back(Event::NodeUp {
                node: node as NodeId,
            });
            self.replay_node(now, node);
        }
    }

    /// The node is down: abort its transactions and park every binding on it. Its confirmed
    /// bindings turn pending: the node may come back without them.
    fn on_node_down(&mut self, now: Instant, node: usize) {
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
        ns.window = f64::MAX;
        ns.cut_until = None;
        ns.base_prev = None;
        ns.base_cur = None;
        ns.base_period_end = None;
    }

    /// Queues every binding of `node` for a paced replay, newest changed AOR first: registers
    /// the live ones, unregisters those the node may still hold.
    fn replay_node(&mut self, now: Instant, node: usize) {
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
    fn pump_replay(&mut self, now: Instant, node: usize) {
        if self.storm_holding(now) {
            return;
        }
        loop {
            let ns = &mut self.nodes[node];
            if !ns.health.up || ns.inflight >= budget(&self.cfg, ns) {
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
    fn launch_queued(&mut self, now: Instant, idx: usize) {
        let node = idx % self.nodes.len();
        self.nodes[node].inflight += 1;
        let before = self.bindings[idx].state();
        let b = &mut self.bindings[idx];
        b.phase = Phase::InFlight;
        b.rounds = 0;
        self.send_request(now, idx);
        self.emit_change(idx, before, None);
        self.schedule(idx);
    }

    /// Starts `op`, through the paced queue when reconciliation added the AOR.
    fn begin(&mut self, now: Instant, idx: usize, op: Op) {
        let n = self.nodes.len();
        if !self.aors[idx / n].paced || self.cfg.farm.replay_rate == 0 {
            self.start_op(now, idx, op);
            return;
        }
        let node = idx % n;
        let b = &mut self.bindings[idx];
        if b.phase == Phase::InFlight || b.phase == Phase::Queued {
            return;
        }
        b.op = op;
        b.failures = 0;
        b.action_at = None;
        b.phase = Phase::Queued;
        if self.nodes[node].health.up {
            self.nodes[node].replay.push_back(idx as u32);
            self.pump_replay(now, node);
        }
    }

    /// Changes the number of nodes: `map` gives each old node's new index (`None` = dropped).
    /// Transactions in flight keep their branches; `relocated` finds them.
    fn relayout(&mut self, new_n: usize, map: impl Fn(usize) -> Option<usize>) {
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

    /// Adjusts the node's window from one answer's round trip (`None` = no answer at all).
    fn congestion_feedback(&mut self, now: Instant, node: usize, rtt: Option<Duration>) {
        let target = self.cfg.farm.latency_target;
        if target.is_zero() {
            return;
        }
        let max = self.cfg.max_inflight_per_node.max(1) as f64;
        let ns = &mut self.nodes[node];
        ns.window = ns.window.min(max);
        if ns.base_period_end.is_none_or(|t| now >= t) {
            ns.base_prev = ns.base_cur.take();
            ns.base_period_end = Some(now + BASE_PERIOD);
        }
        if let Some(r) = rtt {
            ns.base_cur = Some(ns.base_cur.map_or(r, |b| b.min(r)));
        }
        let base = match (ns.base_prev, ns.base_cur) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or_default(),
        };
        // Congested: answers slower than the unloaded round trip by more than the target.
        if rtt.is_none_or(|r| r > base + target) {
            if ns.cut_until.is_none_or(|t| now >= t) {
                ns.window = (ns.window * 0.7).max(MIN_WINDOW);
                ns.cut_until = Some(now + target);
            }
        } else {
            ns.window = (ns.window + 1.0 / ns.window).min(max);
        }
    }

    /// A REGISTER got no answer for Timer F: with probing on, a node silent that long is down.
    fn register_timed_out(&mut self, now: Instant, node: usize) {
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

    fn forget_relocated(&mut self, txn: u32) {
        if !self.relocated.is_empty() {
            self.relocated.remove(&txn);
        }
    }

    fn alloc_aor(&mut self, user: &str) -> u32 {
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

    fn free_aor(&mut self, slot: u32) {
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

    fn reschedule_aor(&mut self, slot: u32) {
        let a = &mut self.aors[slot as usize];
        if a.live_until != a.scheduled {
            a.scheduled = a.live_until;
            if let Some(t) = a.live_until {
                self.queue.push(Reverse((t, slot | AOR_TIMER)));
            }
        }
    }

    /// Brings every binding of the AOR towards its desired state; frees the AOR when done.
    fn drive_aor(&mut self, now: Instant, slot: u32) {
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

    fn maybe_free_aor(&mut self, now: Instant, slot: u32) {
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

    fn wants_registration(&self, now: Instant, idx: usize) -> bool {
        let a = &self.aors[idx / self.nodes.len()];
        a.is_live(now) && a.credential.is_some()
    }

    /// Coverage bookkeeping after the binding, its AOR or its node changed (`Coverage`): counts
    /// it as desired while its AOR is live, and makes it pending when it is desired and its node
    /// may not hold it. Only the node's 2xx (`unpend` in `on_success`) or no longer being
    /// desired ends that: a binding being replayed counts again once it landed.
    fn track(&mut self, now: Instant, idx: usize) {
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
    }

    /// A desired binding the node may not hold: pending from `now` unless it already is.
    fn pend(&mut self, now: Instant, idx: usize) {
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
    fn untrack(&mut self, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.desired {
            b.desired = false;
            let ns = &mut self.nodes[idx % n];
            ns.desired = ns.desired.saturating_sub(1);
        }
        self.unpend(idx);
    }

    /// Ends the binding's pending time (confirmed, or no longer desired).
    fn unpend(&mut self, idx: usize) {
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

    /// Decides what a binding with no transaction in flight should do next.
    fn drive(&mut self, now: Instant, idx: usize) {
        let want = self.wants_registration(now, idx);
        let before = self.bindings[idx].state();
        let b = &mut self.bindings[idx];
        match b.phase {
            Phase::InFlight => {} // decided when the transaction ends
            Phase::Queued => {
                if want {
                    if b.op != Op::Register {
                        b.op = Op::Register;
                        b.failures = 0;
                    }
                } else if b.server_bound {
                    if b.op != Op::Unregister {
                        b.op = Op::Unregister;
                        b.failures = 0;
                    }
                } else {
                    self.remove_binding(idx);
                }
            }
            Phase::Absent => {
                if want {
                    self.begin(now, idx, Op::Register);
                }
            }
            Phase::Registered => {
                if !want {
                    self.start_op(now, idx, Op::Unregister);
                }
            }
            Phase::Backoff => match (want, b.op) {
                (true, Op::Unregister) => self.start_op(now, idx, Op::Register),
                (false, Op::Register) if b.server_bound => self.start_op(now, idx, Op::Unregister),
                (false, Op::Register) => self.remove_binding(idx),
                _ => {} // keep backing off
            },
        }
        self.emit_change(idx, before, None);
        self.schedule(idx);
        self.track(now, idx);
    }

    /// Begins `op` now, or queues it behind the node's send budget.
    fn start_op(&mut self, now: Instant, idx: usize, op: Op) {
        let node = idx % self.nodes.len();
        let storm = self.storm_holding(now);
        let b = &mut self.bindings[idx];
        if b.phase == Phase::InFlight {
            return; // decided when the transaction ends
        }
        if b.op != op {
            b.failures = 0;
        }
        b.op = op;
        b.action_at = None;
        if b.phase == Phase::Queued {
            return;
        }
        let ns = &mut self.nodes[node];
        if !ns.health.up {
            // Parked: the node is down; its replay starts this binding when it comes back.
            b.phase = Phase::Queued;
            return;
        }
        let refresh = b.confirmed && op == Op::Register;
        let held = !refresh && storm;
        if !held
            && ns.inflight < budget(&self.cfg, ns)
            && ns
                .rate
                .take(now, self.cfg.farm.max_register_rate, &mut self.rng)
        {
            ns.inflight += 1;
            b.phase = Phase::InFlight;
            b.rounds = 0;
            self.send_request(now, idx);
        } else {
            let queue = if refresh {
                &mut ns.refreshes
            } else {
                &mut ns.waiting
            };
            b.phase = Phase::Queued;
            queue.push_back(idx as u32);
        }
    }

    /// Ends the operation of `idx` and gives its send budget to the next waiting binding.
    fn finish_op(&mut self, now: Instant, idx: usize) {
        let node = idx % self.nodes.len();
        let ns = &mut self.nodes[node];
        ns.inflight = ns.inflight.saturating_sub(1);
        self.pump_waiting(now, node);
    }

    /// Starts queued bindings, refreshes first, then paced replays, as far as the send budget
    /// and `farm.max_register_rate` allow (only refreshes while a storm holds new work).
    fn pump_waiting(&mut self, now: Instant, node: usize) {
        let held = self.storm_holding(now);
        loop {
            let ns = &mut self.nodes[node];
            if !ns.health.up || ns.inflight >= budget(&self.cfg, ns) {
                return;
            }
            let queue = if ns.refreshes.is_empty() {
                if held {
                    return;
                }
                &mut ns.waiting
            } else {
                &mut ns.refreshes
            };
            let Some(&w) = queue.front() else {
                break;
            };
            let w = w as usize;
            if self.bindings[w].phase != Phase::Queued {
                queue.pop_front(); // started or dropped meanwhile
                continue;
            }
            if !ns
                .rate
                .take(now, self.cfg.farm.max_register_rate, &mut self.rng)
            {
                return;
            }
            queue.pop_front();
            self.launch_queued(now, w);
        }
        self.pump_replay(now, node);
    }

    /// Sends a new transaction of the binding's current op (first attempt or auth/423 retry).
    fn send_request(&mut self, now: Instant, idx: usize) {
        let n = self.nodes.len();
        let slot = idx / n;
        let (auth, auth_value, proxy) = self.authorization(now, idx);
        let node = &self.nodes[idx % n].node;
        let a = &self.aors[slot];
        let Some(user) = a.name.as_deref() else {
            return;
        };
        let b = &mut self.bindings[idx];
        b.cseq = b.cseq.wrapping_add(1);
        let expires = match b.op {
            Op::Register => self.cfg.register_expires.max(b.min_expires),
            Op::Unregister => 0,
        };
        let id = self.next_txn;
        self.next_txn = self.next_txn.wrapping_add(1);
        let br = branch(self.prefix, idx as u32, id);
        let uid = self.nodes[idx % n].uid;
        let call_id = call_id(self.prefix, slot, uid, a.gen);
        let tag = from_tag(self.prefix, slot, uid, a.gen);
        let tcp = node.transport == Transport::Tcp;
        let payload = RegisterRequest {
            domain: &self.cfg.domain,
            user,
            contact_host: &self.cfg.contact_host,
            local_addr: self.cfg.local_addr,
            tcp,
            branch: br.as_str(),
            call_id: call_id.as_str(),
            from_tag: tag.as_str(),
            cseq: b.cseq,
            expires,
            authorization: auth_value.as_deref().map(|v| (proxy, v)),
            user_agent: &self.cfg.user_agent,
        }
        .to_bytes();
        self.transmits.push_back(Transmit {
            dest: node.addr,
            transport: node.transport,
            payload: payload.clone(),
        });
        b.txn = Some(Box::new(Txn {
            id,
            cseq: b.cseq,
            expires,
            auth,
            timers: NonInviteClient::new(now, &self.timers, tcp),
            sent_at: now,
            payload,
        }));
        self.counters.transactions += 1;
    }

    fn match_transaction(&self, from: SocketAddr, info: &ResponseInfo<'_>) -> Option<usize> {
        let (idx, id) = parse_branch(info.branch?, self.prefix)?;
        let mut idx = idx as usize;
        let here = |i: usize| {
            self.bindings
                .get(i)
                .and_then(|b| b.txn.as_ref())
                .is_some_and(|t| t.id == id)
        };
        if !here(idx) {
            // Sent before `add_node`/`remove_node` moved the binding.
            idx = *self.relocated.get(&id)? as usize;
        }
        let b = self.bindings.get(idx)?;
        let t = b.txn.as_ref()?;
        let n = self.nodes.len();
        if t.id != id || info.cseq != Some(t.cseq) || !info.cseq_is_register {
            return None;
        }
        if self.nodes[idx % n].node.addr.ip() != from.ip() {
            return None;
        }
        let gen = self.aors[idx / n].gen;
        let got = info.call_id?;
        let expected = call_id(self.prefix, idx / n, self.nodes[idx % n].uid, gen);
        (got == expected.as_str()).then_some(idx)
    }

    fn on_final(&mut self, now: Instant, idx: usize, txn: Txn, info: &ResponseInfo<'_>) {
        let code = info.code;
        match code {
            200..=299 => self.on_success(now, idx, &txn, info),
            401 | 407 => self.on_challenge(now, idx, &txn, info, code == 407),
            423 if txn.expires > 0 => {
                let b = &mut self.bindings[idx];
                match info.min_expires {
                    Some(m) if m > txn.expires && b.rounds < MAX_ROUNDS => {
                        b.min_expires = m;
                        b.rounds += 1;
                        self.send_request(now, idx);
                    }
                    _ => self.on_failure(now, idx, LastResult::Status(code), None),
                }
            }
            // Nothing bound there: an unregister has nothing left to remove.
            404 if txn.expires == 0 => self.on_success(now, idx, &txn, info),
            503 => {
                let wait = info.retry_after.map(|s| {
                    // Capped: a node (or a forged answer) must not park a binding for years.
                    let d = Duration::from_secs(u64::from(s.min(MAX_RETRY_AFTER_S)));
                    // A little jitter so a node's shared Retry-After does not synchronise everyone.
                    d + d.mul_f64(self.rng.gen_range(0.0..0.1))
                });
                self.on_failure(now, idx, LastResult::Status(code), wait)
            }
            _ => self.on_failure(now, idx, LastResult::Status(code), None),
        }
    }

    fn on_success(&mut self, now: Instant, idx: usize, txn: &Txn, info: &ResponseInfo<'_>) {
        let n = self.nodes.len();
        let want = self.wants_registration(now, idx);
        let granted = match self.aors[idx / n].name.as_deref() {
            Some(user) => info.granted_expires(user, &self.cfg.contact_host),
            None => None,
        };
        let margin = self.timers.timer_f + REFRESH_SLACK;
        // With a storm hold, refresh that much earlier so a refresh due in a hold can wait.
        let hold = if self.storm_gated() {
            self.cfg.farm.storm_hold
        } else {
            Duration::ZERO
        };
        let b = &mut self.bindings[idx];
        b.last = LastResult::Status(info.code);
        b.failures = 0;
        if txn.expires > 0 {
            // Never longer than asked: a longer grant would push the refresh past what the
            // node will keep if it (or a forged answer) overstates it.
            let g = granted
                .filter(|&g| g > 0)
                .unwrap_or(txn.expires)
                .min(txn.expires);
            // The node has it: no longer pending (`Coverage`).
            self.unpend(idx);
            let b = &mut self.bindings[idx];
            let landed = !b.confirmed;
            b.granted = g;
            b.confirmed = true;
            b.server_bound = true;
            b.phase = Phase::Registered;
            let delay = if landed {
                first_refresh_delay(&mut self.rng, g, margin + hold)
            } else {
                refresh_delay(&mut self.rng, g, margin + hold)
            };
            let left = Duration::from_secs(u64::from(g)).saturating_sub(delay);
            let slack = left.saturating_sub(margin).min(hold).as_secs();
            b.refresh_slack = u16::try_from(slack).unwrap_or(u16::MAX);
            b.action_at = Some(now + delay);
            self.finish_op(now, idx);
            if !want {
                // The AOR died while this REGISTER was in flight.
                self.start_op(now, idx, Op::Unregister);
            }
        } else {
            b.server_bound = false;
            b.confirmed = false;
            b.granted = 0;
            b.phase = Phase::Backoff; // transient: not InFlight, so start_op/remove apply
            self.finish_op(now, idx);
            if want {
                self.start_op(now, idx, Op::Register);
            } else {
                self.remove_binding(idx);
            }
        }
    }

    fn on_challenge(
        &mut self,
        now: Instant,
        idx: usize,
        txn: &Txn,
        info: &ResponseInfo<'_>,
        proxy: bool,
    ) {
        self.counters.challenges += 1;
        let n = self.nodes.len();
        let slot = idx / n;
        let ns = &mut self.nodes[idx % n];
        ns.challenges += 1;
        if txn.auth == AuthSent::Preemptive {
            ns.preemptive_challenged += 1;
        }
        let challenges = info.challenges(proxy);
        let Some(cred) = self.aors[slot].credential.as_ref() else {
            self.on_failure(now, idx, LastResult::NoCredential, None);
            let a = &mut self.aors[slot];
            if !a.missing_reported && !a.removed {
                a.missing_reported = true;
                if let Some(name) = a.name.clone() {
                    self.events
                        .push_back(Event::CredentialMissing { aor: name });
                }
            }
            return;
        };
        let Some(chosen) = digest::choose(&challenges, &cred.secret) else {
            self.on_failure(now, idx, LastResult::NoUsableChallenge, None);
            return;
        };
        let stale = chosen.stale;
        let realm = self.remember_nonce(now, idx % n, &challenges, chosen, proxy);
        let b = &mut self.bindings[idx];
        b.realm = realm;
        b.auth_next = AuthNext::Fresh;
        // Signed with a credential replaced since (a refetch answered meanwhile): not a
        // rejection of the current one.
        let outdated = (self.aors[slot].cred_from_txn.wrapping_sub(txn.id) as i32) > 0;
        if !stale && txn.auth == AuthSent::Fresh && !outdated {
            self.counters.credential_rejected += 1;
            if let Some(name) = self.aors[slot].name.clone() {
                self.events.push_back(Event::CredentialRejected {
                    aor: name,
                    node: (idx % n) as NodeId,
                });
            }
            self.on_failure(now, idx, LastResult::CredentialRejected, None);
            return;
        }
        if b.rounds >= MAX_ROUNDS {
            self.on_failure(now, idx, LastResult::TooManyRoundTrips, None);
            return;
        }
        b.rounds += 1;
        self.send_request(now, idx);
    }

    /// Makes the challenges of `chosen`'s realm the node's latest nonce for that realm; returns
    /// its `Binding::realm` number.
    fn remember_nonce(
        &mut self,
        now: Instant,
        node: usize,
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
        let nonces = &mut self.nodes[node].nonces;
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

    /// The digest answer for the binding's next request, from its node's latest nonce of its
    /// realm: `(kind, header value, proxy)`.
    fn authorization(&mut self, now: Instant, idx: usize) -> (AuthSent, Option<String>, bool) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.rounds == 0 {
            b.auth_next = AuthNext::Preemptive; // a new attempt
        }
        let next = b.auth_next;
        if next == AuthNext::Fresh {
            b.auth_next = AuthNext::Again;
        }
        let none = (AuthSent::None, None, false);
        let Some(cred) = self.aors[idx / n].credential.as_ref() else {
            return none;
        };
        let ns = &mut self.nodes[idx % n];
        let Some(i) = pick_nonce(&ns.nonces, b.realm, &cred.secret) else {
            return none;
        };
        let entry = &mut ns.nonces[i];
        let reuse = self.cfg.farm.nonce_reuse;
        if next == AuthNext::Preemptive
            && (reuse.is_zero() || now.saturating_duration_since(entry.received) >= reuse)
        {
            return none;
        }
        let Some(ch) = digest::choose(&entry.challenges, &cred.secret) else {
            return none;
        };
        let nc = entry.nc.wrapping_add(1).max(1);
        let cnonce = format!("{:016x}", self.rng.gen::<u64>());
        let req = RequestInfo {
            method: "REGISTER",
            uri: self.request_uri.as_str(),
            body: b"",
        };
        let Ok(v) = digest::authorization(ch, &cred.username, &cred.secret, req, nc, &cnonce)
        else {
            return none;
        };
        entry.nc = nc;
        b.realm = i as u8 + 1;
        let kind = match next {
            AuthNext::Preemptive => {
                ns.preemptive += 1;
                AuthSent::Preemptive
            }
            AuthNext::Fresh => AuthSent::Fresh,
            AuthNext::Again => AuthSent::Cached,
        };
        (kind, Some(v), entry.proxy)
    }

    /// The attempt failed: back off (or give up an unregister after enough tries).
    fn on_failure(&mut self, now: Instant, idx: usize, why: LastResult, wait: Option<Duration>) {
        let want = self.wants_registration(now, idx);
        let b = &mut self.bindings[idx];
        b.last = why;
        b.confirmed = false;
        b.failures = b.failures.saturating_add(1);
        if b.op == Op::Register && why == LastResult::Timeout {
            b.server_bound = true; // it may have arrived
        }
        b.phase = Phase::Backoff;
        let op = b.op;
        let failures = b.failures;
        self.finish_op(now, idx);
        match op {
            Op::Unregister if want => self.start_op(now, idx, Op::Register),
            Op::Unregister if failures >= self.cfg.unregister_attempts => self.remove_binding(idx),
            Op::Register if !want => {
                if self.bindings[idx].server_bound {
                    self.start_op(now, idx, Op::Unregister)
                } else {
                    self.remove_binding(idx)
                }
            }
            _ => {
                let d = wait.unwrap_or_else(|| {
                    backoff(
                        &mut self.rng,
                        self.cfg.retry_base,
                        self.cfg.retry_max,
                        failures,
                    )
                });
                self.bindings[idx].action_at = Some(now + d);
            }
        }
    }

    fn remove_binding(&mut self, idx: usize) {
        let n = self.nodes.len();
        let b = &mut self.bindings[idx];
        if b.phase == Phase::Absent {
            return;
        }
        b.reset();
        if let Some(name) = self.aors[idx / n].name.clone() {
            self.events.push_back(Event::BindingRemoved {
                aor: name,
                node: (idx % n) as NodeId,
            });
        }
    }

    /// A binding timer fired.
    fn fire(&mut self, now: Instant, idx: usize) {
        let before = self.bindings[idx].state();
        if let Some(t) = self.bindings[idx].txn.as_mut() {
            if now >= t.timers.deadline() {
                match t.timers.on_timer(now, &self.timers) {
                    TimerAction::Retransmit => {
                        let node = &self.nodes[idx % self.nodes.len()].node;
                        self.transmits.push_back(Transmit {
                            dest: node.addr,
                            transport: node.transport,
                            payload: t.payload.clone(),
                        });
                        self.counters.retransmits += 1;
                    }
                    TimerAction::Timeout => {
                        if let Some(t) = self.bindings[idx].txn.take() {
                            self.forget_relocated(t.id);
                        }
                        self.counters.timeouts += 1;
                        self.congestion_feedback(now, idx % self.nodes.len(), None);
                        self.on_failure(now, idx, LastResult::Timeout, None);
                        self.register_timed_out(now, idx % self.nodes.len());
                    }
                    TimerAction::None => {}
                }
            }
        }
        let deferred = self.refresh_deferral(now, idx);
        let b = &mut self.bindings[idx];
        if b.txn.is_none() && b.action_at.is_some_and(|t| t <= now) {
            b.action_at = None;
            match b.phase {
                Phase::Registered if deferred.is_some() => {
                    b.action_at = deferred;
                    b.refresh_slack = 0;
                    self.counters.refreshes_deferred += 1;
                }
                Phase::Registered => self.start_op(now, idx, Op::Register),
                Phase::Backoff => {
                    let op = b.op;
                    self.events.push_back(Event::Retrying {
                        node: (idx % self.nodes.len()) as NodeId,
                    });
                    self.start_op(now, idx, op)
                }
                _ => {}
            }
        }
        self.emit_change(idx, before, None);
        self.track(now, idx);
        let slot = (idx / self.nodes.len()) as u32;
        self.maybe_free_aor(now, slot);
    }

    /// Where a refresh falling due in a storm hold waits: the hold's latest end, or as long as
    /// the binding's slack allows (None: refresh now).
    fn refresh_deferral(&self, now: Instant, idx: usize) -> Option<Instant> {
        let b = &self.bindings[idx];
        if b.refresh_slack == 0 || b.phase != Phase::Registered || !self.storm_holding(now) {
            return None;
        }
        let due = b.action_at?;
        let latest = due + Duration::from_secs(u64::from(b.refresh_slack));
        let until = self.storm.hold_end(self.cfg.farm.storm_hold)?.min(latest);
        (until > now).then_some(until)
    }

    /// Pushes a timer-queue entry when the binding's deadline moved.
    fn schedule(&mut self, idx: usize) {
        let b = &mut self.bindings[idx];
        let d = b.deadline();
        if d != b.scheduled {
            b.scheduled = d;
            if let Some(t) = d {
                self.queue.push(Reverse((t, idx as u32)));
            }
        }
    }

    fn compact_queue(&mut self) {
        let mut v = std::mem::take(&mut self.queue).into_vec();
        v.retain(|Reverse((at, key))| {
            if key & AOR_TIMER != 0 {
                self.aors[(key & !AOR_TIMER) as usize].scheduled == Some(*at)
            } else {
                self.bindings[*key as usize].scheduled == Some(*at)
            }
        });
        self.queue = BinaryHeap::from(v);
    }

    fn emit_change(&mut self, idx: usize, before: Option<BindingState>, reason: Option<String>) {
        let b = &self.bindings[idx];
        let Some(state) = b.state() else { return };
        if Some(state) == before {
            return;
        }
        let n = self.nodes.len();
        let Some(aor) = self.aors[idx / n].name.clone() else {
            return;
        };
        let reason = reason.unwrap_or_else(|| match (state, b.last) {
            (BindingState::Registering | BindingState::Unregistering, _)
                if b.phase != Phase::Backoff =>
            {
                String::from(if b.phase == Phase::Queued {
                    "queued"
                } else {
                    "sent"
                })
            }
            (_, last) => last.to_string(),
        });
        self.events.push_back(Event::BindingChanged {
            aor,
            node: (idx % n) as NodeId,
            state,
            reason,
        });
    }
}

/// Call-ID of a binding: stable for its AOR slot, node and slot generation.
fn call_id(prefix: u32, slot: usize, node_uid: u32, gen: u32) -> Id {
    let mut id = Id::new();
    id.hex(prefix.into(), 8)
        .push("-")
        .hex(slot as u64, 0)
        .push("-")
        .hex(node_uid.into(), 0)
        .push("-")
        .hex(gen.into(), 0);
    id
}

/// From tag of a binding: `{prefix:08x}{slot:x}n{node_uid:x}g{gen:x}`.
fn from_tag(prefix: u32, slot: usize, node_uid: u32, gen: u32) -> Id {
    let mut id = Id::new();
    id.hex(prefix.into(), 8)
        .hex(slot as u64, 0)
        .push("n")
        .hex(node_uid.into(), 0)
        .push("g")
        .hex(gen.into(), 0);
    id
}

/// The user part of an AOR (`user`, `user@domain`, `sip:user@domain`), if it is a valid one.
/// The congestion window never closes below this many operations in flight per node.
const MIN_WINDOW: f64 = 4.0;
/// How long a node's fastest answer counts as its unloaded round trip (two periods kept).
const BASE_PERIOD: Duration = Duration::from_secs(10);

/// Whether the node holds the binding's registration, as far as the mirror knows: it confirmed
/// it, is up, and no failure or unregister happened since (a refresh may be queued or in flight).
fn holds(ns: &NodeState, b: &Binding) -> bool {
    ns.health.up
        && b.confirmed
        && b.op == Op::Register
        && matches!(b.phase, Phase::Registered | Phase::Queued | Phase::InFlight)
}

/// Whether a lag-heap entry `(since, slot)` of `node` is current: that binding is still
/// pending since then.
fn pending_at(bindings: &[Binding], nodes: usize, node: usize, slot: u32, since: Instant) -> bool {
    bindings
        .get(slot as usize * nodes + node)
        .is_some_and(|b| b.pending_since == Some(since))
}

/// Operations a node may have in flight now: the fixed budget, or the congestion window.
fn budget(cfg: &MirrorConfig, ns: &NodeState) -> usize {
    if cfg.farm.latency_target.is_zero() {
        cfg.max_inflight_per_node
    } else {
        (ns.window.min(cfg.max_inflight_per_node as f64) as usize).max(MIN_WINDOW as usize)
    }
}

pub fn user_part(aor: &str) -> Option<&str> {
    let a = aor.trim();
    let a = a
        .strip_prefix("sip:")
        .or_else(|| a.strip_prefix("sips:"))
        .unwrap_or(a);
    let user = a.split_once('@').map_or(a, |(u, _)| u);
    valid_user(user).then_some(user)
}

/// Which of a node's nonces a binding answers: the realm that challenged it last; else, for a
/// stored HA1, its realm; else the newest. A wrong guess costs one challenge, then it is learnt.
fn pick_nonce(nonces: &[NodeNonce], known: u8, secret: &Secret) -> Option<usize> {
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
