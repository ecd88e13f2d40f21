//! Active/standby for a pair of regmirror instances. Sans-IO: the secondary probes the primary
//! with SIP OPTIONS every `probe_interval`; after `takeover_after` consecutive unanswered probes
//! it becomes active, and the first answer from an active primary puts it back to standby. A
//! primary (and an instance without `[ha]`) is always active. Both instances receive every
//! notification; only the active one talks to the nodes.
//!
//! The answer must say `role=primary` (or `standalone`) and `state=active` in `X-RegMirror-HA`:
//! two instances both configured `secondary` would otherwise keep each other in standby and
//! nobody would mirror anything.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::sip::{self, OptionsRequest};

/// Header carrying an instance's role and activity in OPTIONS requests and answers.
pub const H_HA: &str = "X-RegMirror-HA";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No `[ha]`: always active (one instance, or two that both register).
    Standalone,
    /// Always active while it runs.
    Primary,
    /// Standby while the primary answers; active otherwise.
    Secondary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub role: Role,
    pub probe_interval: Duration,
    /// Consecutive unanswered probes before a secondary takes over.
    pub takeover_after: u32,
}

/// What the peer says about itself in `X-RegMirror-HA`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerState {
    pub role: Role,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The secondary takes over: do what a starting instance does.
    Activated { unanswered: u32 },
    /// The primary answers again: forget every binding without unregistering.
    Deactivated,
}

/// How an answer to a probe was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// An active primary: it does the work.
    PrimaryAlive,
    /// An answer that does not keep us in standby (another secondary, a draining or standby
    /// peer, a late answer to an older probe): counted as unanswered.
    Ignored,
}

#[derive(Debug)]
pub struct PeerMonitor {
    cfg: PeerConfig,
    active: bool,
    next_probe: Option<Instant>,
    /// Sequence number of the last probe sent; `outstanding` while it has no answer.
    seq: u32,
    outstanding: bool,
    unanswered: u32,
    last_answer: Option<Instant>,
    takeovers: u64,
    probes: Vec<u32>,
}

impl PeerMonitor {
    /// A secondary starts in standby: the primary gets `takeover_after` probes to answer.
    pub fn new(cfg: PeerConfig) -> Self {
        PeerMonitor {
            active: cfg.role != Role::Secondary,
            cfg,
            next_probe: None,
            seq: 0,
            outstanding: false,
            unanswered: 0,
            last_answer: None,
            takeovers: 0,
            probes: Vec::new(),
        }
    }

    pub fn role(&self) -> Role {
        self.cfg.role
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Consecutive probes the peer left unanswered.
    pub fn unanswered(&self) -> u32 {
        self.unanswered
    }

    pub fn takeovers(&self) -> u64 {
        self.takeovers
    }

    pub fn last_answer(&self) -> Option<Instant> {
        self.last_answer
    }

    /// When `handle_timeout` wants to run next (only a secondary probes).
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.cfg.role {
            Role::Secondary => self.next_probe,
            _ => None,
        }
    }

    /// Sequence number of a probe to send now.
    pub fn poll_probe(&mut self) -> Option<u32> {
        self.probes.pop()
    }

    /// Counts the last probe as unanswered if it still is, then sends the next one. The first
    /// call (with the start time) sends the first probe.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Transition> {
        if self.cfg.role != Role::Secondary {
            return None;
        }
        let due = self.next_probe.unwrap_or(now);
        if now < due {
            return None;
        }
        let mut transition = None;
        if self.outstanding {
            self.unanswered = self.unanswered.saturating_add(1);
            if !self.active && self.unanswered >= self.cfg.takeover_after {
                self.active = true;
                self.takeovers += 1;
                transition = Some(Transition::Activated {
                    unanswered: self.unanswered,
                });
            }
        }
        self.seq = self.seq.wrapping_add(1);
        self.outstanding = true;
        self.probes.clear();
        self.probes.push(self.seq);
        // From the due time, not `now`: a late wake-up does not stretch the takeover.
        let mut next = due + self.cfg.probe_interval;
        if next <= now {
            next = now + self.cfg.probe_interval;
        }
        self.next_probe = Some(next);
        transition
    }

    /// An answer to probe `seq` from the peer, which says `peer` about itself.
    pub fn on_answer(
        &mut self,
        now: Instant,
        seq: u32,
        peer: PeerState,
    ) -> (Answer, Option<Transition>) {
        // Only the latest probe counts: an answer slower than the probe interval is no answer.
        let fresh = self.cfg.role == Role::Secondary && self.outstanding && seq == self.seq;
        let alive = peer.active && peer.role != Role::Secondary;
        if !fresh || !alive {
            return (Answer::Ignored, None);
        }
        self.outstanding = false;
        self.unanswered = 0;
        self.last_answer = Some(now);
        if self.active {
            self.active = false;
            return (Answer::PrimaryAlive, Some(Transition::Deactivated));
        }
        (Answer::PrimaryAlive, None)
    }
}

/// `X-RegMirror-HA` value: `role=<role>; state=active|standby`.
pub fn header_value(role: Role, active: bool) -> String {
    format!(
        "role={}; state={}",
        role.as_str(),
        if active { "active" } else { "standby" }
    )
}

/// Parses an `X-RegMirror-HA` value; `None` if it is not one.
pub fn parse_header(v: &str) -> Option<PeerState> {
    let (mut role, mut active) = (None, None);
    for part in v.split(';') {
        let Some((k, val)) = part.split_once('=') else {
            continue;
        };
        let val = val.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "role" => {
                role = match val.to_ascii_lowercase().as_str() {
                    "standalone" => Some(Role::Standalone),
                    "primary" => Some(Role::Primary),
                    "secondary" => Some(Role::Secondary),
                    _ => None,
                }
            }
            "state" => active = Some(val.eq_ignore_ascii_case("active")),
            _ => {}
        }
    }
    Some(PeerState {
        role: role?,
        active: active?,
    })
}

/// Call-ID of probe `seq` from the instance whose random tag is `tag`.
fn call_id(tag: u32, seq: u32, local: SocketAddr) -> String {
    format!("ha-{tag:08x}-{seq}@{}", local.ip())
}

/// The sequence number of one of our probes, from its answer's Call-ID.
pub fn probe_seq(call_id: &str, tag: u32) -> Option<u32> {
    let rest = call_id.strip_prefix(&format!("ha-{tag:08x}-"))?;
    rest.split('@').next()?.parse().ok()
}

/// The OPTIONS probe sent to the peer's SIP socket.
pub fn probe_request(
    local: SocketAddr,
    peer: SocketAddr,
    tag: u32,
    seq: u32,
    me: PeerState,
    user_agent: &str,
) -> Vec<u8> {
    OptionsRequest {
        request_uri: &format!("sip:regmirror@{peer}"),
        tcp: false,
        local_addr: local,
        branch: &format!("z9hG4bKha{tag:08x}{seq}"),
        from_uri: &format!("sip:regmirror@{local}"),
        from_tag: &format!("ha{tag:08x}"),
        to_uri: &format!("sip:regmirror@{peer}"),
        call_id: &call_id(tag, seq, local),
        cseq: seq,
        extra: Some((H_HA, &header_value(me.role, me.active))),
        user_agent,
    }
    .to_bytes()
}

/// Adds `X-RegMirror-HA` to a response built by `sip::response_for`.
pub fn with_header(response: Vec<u8>, role: Role, active: bool) -> Vec<u8> {
    sip::with_header(response, H_HA, &header_value(role, active))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    fn secondary() -> PeerMonitor {
        PeerMonitor::new(PeerConfig {
            role: Role::Secondary,
            probe_interval: SEC,
            takeover_after: 3,
        })
    }

    const PRIMARY: PeerState = PeerState {
        role: Role::Primary,
        active: true,
    };

    /// Runs the monitor's timer until `until`; the peer answers each probe when `answer` says
    /// so. Returns the transitions with their time.
    fn run(
        m: &mut PeerMonitor,
        from: Instant,
        until: Instant,
        answer: impl Fn(Instant) -> bool,
    ) -> Vec<(Duration, Transition)> {
        let mut out = Vec::new();
        let mut now = from;
        if let Some(t) = m.handle_timeout(now) {
            out.push((now - from, t));
        }
        while let Some(t) = m.poll_timeout().filter(|&t| t <= until) {
            now = t;
            if let Some(tr) = m.handle_timeout(now) {
                out.push((now - from, tr));
            }
            while let Some(seq) = m.poll_probe() {
                if answer(now) {
                    let at = now + Duration::from_millis(5);
                    if let (_, Some(tr)) = m.on_answer(at, seq, PRIMARY) {
                        out.push((at - from, tr));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn primary_and_standalone_are_active_and_never_probe() {
        for role in [Role::Primary, Role::Standalone] {
            let mut m = PeerMonitor::new(PeerConfig {
                role,
                probe_interval: SEC,
                takeover_after: 3,
            });
            assert!(m.is_active());
            assert_eq!(m.handle_timeout(Instant::now()), None);
            assert_eq!(m.poll_probe(), None);
            assert_eq!(m.poll_timeout(), None);
        }
    }

    #[test]
    fn secondary_stays_standby_while_the_primary_answers() {
        let mut m = secondary();
        assert!(!m.is_active());
        let t0 = Instant::now();
        let tr = run(&mut m, t0, t0 + 60 * SEC, |_| true);
        assert!(tr.is_empty(), "{tr:?}");
        assert!(!m.is_active());
        assert_eq!(m.unanswered(), 0);
    }

    #[test]
    fn takes_over_after_n_unanswered_probes_and_returns_when_answered() {
        let mut m = secondary();
        let t0 = Instant::now();
        // The primary answers until 10 s, is dead until 20 s, then answers again.
        let up = |t: Instant| t < t0 + 10 * SEC || t >= t0 + 20 * SEC;
        let tr = run(&mut m, t0, t0 + 30 * SEC, up);
        // Probes at 10, 11, 12 unanswered: counted at 11, 12, 13 -> takeover at 13 s.
        assert_eq!(
            tr,
            vec![
                (13 * SEC, Transition::Activated { unanswered: 3 }),
                (20 * SEC + Duration::from_millis(5), Transition::Deactivated),
            ]
        );
        assert!(!m.is_active());
        assert_eq!(m.takeovers(), 1);
    }

    #[test]
    fn a_primary_dead_from_the_start_is_replaced_after_takeover_after_intervals() {
        let mut m = secondary();
        let t0 = Instant::now();
        let tr = run(&mut m, t0, t0 + 10 * SEC, |_| false);
        assert_eq!(tr, vec![(3 * SEC, Transition::Activated { unanswered: 3 })]);
        assert!(m.is_active());
        assert_eq!(m.unanswered(), 10);
    }

    #[test]
    fn one_lost_probe_is_not_a_takeover() {
        let mut m = secondary();
        let t0 = Instant::now();
        // Every third probe lost.
        let n = std::cell::Cell::new(0u32);
        let tr = run(&mut m, t0, t0 + 60 * SEC, |_| {
            n.set(n.get() + 1);
            n.get() % 3 != 0
        });
        assert!(tr.is_empty(), "{tr:?}");
    }

    #[test]
    fn late_stale_or_secondary_answers_do_not_keep_standby() {
        let mut m = secondary();
        let t0 = Instant::now();
        m.handle_timeout(t0);
        let first = m.poll_probe().unwrap();
        m.handle_timeout(t0 + SEC);
        // The answer to the first probe arrives after the second was sent.
        assert_eq!(m.on_answer(t0 + SEC, first, PRIMARY).0, Answer::Ignored);
        let second = m.poll_probe().unwrap();
        let other_secondary = PeerState {
            role: Role::Secondary,
            active: true,
        };
        assert_eq!(
            m.on_answer(t0 + SEC, second, other_secondary).0,
            Answer::Ignored
        );
        let draining = PeerState {
            role: Role::Primary,
            active: false,
        };
        assert_eq!(m.on_answer(t0 + SEC, second, draining).0, Answer::Ignored);
        assert_eq!(
            m.handle_timeout(t0 + 2 * SEC),
            None,
            "two unanswered so far"
        );
        assert_eq!(
            m.handle_timeout(t0 + 3 * SEC),
            Some(Transition::Activated { unanswered: 3 })
        );
        // An answer is accepted once, and only for the latest probe.
        let third = m.poll_probe().unwrap();
        assert_eq!(
            m.on_answer(t0 + 3 * SEC, third, PRIMARY),
            (Answer::PrimaryAlive, Some(Transition::Deactivated))
        );
        assert_eq!(m.on_answer(t0 + 3 * SEC, third, PRIMARY).0, Answer::Ignored);
    }

    #[test]
    fn a_late_wakeup_does_not_delay_the_next_probe() {
        let mut m = secondary();
        let t0 = Instant::now();
        m.handle_timeout(t0);
        assert_eq!(m.poll_timeout(), Some(t0 + SEC));
        // Woken 300 ms late: the next probe stays on the 1 s grid.
        m.handle_timeout(t0 + SEC + Duration::from_millis(300));
        assert_eq!(m.poll_timeout(), Some(t0 + 2 * SEC));
        // Nothing happens before the due time.
        assert_eq!(m.handle_timeout(t0 + Duration::from_millis(1500)), None);
        assert_eq!(m.poll_probe().map(|_| ()), Some(()));
        assert_eq!(m.poll_probe(), None);
    }

    #[test]
    fn header_round_trip_and_probe_format() {
        for (role, active) in [
            (Role::Primary, true),
            (Role::Secondary, false),
            (Role::Standalone, true),
        ] {
            assert_eq!(
                parse_header(&header_value(role, active)),
                Some(PeerState { role, active })
            );
        }
        assert_eq!(parse_header("role=primary"), None);
        assert_eq!(parse_header("role=boss; state=active"), None);
        assert_eq!(parse_header(" State=ACTIVE ;ROLE=Primary"), Some(PRIMARY));
        let local: SocketAddr = "10.0.0.41:5070".parse().unwrap();
        let peer: SocketAddr = "10.0.0.40:5070".parse().unwrap();
        let me = PeerState {
            role: Role::Secondary,
            active: false,
        };
        let req = probe_request(local, peer, 0xabc, 7, me, "regmirror/test");
        let msg = crate::core::sip::parse_message(&req).unwrap();
        let rsip::SipMessage::Request(req) = msg else {
            panic!("not a request")
        };
        assert_eq!(req.method, rsip::Method::Options);
        let cid = crate::core::sip::header_values(&req.headers, "Call-ID")
            .next()
            .unwrap();
        assert_eq!(probe_seq(cid, 0xabc), Some(7));
        assert_eq!(probe_seq(cid, 0xabd), None);
        let resp = with_header(
            crate::core::sip::response_for(&req, 200, "OK"),
            Role::Primary,
            true,
        );
        let rsip::SipMessage::Response(resp) = crate::core::sip::parse_message(&resp).unwrap()
        else {
            panic!("not a response")
        };
        let ha = crate::core::sip::header_values(&resp.headers, H_HA).next();
        assert_eq!(ha.and_then(parse_header), Some(PRIMARY));
        let cid = crate::core::sip::header_values(&resp.headers, "Call-ID").next();
        assert_eq!(cid.and_then(|c| probe_seq(c, 0xabc)), Some(7));
    }
}
