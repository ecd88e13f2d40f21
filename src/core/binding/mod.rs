//! One (AOR, node) registration: its compact record and its state machine. Each transition
//! takes what happened (a start, a final response, a challenge, a failure, a timer) and whether
//! the AOR is still wanted, and returns one `Step` for the mirror to carry out (send, queue,
//! retry, remove). The node's send budget, digest nonces and the AOR table are the mirror's.

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;

use super::digest::Challenge;
use super::transaction::{NonInviteClient, TimerAction, Timers};

/// What the binding is doing, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingState {
    /// A REGISTER is queued or in flight and the node has not confirmed the binding yet.
    Registering,
    /// The node confirmed the binding; refreshes keep this state unless they fail.
    Registered,
    /// An Expires: 0 REGISTER is queued, in flight, or waiting for a retry.
    Unregistering,
    /// The last REGISTER failed; backing off before the next attempt.
    Failed,
}

impl BindingState {
    /// The name operators read (status, metrics labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            BindingState::Registering => "registering",
            BindingState::Registered => "registered",
            BindingState::Unregistering => "unregistering",
            BindingState::Failed => "failed",
        }
    }
}

impl fmt::Display for BindingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Outcome of the binding's last transaction, kept in 4 bytes instead of a String.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LastResult {
    None,
    /// A final response with this status code.
    Status(u16),
    /// Timer F fired.
    Timeout,
    /// A fresh digest answer was challenged again without `stale`.
    CredentialRejected,
    /// Challenged but no credential is known for the AOR.
    NoCredential,
    /// Challenged with nothing the credential can answer (algorithm, realm of a stored HA1, qop).
    NoUsableChallenge,
    /// Too many challenge or 423 round trips in one attempt.
    TooManyRoundTrips,
}

impl fmt::Display for LastResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LastResult::None => f.write_str("-"),
            LastResult::Status(c) => write!(f, "{c} {}", reason_phrase(*c)),
            LastResult::Timeout => f.write_str("timeout"),
            LastResult::CredentialRejected => f.write_str("credential rejected"),
            LastResult::NoCredential => f.write_str("no credential"),
            LastResult::NoUsableChallenge => f.write_str("no usable challenge"),
            LastResult::TooManyRoundTrips => f.write_str("too many round trips"),
        }
    }
}

/// Standard reason phrases for the codes a registrar sends (rsip's Display gives CamelCase).
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        486 => "Busy Here",
        489 => "Bad Event",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Server Time-out",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        c if c < 200 => "Provisional",
        c if c < 300 => "Success",
        c if c < 400 => "Redirection",
        c if c < 500 => "Client Error",
        c if c < 600 => "Server Error",
        _ => "Global Failure",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Register,
    Unregister,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No binding on this node and nothing to do.
    Absent,
    /// Waiting for the node's send budget.
    Queued,
    /// A transaction of `op` is in flight.
    InFlight,
    /// Confirmed; `action_at` is the refresh.
    Registered,
    /// The last attempt of `op` failed; `action_at` is the retry.
    Backoff,
}

/// Whether the request carried a digest answer, and on which nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthSent {
    None,
    /// Preemptive answer with the node's latest nonce, received for another transaction: a
    /// plain 401 may just mean it expired or belongs to another realm.
    Preemptive,
    /// Reused the nonce that challenged this attempt (after a 423): same as `Preemptive`.
    Cached,
    /// First answer to a nonce just received: a plain 401 means the credential is wrong.
    Fresh,
}

/// How the binding's next request in the current attempt authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthNext {
    /// Not challenged in this attempt: answer preemptively while the node's nonce is young.
    Preemptive,
    /// Answer the challenge that just arrived.
    Fresh,
    /// Challenged earlier in this attempt: keep answering with the node's nonce, whatever its age.
    Again,
}

/// The in-flight transaction. Boxed so idle bindings stay small.
#[derive(Debug)]
pub(crate) struct Txn {
    pub id: u32,
    pub cseq: u32,
    pub expires: u32,
    pub auth: AuthSent,
    pub timers: NonInviteClient,
    /// When the request first left: the answer's round trip drives the node's window.
    pub sent_at: Instant,
    /// Kept for retransmission.
    pub payload: Vec<u8>,
}

/// The latest challenge a node sent for one realm, shared by every binding on that node.
/// Asterisk's nonce depends on time, source address and realm only, not on the user, so any
/// binding of the realm may answer it until it expires (RFC 7616 3.4: nonce-count per nonce).
#[derive(Debug)]
pub(crate) struct NodeNonce {
    /// Every challenge of the response in this realm (one per algorithm), nonces included.
    pub challenges: Vec<Challenge>,
    /// The challenge came in a 407.
    pub proxy: bool,
    pub received: Instant,
    /// Last nonce-count sent with it, by any binding.
    pub nc: u32,
}

impl NodeNonce {
    pub fn realm(&self) -> &str {
        self.challenges.first().map_or("", |c| c.realm.as_str())
    }
}

/// Realms remembered per node; a farm normally has one.
pub(crate) const NODE_REALMS: usize = 8;

/// One (AOR, node) binding. Around 100 bytes; the AOR name and credential live in the AOR.
#[derive(Debug)]
pub(crate) struct Binding {
    /// The deadline of the one live timer-queue entry for this binding (lazy deletion).
    pub scheduled: Option<Instant>,
    /// Refresh (Registered) or retry (Backoff) time.
    pub action_at: Option<Instant>,
    pub txn: Option<Box<Txn>>,
    pub cseq: u32,
    /// Expiry granted by the node on the last 200.
    pub granted: u32,
    /// Min-Expires learnt from a 423 (0 = none).
    pub min_expires: u32,
    pub failures: u16,
    /// Seconds the pending refresh may wait past `action_at` and keep its margin before the
    /// node's expiry (`FarmConfig::storm_hold`); 0 once it waited or for a short grant.
    pub refresh_slack: u16,
    /// Challenge/423 round trips within the current attempt.
    pub rounds: u8,
    pub phase: Phase,
    pub op: Op,
    /// 1 + index of the node's `NodeNonce` that last challenged this binding (0 = none yet).
    pub realm: u8,
    pub auth_next: AuthNext,
    /// The node confirmed the binding and no failure happened since.
    pub confirmed: bool,
    /// The node may hold a binding (so forgetting it needs an unregister).
    pub server_bound: bool,
    pub last: LastResult,
    /// Coverage bookkeeping (`mirror::Coverage`), which survives `reset`: counted in its node's
    /// desired bindings.
    pub desired: bool,
    /// Desired and not confirmed since then (an entry in its node's lag heap).
    pub pending_since: Option<Instant>,
    /// What its node's `BindingCounts` hold for it (`BindingCounts::key`), which survives
    /// `reset` like the coverage bookkeeping: the counts follow the binding, not the reset.
    pub counted: u8,
}

impl Default for Binding {
    fn default() -> Self {
        Binding {
            scheduled: None,
            action_at: None,
            txn: None,
            cseq: 0,
            granted: 0,
            min_expires: 0,
            failures: 0,
            refresh_slack: 0,
            rounds: 0,
            phase: Phase::Absent,
            op: Op::Register,
            realm: 0,
            auth_next: AuthNext::Preemptive,
            confirmed: false,
            server_bound: false,
            last: LastResult::None,
            desired: false,
            pending_since: None,
            counted: 0,
        }
    }
}

impl Binding {
    /// Earliest time anything is due for this binding.
    pub fn deadline(&self) -> Option<Instant> {
        let t = self.txn.as_ref().map(|t| t.timers.deadline());
        match (t, self.action_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Public state; `None` when absent.
    pub fn state(&self) -> Option<BindingState> {
        Some(match (self.phase, self.op) {
            (Phase::Absent, _) => return None,
            (_, Op::Unregister) => BindingState::Unregistering,
            (Phase::Backoff, Op::Register) => BindingState::Failed,
            (Phase::Registered, Op::Register) => BindingState::Registered,
            (Phase::Queued | Phase::InFlight, Op::Register) if self.confirmed => {
                BindingState::Registered
            }
            (Phase::Queued | Phase::InFlight, Op::Register) => BindingState::Registering,
        })
    }

    /// Forget everything but the CSeq (the Call-ID may be reused by the same slot generation)
    /// and the coverage bookkeeping (its node's counters follow it, not the reset).
    pub fn reset(&mut self) {
        *self = Binding {
            cseq: self.cseq,
            desired: self.desired,
            pending_since: self.pending_since,
            counted: self.counted,
            ..Binding::default()
        };
    }
}

/// Immediate re-sends (challenges, 423) allowed in one attempt before it counts as failed.
pub(crate) const MAX_ROUNDS: u8 = 4;
/// The longest `Retry-After` honoured (seconds): RFC 5626's longest backoff.
pub(crate) const MAX_RETRY_AFTER_S: u32 = 1800;

/// The settings a binding's transitions read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Failed unregisters after which the binding is forgotten anyway.
    pub unregister_attempts: u16,
    /// Refresh this long before the grant runs out (Timer F and some slack).
    pub refresh_margin: Duration,
    /// Refreshes are planned this much earlier so one falling due in a storm hold can wait
    /// (`FarmConfig::storm_hold`; zero without a storm gate).
    pub storm_hold: Duration,
}

/// What the mirror does for a binding after one of its transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing until its next timer or response.
    Wait,
    /// Start a registration, through the paced queue when reconciliation added the AOR.
    Begin,
    /// Start `op` now or behind the node's send budget.
    Start(Op),
    /// Back off no longer: start the operation again (counted as a retry).
    Retry,
    /// Send the attempt's next request (a challenge's answer, a longer Expires after a 423).
    Resend,
    /// A refresh fell due in a storm hold and waits (`action_at` moved).
    Deferred,
    /// Forget the binding.
    Remove,
}

/// What a final response means for the attempt in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Final {
    /// The node did it (or, for an unregister, has nothing bound).
    Success,
    /// 401 or 407 (`proxy`): answer it if the credential can.
    Challenge { proxy: bool },
    /// Send again now (`Resend`).
    Resend,
    /// The attempt failed; wait this long if the node said so.
    Failed(LastResult, Option<Duration>),
}

/// What a binding's transaction timer did.
#[derive(Debug)]
pub(crate) enum TxnTimer {
    Quiet,
    /// Send the request again (`Txn::payload`).
    Retransmit,
    /// Timer F fired: the transaction is over without an answer.
    TimedOut(Box<Txn>),
}

/// The transitions: each takes what happened (and whether the AOR is still wanted), updates
/// the record and returns the one `Step` the mirror carries out. A transition that ends a
/// transaction (`on_success`, `on_failure`) leaves the node's send budget to the mirror.
impl Binding {
    /// With nothing in flight: what the binding does now that its AOR is (or is not) wanted.
    pub fn on_want(&mut self, want: bool) -> Step {
        match self.phase {
            Phase::InFlight => Step::Wait, // decided when the transaction ends
            Phase::Queued => {
                let op = if want {
                    Op::Register
                } else if self.server_bound {
                    Op::Unregister
                } else {
                    return Step::Remove;
                };
                if self.op != op {
                    self.op = op;
                    self.failures = 0;
                }
                Step::Wait
            }
            Phase::Absent if want => Step::Begin,
            Phase::Registered if !want => Step::Start(Op::Unregister),
            Phase::Backoff => match (want, self.op) {
                (true, Op::Unregister) => Step::Start(Op::Register),
                (false, Op::Register) if self.server_bound => Step::Start(Op::Unregister),
                (false, Op::Register) => Step::Remove,
                _ => Step::Wait, // keep backing off
            },
            Phase::Absent | Phase::Registered => Step::Wait,
        }
    }

    /// Takes `op` on; false when nothing more is to be done now (in flight or already queued).
    pub fn retarget(&mut self, op: Op) -> bool {
        if self.phase == Phase::InFlight {
            return false;
        }
        if self.op != op {
            self.failures = 0;
        }
        self.op = op;
        self.action_at = None;
        self.phase != Phase::Queued
    }

    /// Takes `op` on and waits in a queue; false when it is in flight or queued already.
    pub fn enqueue(&mut self, op: Op) -> bool {
        if matches!(self.phase, Phase::InFlight | Phase::Queued) {
            return false;
        }
        self.op = op;
        self.failures = 0;
        self.action_at = None;
        self.phase = Phase::Queued;
        true
    }

    /// A new attempt goes in flight.
    pub fn launch(&mut self) {
        self.phase = Phase::InFlight;
        self.rounds = 0;
    }

    /// The next request's CSeq and Expires (`register_expires` or the node's Min-Expires).
    pub fn next_request(&mut self, register_expires: u32) -> (u32, u32) {
        self.cseq = self.cseq.wrapping_add(1);
        let expires = match self.op {
            Op::Register => register_expires.max(self.min_expires),
            Op::Unregister => 0,
        };
        (self.cseq, expires)
    }

    /// A final response to `txn` (already taken off the binding).
    pub fn on_final<R: Rng>(
        &mut self,
        txn: &Txn,
        code: u16,
        min_expires: Option<u32>,
        retry_after: Option<u32>,
        rng: &mut R,
    ) -> Final {
        let success = code < 300 || (code == 404 && txn.expires == 0);
        if success {
            self.last = LastResult::Status(code);
        }
        match code {
            200..=299 => Final::Success,
            401 | 407 => Final::Challenge { proxy: code == 407 },
            423 if txn.expires > 0 => match min_expires {
                Some(m) if m > txn.expires && self.rounds < MAX_ROUNDS => {
                    self.min_expires = m;
                    self.rounds += 1;
                    Final::Resend
                }
                _ => Final::Failed(LastResult::Status(code), None),
            },
            // Nothing bound there: an unregister has nothing left to remove.
            404 if txn.expires == 0 => Final::Success,
            503 => {
                let wait = retry_after.map(|s| {
                    // Capped: a node (or a forged answer) must not park a binding for years.
                    let d = Duration::from_secs(u64::from(s.min(MAX_RETRY_AFTER_S)));
                    // A little jitter so a node's shared Retry-After does not synchronise everyone.
                    d + d.mul_f64(rng.gen_range(0.0..0.1))
                });
                Final::Failed(LastResult::Status(code), wait)
            }
            _ => Final::Failed(LastResult::Status(code), None),
        }
    }

    /// The node accepted `txn` (asked for `txn.expires` s, granted `granted` if it said; `on_final`
    /// recorded the code).
    pub fn on_success<R: Rng>(
        &mut self,
        now: Instant,
        txn: &Txn,
        granted: Option<u32>,
        want: bool,
        policy: &Policy,
        rng: &mut R,
    ) -> Step {
        self.failures = 0;
        if txn.expires == 0 {
            self.server_bound = false;
            self.confirmed = false;
            self.granted = 0;
            self.phase = Phase::Backoff; // transient: not InFlight, so start and remove apply
            return if want {
                Step::Start(Op::Register)
            } else {
                Step::Remove
            };
        }
        // Never longer than asked: a longer grant would push the refresh past what the node
        // will keep if it (or a forged answer) overstates it.
        let g = granted
            .filter(|&g| g > 0)
            .unwrap_or(txn.expires)
            .min(txn.expires);
        let landed = !self.confirmed;
        self.granted = g;
        self.confirmed = true;
        self.server_bound = true;
        self.phase = Phase::Registered;
        let margin = policy.refresh_margin + policy.storm_hold;
        let delay = if landed {
            first_refresh_delay(rng, g, margin)
        } else {
            refresh_delay(rng, g, margin)
        };
        let left = Duration::from_secs(u64::from(g)).saturating_sub(delay);
        let slack = left
            .saturating_sub(policy.refresh_margin)
            .min(policy.storm_hold)
            .as_secs();
        self.refresh_slack = u16::try_from(slack).unwrap_or(u16::MAX);
        self.action_at = Some(now + delay);
        if want {
            Step::Wait
        } else {
            Step::Start(Op::Unregister) // the AOR died while this REGISTER was in flight
        }
    }

    /// A challenge the credential can answer (`stale` per the node; `realm` is the node's
    /// nonce entry it came in). `outdated`: `txn` was signed with a credential replaced since.
    pub fn on_challenge(
        &mut self,
        txn: &Txn,
        stale: bool,
        outdated: bool,
        realm: u8,
    ) -> Result<Step, LastResult> {
        self.realm = realm;
        self.auth_next = AuthNext::Fresh;
        if !stale && txn.auth == AuthSent::Fresh && !outdated {
            return Err(LastResult::CredentialRejected);
        }
        if self.rounds >= MAX_ROUNDS {
            return Err(LastResult::TooManyRoundTrips);
        }
        self.rounds += 1;
        Ok(Step::Resend)
    }

    /// The attempt failed (`wait`: as the node asked): back off, or give an unregister up after
    /// enough tries.
    pub fn on_failure<R: Rng>(
        &mut self,
        now: Instant,
        why: LastResult,
        wait: Option<Duration>,
        want: bool,
        policy: &Policy,
        rng: &mut R,
    ) -> Step {
        self.last = why;
        self.confirmed = false;
        self.failures = self.failures.saturating_add(1);
        if self.op == Op::Register && why == LastResult::Timeout {
            self.server_bound = true; // it may have arrived
        }
        self.phase = Phase::Backoff;
        match self.op {
            Op::Unregister if want => Step::Start(Op::Register),
            Op::Unregister if self.failures >= policy.unregister_attempts => Step::Remove,
            Op::Register if !want && self.server_bound => Step::Start(Op::Unregister),
            Op::Register if !want => Step::Remove,
            _ => {
                let d = wait.unwrap_or_else(|| {
                    backoff(rng, policy.retry_base, policy.retry_max, self.failures)
                });
                self.action_at = Some(now + d);
                Step::Wait
            }
        }
    }

    /// The transaction's retransmission and timeout timers.
    pub fn on_txn_timer(&mut self, now: Instant, timers: &Timers) -> TxnTimer {
        let Some(t) = self.txn.as_mut() else {
            return TxnTimer::Quiet;
        };
        if now < t.timers.deadline() {
            return TxnTimer::Quiet;
        }
        match t.timers.on_timer(now, timers) {
            TimerAction::Retransmit => TxnTimer::Retransmit,
            TimerAction::Timeout => self.txn.take().map_or(TxnTimer::Quiet, TxnTimer::TimedOut),
            TimerAction::None => TxnTimer::Quiet,
        }
    }

    /// Its refresh or retry time came (`deferred`: where a refresh due in a storm hold waits).
    pub fn on_due(&mut self, now: Instant, deferred: Option<Instant>) -> Step {
        if self.txn.is_some() || self.action_at.is_none_or(|t| t > now) {
            return Step::Wait;
        }
        self.action_at = None;
        match self.phase {
            Phase::Registered if deferred.is_some() => {
                self.action_at = deferred;
                self.refresh_slack = 0;
                Step::Deferred
            }
            Phase::Registered => Step::Start(Op::Register),
            Phase::Backoff => Step::Retry,
            _ => Step::Wait,
        }
    }

    /// Where a refresh due at `action_at` may wait while a storm holds until `hold_end`: the
    /// hold's end or as long as its slack allows (None: refresh now).
    pub fn refresh_deferral(&self, now: Instant, hold_end: Option<Instant>) -> Option<Instant> {
        if self.refresh_slack == 0 || self.phase != Phase::Registered {
            return None;
        }
        let latest = self.action_at? + Duration::from_secs(u64::from(self.refresh_slack));
        let until = hold_end?.min(latest);
        (until > now).then_some(until)
    }
}

/// RFC 5626 4.5: W = min(max, base * 2^(failures-1)); wait a random 50-100% of W.
pub fn backoff<R: Rng>(rng: &mut R, base: Duration, max: Duration, failures: u16) -> Duration {
    let exp = u32::from(failures.saturating_sub(1)).min(20);
    let w = base.saturating_mul(1u32 << exp).min(max);
    w.mul_f64(rng.gen_range(0.5..=1.0))
}

/// The shortest refresh delay, whatever the node grants.
pub const MIN_REFRESH: Duration = Duration::from_secs(5);

/// A refresh period before jitter: `margin` before the expiry of a `granted` s grant, but not
/// before half of it.
pub fn refresh_period(granted: u32, margin: Duration) -> Duration {
    let g = Duration::from_secs(u64::from(granted));
    (g / 2).max(g.saturating_sub(margin))
}

/// When to refresh a binding granted for `granted` seconds: `margin` before expiry but not
/// before half of it, minus up to 5% jitter so bindings registered together drift apart.
pub fn refresh_delay<R: Rng>(rng: &mut R, granted: u32, margin: Duration) -> Duration {
    let base = refresh_period(granted, margin);
    let jitter = base.mul_f64(rng.gen_range(0.0..=0.05));
    base.saturating_sub(jitter).max(MIN_REFRESH)
}

/// The first refresh of a binding that just landed: anywhere from half the grant to the usual
/// refresh time. Bindings that landed together (a registration storm, a replay) would otherwise
/// all fall due together again every period, for many periods (5% jitter spreads them slowly),
/// and with `farm.max_register_rate` each such wave holds back new registrations.
pub fn first_refresh_delay<R: Rng>(rng: &mut R, granted: u32, margin: Duration) -> Duration {
    let g = Duration::from_secs(u64::from(granted));
    let latest = refresh_period(granted, margin);
    let spread = latest.saturating_sub(g / 2);
    if spread.is_zero() {
        return refresh_delay(rng, granted, margin);
    }
    (g / 2 + spread.mul_f64(rng.gen_range(0.0..=1.0))).max(MIN_REFRESH)
}

#[cfg(test)]
mod tests;
