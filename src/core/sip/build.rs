//! Every message regmirror writes: REGISTERs, OPTIONS probes (to nodes and to the HA peer) and
//! responses to requests. Inputs were validated (`valid_user_part`, the configuration), so
//! plain formatting cannot inject headers.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::header_values;
use crate::core::digest;

/// Everything a REGISTER needs.
pub struct RegisterRequest<'a> {
    pub domain: &'a str,
    pub user: &'a str,
    pub contact_host: &'a str,
    pub local_addr: SocketAddr,
    pub tcp: bool,
    pub branch: &'a str,
    pub call_id: &'a str,
    pub from_tag: &'a str,
    pub cseq: u32,
    pub expires: u32,
    /// `(proxy, header value)`.
    pub authorization: Option<(bool, &'a str)>,
    pub user_agent: &'a str,
}

impl RegisterRequest<'_> {
    /// Serialises the request. Inputs were validated (`sip::valid_user_part`, config) so plain
    /// formatting cannot inject headers. Written piece by piece: this runs for every transaction.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = Vec::with_capacity(512 + self.authorization.map_or(0, |(_, a)| a.len()));
        let transport = if self.tcp { "TCP" } else { "UDP" };
        let put = |s: &mut Vec<u8>, parts: &[&str]| {
            for p in parts {
                s.extend_from_slice(p.as_bytes());
            }
        };
        put(
            &mut s,
            &[
                "REGISTER sip:",
                self.domain,
                " SIP/2.0\r\nVia: SIP/2.0/",
                transport,
                " ",
            ],
        );
        // Writing to a Vec cannot fail.
        let _ = std::io::Write::write_fmt(&mut s, format_args!("{}", self.local_addr));
        let (mut cseq, mut expires) = (Decimal::default(), Decimal::default());
        put(
            &mut s,
            &[
                ";branch=",
                self.branch,
                ";rport\r\nMax-Forwards: 70\r\nFrom: <sip:",
                self.user,
                "@",
                self.domain,
                ">;tag=",
                self.from_tag,
                "\r\nTo: <sip:",
                self.user,
                "@",
                self.domain,
                ">\r\nCall-ID: ",
                self.call_id,
                "\r\nCSeq: ",
                cseq.of(self.cseq),
                " REGISTER\r\nContact: <sip:",
                self.user,
                "@",
                self.contact_host,
                if self.expires == 0 {
                    ">;expires=0\r\nExpires: "
                } else {
                    ">\r\nExpires: "
                },
                expires.of(self.expires),
                "\r\n",
            ],
        );
        if let Some((proxy, value)) = self.authorization {
            let name = if proxy {
                "Proxy-Authorization: "
            } else {
                "Authorization: "
            };
            put(&mut s, &[name, value, "\r\n"]);
        }
        put(
            &mut s,
            &[
                "User-Agent: ",
                self.user_agent,
                "\r\nContent-Length: 0\r\n\r\n",
            ],
        );
        s
    }
}

/// Decimal digits of a `u32` on the stack.
#[derive(Default)]
struct Decimal([u8; 10]);

impl Decimal {
    fn of(&mut self, mut v: u32) -> &str {
        let mut i = self.0.len();
        loop {
            i -= 1;
            self.0[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        std::str::from_utf8(&self.0[i..]).unwrap_or("0")
    }
}

/// Everything an OPTIONS probe needs.
pub struct OptionsRequest<'a> {
    pub request_uri: &'a str,
    pub tcp: bool,
    pub local_addr: SocketAddr,
    pub branch: &'a str,
    pub from_uri: &'a str,
    pub from_tag: &'a str,
    pub to_uri: &'a str,
    pub call_id: &'a str,
    pub cseq: u32,
    /// One more header (`name`, `value`), e.g. the HA state.
    pub extra: Option<(&'a str, &'a str)>,
    pub user_agent: &'a str,
}

impl OptionsRequest<'_> {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut o = String::with_capacity(512);
        let _ = write!(
            o,
            "OPTIONS {uri} SIP/2.0\r\n\
             Via: SIP/2.0/{t} {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{from}>;tag={from_tag}\r\n\
             To: <{to}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} OPTIONS\r\n",
            uri = self.request_uri,
            t = if self.tcp { "TCP" } else { "UDP" },
            local = self.local_addr,
            branch = self.branch,
            from = self.from_uri,
            from_tag = self.from_tag,
            to = self.to_uri,
            call_id = self.call_id,
            cseq = self.cseq,
        );
        if let Some((name, value)) = self.extra {
            let _ = write!(o, "{name}: {value}\r\n");
        }
        let _ = write!(
            o,
            "User-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            self.user_agent
        );
        o.into_bytes()
    }
}

/// Whether a From/To value carries a `tag` parameter (outside the `<...>` URI).
pub(super) fn has_tag(value: &str) -> bool {
    let params = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value.split_once(';').map(|(_, p)| p).unwrap_or(""),
    };
    params.split(';').any(|p| {
        p.trim()
            .split('=')
            .next()
            .is_some_and(|n| n.trim().eq_ignore_ascii_case("tag"))
    })
}

/// Builds a response to `req` with Via(s), From, To (tagged), Call-ID and CSeq copied and no body.
///
/// The To tag is derived from the request's identifiers, so a retransmitted request gets the
/// same response. `reason` is stripped of control characters.
pub fn response_for(req: &rsip::Request, code: u16, reason: &str) -> Vec<u8> {
    let code = if (100..=699).contains(&code) {
        code
    } else {
        500
    };
    let reason: String = reason.chars().filter(|c| !c.is_control()).collect();
    let mut out = String::with_capacity(512);
    let _ = write!(out, "SIP/2.0 {code} {reason}\r\n");
    for v in header_values(&req.headers, "Via") {
        let _ = write!(out, "Via: {v}\r\n");
    }
    let from = header_values(&req.headers, "From").next().unwrap_or("");
    let call_id = header_values(&req.headers, "Call-ID").next().unwrap_or("");
    let cseq = header_values(&req.headers, "CSeq").next().unwrap_or("");
    let _ = write!(out, "From: {from}\r\n");
    if let Some(to) = header_values(&req.headers, "To").next() {
        if has_tag(to) || code == 100 {
            let _ = write!(out, "To: {to}\r\n");
        } else {
            let seed = format!("{call_id}\n{from}\n{cseq}");
            let tag = &digest::Algorithm::Md5.hex(seed.as_bytes())[..16];
            let _ = write!(out, "To: {to};tag={tag}\r\n");
        }
    }
    let _ = write!(
        out,
        "Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    );
    out.into_bytes()
}

/// Adds a header to a response built by [`response_for`] (which ends with the empty line).
pub fn with_header(mut response: Vec<u8>, name: &str, value: &str) -> Vec<u8> {
    if response.ends_with(b"\r\n\r\n") {
        response.truncate(response.len() - 2);
        response.extend_from_slice(format!("{name}: {value}\r\n\r\n").as_bytes());
    }
    response
}
