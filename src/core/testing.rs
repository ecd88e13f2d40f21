//! In-process fake registrar (an Asterisk-like UAS) and a simulated network with a virtual
//! clock, for deterministic tests and benchmarks of [`Mirror`]. Behind the `testing` feature.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::Header;

use super::digest::{Algorithm, Authorization, Secret};
use super::mirror::{Event, Mirror, MirrorConfig, Node, Transport};
use super::sip::{parse_incoming, Incoming};

/// A scripted answer that overrides normal processing for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scripted {
    /// Answer with this status and no extra header.
    Status(u16),
    /// 423 with `Min-Expires`.
    IntervalTooBrief(u32),
    /// 503, optionally with `Retry-After` seconds.
    Unavailable(Option<u32>),
    /// Challenge with `stale=true` whatever the request carried.
    Stale,
    /// 200 granting this many seconds to the request's Contact, whatever was asked.
    Granted(u32),
    /// Swallow the request (no response, not cached).
    Drop,
    /// Process normally (a placeholder to script a later request).
    Pass,
}

/// One request as the registrar saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub user: String,
    pub branch: String,
    pub call_id: String,
    pub cseq: u32,
    pub expires: u32,
    pub authorization: Option<Authorization>,
    /// Status answered (0 = dropped or no answer).
    pub answered: u16,
    /// Same branch as an earlier request (a retransmission).
    pub retransmission: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeContact {
    pub uri: String,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
}

/// An Asterisk-like registrar: digest challenges, Min-Expires, contact table, scripted faults.
#[derive(Debug)]
pub struct FakeRegistrar {
    pub addr: SocketAddr,
    pub realm: String,
    /// One challenge header per algorithm, in this order.
    pub algorithms: Vec<Algorithm>,
    pub opaque: Option<String>,
    pub qop: bool,
    /// Auth username -> secret.
    pub users: HashMap<String, Secret>,
    /// Nonces older than this are answered `stale=true` (when the digest is otherwise right).
    pub nonce_lifetime: Duration,
    /// Asterisk's stateless nonces (`build_nonce`): `<seconds>/<md5(seconds:source:realm)>`, the
    /// same for every user from one source within a second, valid for `nonce_lifetime` whoever
    /// answers them. Off: a fresh nonce per challenge, remembered until `restart_empty`.
    pub stateless_nonces: bool,
    /// Challenges sent (every 401).
    pub challenges_sent: u64,
    pub min_expires: u32,
    pub max_expires: u32,
    /// Overrides for the next requests, one per request (retransmissions included).
    pub script: VecDeque<Scripted>,
    /// Silently drop the next N requests.
    pub drop_requests: u32,
    /// Answer every request with this status (after `script`).
    pub fail_all: Option<u16>,
    /// Send a 100 Trying before each final response.
    pub send_trying: bool,
    /// Added to the network latency for every response.
    pub response_delay: Duration,
    /// AOR user -> contact.
    pub contacts: HashMap<String, FakeContact>,
    pub log: Vec<Received>,
    /// When false, requests are not logged (benchmarks).
    pub keep_log: bool,
    /// The node is dead: every request is swallowed, probes included.
    pub down: bool,
    /// OPTIONS requests answered (they are not in `log`).
    pub options_received: u64,
    nonces: HashMap<String, Instant>,
    nonce_seq: u64,
    answered: HashMap<String, Vec<u8>>,
    /// Time zero of stateless nonce timestamps (the first request).
    epoch: Option<Instant>,
}

impl FakeRegistrar {
    pub fn new(addr: SocketAddr, realm: &str) -> Self {
        FakeRegistrar {
            addr,
            realm: realm.into(),
            algorithms: vec![Algorithm::Md5],
            opaque: Some("5d2c7e1a0b9f8e7d".into()),
            qop: true,
            users: HashMap::new(),
            nonce_lifetime: Duration::from_secs(32),
            stateless_nonces: false,
            challenges_sent: 0,
            min_expires: 60,
            max_expires: 7200,
            script: VecDeque::new(),
            drop_requests: 0,
            fail_all: None,
            send_trying: false,
            response_delay: Duration::ZERO,
            contacts: HashMap::new(),
            log: Vec::new(),
            keep_log: true,
            down: false,
            options_received: 0,
            nonces: HashMap::new(),
            nonce_seq: 0,
            answered: HashMap::new(),
            epoch: None,
        }
    }

    pub fn add_user(&mut self, username: &str, secret: Secret) {
        self.users.insert(username.into(), secret);
    }

    /// The live contact of `user` at `now`.
    pub fn contact(&self, user: &str, now: Instant) -> Option<&FakeContact> {
        self.contacts.get(user).filter(|c| c.expires_at > now)
    }

    pub fn live_contacts(&self, now: Instant) -> usize {
        self.contacts
            .values()
            .filter(|c| c.expires_at > now)
            .count()
    }

    /// A restart that loses the contact table (astdb wiped) and every nonce issued.
    pub fn restart_empty(&mut self) {
        self.contacts.clear();
        self.nonces.clear();
        self.answered.clear();
    }

    /// Users with a live contact pointing at `contact_host` (what an AMI audit reports).
    pub fn contact_users(
        &self,
        now: Instant,
        contact_host: &str,
    ) -> std::collections::HashSet<String> {
        self.contacts
            .iter()
            .filter(|(_, c)| c.expires_at > now && c.uri.ends_with(&format!("@{contact_host}")))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Handles one request datagram; returns the responses to send back.
    pub fn handle(&mut self, now: Instant, bytes: &[u8]) -> Vec<Vec<u8>> {
        if self.down {
            return vec![];
        }
        let Ok(rsip::SipMessage::Request(req)) = rsip::SipMessage::try_from(bytes) else {
            return vec![];
        };
        let options = req.method == rsip::Method::Options;
        let mut f = Fields::default();
        for h in req.headers.iter() {
            match h {
                Header::Via(v) => f.vias.push(v.value().to_string()),
                Header::From(v) => f.from = v.value().to_string(),
                Header::To(v) => f.to = v.value().to_string(),
                Header::CallId(v) => f.call_id = v.value().to_string(),
                Header::CSeq(v) => f.cseq = v.value().to_string(),
                Header::Contact(v) => f.contact = v.value().to_string(),
                Header::Expires(v) => f.expires = v.value().trim().parse().ok(),
                Header::Authorization(v) => f.authorization = Some(v.value().to_string()),
                Header::ProxyAuthorization(v) => f.authorization = Some(v.value().to_string()),
                _ => {}
            }
        }
        let branch = f
            .vias
            .first()
            .and_then(|v| v.split(';').find_map(|p| p.trim().strip_prefix("branch=")))
            .unwrap_or("")
            .to_string();
        let user = uri_user(&f.to).unwrap_or_default();
        let contact_uri = f
            .contact
            .split('>')
            .next()
            .unwrap_or("")
            .trim_start_matches('<')
            .trim()
            .to_string();
        let contact_expires = f.contact.split('>').nth(1).and_then(|p| {
            p.split(';').find_map(|kv| {
                kv.trim()
                    .strip_prefix("expires=")
                    .and_then(|v| v.trim().parse().ok())
            })
        });
        let expires: u32 = contact_expires.or(f.expires).unwrap_or(3600);
        let cseq_n: u32 = f
            .cseq
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let authorization = f
            .authorization
            .as_deref()
            .and_then(|a| Authorization::parse(a).ok());
        if options {
            // Asterisk answers OPTIONS to its own URI with 200 (or challenges: any answer is life).
            self.options_received += 1;
            return vec![build_response(200, &f, "")];
        }
        let retransmission =
            self.answered.contains_key(&branch) || self.log.iter().any(|r| r.branch == branch);
        let mut rec = Received {
            at: now,
            user: user.clone(),
            branch: branch.clone(),
            call_id: f.call_id.clone(),
            cseq: cseq_n,
            expires,
            authorization: authorization.clone(),
            answered: 0,
            retransmission,
        };
        if self.drop_requests > 0 {
            self.drop_requests -= 1;
            self.push_log(rec);
            return vec![];
        }
        if let Some(cached) = self.answered.get(&branch) {
            rec.answered = status_of(cached);
            let out = cached.clone();
            self.push_log(rec);
            return vec![out];
        }
        let (code, extra) = match self.script.pop_front() {
            Some(Scripted::Drop) => {
                self.push_log(rec);
                return vec![];
            }
            Some(Scripted::Status(c)) => (c, String::new()),
            Some(Scripted::IntervalTooBrief(m)) => (423, format!("Min-Expires: {m}\r\n")),
            Some(Scripted::Unavailable(ra)) => (
                503,
                ra.map(|s| format!("Retry-After: {s}\r\n"))
                    .unwrap_or_default(),
            ),
            Some(Scripted::Stale) => (401, self.challenge_headers(now, true, &f)),
            Some(Scripted::Granted(g)) => (
                200,
                format!("Contact: <{contact_uri}>;expires={g}\r\nExpires: {g}\r\n"),
            ),
            None | Some(Scripted::Pass) => match self.fail_all {
                Some(c) => (c, String::new()),
                None => self.process(
                    now,
                    &user,
                    &contact_uri,
                    expires,
                    &f,
                    authorization.as_ref(),
                    cseq_n,
                ),
            },
        };
        rec.answered = code;
        self.push_log(rec);
        let resp = build_response(code, &f, &extra);
        self.answered.insert(branch, resp.clone());
        let mut out = Vec::with_capacity(2);
        if self.send_trying {
            out.push(build_response(100, &f, ""));
        }
        out.push(resp);
        out
    }

    fn push_log(&mut self, rec: Received) {
        if self.keep_log {
            self.log.push(rec);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn process(
        &mut self,
        now: Instant,
        user: &str,
        contact_uri: &str,
        expires: u32,
        f: &Fields,
        auth: Option<&Authorization>,
        cseq: u32,
    ) -> (u16, String) {
        // Asterisk checks the digest first, then the nonce's age.
        let verified = auth.and_then(|a| {
            let secret = self.users.get(&a.username)?;
            (a.realm == self.realm && a.verify(secret, "REGISTER", b"")).then_some(a)
        });
        let Some(a) = verified else {
            return (401, self.challenge_headers(now, false, f));
        };
        let fresh = if self.stateless_nonces {
            self.stateless_nonce_valid(now, &a.nonce, f)
        } else {
            matches!(self.nonces.get(&a.nonce),
                Some(&issued) if now.duration_since(issued) < self.nonce_lifetime)
        };
        if !fresh {
            return (401, self.challenge_headers(now, true, f));
        }
        if expires > 0 && expires < self.min_expires {
            return (423, format!("Min-Expires: {}\r\n", self.min_expires));
        }
        let granted = expires.min(self.max_expires);
        if granted == 0 {
            self.contacts.remove(user);
            return (200, String::new());
        }
        self.contacts.insert(
            user.to_string(),
            FakeContact {
                uri: contact_uri.to_string(),
                expires_at: now + Duration::from_secs(u64::from(granted)),
                call_id: f.call_id.clone(),
                cseq,
            },
        );
        (
            200,
            format!("Contact: <{contact_uri}>;expires={granted}\r\nExpires: {granted}\r\n"),
        )
    }

    /// Challenge headers formatted the way Asterisk 22 does (no spaces after commas).
    fn challenge_headers(&mut self, now: Instant, stale: bool, f: &Fields) -> String {
        self.challenges_sent += 1;
        let nonce = if self.stateless_nonces {
            let ts = self.stateless_seconds(now);
            self.stateless_nonce(ts, f)
        } else {
            self.nonce_seq += 1;
            let nonce = format!(
                "{}/{:032x}",
                1_732_300_000 + self.nonce_seq,
                u128::from(self.nonce_seq) * 0x9e37_79b9_7f4a_7c15
            );
            self.nonces.insert(nonce.clone(), now);
            nonce
        };
        let mut s = String::new();
        for alg in &self.algorithms {
            let _ = write!(
                s,
                "WWW-Authenticate: Digest realm=\"{}\",nonce=\"{nonce}\"",
                self.realm
            );
            if let Some(o) = &self.opaque {
                let _ = write!(s, ",opaque=\"{o}\"");
            }
            let _ = write!(s, ",algorithm={alg}");
            if self.qop {
                s.push_str(",qop=\"auth\"");
            }
            if stale {
                s.push_str(",stale=true");
            }
            s.push_str("\r\n");
        }
        s
    }
}

impl FakeRegistrar {
    fn stateless_seconds(&mut self, now: Instant) -> u64 {
        let epoch = *self.epoch.get_or_insert(now);
        1_732_300_000 + now.saturating_duration_since(epoch).as_secs()
    }

    /// Source address as Asterisk sees it: here, the top Via's sent-by host.
    fn stateless_nonce(&self, ts: u64, f: &Fields) -> String {
        let source = f
            .vias
            .first()
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|s| s.split([';', ':']).next())
            .unwrap_or("");
        let hash = Algorithm::Md5.hex(format!("{ts}:{source}:{}", self.realm).as_bytes());
        format!("{ts}/{hash}")
    }

    fn stateless_nonce_valid(&mut self, now: Instant, nonce: &str, f: &Fields) -> bool {
        let Some(ts) = nonce.split('/').next().and_then(|t| t.parse::<u64>().ok()) else {
            return false;
        };
        let age = self.stateless_seconds(now).saturating_sub(ts);
        self.stateless_nonce(ts, f) == nonce && age < self.nonce_lifetime.as_secs()
    }
}

#[derive(Debug, Default)]
struct Fields {
    vias: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    cseq: String,
    contact: String,
    expires: Option<u32>,
    authorization: Option<String>,
}

fn uri_user(v: &str) -> Option<String> {
    let start = v.find("sip:")? + 4;
    let rest = &v[start..];
    let end = rest.find('@')?;
    Some(rest[..end].to_string())
}

fn status_of(resp: &[u8]) -> u16 {
    std::str::from_utf8(resp.get(8..11).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn build_response(code: u16, f: &Fields, extra: &str) -> Vec<u8> {
    let mut s = format!("SIP/2.0 {code} {}\r\n", super::binding::reason_phrase(code));
    for v in &f.vias {
        let _ = write!(s, "Via: {v};received=10.77.0.30\r\n");
    }
    let to_tag = if f.to.contains(";tag=") || code == 100 {
        String::new()
    } else {
        ";tag=as1f2e3d".into()
    };
    let _ = write!(
        s,
        "From: {}\r\nTo: {}{to_tag}\r\nCall-ID: {}\r\nCSeq: {}\r\nServer: Asterisk PBX 22.1.0\r\n{extra}Content-Length: 0\r\n\r\n",
        f.from, f.to, f.call_id, f.cseq
    );
    s.into_bytes()
}

/// One transmission by the mirror, as seen on the wire.
#[derive(Debug, Clone)]
pub struct Sent {
    pub at: Instant,
    pub node: usize,
    pub payload: Vec<u8>,
    pub lost: bool,
}

#[derive(Debug)]
enum Packet {
    ToRegistrar(usize, Vec<u8>),
    ToMirror(usize, Vec<u8>),
}

/// A mirror wired to fake registrars over a simulated network with a virtual clock.
#[derive(Debug)]
pub struct Sim {
    pub start: Instant,
    pub now: Instant,
    pub mirror: Mirror,
    pub registrars: Vec<FakeRegistrar>,
    /// One-way latency.
    pub latency: Duration,
    /// Loss decisions for the next packets, either direction, in order (true = lost).
    pub loss: VecDeque<bool>,
    pub events: Vec<(Instant, Event)>,
    pub sent: Vec<Sent>,
    /// When false, `sent` is not recorded (benchmarks).
    pub keep_sent: bool,
    /// Random loss probability per packet, either direction, when `loss` is empty.
    pub loss_rate: f64,
    rng: rand::rngs::StdRng,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    packets: HashMap<u64, Packet>,
    seq: u64,
}

impl Sim {
    /// `nodes` registrars at 10.77.0.(11+i):5060 with realm = `config.domain`.
    pub fn new(config: MirrorConfig, nodes: usize, transport: Transport, seed: u64) -> Self {
        let mut list = Vec::new();
        let mut registrars = Vec::new();
        for i in 0..nodes {
            let addr = SocketAddr::from(([10, 77, 0, 11 + i as u8], 5060));
            list.push(Node {
                name: format!("ast{}", i + 1),
                addr,
                transport,
            });
            registrars.push(FakeRegistrar::new(addr, &config.domain));
        }
        let start = Instant::now();
        Sim {
            start,
            now: start,
            mirror: Mirror::new(config, list, seed),
            registrars,
            latency: Duration::from_millis(1),
            loss: VecDeque::new(),
            events: Vec::new(),
            sent: Vec::new(),
            keep_sent: true,
            loss_rate: 0.0,
            rng: rand::SeedableRng::seed_from_u64(seed ^ 0x5eed),
            queue: BinaryHeap::new(),
            packets: HashMap::new(),
            seq: 0,
        }
    }

    /// Adds a registrar at the next address and the node to the running mirror. The new
    /// registrar knows the users of the first one.
    pub fn add_node(&mut self) -> usize {
        let i = self.registrars.len();
        let addr = SocketAddr::from(([10, 77, 0, 11 + i as u8], 5060));
        let mut reg = FakeRegistrar::new(addr, &self.mirror.config().domain);
        if let Some(first) = self.registrars.first() {
            reg.users = first.users.clone();
        }
        self.registrars.push(reg);
        let transport = self
            .mirror
            .nodes()
            .next()
            .map_or(Transport::Udp, |n| n.transport);
        let now = self.now;
        self.mirror.add_node(
            now,
            Node {
                name: format!("ast{}", i + 1),
                addr,
                transport,
            },
        );
        self.pump();
        i
    }

    fn lose(&mut self) -> bool {
        match self.loss.pop_front() {
            Some(l) => l,
            None => self.loss_rate > 0.0 && rand::Rng::gen_bool(&mut self.rng, self.loss_rate),
        }
    }

    pub fn add_user(&mut self, username: &str, secret: Secret) {
        for r in &mut self.registrars {
            r.add_user(username, secret.clone());
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    pub fn at(&self, since_start: Duration) -> Instant {
        self.start + since_start
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        self.pump();
        std::mem::take(&mut self.events)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// Moves the mirror's output onto the network.
    pub fn pump(&mut self) {
        while let Some(t) = self.mirror.poll_transmit() {
            let Some(node) = self.registrars.iter().position(|r| r.addr == t.dest) else {
                continue;
            };
            let lost = self.lose();
            if self.keep_sent {
                self.sent.push(Sent {
                    at: self.now,
                    node,
                    payload: t.payload.clone(),
                    lost,
                });
            }
            if !lost {
                self.enqueue(
                    self.now + self.latency,
                    Packet::ToRegistrar(node, t.payload),
                );
            }
        }
        while let Some(e) = self.mirror.poll_event() {
            self.events.push((self.now, e));
        }
    }

    fn enqueue(&mut self, at: Instant, p: Packet) {
        self.seq += 1;
        self.packets.insert(self.seq, p);
        self.queue.push(Reverse((at, self.seq)));
    }

    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    /// Runs the whole system until `end` (virtual time).
    pub fn run_until(&mut self, end: Instant) {
        // A mirror that keeps asking to be woken without time moving would spin a real driver
        // at 100% CPU; fail loudly instead of hanging the test.
        let mut stuck = (self.now, 0u32);
        loop {
            self.pump();
            let next_packet = self.queue.peek().map(|Reverse((t, _))| *t);
            let next = match (self.mirror.poll_timeout(), next_packet) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    if stuck.0 == self.now {
                        stuck.1 += 1;
                        assert!(
                            stuck.1 < 1_000_000,
                            "the mirror asks for wake-ups at {:?} without time moving",
                            self.now
                        );
                    } else {
                        stuck = (self.now, 0);
                    }
                    self.step();
                }
                _ => {
                    self.now = self.now.max(end);
                    self.pump();
                    return;
                }
            }
        }
    }

    fn step(&mut self) {
        while let Some(&Reverse((t, seq))) = self.queue.peek() {
            if t > self.now {
                break;
            }
            self.queue.pop();
            let Some(p) = self.packets.remove(&seq) else {
                continue;
            };
            match p {
                Packet::ToRegistrar(node, bytes) => {
                    let reg = &mut self.registrars[node];
                    let delay = reg.response_delay;
                    for resp in reg.handle(self.now, &bytes) {
                        if !self.lose() {
                            self.enqueue(
                                self.now + delay + self.latency,
                                Packet::ToMirror(node, resp),
                            );
                        }
                    }
                }
                Packet::ToMirror(node, bytes) => {
                    // As the driver reads them: clean responses without rsip.
                    let from = self.registrars[node].addr;
                    match parse_incoming(&bytes) {
                        Ok(Incoming::Response(info)) => {
                            self.mirror.handle_response_info(self.now, from, &info)
                        }
                        Ok(Incoming::Message(rsip::SipMessage::Response(r))) => {
                            self.mirror.handle_response(self.now, from, &r)
                        }
                        _ => {}
                    }
                }
            }
            self.pump();
        }
        if self.mirror.poll_timeout().is_some_and(|t| t <= self.now) {
            self.mirror.handle_timeout(self.now);
        }
    }
}
