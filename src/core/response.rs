//! What regmirror reads from a node's response to a REGISTER: the fields the binding state
//! machine needs, read once per header (by `sip::parse_incoming`, or from an rsip message).
//! A leaf of the wire code: `sip` builds these, `binding` and `mirror` consume them.

use rsip::headers::UntypedHeader;
use rsip::Header;

use super::digest::Challenge;

/// The headers this crate reads, recognised once per line, case-insensitively (as rsip does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    ContentLength,
    WwwAuthenticate,
    ProxyAuthenticate,
    MinExpires,
    RetryAfter,
    Expires,
    Contact,
    Other,
}

impl HeaderKind {
    /// Kind of a full (expanded) header name.
    pub(crate) fn of(name: &str) -> HeaderKind {
        use HeaderKind::*;
        let is = |s: &str| name.eq_ignore_ascii_case(s);
        match name.len() {
            2 if is("To") => To,
            3 if is("Via") => Via,
            4 if is("From") => From,
            4 if is("CSeq") => CSeq,
            7 if is("Call-ID") => CallId,
            7 if is("Contact") => Contact,
            7 if is("Expires") => Expires,
            11 if is("Min-Expires") => MinExpires,
            11 if is("Retry-After") => RetryAfter,
            14 if is("Content-Length") => ContentLength,
            16 if is("WWW-Authenticate") => WwwAuthenticate,
            18 if is("Proxy-Authenticate") => ProxyAuthenticate,
            _ => Other,
        }
    }
}

/// The fields of a response to a REGISTER that the state machine needs.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResponseInfo<'a> {
    pub code: u16,
    pub branch: Option<&'a str>,
    pub call_id: Option<&'a str>,
    pub cseq: Option<u32>,
    pub cseq_is_register: bool,
    /// Raw `WWW-Authenticate` / `Proxy-Authenticate` header values (one header may hold several).
    pub www_authenticate: Vec<&'a str>,
    pub proxy_authenticate: Vec<&'a str>,
    pub min_expires: Option<u32>,
    pub retry_after: Option<u32>,
    pub expires: Option<u32>,
    pub contacts: Vec<&'a str>,
}

impl<'a> ResponseInfo<'a> {
    pub fn from_response(resp: &'a rsip::Response) -> Self {
        let mut info = ResponseInfo {
            code: resp.status_code.code(),
            ..Default::default()
        };
        for h in resp.headers.iter() {
            let (kind, value) = match h {
                Header::Via(v) => (HeaderKind::Via, v.value()),
                Header::CallId(c) => (HeaderKind::CallId, c.value()),
                Header::CSeq(c) => (HeaderKind::CSeq, c.value()),
                Header::WwwAuthenticate(w) => (HeaderKind::WwwAuthenticate, w.value()),
                Header::ProxyAuthenticate(p) => (HeaderKind::ProxyAuthenticate, p.value()),
                Header::MinExpires(m) => (HeaderKind::MinExpires, m.value()),
                Header::RetryAfter(r) => (HeaderKind::RetryAfter, r.value()),
                Header::Expires(e) => (HeaderKind::Expires, e.value()),
                Header::Contact(c) => (HeaderKind::Contact, c.value()),
                // Compact forms rsip does not map.
                Header::Other(name, value) => match name.as_str() {
                    "v" => (HeaderKind::Via, value.as_str()),
                    "i" => (HeaderKind::CallId, value.as_str()),
                    "m" => (HeaderKind::Contact, value.as_str()),
                    _ => continue,
                },
                _ => continue,
            };
            info.add_header(kind, value);
        }
        info
    }

    /// Takes in one header, in message order (shared by the rsip path and `sip::parse_incoming`).
    pub(crate) fn add_header(&mut self, kind: HeaderKind, value: &'a str) {
        match kind {
            HeaderKind::Via if self.branch.is_none() => self.branch = via_branch(value),
            HeaderKind::CallId => self.call_id = Some(value.trim()),
            HeaderKind::CSeq => {
                let mut parts = value.split_ascii_whitespace();
                self.cseq = parts.next().and_then(|n| n.parse().ok());
                self.cseq_is_register = parts
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("REGISTER"));
            }
            HeaderKind::WwwAuthenticate => self.www_authenticate.push(value),
            HeaderKind::ProxyAuthenticate => self.proxy_authenticate.push(value),
            HeaderKind::MinExpires => self.min_expires = leading_u32(value),
            HeaderKind::RetryAfter => self.retry_after = leading_u32(value),
            HeaderKind::Expires => self.expires = leading_u32(value),
            HeaderKind::Contact => self.contacts.push(value),
            _ => {}
        }
    }

    /// Parsed Digest challenges of the 401 (`www`) or 407 kind; unparseable ones are skipped.
    pub fn challenges(&self, proxy: bool) -> Vec<Challenge> {
        let raw = if proxy {
            &self.proxy_authenticate
        } else {
            &self.www_authenticate
        };
        raw.iter()
            .flat_map(|v| split_challenges(v))
            .filter_map(|c| Challenge::parse(c).ok())
            .collect()
    }

    /// Expiry the node granted to `<sip:user@contact_host>`: its Contact `expires` param, else
    /// the Expires header.
    pub fn granted_expires(&self, user: &str, contact_host: &str) -> Option<u32> {
        for value in &self.contacts {
            for c in split_top_level(value, ',') {
                if let Some(e) = contact_expires_for(c, user, contact_host) {
                    return Some(e);
                }
            }
        }
        self.expires
    }
}

fn leading_u32(s: &str) -> Option<u32> {
    let s = s.trim_start();
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

/// `branch` parameter of the first Via in a header value.
fn via_branch(value: &str) -> Option<&str> {
    let first = value.split(',').next()?;
    first.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("branch").then(|| v.trim())
    })
}

/// Splits on `sep` outside quotes and angle brackets.
fn split_top_level(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    let mut escaped = false;
    for (i, ch) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match ch {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            c if c == sep && !quoted && !angle => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter()
}

/// One header value may hold several challenges: `Digest a=1, b=2, Digest c=3`.
fn split_challenges(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    let mut offset: usize = 0;
    for part in split_top_level(value, ',') {
        // Bytes, not `str` slicing: byte 6 may fall inside a multi-byte character.
        let t = part.trim_start().as_bytes();
        let is_scheme =
            t.len() > 6 && t[..6].eq_ignore_ascii_case(b"digest") && t[6].is_ascii_whitespace();
        if is_scheme {
            if let Some(s) = start {
                out.push(value[s..offset.saturating_sub(1)].trim());
            }
            start = Some(offset);
        }
        offset += part.len() + 1;
    }
    if let Some(s) = start {
        out.push(value[s..].trim());
    }
    out
}

/// `expires` of one Contact entry when its URI is `sip:user@contact_host`.
fn contact_expires_for(entry: &str, user: &str, contact_host: &str) -> Option<u32> {
    let entry = entry.trim();
    let (uri, params) = match (entry.find('<'), entry.find('>')) {
        (Some(a), Some(b)) if a < b => (&entry[a + 1..b], &entry[b + 1..]),
        _ => entry.split_once(';').map_or((entry, ""), |(u, p)| (u, p)),
    };
    let uri = uri.trim();
    let rest = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("SIP:"))?;
    let rest = rest.split(';').next().unwrap_or(rest);
    let (u, host) = rest.split_once('@')?;
    if u != user || !host.eq_ignore_ascii_case(contact_host) {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("expires") {
            leading_u32(v)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_several_challenges_in_one_header() {
        let v = r#"Digest realm="a,b", nonce="1", algorithm=SHA-256, Digest realm="r",nonce="2",qop="auth,auth-int""#;
        let parts = split_challenges(v);
        assert_eq!(parts.len(), 2, "{parts:?}");
        assert!(Challenge::parse(parts[0]).is_ok());
        let c = Challenge::parse(parts[1]).unwrap();
        assert_eq!(c.nonce, "2");
        assert_eq!(c.qop.len(), 2);
    }

    #[test]
    fn a_challenge_with_a_non_ascii_parameter_name_is_skipped_not_a_panic() {
        // Byte 6 of `nonceé` falls inside the `é`: slicing the str there panicked (issue 15).
        for v in [
            "nonce\u{e9}=\"1\"",
            "Digest nonce\u{e9}=\"1\", Digest realm=\"r\",nonce=\"2\"",
            "\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            let parts = split_challenges(v);
            assert!(parts.len() <= 2, "{parts:?}");
        }
        let raw = "SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1\r\n\
                   From: <sip:1001@r>;tag=a\r\nTo: <sip:1001@r>;tag=b\r\n\
                   Call-ID: c\r\nCSeq: 1 REGISTER\r\n\
                   WWW-Authenticate: nonce\u{e9}=\"1\"\r\nContent-Length: 0\r\n\r\n";
        // Whichever path reads it (without rsip, or through rsip), the challenge is skipped.
        match crate::core::sip::parse_incoming(raw.as_bytes()) {
            Ok(crate::core::sip::Incoming::Response(info)) => {
                assert!(info.challenges(false).is_empty())
            }
            Ok(crate::core::sip::Incoming::Message(rsip::SipMessage::Response(r))) => {
                assert!(ResponseInfo::from_response(&r).challenges(false).is_empty())
            }
            other => panic!("not read as a response: {other:?}"),
        }
    }

    #[test]
    fn contact_expires_match_our_contact_only() {
        let v = r#"<sip:1001@10.0.0.9:5060>;expires=50, "x" <sip:1001@10.77.0.20:5060;transport=udp>;expires=590"#;
        let parts: Vec<_> = split_top_level(v, ',').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            contact_expires_for(parts[0], "1001", "10.77.0.20:5060"),
            None
        );
        assert_eq!(
            contact_expires_for(parts[1], "1001", "10.77.0.20:5060"),
            Some(590)
        );
    }
}
