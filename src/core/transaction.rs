//! RFC 3261 17.1.2 non-INVITE client transaction timers, and the Via branch that matches
//! responses to transactions. Pure: time comes in as arguments.

use std::time::{Duration, Instant};

/// The RFC 3261 magic cookie every branch starts with.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// Timer values (RFC 3261 defaults: T1 500 ms, T2 4 s, F = 64*T1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub timer_f: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            timer_f: Duration::from_secs(32),
        }
    }
}

/// What a fired timer asks the owner to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing due yet.
    None,
    /// Timer E: send the request again.
    Retransmit,
    /// Timer F: the transaction failed.
    Timeout,
}

/// Timer state of one non-INVITE client transaction (Trying/Proceeding).
///
/// Completed/Terminated are not modelled: the owner drops the transaction on the final response,
/// and late retransmitted responses then no longer match (they are counted as stray).
#[derive(Debug, Clone)]
pub struct NonInviteClient {
    /// Next Timer E firing; `None` over a reliable transport.
    retransmit_at: Option<Instant>,
    /// Interval that produced `retransmit_at`.
    interval: Duration,
    timeout_at: Instant,
    proceeding: bool,
}

impl NonInviteClient {
    /// Starts the timers for a request sent at `now`.
    pub fn new(now: Instant, timers: &Timers, reliable: bool) -> Self {
        NonInviteClient {
            retransmit_at: (!reliable).then(|| now + timers.t1),
            interval: timers.t1,
            timeout_at: now + timers.timer_f,
            proceeding: false,
        }
    }

    /// When `on_timer` next has something to do.
    pub fn deadline(&self) -> Instant {
        match self.retransmit_at {
            Some(e) if e < self.timeout_at => e,
            _ => self.timeout_at,
        }
    }

    pub fn is_proceeding(&self) -> bool {
        self.proceeding
    }

    /// A 1xx arrived: Proceeding. Timer E keeps running but is reset to T2 when it next fires.
    pub fn on_provisional(&mut self) {
        self.proceeding = true;
    }

    /// Call when `now >= deadline()`.
    pub fn on_timer(&mut self, now: Instant, timers: &Timers) -> TimerAction {
        if now >= self.timeout_at {
            self.retransmit_at = None;
            return TimerAction::Timeout;
        }
        match self.retransmit_at {
            Some(at) if now >= at => {
                self.interval = if self.proceeding {
                    timers.t2
                } else {
                    (self.interval * 2).min(timers.t2)
                };
                // From the scheduled time, not `now`, so a late wake-up does not shift the series.
                let mut next = at + self.interval;
                if next <= now {
                    next = now + self.interval;
                }
                self.retransmit_at = Some(next);
                TimerAction::Retransmit
            }
            _ => TimerAction::None,
        }
    }
}

/// A short ASCII identifier (branch, Call-ID, tag, cnonce) built on the stack, so a request
/// needs no allocation for its ids.
#[derive(Clone, Copy)]
pub struct Id {
    buf: [u8; Id::CAP],
    len: u8,
}

impl Id {
    pub const CAP: usize = 48;

    pub fn new() -> Self {
        Id {
            buf: [0; Id::CAP],
            len: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        // Every id written here is well under CAP; ASCII only keeps `as_str` valid.
        if (self.len as usize) < Id::CAP && b.is_ascii() {
            self.buf[self.len as usize] = b;
            self.len += 1;
        }
    }

    pub fn push(&mut self, s: &str) -> &mut Self {
        for &b in s.as_bytes() {
            self.byte(b);
        }
        self
    }

    /// Lower-case hex of `v`, zero-padded to `width` digits: `{v:0width$x}`.
    pub fn hex(&mut self, v: u64, width: usize) -> &mut Self {
        let digits = ((64 - v.leading_zeros() as usize).div_ceil(4))
            .max(width)
            .max(1);
        for i in (0..digits).rev() {
            let d = if i < 16 { (v >> (4 * i)) & 0xf } else { 0 };
            self.byte(b"0123456789abcdef"[d as usize]);
        }
        self
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl Default for Id {
    fn default() -> Self {
        Id::new()
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Branch for transaction `txn` of binding slot `binding` in the instance with `prefix`:
/// fixed-width hex so parsing needs no allocation and no lookup table.
pub fn branch(prefix: u32, binding: u32, txn: u32) -> Id {
    let mut id = Id::new();
    id.push(BRANCH_COOKIE)
        .hex(prefix.into(), 8)
        .hex(binding.into(), 8)
        .hex(txn.into(), 8);
    id
}

/// Inverse of [`branch`]: `(binding, txn)` when `s` is one of this instance's branches.
pub fn parse_branch(s: &str, prefix: u32) -> Option<(u32, u32)> {
    let rest = s.strip_prefix(BRANCH_COOKIE)?;
    if rest.len() != 24 || !rest.is_char_boundary(8) || !rest.is_char_boundary(16) {
        return None;
    }
    let hex = |h: &str| {
        if h.bytes().all(|b| b.is_ascii_hexdigit()) {
            u32::from_str_radix(h, 16).ok()
        } else {
            None
        }
    };
    if hex(&rest[..8])? != prefix {
        return None;
    }
    Some((hex(&rest[8..16])?, hex(&rest[16..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_retransmits_double_to_t2_then_time_out() {
        let t = Timers::default();
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, &t, false);
        let mut sends = vec![];
        loop {
            let at = tx.deadline();
            match tx.on_timer(at, &t) {
                TimerAction::Retransmit => sends.push((at - start).as_millis()),
                TimerAction::Timeout => {
                    assert_eq!((at - start).as_millis(), 32_000);
                    break;
                }
                TimerAction::None => panic!("deadline with nothing due"),
            }
        }
        assert_eq!(
            sends,
            vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
    }

    #[test]
    fn tcp_only_times_out() {
        let t = Timers::default();
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, &t, true);
        assert_eq!(tx.deadline(), start + Duration::from_secs(32));
        assert_eq!(
            tx.on_timer(start + Duration::from_secs(32), &t),
            TimerAction::Timeout
        );
    }

    #[test]
    fn provisional_switches_to_t2() {
        let t = Timers::default();
        let start = Instant::now();
        let mut tx = NonInviteClient::new(start, &t, false);
        tx.on_provisional();
        assert_eq!(tx.deadline(), start + Duration::from_millis(500));
        assert_eq!(tx.on_timer(tx.deadline(), &t), TimerAction::Retransmit);
        assert_eq!(tx.deadline(), start + Duration::from_millis(4500));
    }

    #[test]
    fn ids_format_like_hex_formatting() {
        for v in [
            0u64,
            1,
            0xf,
            0x10,
            0xdead_beef,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            for w in [0, 1, 8, 16] {
                assert_eq!(Id::new().hex(v, w).as_str(), format!("{v:0w$x}"), "{v} {w}");
            }
        }
        let mut id = Id::new();
        id.push(&"x".repeat(100));
        assert_eq!(id.as_str().len(), Id::CAP);
    }

    #[test]
    fn branch_round_trip() {
        let b = branch(0xdeadbeef, 7, 0x1234);
        assert_eq!(b.as_str(), "z9hG4bKdeadbeef0000000700001234");
        let b = b.as_str();
        assert_eq!(parse_branch(b, 0xdeadbeef), Some((7, 0x1234)));
        assert_eq!(parse_branch(b, 0xdeadbeee), None);
        assert_eq!(parse_branch("z9hG4bKabc", 0), None);
        assert_eq!(
            parse_branch("z9hG4bKdeadbeef0000000700001234x", 0xdeadbeef),
            None
        );
        assert_eq!(
            parse_branch("z9hG4bKdeadbeef00000007000012é", 0xdeadbeef),
            None
        );
    }
}
