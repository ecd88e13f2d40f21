//! REGISTER transactions in flight, seen from the wire: first send by Via branch, matched to
//! the final response. Gives the latency histogram per node, counts retries (a new transaction
//! on a Call-ID whose last one failed), and tells the shutdown drain when nothing is left in
//! flight, without reaching into the core's state.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::response::ResponseInfo;

pub struct InFlight {
    /// Branch -> (node index, first send, Call-ID).
    pending: HashMap<Box<str>, (u16, Instant, Box<str>)>,
    /// Call-IDs whose last transaction failed (error response or timeout).
    failed: HashSet<Box<str>>,
    by_addr: HashMap<SocketAddr, u16>,
    /// Entries older than this have timed out (Timer F plus slack) and are dropped.
    max_age: Duration,
    /// `on_send` sweeps at most once per `SWEEP_EVERY`: the table stays bounded while running.
    next_sweep: Option<Instant>,
}

const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl InFlight {
    pub fn new(node_addrs: impl IntoIterator<Item = SocketAddr>, timer_f: Duration) -> Self {
        InFlight {
            pending: HashMap::new(),
            failed: HashSet::new(),
            by_addr: node_addrs
                .into_iter()
                .enumerate()
                .map(|(i, a)| (a, i as u16))
                .collect(),
            max_age: timer_f + Duration::from_secs(1),
            next_sweep: None,
        }
    }

    /// A datagram we send: REGISTERs to a node start (or retransmit) a transaction. True when
    /// it starts a retry: a new transaction after a failed one on the same binding.
    pub fn on_send(&mut self, payload: &[u8], dest: SocketAddr, now: Instant) -> bool {
        if !payload.starts_with(b"REGISTER ") {
            return false;
        }
        if self.next_sweep.is_none_or(|t| now >= t) {
            self.sweep(now);
            self.next_sweep = Some(now + SWEEP_EVERY);
        }
        let Some(&node) = self.by_addr.get(&dest) else {
            return false;
        };
        let (Some(branch), Some(call_id)) = (branch_of(payload), call_id_of(payload)) else {
            return false;
        };
        if self.pending.contains_key(branch) {
            return false; // a retransmission keeps the first send time
        }
        let retry = self.failed.remove(call_id);
        self.pending
            .insert(branch.into(), (node, now, call_id.into()));
        retry
    }

    /// A final response (>= 200): the node and the transaction's latency, if it was ours.
    pub fn on_final(&mut self, resp: &ResponseInfo<'_>, now: Instant) -> Option<(u16, Duration)> {
        let (node, sent, call_id) = self.pending.remove(resp.branch?)?;
        // Challenges and 423 are answered at once: not failures.
        let code = resp.code;
        if code >= 300 && !matches!(code, 401 | 407 | 423) {
            self.note_failed(call_id);
        }
        Some((node, now.saturating_duration_since(sent)))
    }

    /// Forgets transactions that can no longer complete (they timed out: failures).
    pub fn sweep(&mut self, now: Instant) {
        let max = self.max_age;
        let mut timed_out = Vec::new();
        self.pending.retain(|_, (_, sent, call_id)| {
            let keep = now.saturating_duration_since(*sent) < max;
            if !keep {
                timed_out.push(std::mem::take(call_id));
            }
            keep
        });
        for c in timed_out {
            self.note_failed(c);
        }
    }

    fn note_failed(&mut self, call_id: Box<str>) {
        // Bindings removed while failed never retry: bound the set rather than track removals.
        if self.failed.len() >= 100_000 {
            self.failed.clear();
        }
        self.failed.insert(call_id);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The Call-ID of one of our requests (we always write the long form).
fn call_id_of(bytes: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\r\nCall-ID: ";
    let start = memchr::memmem::find(bytes, KEY)? + KEY.len();
    let rest = &bytes[start..];
    let end = rest.iter().position(|b| *b == b'\r').unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end])
        .ok()
        .map(str::trim)
        .filter(|c| !c.is_empty())
}

/// The first `;branch=` value in `bytes` (our REGISTERs have one Via; a response's top Via
/// is the first).
fn branch_of(bytes: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b";branch=";
    let start = memchr::memmem::find(bytes, KEY)? + KEY.len();
    let rest = &bytes[start..];
    let end = rest
        .iter()
        .position(|b| matches!(b, b';' | b',' | b'\r' | b'\n' | b' ' | b'>'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end])
        .ok()
        .filter(|b| !b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "REGISTER sip:d SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-abc;rport\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";

    fn resp(code: u16) -> rsip::Response {
        let t = format!("SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;rport=5070;branch=z9hG4bK-abc\r\nCall-ID: x\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n");
        rsip::Response::try_from(t.as_bytes()).unwrap()
    }

    #[test]
    fn latency_from_first_send_to_final() {
        let node: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let mut f = InFlight::new([node], Duration::from_secs(32));
        let t0 = Instant::now();
        f.on_send(REQ.as_bytes(), node, t0);
        f.on_send(REQ.as_bytes(), node, t0 + Duration::from_millis(500));
        assert_eq!(f.len(), 1);
        let (n, d) = f
            .on_final(
                &ResponseInfo::from_response(&resp(200)),
                t0 + Duration::from_millis(700),
            )
            .unwrap();
        assert_eq!((n, d), (0, Duration::from_millis(700)));
        assert!(f.is_empty());
        assert!(
            f.on_final(&ResponseInfo::from_response(&resp(200)), t0)
                .is_none(),
            "a duplicate final is not counted"
        );
    }

    #[test]
    fn ignores_other_traffic_and_sweeps() {
        let node: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let mut f = InFlight::new([node], Duration::from_secs(32));
        let t0 = Instant::now();
        f.on_send(b"SIP/2.0 200 OK\r\n", node, t0);
        f.on_send(REQ.as_bytes(), "10.0.0.9:5060".parse().unwrap(), t0);
        assert!(f.is_empty());
        f.on_send(REQ.as_bytes(), node, t0);
        f.sweep(t0 + Duration::from_secs(34));
        assert!(f.is_empty());
        // The timed-out transaction makes the next one on that Call-ID a retry.
        let next = REQ.replace("-abc", "-def");
        assert!(f.on_send(next.as_bytes(), node, t0 + Duration::from_secs(60)));
        assert!(!f.on_send(next.as_bytes(), node, t0 + Duration::from_secs(61)));
    }

    #[test]
    fn retries_follow_failures_not_challenges() {
        let node: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let mut f = InFlight::new([node], Duration::from_secs(32));
        let t0 = Instant::now();
        assert!(!f.on_send(REQ.as_bytes(), node, t0));
        f.on_final(&ResponseInfo::from_response(&resp_on("-abc", 401)), t0);
        let second = REQ.replace("-abc", "-2");
        assert!(
            !f.on_send(second.as_bytes(), node, t0),
            "an answered challenge is no retry"
        );
        f.on_final(&ResponseInfo::from_response(&resp_on("-2", 503)), t0);
        let third = REQ.replace("-abc", "-3");
        assert!(
            f.on_send(third.as_bytes(), node, t0),
            "after a 503 the next attempt is a retry"
        );
    }

    /// Issue 15: transactions that time out while the driver runs are forgotten (and count as
    /// failures) without anyone calling `sweep`: the table stays bounded.
    #[test]
    fn timed_out_transactions_leave_the_table_while_running() {
        let node: SocketAddr = "10.0.0.1:5060".parse().unwrap();
        let mut f = InFlight::new([node], Duration::from_secs(32));
        let t0 = Instant::now();
        for i in 0..1000 {
            let req = REQ
                .replace("-abc", &format!("-{i}"))
                .replace("Call-ID: x", &format!("Call-ID: c{i}"));
            f.on_send(req.as_bytes(), node, t0);
        }
        assert_eq!(f.len(), 1000);
        // 40 s later, never answered: one more REGISTER goes out.
        let late = t0 + Duration::from_secs(40);
        let retry = REQ
            .replace("-abc", "-late")
            .replace("Call-ID: x", "Call-ID: c7");
        assert!(
            f.on_send(retry.as_bytes(), node, late),
            "a timed-out transaction is a failure"
        );
        assert_eq!(f.len(), 1, "timed-out transactions stayed in flight");
    }

    fn resp_on(branch_suffix: &str, code: u16) -> rsip::Response {
        let t = format!("SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK{branch_suffix}\r\nCall-ID: x\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n");
        rsip::Response::try_from(t.as_bytes()).unwrap()
    }
}
