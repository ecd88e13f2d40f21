//! Bounded, panic-free parsing of SIP bytes from the network, on top of `rsip` 0.4.
//!
//! rsip's own tokenizer is lenient in ways that matter here (it ignores Content-Length, knows no
//! compact header names or line folding, lets bare CR/LF and NUL through header values), so the
//! header section is checked and normalized here first and rsip only sees clean input:
//! one `Name: value` per line, full header names, body cut at Content-Length. What regmirror
//! writes is in `build`, next to it.

mod build;

use std::fmt::Write as _;

pub use build::{response_for, with_header, OptionsRequest, RegisterRequest};

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
mod tests;
