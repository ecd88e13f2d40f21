//! Bounded, panic-free parsing of SIP bytes from the network, on top of `rsip` 0.4.
//!
//! rsip's own tokenizer is lenient in ways that matter here (it ignores Content-Length, knows no
//! compact header names or line folding, lets bare CR/LF and NUL through header values), so the
//! header section is checked and normalized here first and rsip only sees clean input:
//! one `Name: value` per line, full header names, body cut at Content-Length.

use std::fmt::Write as _;

use rsip::headers::UntypedHeader;
use rsip::{Header, SipMessage};
use thiserror::Error;

use super::digest::{self, DigestError};
use super::response::{HeaderKind, ResponseInfo};

/// Largest message accepted, on UDP (one datagram) and on a stream (one framed message).
/// Kamailio's notifications and Asterisk's responses are well under 2 KiB.
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Most header lines accepted in one message.
pub const MAX_HEADERS: usize = 128;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("empty message")]
    Empty,
    #[error("message is not valid UTF-8")]
    NotUtf8,
    #[error("no blank line ending the header section")]
    NoHeaderEnd,
    #[error("malformed start line")]
    StartLine,
    #[error("malformed header line {0}")]
    HeaderLine(usize),
    #[error("control character in header line {0}")]
    ControlChar(usize),
    #[error("more than {MAX_HEADERS} header lines")]
    TooManyHeaders,
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("duplicate {0} header")]
    DuplicateHeader(&'static str),
    #[error("invalid {0} header")]
    InvalidHeader(&'static str),
    #[error("CSeq method does not match the request method")]
    CSeqMethodMismatch,
    #[error("body shorter than Content-Length ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("rsip rejected the message: {0}")]
    Rsip(String),
    #[error("start line not understood (rsip read past it)")]
    RsipMismatch,
}

/// Compact header forms (RFC 3261 7.3.3, RFC 3515, RFC 3841) that rsip 0.4 does not know.
fn expand_compact(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'v' => "Via",
        b'f' => "From",
        b't' => "To",
        b'i' => "Call-ID",
        b'm' => "Contact",
        b'l' => "Content-Length",
        b'c' => "Content-Type",
        b'e' => "Content-Encoding",
        b'k' => "Supported",
        b's' => "Subject",
        _ => name,
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// One header line of a checked header section.
struct Line<'a> {
    /// Full (not compact) name as received, e.g. `Call-ID`.
    name: &'a str,
    kind: HeaderKind,
    /// Value with surrounding whitespace removed; folded lines joined by a single space.
    value: std::borrow::Cow<'a, str>,
}

/// A header section split into its start line and checked header lines.
struct Head<'a> {
    start: &'a str,
    lines: Vec<Line<'a>>,
    /// Every line was already `Name: value` as rsip wants it.
    verbatim: bool,
}

/// End of the line of `b` starting at `from`: the index of its CRLF (or `b.len()`). `None` when
/// the line holds a control character other than HTAB, a bare CR or LF included.
fn line_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    loop {
        let off = b.get(i..)?.iter().position(|&c| c < 0x20 || c == 0x7f);
        let Some(off) = off else {
            return Some(b.len());
        };
        i += off;
        match b[i] {
            b'\t' => i += 1,
            b'\r' if b.get(i + 1) == Some(&b'\n') => return Some(i),
            _ => return None,
        }
    }
}

/// Splits and checks `head` (the text before the blank line, without it).
fn parse_head(head: &str) -> Result<Head<'_>, WireError> {
    let bytes = head.as_bytes();
    // A control character in the start line is the start line's error.
    let end = line_end(bytes, 0).ok_or(WireError::StartLine)?;
    let start = &head[..end];
    check_start_line(start)?;
    let mut lines: Vec<Line<'_>> = Vec::with_capacity(16);
    let mut verbatim = true;
    let mut pos = end;
    let mut n = 1; // 1-based line number, counting the start line
    while pos < bytes.len() {
        pos += 2; // the CRLF ending the previous line
        n += 1;
        let end = line_end(bytes, pos).ok_or(WireError::ControlChar(n))?;
        let l = &head[pos..end];
        pos = end;
        if l.starts_with([' ', '\t']) {
            // Line folding (RFC 3261 7.3.1): continuation of the previous value.
            let prev = lines.last_mut().ok_or(WireError::HeaderLine(n))?;
            verbatim = false;
            let cont = l.trim_matches([' ', '\t']);
            if !cont.is_empty() {
                let v = prev.value.to_mut();
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(cont);
            }
            continue;
        }
        let colon = l.find(':').ok_or(WireError::HeaderLine(n))?;
        let name = l[..colon].trim_end_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(WireError::HeaderLine(n));
        }
        if lines.len() == MAX_HEADERS {
            return Err(WireError::TooManyHeaders);
        }
        let full = expand_compact(name);
        let value = l[colon + 1..].trim_matches([' ', '\t']);
        // Verbatim = the name exactly as written (no compact form, no space before the colon).
        if &l[..colon] != full
            || l.len() != colon + 2 + value.len()
            || l.as_bytes().get(colon + 1) != Some(&b' ')
        {
            verbatim = false;
        }
        lines.push(Line {
            name: full,
            kind: HeaderKind::of(full),
            value: value.into(),
        });
    }
    Ok(Head {
        start,
        lines,
        verbatim,
    })
}

/// `Method SP Request-URI SP SIP/2.0` or `SIP/2.0 SP 3DIGIT SP Reason-Phrase`.
fn check_start_line(start: &str) -> Result<(), WireError> {
    if start.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(WireError::StartLine);
    }
    if let Some(rest) = start.strip_prefix("SIP/2.0 ") {
        let code = rest.get(..3).ok_or(WireError::StartLine)?;
        let ok_code =
            code.bytes().all(|b| b.is_ascii_digit()) && (b'1'..=b'6').contains(&code.as_bytes()[0]);
        let ok_sep = rest.len() == 3 || rest.as_bytes()[3] == b' ';
        if ok_code && ok_sep {
            return Ok(());
        }
        return Err(WireError::StartLine);
    }
    let mut parts = start.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(uri), Some("SIP/2.0"), None)
            if !m.is_empty() && m.bytes().all(is_token_char) && !uri.is_empty() =>
        {
            Ok(())
        }
        _ => Err(WireError::StartLine),
    }
}

impl Head<'_> {
    fn all(&self, kind: HeaderKind) -> impl Iterator<Item = &str> + '_ {
        self.lines
            .iter()
            .filter(move |l| l.kind == kind)
            .map(|l| l.value.as_ref())
    }

    /// The single value of a header that must appear at most once.
    fn single(&self, kind: HeaderKind, name: &'static str) -> Result<Option<&str>, WireError> {
        let mut it = self.all(kind);
        let first = it.next();
        if it.next().is_some() {
            return Err(WireError::DuplicateHeader(name));
        }
        Ok(first)
    }

    fn content_length(&self) -> Result<Option<usize>, WireError> {
        // Repeated identical values are tolerated; differing ones make framing ambiguous.
        let mut out: Option<usize> = None;
        for v in self.all(HeaderKind::ContentLength) {
            let n =
                parse_decimal(v, MAX_MESSAGE).ok_or(WireError::InvalidHeader("Content-Length"))?;
            if out.is_some_and(|o| o != n) {
                return Err(WireError::DuplicateHeader("Content-Length"));
            }
            out = Some(n);
        }
        Ok(out)
    }

    fn check_required(&self) -> Result<(), WireError> {
        if self.all(HeaderKind::Via).all(|v| v.is_empty()) {
            return Err(WireError::MissingHeader("Via"));
        }
        for (kind, name) in [
            (HeaderKind::From, "From"),
            (HeaderKind::To, "To"),
            (HeaderKind::CallId, "Call-ID"),
        ] {
            match self.single(kind, name)? {
                None => return Err(WireError::MissingHeader(name)),
                Some("") => return Err(WireError::InvalidHeader(name)),
                Some(_) => {}
            }
        }
        let cseq = self
            .single(HeaderKind::CSeq, "CSeq")?
            .ok_or(WireError::MissingHeader("CSeq"))?;
        let (_, cseq_method) = parse_cseq(cseq).ok_or(WireError::InvalidHeader("CSeq"))?;
        if !self.start.starts_with("SIP/2.0 ") {
            let method = self.start.split(' ').next().unwrap_or("");
            if method != cseq_method {
                return Err(WireError::CSeqMethodMismatch);
            }
        }
        Ok(())
    }
}

/// Parses ASCII decimal digits only (no sign, no spaces) into a value `<= max`.
fn parse_decimal(s: &str, max: usize) -> Option<usize> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>()
        .ok()
        .filter(|n| *n <= max as u64)
        .map(|n| n as usize)
}

/// `CSeq: 4711 REGISTER` -> `(4711, "REGISTER")`. The number must be below 2^31 (RFC 3261 8.1.1.5).
pub fn parse_cseq(value: &str) -> Option<(u32, &str)> {
    let mut it = value.split([' ', '\t']).filter(|s| !s.is_empty());
    let (num, method) = (it.next()?, it.next()?);
    if it.next().is_some() || !method.bytes().all(is_token_char) {
        return None;
    }
    let n = parse_decimal(num, (1 << 31) - 1)?;
    Some((n as u32, method))
}

/// A message whose framing and header section passed the checks, before rsip sees it.
struct Checked<'a> {
    text: &'a str,
    head_end: usize,
    head: Head<'a>,
    body: &'a str,
}

fn check_message(bytes: &[u8]) -> Result<Checked<'_>, WireError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(WireError::TooLarge(bytes.len()));
    }
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .ok_or(WireError::Empty)?;
    let text = std::str::from_utf8(&bytes[start..]).map_err(|_| WireError::NotUtf8)?;
    let head_end = find(text.as_bytes(), b"\r\n\r\n").ok_or(WireError::NoHeaderEnd)?;
    let head = parse_head(&text[..head_end])?;
    head.check_required()?;
    let mut body = &text[head_end + 4..];
    if let Some(cl) = head.content_length()? {
        if body.len() < cl {
            return Err(WireError::Truncated {
                got: body.len(),
                want: cl,
            });
        }
        body = body
            .get(..cl)
            .ok_or(WireError::InvalidHeader("Content-Length"))?;
    }
    Ok(Checked {
        text,
        head_end,
        head,
        body,
    })
}

/// Parses one SIP message (one UDP datagram, or one frame cut by [`split_stream`]).
///
/// Never panics. Leading CRLFs (keepalives) are skipped; anything after Content-Length is ignored.
pub fn parse_message(bytes: &[u8]) -> Result<SipMessage, WireError> {
    to_rsip(&check_message(bytes)?)
}

/// One message from the network, as [`parse_incoming`] reads it.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// A response whose header section was clean `Name: value` lines: read without rsip.
    Response(ResponseInfo<'a>),
    /// Any other message (requests, responses with folded, compact or oddly spaced headers),
    /// through rsip as [`parse_message`] does.
    Message(SipMessage),
}

/// Like [`parse_message`] (same checks, same errors), but a response whose header section
/// needs no normalization is read straight into the [`ResponseInfo`] the mirror needs, without
/// rsip: responses to our REGISTERs are most of the traffic.
pub fn parse_incoming(bytes: &[u8]) -> Result<Incoming<'_>, WireError> {
    let c = check_message(bytes)?;
    // A status line without the space before the (empty) reason phrase is left to rsip,
    // which refuses it: the fast path accepts nothing the rsip path does not (found by fuzzing).
    if c.head.verbatim && c.head.start.starts_with("SIP/2.0 ") && c.head.start.len() > 11 {
        return Ok(Incoming::Response(response_info(c.head)));
    }
    to_rsip(&c).map(Incoming::Message)
}

/// The [`ResponseInfo`] of a checked response head (status line checked by `check_start_line`).
fn response_info(head: Head<'_>) -> ResponseInfo<'_> {
    let code = head
        .start
        .get(8..11)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut info = ResponseInfo {
        code,
        ..ResponseInfo::default()
    };
    for l in head.lines {
        // Verbatim heads have no folded (owned) values.
        if let std::borrow::Cow::Borrowed(v) = l.value {
            info.add_header(l.kind, v);
        }
    }
    info
}

fn to_rsip(c: &Checked<'_>) -> Result<SipMessage, WireError> {
    let (text, head, body) = (c.text, &c.head, c.body);
    let clean: std::borrow::Cow<'_, str> = if head.verbatim {
        text[..c.head_end + 4 + body.len()].into()
    } else {
        let mut clean = String::with_capacity(text.len());
        clean.push_str(head.start);
        clean.push_str("\r\n");
        for l in &head.lines {
            let _ = write!(clean, "{}: {}\r\n", l.name, l.value);
        }
        clean.push_str("\r\n");
        clean.push_str(body);
        clean.into()
    };
    let msg = SipMessage::try_from(clean.as_bytes())
        .map_err(|e| WireError::Rsip(truncate(&e.to_string(), 200)))?;
    // rsip 0.4's Request-URI tokenizer is not bounded by the line: `OPTIONS 0 SIP/2.0\r\n://0
    // SIP/2.0\r\n...` yields the URI `0 SIP/2.0\r\n://0` and rsip then reads headers (and body)
    // other than the ones checked above. Found by fuzzing; accept only if rsip saw what we saw.
    let (rsip_headers, rsip_body) = match &msg {
        SipMessage::Request(r) => (&r.headers, &r.body),
        SipMessage::Response(r) => (&r.headers, &r.body),
    };
    let uri_spilled =
        matches!(&msg, SipMessage::Request(r) if r.uri.to_string().contains(['\r', '\n']));
    if uri_spilled
        || rsip_headers.iter().count() != head.lines.len()
        || rsip_body.as_slice() != body.as_bytes()
    {
        return Err(WireError::RsipMismatch);
    }
    Ok(msg)
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Stream framing (TCP): the length of the first complete frame in `buf`, `None` if more bytes
/// are needed.
///
/// A frame is either a run of CR/LF bytes (an RFC 5626 keepalive: check it with
/// [`is_keepalive`] and skip it) or one message: header section plus Content-Length bytes of body.
/// A missing Content-Length counts as 0. Errors (oversized or unframeable data) mean the stream
/// cannot be resynchronized: close the connection.
pub fn split_stream(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let crlf = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if crlf > 0 {
        return Ok(Some(crlf));
    }
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(buf.len()));
        }
        return Ok(None);
    };
    let head_len = head_end + 4;
    if head_len > MAX_MESSAGE {
        return Err(WireError::TooLarge(head_len));
    }
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| WireError::NotUtf8)?;
    let cl = parse_head(head)?.content_length()?.unwrap_or(0);
    let total = head_len + cl;
    if total > MAX_MESSAGE {
        return Err(WireError::TooLarge(total));
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Whether a frame from [`split_stream`] is only CR/LF keepalive bytes.
pub fn is_keepalive(frame: &[u8]) -> bool {
    !frame.is_empty() && frame.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Value of `name` among untyped headers this module relies on, `None` for others.
fn header_value<'a>(h: &'a Header, name: &str) -> Option<&'a str> {
    let (n, v) = match h {
        Header::Via(v) => ("Via", v.value()),
        Header::From(v) => ("From", v.value()),
        Header::To(v) => ("To", v.value()),
        Header::CallId(v) => ("Call-ID", v.value()),
        Header::CSeq(v) => ("CSeq", v.value()),
        Header::WwwAuthenticate(v) => ("WWW-Authenticate", v.value()),
        Header::ProxyAuthenticate(v) => ("Proxy-Authenticate", v.value()),
        Header::Other(n, v) => (n.as_str(), v.as_str()),
        _ => return None,
    };
    n.eq_ignore_ascii_case(name).then_some(v)
}

/// All values of header `name` in `headers`, in order. Works for Via, From, To, Call-ID, CSeq,
/// WWW-/Proxy-Authenticate and every header rsip does not know (`X-...`).
pub fn header_values<'a>(
    headers: &'a rsip::Headers,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers.iter().filter_map(move |h| header_value(h, name))
}

/// Whether a From/To value carries a `tag` parameter (outside the `<...>` URI).
fn has_tag(value: &str) -> bool {
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

/// The digest challenges of a 401/407: `(is_proxy, parsed challenge)` for each
/// WWW-Authenticate (`false`) and Proxy-Authenticate (`true`) header, in order.
pub fn challenges(resp: &rsip::Response) -> Vec<(bool, Result<digest::Challenge, DigestError>)> {
    resp.headers
        .iter()
        .filter_map(|h| match h {
            Header::WwwAuthenticate(v) => Some((false, digest::Challenge::parse(v.value()))),
            Header::ProxyAuthenticate(v) => Some((true, digest::Challenge::parse(v.value()))),
            _ => None,
        })
        .collect()
}

/// The one check of a user part regmirror takes from the network (notifications, `location`)
/// and writes into its REGISTERs: 1 to 128 bytes of RFC 3261 `unreserved`, escapes (`%`) and
/// `& = + $`. Not the other `user-unreserved` characters (`, ; ? /`): they split lists and
/// parameters in the headers regmirror writes and in Asterisk's configuration. Provisioning
/// (`store::provision::validate_id`) allows a narrower set still.
pub fn valid_user_part(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 128
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$%".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_parts_are_validated() {
        assert!(valid_user_part("1001"));
        assert!(valid_user_part("alice.smith+x"));
        assert!(valid_user_part("a%20b"));
        for bad in [
            "",
            "a b",
            "a\r\nVia: x",
            "a>b",
            "a@b",
            "a;b",
            "a,b",
            "a?b",
            "a/b",
        ] {
            assert!(!valid_user_part(bad), "{bad:?}");
        }
        assert!(!valid_user_part(&"1".repeat(129)));
    }

    const REGISTER: &str = "REGISTER sip:regmirror.test SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: <sip:1001@regmirror.test>;tag=1928301774\r\n\
To: <sip:1001@regmirror.test>\r\n\
Call-ID: a84b4c76e66710@10.0.0.5\r\n\
CSeq: 314159 REGISTER\r\n\
Contact: <sip:1001@10.0.0.2:5060>\r\n\
Expires: 3600\r\n\
Content-Length: 0\r\n\r\n";

    const CHALLENGE: &str = "SIP/2.0 401 Unauthorized\r\n\
Via: SIP/2.0/UDP 10.0.0.5:5070;rport=5070;received=10.0.0.5;branch=z9hG4bK776asdhds\r\n\
Call-ID: a84b4c76e66710@10.0.0.5\r\n\
From: <sip:1001@regmirror.test>;tag=1928301774\r\n\
To: <sip:1001@regmirror.test>;tag=z9hG4bK776asdhds\r\n\
CSeq: 314159 REGISTER\r\n\
WWW-Authenticate: Digest realm=\"regmirror.test\",nonce=\"1732300000/3fc9a2d6e5b8a1f4c0d7e6b5a4c3d2e1\",opaque=\"5d2c7e1a0b9f8e7d\",algorithm=MD5,qop=\"auth\"\r\n\
Server: Asterisk PBX 22.10.0\r\n\
Content-Length:  0\r\n\r\n";

    #[test]
    fn parses_register_and_challenge() {
        let SipMessage::Request(req) = parse_message(REGISTER.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        assert_eq!(req.method, rsip::Method::Register);
        assert_eq!(
            header_values(&req.headers, "call-id").next(),
            Some("a84b4c76e66710@10.0.0.5")
        );
        let SipMessage::Response(resp) = parse_message(CHALLENGE.as_bytes()).unwrap() else {
            panic!("not a response")
        };
        assert_eq!(resp.status_code.code(), 401);
        let ch = challenges(&resp);
        assert_eq!(ch.len(), 1);
        let (proxy, c) = &ch[0];
        assert!(!proxy);
        let c = c.as_ref().unwrap();
        assert_eq!(c.realm, "regmirror.test");
        assert_eq!(c.nonce, "1732300000/3fc9a2d6e5b8a1f4c0d7e6b5a4c3d2e1");
        assert_eq!(c.opaque.as_deref(), Some("5d2c7e1a0b9f8e7d"));
        assert_eq!(c.qop, vec![digest::Qop::Auth]);
    }

    #[test]
    fn rejects_oversized_and_non_utf8() {
        let big = vec![b'a'; MAX_MESSAGE + 1];
        assert_eq!(
            parse_message(&big),
            Err(WireError::TooLarge(MAX_MESSAGE + 1))
        );
        let mut bad = REGISTER.as_bytes().to_vec();
        bad[3] = 0xff;
        assert_eq!(parse_message(&bad), Err(WireError::NotUtf8));
        assert_eq!(parse_message(b"\r\n\r\n"), Err(WireError::Empty));
        assert_eq!(
            parse_message(b"REGISTER sip:x SIP/2.0\r\nVia: x"),
            Err(WireError::NoHeaderEnd)
        );
    }

    #[test]
    fn rejects_missing_duplicate_and_invalid_headers() {
        for (name, line) in [
            (
                "Via",
                "Via: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK776asdhds;rport\r\n",
            ),
            ("From", "From: <sip:1001@regmirror.test>;tag=1928301774\r\n"),
            ("To", "To: <sip:1001@regmirror.test>\r\n"),
            ("Call-ID", "Call-ID: a84b4c76e66710@10.0.0.5\r\n"),
            ("CSeq", "CSeq: 314159 REGISTER\r\n"),
        ] {
            let m = REGISTER.replace(line, "");
            assert_eq!(
                parse_message(m.as_bytes()),
                Err(WireError::MissingHeader(name)),
                "{name}"
            );
        }
        let dup = REGISTER.replace(
            "CSeq: 314159 REGISTER\r\n",
            "CSeq: 314159 REGISTER\r\nCSeq: 2 REGISTER\r\n",
        );
        assert_eq!(
            parse_message(dup.as_bytes()),
            Err(WireError::DuplicateHeader("CSeq"))
        );
        let bad = REGISTER.replace("CSeq: 314159 REGISTER", "CSeq: 99999999999 REGISTER");
        assert_eq!(
            parse_message(bad.as_bytes()),
            Err(WireError::InvalidHeader("CSeq"))
        );
        let mism = REGISTER.replace("CSeq: 314159 REGISTER", "CSeq: 314159 INVITE");
        assert_eq!(
            parse_message(mism.as_bytes()),
            Err(WireError::CSeqMethodMismatch)
        );
        let ctl = REGISTER.replace("Expires: 3600", "Expires: 36\r00");
        assert_eq!(
            parse_message(ctl.as_bytes()),
            Err(WireError::ControlChar(9))
        );
        let nul = REGISTER.replace("Expires: 3600", "Expires: 36\u{0}00");
        assert_eq!(
            parse_message(nul.as_bytes()),
            Err(WireError::ControlChar(9))
        );
    }

    #[test]
    fn compact_names_folding_and_content_length() {
        let m = "MESSAGE sip:regmirror@10.0.0.9 SIP/2.0\r\n\
v: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKx\r\n\
f: <sip:kamailio@10.0.0.2>;tag=a\r\n\
t: <sip:regmirror@10.0.0.9>\r\n\
i: abc\r\n\
CSeq: 10\r\n  MESSAGE\r\n\
l: 5\r\n\r\nhello trailing garbage";
        let SipMessage::Request(req) = parse_message(m.as_bytes()).unwrap() else {
            panic!()
        };
        assert_eq!(header_values(&req.headers, "Call-ID").next(), Some("abc"));
        assert_eq!(
            header_values(&req.headers, "CSeq").next(),
            Some("10 MESSAGE")
        );
        assert_eq!(req.body, b"hello");
        let short = m.replace("l: 5", "l: 50");
        assert_eq!(
            parse_message(short.as_bytes()),
            Err(WireError::Truncated { got: 22, want: 50 })
        );
    }

    #[test]
    fn rsip_uri_spilling_past_the_start_line_is_rejected() {
        // Minimized from a fuzzer crash: rsip took `0 SIP/2.0\r\n://0` as the Request-URI.
        let m =
            "OPTIONS 0 SIP/2.0\r\nX-Link: ://0 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        assert_eq!(parse_message(m.as_bytes()), Err(WireError::RsipMismatch));
    }

    #[test]
    fn stream_framing() {
        let mut buf = b"\r\n\r\n".to_vec();
        buf.extend_from_slice(REGISTER.as_bytes());
        let body_msg = "MESSAGE sip:r@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:r@h>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 4\r\n\r\nbody";
        buf.extend_from_slice(body_msg.as_bytes());
        assert_eq!(split_stream(&buf), Ok(Some(4)));
        assert!(is_keepalive(&buf[..4]));
        let rest = &buf[4..];
        let n = split_stream(rest).unwrap().unwrap();
        assert_eq!(n, REGISTER.len());
        assert!(parse_message(&rest[..n]).is_ok());
        let rest = &rest[n..];
        for cut in 0..rest.len() {
            assert_eq!(split_stream(&rest[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(split_stream(rest), Ok(Some(rest.len())));
        let SipMessage::Request(req) = parse_message(rest).unwrap() else {
            panic!()
        };
        assert_eq!(req.body, b"body");
        assert_eq!(
            split_stream(&[b'a'; MAX_MESSAGE + 1]),
            Err(WireError::TooLarge(MAX_MESSAGE + 1))
        );
        let huge = body_msg.replace("Content-Length: 4", "Content-Length: 99999");
        assert_eq!(
            split_stream(huge.as_bytes()),
            Err(WireError::InvalidHeader("Content-Length"))
        );
    }

    #[test]
    fn response_copies_transaction_headers_and_tags_to() {
        let SipMessage::Request(req) = parse_message(REGISTER.as_bytes()).unwrap() else {
            panic!()
        };
        let bytes = response_for(&req, 200, "OK\r\nX-Injected: 1");
        let SipMessage::Response(resp) = parse_message(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(resp.status_code.code(), 200);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("SIP/2.0 200 OKX-Injected: 1\r\n"),
            "{text}"
        );
        assert_eq!(
            header_values(&resp.headers, "Via").collect::<Vec<_>>(),
            header_values(&req.headers, "Via").collect::<Vec<_>>()
        );
        let to = header_values(&resp.headers, "To").next().unwrap();
        assert!(to.starts_with("<sip:1001@regmirror.test>;tag="), "{to}");
        assert!(has_tag(to));
        assert!(
            text.contains("CSeq: 314159 REGISTER\r\n")
                && text.ends_with("Content-Length: 0\r\n\r\n")
        );
        // Same request, same response (retransmissions).
        assert_eq!(response_for(&req, 200, "OK\r\nX-Injected: 1"), bytes);
        let tagged = REGISTER.replace(
            "To: <sip:1001@regmirror.test>",
            "To: <sip:1001@regmirror.test>;tag=abc",
        );
        let SipMessage::Request(req) = parse_message(tagged.as_bytes()).unwrap() else {
            panic!()
        };
        let text = String::from_utf8(response_for(&req, 400, "Bad Request")).unwrap();
        assert!(
            text.contains("To: <sip:1001@regmirror.test>;tag=abc\r\n"),
            "{text}"
        );
    }

    #[test]
    fn clean_responses_skip_rsip_with_the_same_info() {
        let clean = CHALLENGE.replace("Content-Length:  0", "Content-Length: 0");
        let Ok(Incoming::Response(info)) = parse_incoming(clean.as_bytes()) else {
            panic!("clean 401 not read on the fast path")
        };
        let Ok(SipMessage::Response(r)) = parse_message(clean.as_bytes()) else {
            panic!()
        };
        assert_eq!(info, ResponseInfo::from_response(&r));
        assert_eq!(info.code, 401);
        assert_eq!(info.branch, Some("z9hG4bK776asdhds"));
        assert_eq!(info.call_id, Some("a84b4c76e66710@10.0.0.5"));
        assert_eq!((info.cseq, info.cseq_is_register), (Some(314159), true));
        assert_eq!(info.challenges(false).len(), 1);
        // Not clean: a double space, a folded line, a compact name: through rsip, same info.
        for odd in [
            CHALLENGE.to_string(),
            clean.replace("Server: Asterisk", "Server:\r\n Asterisk"),
            clean.replace("Call-ID:", "i:"),
        ] {
            let Ok(Incoming::Message(SipMessage::Response(r))) = parse_incoming(odd.as_bytes())
            else {
                panic!("not through rsip: {odd}")
            };
            assert_eq!(ResponseInfo::from_response(&r), info);
        }
        // Requests always go through rsip; errors are parse_message's.
        assert!(matches!(
            parse_incoming(REGISTER.as_bytes()),
            Ok(Incoming::Message(SipMessage::Request(_)))
        ));
        let bad = clean.replace("CSeq: 314159 REGISTER", "CSeq: x REGISTER");
        assert_eq!(
            parse_incoming(bad.as_bytes()).err(),
            Some(WireError::InvalidHeader("CSeq"))
        );
        let ctl = clean.replace("Server: Asterisk", "Server: Ast\nerisk");
        assert_eq!(
            parse_incoming(ctl.as_bytes()).err(),
            Some(WireError::ControlChar(8))
        );
    }

    #[test]
    fn tag_detection() {
        assert!(has_tag("<sip:a@b>;tag=1"));
        assert!(has_tag("sip:a@b;TAG=1"));
        assert!(!has_tag("<sip:a@b;tag=1>"));
        assert!(!has_tag("\"tag=x\" <sip:a@b>"));
        assert!(!has_tag("<sip:a@b>;tagx=1"));
    }
}
