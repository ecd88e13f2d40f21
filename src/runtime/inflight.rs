//! REGISTER transactions in flight, seen from the wire: first send by Via branch, matched to
//! the final response. Gives the latency histogram per node, and tells the shutdown drain when
//! nothing is left in flight, without reaching into the core's state.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub struct InFlight {
    /// Branch -> (node index, first send).
    pending: HashMap<Box<str>, (u16, Instant)>,
    by_addr: HashMap<SocketAddr, u16>,
    /// Entries older than this have timed out (Timer F plus slack) and are dropped.
    max_age: Duration,
}

impl InFlight {
    pub fn new(node_addrs: impl IntoIterator<Item = SocketAddr>, timer_f: Duration) -> Self {
        InFlight {
            pending: HashMap::new(),
            by_addr: node_addrs
                .into_iter()
                .enumerate()
                .map(|(i, a)| (a, i as u16))
                .collect(),
            max_age: timer_f + Duration::from_secs(1),
        }
    }

    /// A datagram we send: REGISTERs to a node start (or retransmit) a transaction.
    pub fn on_send(&mut self, payload: &[u8], dest: SocketAddr, now: Instant) {
        if !payload.starts_with(b"REGISTER ") {
            return;
        }
        let Some(&node) = self.by_addr.get(&dest) else {
            return;
        };
        let Some(branch) = branch_of(payload) else {
            return;
        };
        // A retransmission keeps the first send time.
        self.pending.entry(branch.into()).or_insert((node, now));
    }

    /// A final response (>= 200): the node and the transaction's latency, if it was ours.
    pub fn on_final(&mut self, resp: &rsip::Response, now: Instant) -> Option<(u16, Duration)> {
        let via = resp.headers.iter().find_map(|h| match h {
            rsip::Header::Via(v) => Some(v.to_string()),
            _ => None,
        })?;
        let branch = branch_of(via.as_bytes())?;
        let (node, sent) = self.pending.remove(branch)?;
        Some((node, now.saturating_duration_since(sent)))
    }

    /// Forgets transactions that can no longer complete.
    pub fn sweep(&mut self, now: Instant) {
        let max = self.max_age;
        self.pending
            .retain(|_, (_, sent)| now.saturating_duration_since(*sent) < max);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// The first `;branch=` value in `bytes` (our REGISTERs have one Via; a response's top Via
/// is the first).
fn branch_of(bytes: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b";branch=";
    let start = bytes.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
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
            .on_final(&resp(200), t0 + Duration::from_millis(700))
            .unwrap();
        assert_eq!((n, d), (0, Duration::from_millis(700)));
        assert!(f.is_empty());
        assert!(
            f.on_final(&resp(200), t0).is_none(),
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
    }
}
