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
//!
//! Where each part lives: `aor` (the AOR slab, timers, pending tracking), `transitions`
//! (carrying out the steps of `core::binding`'s state machine: budget, send, digest, events),
//! `node` (`NodeState` and per-node probes, health, replay, nonces and the send budget), `membership` (nodes added and removed, `reconcile`, `audit`),
//! `views` (read-only state for status and metrics); this file holds the types and the entry
//! points.

mod aor;
mod membership;
mod node;
mod transitions;
mod views;

use node::{holds, pending_at, NodeState};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::binding::{
    AuthNext, AuthSent, Binding, Final, NodeNonce, Op, Phase, Policy, Step, Txn, TxnTimer,
    NODE_REALMS,
};
pub use super::binding::{BindingState, LastResult};
use super::digest::{self, Challenge, RequestInfo, Secret};
pub use super::farm::FarmConfig;
use super::farm::{Health, HealthAction, Pacer, Probe, StormGate};
use super::response::ResponseInfo;
use super::sip::valid_user_part;
use super::transaction::{branch, parse_branch, Id, NonInviteClient, Timers};

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
        /// Failed attempts in a row so far (0 after a success).
        failures: u16,
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

impl Event {
    /// A failing binding starting again, or failing again, after its first failure was told: a
    /// node's `Retry-After` (300 s for a user's endpoint in maintenance) or a backoff would
    /// otherwise say the same thing twice per retry for as long as it lasts.
    pub fn is_retry_of_a_failure(&self) -> bool {
        match self {
            Event::BindingChanged {
                state, failures, ..
            } => match state {
                BindingState::Failed => *failures > 1,
                BindingState::Registering | BindingState::Unregistering => *failures > 0,
                BindingState::Registered => false,
            },
            _ => false,
        }
    }
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
    pub counts: BindingCounts,
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

/// A node's bindings by state, kept as each changes: a summary reads them in O(nodes), not by
/// walking the bindings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindingCounts {
    pub registering: usize,
    pub registered: usize,
    pub unregistering: usize,
    pub failed: usize,
    /// Waiting for the node's send budget (or a paced queue).
    pub queued: usize,
    /// Registered though no longer desired (their AOR is not live): drift.
    pub registered_undesired: usize,
}

impl BindingCounts {
    /// What a binding is counted under: its state (0 none, 1 registering, 2 registered,
    /// 3 unregistering, 4 failed), 8 if queued, 16 if desired.
    pub(crate) fn key(b: &Binding) -> u8 {
        let state = match b.state() {
            None => 0,
            Some(BindingState::Registering) => 1,
            Some(BindingState::Registered) => 2,
            Some(BindingState::Unregistering) => 3,
            Some(BindingState::Failed) => 4,
        };
        state | u8::from(b.phase == Phase::Queued) << 3 | u8::from(b.desired) << 4
    }

    fn count(&mut self, key: u8, add: bool) {
        let step = |v: &mut usize| *v = if add { *v + 1 } else { v.saturating_sub(1) };
        match key & 7 {
            1 => step(&mut self.registering),
            2 => {
                step(&mut self.registered);
                if key & 16 == 0 {
                    step(&mut self.registered_undesired);
                }
            }
            3 => step(&mut self.unregistering),
            4 => step(&mut self.failed),
            _ => {}
        }
        if key & 8 != 0 {
            step(&mut self.queued);
        }
    }

    /// Moves a binding from `from` to `to`.
    pub(crate) fn recount(&mut self, from: u8, to: u8) {
        self.count(from, false);
        self.count(to, true);
    }

    /// Bindings differing from the desired state, given how many are desired: registered and
    /// not desired, plus desired and not registered.
    pub fn drift(&self, desired: usize) -> usize {
        let registered_desired = self.registered.saturating_sub(self.registered_undesired);
        self.registered_undesired + desired.saturating_sub(registered_desired)
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
    /// Since when the binding has differed from what is wanted (a desired binding the node does
    /// not hold yet, or one left over): its age as a problem.
    pub waiting_since: Option<Instant>,
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

impl MirrorStats {
    /// Bindings in any state.
    pub fn bindings(&self) -> usize {
        self.registering + self.registered + self.unregistering + self.failed
    }
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
                self.retry_now(now, idx);
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
        let node = idx % self.nodes.len();
        self.node_heard(now, node);
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
        self.congestion_feedback(now, node, Some(round_trip));
        self.events.push_back(Event::TransactionDone {
            node: node as NodeId,
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
            let can_send = ns.health.up && ns.inflight < ns.budget(&self.cfg);
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
}

pub fn user_part(aor: &str) -> Option<&str> {
    let a = aor.trim();
    let a = a
        .strip_prefix("sip:")
        .or_else(|| a.strip_prefix("sips:"))
        .unwrap_or(a);
    let user = a.split_once('@').map_or(a, |(u, _)| u);
    valid_user_part(user).then_some(user)
}
