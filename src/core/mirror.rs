//! Desired state (live AORs x nodes) driving every binding. Sans-IO: feed snapshots, responses
//! and timeouts in; drain transmits and events out; sleep until `poll_timeout`.
//!
//! Layout for scale: AORs live in a slab and their bindings in one dense `Vec`, binding slot =
//! `aor_slot * nodes + node`, so a response's Via branch (which encodes the slot) finds its
//! binding without a map. One timer-queue entry per binding (lazy deletion). Each node has a
//! send budget (`max_inflight_per_node`): bindings beyond it wait in a FIFO, which is also where
//! node health and replay pacing plug in later.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::binding::{
    backoff, refresh_delay, valid_user, AuthSent, Binding, Op, Phase, RegisterRequest,
    ResponseInfo, Txn,
};
pub use super::binding::{BindingState, LastResult};
use super::digest::{self, Challenge, RequestInfo, Secret};
use super::transaction::{branch, parse_branch, NonInviteClient, TimerAction, Timers};

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

#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub credential_rejected: u64,
    pub stray_responses: u64,
    pub stale_snapshots: u64,
    pub invalid_aors: u64,
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
}

/// Immediate re-sends (challenges, 423) allowed in one attempt before it counts as failed.
const MAX_ROUNDS: u8 = 4;
/// Refresh this long before the granted expiry, beyond Timer F.
const REFRESH_SLACK: Duration = Duration::from_secs(4);
/// Timer-queue keys with this bit are AOR expiry timers.
const AOR_TIMER: u32 = 1 << 31;

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
}

impl Aor {
    fn is_live(&self, now: Instant) -> bool {
        !self.removed && self.live_until.is_some_and(|t| t > now)
    }
}

#[derive(Debug)]
struct NodeState {
    node: Node,
    inflight: usize,
    waiting: VecDeque<u32>,
    /// Last challenge seen from this node: bindings that get an equal one share the Arc.
    last_challenge: Option<Arc<Challenge>>,
}

pub struct Mirror {
    cfg: MirrorConfig,
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
        Mirror {
            cfg: config,
            timers,
            nodes: nodes
                .into_iter()
                .map(|node| NodeState {
                    node,
                    inflight: 0,
                    waiting: VecDeque::new(),
                    last_challenge: None,
                })
                .collect(),
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
        let Some(user) = user_part(aor) else {
            self.counters.invalid_aors += 1;
            return;
        };
        let Some(&slot) = self.by_name.get(user) else {
            return;
        };
        let n = self.nodes.len();
        match credential {
            Some(c) => {
                let a = &mut self.aors[slot as usize];
                a.credential = Some(c);
                a.removed = false;
                a.missing_reported = false;
                // Attempts that failed for want of a (right) credential retry now.
                for node in 0..n {
                    let idx = slot as usize * n + node;
                    let b = &self.bindings[idx];
                    if b.phase == Phase::Backoff
                        && b.op == Op::Register
                        && matches!(
                            b.last,
                            LastResult::CredentialRejected
                                | LastResult::NoCredential
                                | LastResult::NoUsableChallenge
                        )
                    {
                        self.start_op(now, idx, Op::Register);
                    }
                }
            }
            None => self.aors[slot as usize].removed = true,
        }
        self.drive_aor(now, slot);
    }

    /// A response from the network. Responses that match no transaction in flight are counted.
    pub fn handle_response(&mut self, now: Instant, from: SocketAddr, response: &rsip::Response) {
        let info = ResponseInfo::from_response(response);
        let Some(idx) = self.match_transaction(from, &info) else {
            self.counters.stray_responses += 1;
            return;
        };
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
        self.on_final(now, idx, *txn, &info);
        self.emit_change(idx, before, None);
        self.schedule(idx);
        self.maybe_free_aor(now, (idx / self.nodes.len()) as u32);
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
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
        // Lazy deletion leaves dead entries behind; rebuild when they dominate.
        if self.queue.len() > 64 + 2 * (self.bindings.len() + self.aors.len()) {
            self.compact_queue();
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Earliest timer (may be one that turns out to be cancelled: waking then is harmless).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((at, _))| *at)
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
            ..Default::default()
        };
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

    // ---- internals ----

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
                });
                self.bindings.extend((0..n).map(|_| Binding::default()));
                (self.aors.len() - 1) as u32
            }
        };
        self.by_name.insert(name, slot);
        slot
    }

    fn free_aor(&mut self, slot: u32) {
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

    /// Decides what a binding with no transaction in flight should do next.
    fn drive(&mut self, now: Instant, idx: usize) {
        let want = self.wants_registration(now, idx);
        let before = self.bindings[idx].state();
        let b = &mut self.bindings[idx];
        match b.phase {
            Phase::InFlight => return, // decided when the transaction ends
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
                    self.start_op(now, idx, Op::Register);
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
    }

    /// Begins `op` now, or queues it behind the node's send budget.
    fn start_op(&mut self, now: Instant, idx: usize, op: Op) {
        let node = idx % self.nodes.len();
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
        if ns.inflight < self.cfg.max_inflight_per_node {
            ns.inflight += 1;
            b.phase = Phase::InFlight;
            b.rounds = 0;
            self.send_request(now, idx);
        } else {
            b.phase = Phase::Queued;
            ns.waiting.push_back(idx as u32);
        }
    }

    /// Ends the operation of `idx` and gives its send budget to the next waiting binding.
    fn finish_op(&mut self, now: Instant, idx: usize) {
        let node = idx % self.nodes.len();
        let ns = &mut self.nodes[node];
        ns.inflight = ns.inflight.saturating_sub(1);
        while let Some(w) = self.nodes[node].waiting.pop_front() {
            let w = w as usize;
            if self.bindings[w].phase == Phase::Queued {
                let before = self.bindings[w].state();
                self.nodes[node].inflight += 1;
                let b = &mut self.bindings[w];
                b.phase = Phase::InFlight;
                b.rounds = 0;
                self.send_request(now, w);
                self.emit_change(w, before, None);
                self.schedule(w);
                break;
            }
        }
    }

    /// Sends a new transaction of the binding's current op (first attempt or auth/423 retry).
    fn send_request(&mut self, now: Instant, idx: usize) {
        let n = self.nodes.len();
        let slot = idx / n;
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
        let uri = format!("sip:{}", self.cfg.domain);
        let mut auth = AuthSent::None;
        let mut auth_value = None;
        if let (Some(ch), Some(cred)) = (b.challenge.as_deref(), a.credential.as_ref()) {
            if cred.secret.can_answer(ch) {
                b.nc = b.nc.wrapping_add(1);
                let cnonce = format!("{:016x}", b.cnonce);
                let req = RequestInfo {
                    method: "REGISTER",
                    uri: &uri,
                    body: b"",
                };
                if let Ok(v) =
                    digest::authorization(ch, &cred.username, &cred.secret, req, b.nc, &cnonce)
                {
                    auth = if b.nc == 1 {
                        AuthSent::Fresh
                    } else {
                        AuthSent::Cached
                    };
                    auth_value = Some(v);
                }
            }
        }
        let id = self.next_txn;
        self.next_txn = self.next_txn.wrapping_add(1);
        let br = branch(self.prefix, idx as u32, id);
        let call_id = format!("{:08x}-{:x}-{:x}", self.prefix, idx, a.gen);
        let tag = format!("{:08x}{:x}g{:x}", self.prefix, idx, a.gen);
        let tcp = node.transport == Transport::Tcp;
        let payload = RegisterRequest {
            domain: &self.cfg.domain,
            user,
            contact_host: &self.cfg.contact_host,
            local_addr: self.cfg.local_addr,
            tcp,
            branch: &br,
            call_id: &call_id,
            from_tag: &tag,
            cseq: b.cseq,
            expires,
            authorization: auth_value.as_deref().map(|v| (b.proxy_auth, v)),
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
            payload,
        }));
        self.counters.transactions += 1;
    }

    fn match_transaction(&self, from: SocketAddr, info: &ResponseInfo<'_>) -> Option<usize> {
        let (idx, id) = parse_branch(info.branch?, self.prefix)?;
        let idx = idx as usize;
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
        let call_id = info.call_id?;
        let expected = format!("{:08x}-{:x}-{:x}", self.prefix, idx, gen);
        (call_id == expected).then_some(idx)
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
                    let d = Duration::from_secs(u64::from(s));
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
        let b = &mut self.bindings[idx];
        b.last = LastResult::Status(info.code);
        b.failures = 0;
        if txn.expires > 0 {
            let g = granted.filter(|&g| g > 0).unwrap_or(txn.expires);
            b.granted = g;
            b.confirmed = true;
            b.server_bound = true;
            b.phase = Phase::Registered;
            b.action_at = Some(now + refresh_delay(&mut self.rng, g, margin));
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
        let chosen = self.intern_challenge(idx % n, chosen);
        let b = &mut self.bindings[idx];
        b.challenge = Some(chosen);
        b.proxy_auth = proxy;
        b.nc = 0;
        b.cnonce = self.rng.gen();
        if !stale && txn.auth == AuthSent::Fresh {
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

    fn intern_challenge(&mut self, node: usize, ch: &Challenge) -> Arc<Challenge> {
        let cache = &mut self.nodes[node].last_challenge;
        if let Some(c) = cache.as_ref().filter(|c| ***c == *ch) {
            return c.clone();
        }
        let c = Arc::new(ch.clone());
        *cache = Some(c.clone());
        c
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
                        self.bindings[idx].txn = None;
                        self.counters.timeouts += 1;
                        self.on_failure(now, idx, LastResult::Timeout, None);
                    }
                    TimerAction::None => {}
                }
            }
        }
        let b = &mut self.bindings[idx];
        if b.txn.is_none() && b.action_at.is_some_and(|t| t <= now) {
            b.action_at = None;
            match b.phase {
                Phase::Registered => self.start_op(now, idx, Op::Register),
                Phase::Backoff => {
                    let op = b.op;
                    self.start_op(now, idx, op)
                }
                _ => {}
            }
        }
        self.emit_change(idx, before, None);
        let slot = (idx / self.nodes.len()) as u32;
        self.maybe_free_aor(now, slot);
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

/// The user part of an AOR (`user`, `user@domain`, `sip:user@domain`), if it is a valid one.
pub fn user_part(aor: &str) -> Option<&str> {
    let a = aor.trim();
    let a = a
        .strip_prefix("sip:")
        .or_else(|| a.strip_prefix("sips:"))
        .unwrap_or(a);
    let user = a.split_once('@').map_or(a, |(u, _)| u);
    valid_user(user).then_some(user)
}
