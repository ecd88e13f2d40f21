//! One (AOR, node) registration: its compact state record and the REGISTER it sends (what it
//! reads from responses is `response`). The decisions that tie bindings to AOR life live in
//! `mirror`.

use std::fmt;
use std::time::{Duration, Instant};

use rand::Rng;

use super::digest::Challenge;
use super::transaction::NonInviteClient;

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
            ..Binding::default()
        };
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
mod tests {
    use super::*;
    use crate::core::sip::RegisterRequest;
    use rand::SeedableRng;

    #[test]
    fn backoff_stays_within_rfc5626_window() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (base, max) = (Duration::from_secs(30), Duration::from_secs(1800));
        for f in 1..30u16 {
            let w = base.saturating_mul(1 << (f - 1).min(20)).min(max);
            let d = backoff(&mut rng, base, max, f);
            assert!(d >= w / 2 && d <= w, "{f}: {d:?}");
        }
    }

    #[test]
    fn first_refresh_spreads_over_the_second_half_of_the_grant() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let margin = Duration::from_secs(66);
        let d: Vec<u64> = (0..1000)
            .map(|_| first_refresh_delay(&mut rng, 600, margin).as_secs())
            .collect();
        assert!(d.iter().all(|&s| (300..=534).contains(&s)), "{d:?}");
        // Spread, not bunched: each quarter of the window gets a share.
        for q in 0..4u64 {
            let (lo, hi) = (300 + q * 58, 300 + (q + 1) * 58);
            let n = d.iter().filter(|&&s| (lo..hi).contains(&s)).count();
            assert!((150..=350).contains(&n), "{n} in {lo}..{hi}");
        }
        // A short grant has no room to spread: the usual refresh.
        let s = first_refresh_delay(&mut rng, 60, margin);
        assert!(
            s <= Duration::from_secs(30) && s >= Duration::from_secs(28),
            "{s:?}"
        );
    }

    #[test]
    fn refresh_before_expiry() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let d = refresh_delay(&mut rng, 600, Duration::from_secs(36));
            assert!(
                d <= Duration::from_secs(564) && d >= Duration::from_secs(535),
                "{d:?}"
            );
            let d = refresh_delay(&mut rng, 60, Duration::from_secs(36));
            assert!(
                d <= Duration::from_secs(30) && d >= Duration::from_millis(28_500),
                "{d:?}"
            );
            assert_eq!(
                refresh_delay(&mut rng, 2, Duration::from_secs(36)),
                MIN_REFRESH
            );
        }
    }

    #[test]
    fn register_bytes_match_the_formatted_reference() {
        for (tcp, expires, cseq, auth) in [
            (false, 600, 1, None),
            (
                true,
                0,
                4_294_967_295,
                Some((false, "Digest username=\"u\"")),
            ),
            (false, 3600, 10, Some((true, "Digest x=1"))),
        ] {
            let r = RegisterRequest {
                domain: "regmirror.test",
                user: "1001",
                contact_host: "10.77.0.20:5060",
                local_addr: "[::1]:5070".parse().unwrap(),
                tcp,
                branch: "z9hG4bKdeadbeef0000000100000002",
                call_id: "deadbeef-1-0-0",
                from_tag: "deadbeef1n0g0",
                cseq,
                expires,
                authorization: auth,
                user_agent: "regmirror/0.1.0",
            };
            let mut want = format!(
                "REGISTER sip:regmirror.test SIP/2.0\r\nVia: SIP/2.0/{} [::1]:5070;branch=z9hG4bKdeadbeef0000000100000002;rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:1001@regmirror.test>;tag=deadbeef1n0g0\r\n\
                 To: <sip:1001@regmirror.test>\r\nCall-ID: deadbeef-1-0-0\r\nCSeq: {cseq} REGISTER\r\n\
                 Contact: <sip:1001@10.77.0.20:5060>{}\r\nExpires: {expires}\r\n",
                if tcp { "TCP" } else { "UDP" },
                if expires == 0 { ";expires=0" } else { "" },
            );
            if let Some((proxy, v)) = auth {
                let name = if proxy {
                    "Proxy-Authorization"
                } else {
                    "Authorization"
                };
                want.push_str(&format!("{name}: {v}\r\n"));
            }
            want.push_str("User-Agent: regmirror/0.1.0\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), want);
        }
    }
}
