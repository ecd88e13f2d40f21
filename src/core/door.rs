//! The front door: what regmirror does with each message it receives, decided without I/O.
//!
//! Trust (Kamailio's addresses, the notification's keyed hash and age), the answer to every
//! request (200, 400, 405, 503 while shutting down, the HA header on OPTIONS), and which
//! messages are responses for the mirror or answers to our HA probes. The shell counts, logs,
//! sends the reply and hands notifications and responses on.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rsip::SipMessage;

use crate::core::notify::{parse_notification, AuthError, Notification, NotifyError};
use crate::core::peer::{self, Role};
use crate::core::response::ResponseInfo;
use crate::core::sip::{
    header_values, parse_incoming, parse_message, response_for, Incoming, WireError, MAX_MESSAGE,
};

/// Who may talk to regmirror, and how notifications prove where they come from.
#[derive(Debug, Clone, Default)]
pub struct DoorConfig {
    /// Kamailio's addresses: the only sources whose requests are answered.
    pub trusted: Vec<IpAddr>,
    /// `kamailio.notify_key`: notifications must carry its keyed hash.
    pub notify_key: Option<Vec<u8>>,
    pub notify_max_skew: Duration,
    /// The HA peer and the tag our probes carry (`[ha]`).
    pub peer: Option<(SocketAddr, u32)>,
}

/// What this instance is doing, as the door answers for it.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub role: Role,
    /// Shutting down: notifications are refused with 503.
    pub draining: bool,
    /// Doing the work: active, not draining, `location` read and the database readable. The
    /// HA header says so; otherwise the secondary must not stand down for us.
    pub serving: bool,
}

/// How a message arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// A UDP datagram: Kamailio, the HA peer, or a node answering.
    Datagram,
    /// A frame on a TCP connection regmirror opened to a node.
    Stream,
}

/// A node's response, read by the fast path or through rsip.
#[derive(Debug)]
pub enum NodeResponse<'a> {
    Fast(ResponseInfo<'a>),
    Parsed(rsip::Response),
}

impl NodeResponse<'_> {
    /// Calls `f` with the response's fields (read from rsip's headers when it went that way).
    pub fn with_info<R>(&self, f: impl FnOnce(&ResponseInfo<'_>) -> R) -> R {
        match self {
            NodeResponse::Fast(info) => f(info),
            NodeResponse::Parsed(r) => f(&ResponseInfo::from_response(r)),
        }
    }
}

/// Why a message was dropped unanswered.
#[derive(Debug)]
pub enum Dropped {
    Oversized(usize),
    Malformed(WireError),
    /// A request from a source that is neither Kamailio nor the HA peer's OPTIONS.
    Untrusted(rsip::Method),
    /// A notification without a valid keyed hash, or too old or too new.
    Unproven {
        user: String,
        reason: AuthError,
    },
}

/// What a request that was answered said.
#[derive(Debug)]
pub enum Answered {
    /// A valid notification from Kamailio: the mirror's (200).
    Notification(Notification),
    /// 400.
    BadNotification(NotifyError),
    /// 503: shutting down.
    ShuttingDown,
    /// 200 (with the HA header on datagrams).
    Options,
    /// 405.
    NotAllowed,
}

/// What to do with one received message.
#[derive(Debug)]
pub enum Received<'a> {
    /// A keepalive or an ACK.
    Nothing,
    Dropped(Dropped),
    /// A response to one of our REGISTERs (or probes): the mirror's.
    Response(NodeResponse<'a>),
    /// The HA peer's answer to our probe `seq`.
    PeerAnswer {
        seq: u32,
        response: rsip::Response,
    },
    /// A request, answered with `reply` (sent back to its source).
    Answered {
        reply: Vec<u8>,
        what: Answered,
    },
}

pub struct Door {
    config: DoorConfig,
}

impl Door {
    pub fn new(config: DoorConfig) -> Door {
        Door { config }
    }

    pub fn config(&self) -> &DoorConfig {
        &self.config
    }

    /// Whether `from` is the HA peer (its OPTIONS are answered although it is not Kamailio).
    pub fn is_peer(&self, from: SocketAddr) -> bool {
        self.config.peer.is_some_and(|(p, _)| p.ip() == from.ip())
    }

    /// Decides what `bytes` from `from` gets; `wall_us` is the wall clock (notification ages).
    pub fn receive<'a>(
        &self,
        bytes: &'a [u8],
        from: SocketAddr,
        arrival: Arrival,
        standing: Standing,
        wall_us: u64,
    ) -> Received<'a> {
        if bytes.len() > MAX_MESSAGE {
            return Received::Dropped(Dropped::Oversized(bytes.len()));
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Received::Nothing; // CRLF keepalive
        }
        if arrival == Arrival::Datagram && self.is_peer(from) && bytes.starts_with(b"SIP/2.0 ") {
            if let Some(answer) = self.peer_answer(bytes) {
                return answer;
            }
        }
        match parse_incoming(bytes) {
            Err(e) => Received::Dropped(Dropped::Malformed(e)),
            Ok(Incoming::Response(info)) => Received::Response(NodeResponse::Fast(info)),
            Ok(Incoming::Message(SipMessage::Response(r))) => {
                Received::Response(NodeResponse::Parsed(r))
            }
            Ok(Incoming::Message(SipMessage::Request(req))) => match arrival {
                Arrival::Datagram => self.request(&req, from, standing, wall_us),
                Arrival::Stream => node_request(&req),
            },
        }
    }

    /// Answers to our HA probes (1/s, from the peer only) carry X-RegMirror-HA: read by rsip.
    fn peer_answer(&self, bytes: &[u8]) -> Option<Received<'static>> {
        let (_, tag) = self.config.peer?;
        let Ok(SipMessage::Response(response)) = parse_message(bytes) else {
            return None;
        };
        let seq = header_values(&response.headers, "Call-ID")
            .next()
            .and_then(|c| peer::probe_seq(c, tag))?;
        Some(Received::PeerAnswer { seq, response })
    }

    fn request(
        &self,
        req: &rsip::Request,
        from: SocketAddr,
        standing: Standing,
        wall_us: u64,
    ) -> Received<'static> {
        let peer_probe = req.method == rsip::Method::Options && self.is_peer(from);
        if !self.config.trusted.contains(&from.ip()) && !peer_probe {
            // Never answered: an untrusted source learns nothing (and is never challenged).
            return Received::Dropped(Dropped::Untrusted(req.method));
        }
        let (code, reason, what) = match req.method {
            rsip::Method::Ack => return Received::Nothing,
            // Kamailio's transaction ends at once instead of retransmitting to a dying socket.
            rsip::Method::Message if standing.draining => {
                (503, "Shutting Down", Answered::ShuttingDown)
            }
            rsip::Method::Options => {
                let reply = peer::with_header(
                    response_for(req, 200, "OK"),
                    standing.role,
                    standing.serving,
                );
                return Received::Answered {
                    reply,
                    what: Answered::Options,
                };
            }
            rsip::Method::Message => match parse_notification(req) {
                Ok(n) => {
                    if let Err(reason) = self.proof_of_origin(&n, wall_us) {
                        let user = crate::core::notify::aor_user(&n.aor).to_string();
                        return Received::Dropped(Dropped::Unproven { user, reason });
                    }
                    (200, "OK", Answered::Notification(n))
                }
                Err(e) => (400, "Bad Notification", Answered::BadNotification(e)),
            },
            _ => (405, "Method Not Allowed", Answered::NotAllowed),
        };
        Received::Answered {
            reply: response_for(req, code, reason),
            what,
        }
    }

    /// With `notify_key`: the notification's keyed hash and time check out. Anything else is
    /// dropped unanswered (its source address may be forged).
    fn proof_of_origin(&self, n: &Notification, wall_us: u64) -> Result<(), AuthError> {
        match &self.config.notify_key {
            None => Ok(()),
            Some(key) => n.verify(key, wall_us, self.config.notify_max_skew),
        }
    }
}

/// A request on a connection we opened to a node: its OPTIONS is a keepalive check (200 on the
/// same connection); anything else 405, ACK nothing. Notifications come over UDP only.
fn node_request(req: &rsip::Request) -> Received<'static> {
    let (code, reason, what) = match req.method {
        rsip::Method::Ack => return Received::Nothing,
        rsip::Method::Options => (200, "OK", Answered::Options),
        _ => (405, "Method Not Allowed", Answered::NotAllowed),
    };
    Received::Answered {
        reply: response_for(req, code, reason),
        what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KAMAILIO: &str = "10.0.0.1:5060";
    const STRANGER: &str = "10.0.0.9:5060";
    const PEER: &str = "10.0.0.2:5070";

    fn door(key: Option<&str>) -> Door {
        Door::new(DoorConfig {
            trusted: vec!["10.0.0.1".parse().unwrap()],
            notify_key: key.map(|k| k.as_bytes().to_vec()),
            notify_max_skew: Duration::from_secs(30),
            peer: Some((PEER.parse().unwrap(), 7)),
        })
    }

    fn standing(draining: bool) -> Standing {
        Standing {
            role: Role::Primary,
            draining,
            serving: !draining,
        }
    }

    fn request(method: &str, extra: &str) -> Vec<u8> {
        format!(
            "{method} sip:regmirror@10.0.0.5 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\n\
             From: <sip:k@d>;tag=1\r\nTo: <sip:regmirror@10.0.0.5>\r\nCall-ID: c1\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    fn notification() -> Vec<u8> {
        request(
            "MESSAGE",
            "X-RegMirror-Event: save\r\nX-RegMirror-AOR: 1001@d\r\nX-RegMirror-Expires: 60\r\n",
        )
    }

    fn receive(d: &Door, bytes: &[u8], from: &str, draining: bool) -> String {
        let r = d.receive(
            bytes,
            from.parse().unwrap(),
            Arrival::Datagram,
            standing(draining),
            0,
        );
        match r {
            Received::Answered { reply, what } => format!(
                "{} {what:?}",
                String::from_utf8_lossy(&reply).split(' ').nth(1).unwrap()
            ),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn kamailio_notification_is_accepted_and_answered_200() {
        let out = receive(&door(None), &notification(), KAMAILIO, false);
        assert!(out.starts_with("200 Notification"), "{out}");
        assert!(out.contains("1001@d"), "{out}");
    }

    #[test]
    fn strangers_are_never_answered() {
        for m in ["MESSAGE", "OPTIONS", "REGISTER", "INVITE"] {
            let out = receive(&door(None), &request(m, ""), STRANGER, false);
            assert!(out.starts_with("Dropped(Untrusted"), "{m}: {out}");
        }
    }

    #[test]
    fn draining_refuses_notifications_with_503() {
        let out = receive(&door(None), &notification(), KAMAILIO, true);
        assert!(out.starts_with("503 ShuttingDown"), "{out}");
    }

    #[test]
    fn other_methods_get_405_and_ack_nothing() {
        let out = receive(&door(None), &request("INVITE", ""), KAMAILIO, false);
        assert!(out.starts_with("405 NotAllowed"), "{out}");
        let out = receive(&door(None), &request("ACK", ""), KAMAILIO, false);
        assert_eq!(out, "Nothing");
    }

    #[test]
    fn the_peer_may_probe_and_learns_whether_we_serve() {
        let d = door(None);
        let options = request("OPTIONS", "");
        for (draining, said) in [(false, "active"), (true, "standby")] {
            let r = d.receive(
                &options,
                PEER.parse().unwrap(),
                Arrival::Datagram,
                standing(draining),
                0,
            );
            let Received::Answered { reply, .. } = r else {
                panic!("{r:?}")
            };
            let text = String::from_utf8(reply).unwrap();
            assert!(text.contains("X-RegMirror-HA: role=primary;"), "{text}");
            assert!(text.contains(&format!("state={said}")), "{text}");
        }
        // The peer may probe, nothing more.
        let out = receive(&d, &notification(), PEER, false);
        assert!(out.starts_with("Dropped(Untrusted"), "{out}");
    }

    #[test]
    fn unsigned_notifications_are_dropped_when_a_key_is_set() {
        let out = receive(&door(Some("k")), &notification(), KAMAILIO, false);
        assert!(out.starts_with("Dropped(Unproven"), "{out}");
        assert!(out.contains("1001"), "{out}");
    }

    #[test]
    fn bad_notifications_get_400() {
        let bad = request("MESSAGE", "X-RegMirror-Event: save\r\n");
        let out = receive(&door(None), &bad, KAMAILIO, false);
        assert!(out.starts_with("400 BadNotification"), "{out}");
    }

    #[test]
    fn keepalives_oversized_and_garbage() {
        let d = door(None);
        assert_eq!(receive(&d, b"\r\n\r\n", KAMAILIO, false), "Nothing");
        let big = vec![b'x'; MAX_MESSAGE + 1];
        assert!(receive(&d, &big, KAMAILIO, false).starts_with("Dropped(Oversized"));
        assert!(receive(&d, b"\x00garbage", STRANGER, false).starts_with("Dropped(Malformed"));
    }

    #[test]
    fn node_streams_get_200_to_options_and_405_otherwise() {
        let d = door(None);
        let from = "10.0.0.31:5060".parse().unwrap();
        for (m, code) in [("OPTIONS", "200"), ("NOTIFY", "405")] {
            let req = request(m, "");
            let r = d.receive(&req, from, Arrival::Stream, standing(false), 0);
            let Received::Answered { reply, .. } = r else {
                panic!("{r:?}")
            };
            assert!(reply.starts_with(format!("SIP/2.0 {code}").as_bytes()));
        }
    }

    #[test]
    fn a_peer_answer_is_told_from_a_node_response_by_its_tag() {
        let d = door(None);
        let call_id = peer::probe_request(
            "10.0.0.5:5070".parse().unwrap(),
            PEER.parse().unwrap(),
            7,
            42,
            peer::PeerState {
                role: Role::Primary,
                active: true,
            },
            "ua",
        );
        let text = String::from_utf8(call_id).unwrap();
        let cid = text
            .lines()
            .find_map(|l| l.strip_prefix("Call-ID: "))
            .unwrap();
        let answer = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
             To: <sip:a@b>;tag=2\r\nCall-ID: {cid}\r\nCSeq: 42 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let r = d.receive(
            answer.as_bytes(),
            PEER.parse().unwrap(),
            Arrival::Datagram,
            standing(false),
            0,
        );
        assert!(matches!(r, Received::PeerAnswer { seq: 42, .. }), "{r:?}");
        let r = d.receive(
            answer.as_bytes(),
            "10.0.0.31:5060".parse().unwrap(),
            Arrival::Datagram,
            standing(false),
            0,
        );
        assert!(matches!(r, Received::Response(_)), "{r:?}");
    }
}
