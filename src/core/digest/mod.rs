//! HTTP/SIP digest authentication (RFC 2617, RFC 7616, RFC 8760), client and server side.
//!
//! Pure code on `md-5` and `sha2`. rsip's helper is not used: it mishandles nonce-count >= 10
//! and the `-sess` algorithms.

use std::fmt;

use md5::Md5;
use sha2::{Sha256, Sha512_256};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("not a Digest challenge or credentials")]
    NotDigest,
    #[error("malformed digest parameters: {0}")]
    Malformed(&'static str),
    #[error("missing digest parameter `{0}`")]
    Missing(&'static str),
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    #[error("challenge offers no quality of protection this client supports")]
    UnsupportedQop,
    #[error("a stored HA1 can only answer MD5 challenges for its own realm")]
    Ha1NotUsable,
}

/// Digest hash algorithm, optionally in its `-sess` variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let a = match s.to_ascii_uppercase().as_str() {
            "MD5" => Self::Md5,
            "MD5-SESS" => Self::Md5Sess,
            "SHA-256" => Self::Sha256,
            "SHA-256-SESS" => Self::Sha256Sess,
            "SHA-512-256" => Self::Sha512_256,
            "SHA-512-256-SESS" => Self::Sha512_256Sess,
            _ => return Err(DigestError::UnsupportedAlgorithm(s.to_string())),
        };
        Ok(a)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Md5Sess => "MD5-sess",
            Self::Sha256 => "SHA-256",
            Self::Sha256Sess => "SHA-256-sess",
            Self::Sha512_256 => "SHA-512-256",
            Self::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    pub fn is_sess(self) -> bool {
        matches!(
            self,
            Self::Md5Sess | Self::Sha256Sess | Self::Sha512_256Sess
        )
    }

    fn is_md5_family(self) -> bool {
        matches!(self, Self::Md5 | Self::Md5Sess)
    }

    /// Preference when a response carries several challenges (RFC 8760: strongest first).
    fn strength(self) -> u8 {
        match self {
            Self::Sha512_256 | Self::Sha512_256Sess => 3,
            Self::Sha256 | Self::Sha256Sess => 2,
            Self::Md5 | Self::Md5Sess => 1,
        }
    }

    /// Lower-case hex of the algorithm's hash of `data`.
    pub fn hex(self, data: &[u8]) -> String {
        self.hex_joined(&[data])
    }

    /// [`Algorithm::hex`] of `parts` joined by `:`, without building the joined string.
    fn hex_joined(self, parts: &[&[u8]]) -> String {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            to_hex(&d.finalize())
        }
        match self {
            Self::Md5 | Self::Md5Sess => run::<Md5>(parts),
            Self::Sha256 | Self::Sha256Sess => run::<Sha256>(parts),
            Self::Sha512_256 | Self::Sha512_256Sess => run::<Sha512_256>(parts),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

/// Quality of protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
    AuthInt,
}

impl Qop {
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// A parsed `WWW-Authenticate` or `Proxy-Authenticate` Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// Offered qop values; empty means the RFC 2069 compatibility mode (no qop).
    pub qop: Vec<Qop>,
    pub stale: bool,
}

impl Challenge {
    /// Parses a header value such as `Digest realm="x", nonce="y", qop="auth"`.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let params = strip_scheme(value)?;
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut algorithm = Algorithm::Md5;
        let mut qop = Vec::new();
        let mut stale = false;
        for (k, v) in Params::new(params) {
            let (k, v) = (k?, v);
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v.into_owned()),
                "nonce" => nonce = Some(v.into_owned()),
                "opaque" => opaque = Some(v.into_owned()),
                "algorithm" => algorithm = Algorithm::parse(&v)?,
                "stale" => stale = v.eq_ignore_ascii_case("true"),
                "qop" => {
                    for q in v.split(',') {
                        match q.trim().to_ascii_lowercase().as_str() {
                            "auth" => qop.push(Qop::Auth),
                            "auth-int" => qop.push(Qop::AuthInt),
                            _ => {} // unknown tokens are ignored (RFC 7616 3.3)
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Challenge {
            realm: realm.ok_or(DigestError::Missing("realm"))?,
            nonce: nonce.ok_or(DigestError::Missing("nonce"))?,
            opaque,
            algorithm,
            qop,
            stale,
        })
    }

    /// The qop this client would answer with, or `None` for the no-qop mode.
    /// `auth` is preferred: a REGISTER has no body worth protecting.
    fn chosen_qop(&self) -> Result<Option<Qop>, DigestError> {
        if self.qop.is_empty() {
            Ok(None)
        } else if self.qop.contains(&Qop::Auth) {
            Ok(Some(Qop::Auth))
        } else if self.qop.contains(&Qop::AuthInt) {
            Ok(Some(Qop::AuthInt))
        } else {
            Err(DigestError::UnsupportedQop)
        }
    }
}

/// The secret a user authenticates with. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Plaintext password: answers any algorithm and realm.
    Password(String),
    /// Stored `MD5(username:realm:password)` in hex, bound to `realm`.
    Ha1Md5 { realm: String, ha1: String },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Secret::Password(<redacted>)"),
            Secret::Ha1Md5 { realm, .. } => {
                write!(f, "Secret::Ha1Md5 {{ realm: {realm:?}, ha1: <redacted> }}")
            }
        }
    }
}

impl Secret {
    /// Whether this secret can answer `challenge`.
    pub fn can_answer(&self, challenge: &Challenge) -> bool {
        match self {
            Secret::Password(_) => true,
            Secret::Ha1Md5 { realm, .. } => {
                challenge.algorithm.is_md5_family() && *realm == challenge.realm
            }
        }
    }

    /// H(username:realm:password) for `algorithm` and `realm`.
    fn base_ha1(
        &self,
        algorithm: Algorithm,
        username: &str,
        realm: &str,
    ) -> Result<String, DigestError> {
        match self {
            Secret::Password(p) => Ok(ha1(algorithm, username, realm, p)),
            Secret::Ha1Md5 { realm: r, ha1 } if algorithm.is_md5_family() && r == realm => {
                Ok(ha1.to_ascii_lowercase())
            }
            Secret::Ha1Md5 { .. } => Err(DigestError::Ha1NotUsable),
        }
    }
}

/// `H(username ":" realm ":" password)`, the value Kamailio and Asterisk store as HA1 / `md5_cred`.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hex_joined(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
}

/// Picks the challenge to answer among several (one response may carry one per algorithm):
/// the strongest algorithm `secret` can answer. Returns `None` when none is usable.
pub fn choose<'a, I>(challenges: I, secret: &Secret) -> Option<&'a Challenge>
where
    I: IntoIterator<Item = &'a Challenge>,
{
    challenges
        .into_iter()
        .filter(|c| secret.can_answer(c) && c.chosen_qop().is_ok())
        .max_by_key(|c| c.algorithm.strength())
}

/// What the request being authorized contributes to the digest.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    /// The body, only used for `qop=auth-int`.
    pub body: &'a [u8],
}

/// Computes the `Authorization`/`Proxy-Authorization` header value answering `challenge`.
///
/// `nc` is the nonce-count for this nonce (start at 1, increment per request that reuses the
/// nonce); `cnonce` must be fresh per nonce. Both are ignored in no-qop mode.
pub fn authorization(
    challenge: &Challenge,
    username: &str,
    secret: &Secret,
    req: RequestInfo<'_>,
    nc: u32,
    cnonce: &str,
) -> Result<String, DigestError> {
    let alg = challenge.algorithm;
    let qop = challenge.chosen_qop()?;
    let nc_hex = format!("{nc:08x}");
    let response = compute_response(
        alg,
        &secret.base_ha1(alg, username, &challenge.realm)?,
        &challenge.nonce,
        qop.map(|q| (q, nc_hex.as_str(), cnonce)),
        req,
    );
    let mut out = String::with_capacity(256);
    out.push_str("Digest username=\"");
    out.push_str(&quote_escape(username));
    out.push_str("\", realm=\"");
    out.push_str(&quote_escape(&challenge.realm));
    out.push_str("\", nonce=\"");
    out.push_str(&quote_escape(&challenge.nonce));
    out.push_str("\", uri=\"");
    out.push_str(&quote_escape(req.uri));
    out.push_str("\", response=\"");
    out.push_str(&response);
    out.push_str("\", algorithm=");
    out.push_str(alg.as_str());
    if let Some(opaque) = &challenge.opaque {
        out.push_str(", opaque=\"");
        out.push_str(&quote_escape(opaque));
        out.push('"');
    }
    if let Some(q) = qop {
        out.push_str(", qop=");
        out.push_str(q.as_str());
        out.push_str(", nc=");
        out.push_str(&nc_hex);
        out.push_str(", cnonce=\"");
        out.push_str(&quote_escape(cnonce));
        out.push('"');
    }
    Ok(out)
}

/// The request-digest of RFC 2617 3.2.2.1 / RFC 7616 3.4.1, given the base HA1.
fn compute_response(
    alg: Algorithm,
    base_ha1: &str,
    nonce: &str,
    qop: Option<(Qop, &str, &str)>,
    req: RequestInfo<'_>,
) -> String {
    let cnonce = qop.map(|(_, _, c)| c).unwrap_or("");
    let sess;
    let ha1 = if alg.is_sess() {
        sess = alg.hex_joined(&[base_ha1.as_bytes(), nonce.as_bytes(), cnonce.as_bytes()]);
        sess.as_str()
    } else {
        base_ha1
    };
    let (method, uri) = (req.method.as_bytes(), req.uri.as_bytes());
    let ha2 = match qop {
        Some((Qop::AuthInt, _, _)) => {
            let body_hash = alg.hex(req.body);
            alg.hex_joined(&[method, uri, body_hash.as_bytes()])
        }
        _ => alg.hex_joined(&[method, uri]),
    };
    let (ha1, nonce, ha2) = (ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes());
    match qop {
        Some((q, nc, cnonce)) => alg.hex_joined(&[
            ha1,
            nonce,
            nc.as_bytes(),
            cnonce.as_bytes(),
            q.as_str().as_bytes(),
            ha2,
        ]),
        None => alg.hex_joined(&[ha1, nonce, ha2]),
    }
}

fn quote_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['"', '\\']) {
        let mut o = String::with_capacity(s.len() + 4);
        for ch in s.chars() {
            if ch == '"' || ch == '\\' {
                o.push('\\');
            }
            o.push(ch);
        }
        o.into()
    } else {
        s.into()
    }
}

/// Parsed `Authorization` / `Proxy-Authorization` credentials (server side: fake registrars, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    pub qop: Option<Qop>,
    pub nc: Option<u32>,
    pub cnonce: Option<String>,
}

impl Authorization {
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let params = strip_scheme(value)?;
        let mut a = Authorization {
            username: String::new(),
            realm: String::new(),
            nonce: String::new(),
            uri: String::new(),
            response: String::new(),
            algorithm: Algorithm::Md5,
            opaque: None,
            qop: None,
            nc: None,
            cnonce: None,
        };
        let mut seen = [false; 5];
        for (k, v) in Params::new(params) {
            let k = k?;
            match k.to_ascii_lowercase().as_str() {
                "username" => (a.username, seen[0]) = (v.into_owned(), true),
                "realm" => (a.realm, seen[1]) = (v.into_owned(), true),
                "nonce" => (a.nonce, seen[2]) = (v.into_owned(), true),
                "uri" => (a.uri, seen[3]) = (v.into_owned(), true),
                "response" => (a.response, seen[4]) = (v.into_owned(), true),
                "algorithm" => a.algorithm = Algorithm::parse(&v)?,
                "opaque" => a.opaque = Some(v.into_owned()),
                "qop" => {
                    a.qop = Some(match v.to_ascii_lowercase().as_str() {
                        "auth" => Qop::Auth,
                        "auth-int" => Qop::AuthInt,
                        _ => return Err(DigestError::Malformed("qop")),
                    })
                }
                "nc" => {
                    if v.len() != 8 {
                        return Err(DigestError::Malformed("nc must be 8 hex digits"));
                    }
                    a.nc = Some(
                        u32::from_str_radix(&v, 16).map_err(|_| DigestError::Malformed("nc"))?,
                    )
                }
                "cnonce" => a.cnonce = Some(v.into_owned()),
                _ => {}
            }
        }
        const NAMES: [&str; 5] = ["username", "realm", "nonce", "uri", "response"];
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(DigestError::Missing(NAMES[i]));
        }
        if a.qop.is_some() && (a.nc.is_none() || a.cnonce.is_none()) {
            return Err(DigestError::Missing("nc/cnonce"));
        }
        Ok(a)
    }

    /// Checks the response against `secret` for a request with `method` (and `body` for auth-int).
    pub fn verify(&self, secret: &Secret, method: &str, body: &[u8]) -> bool {
        let Ok(base) = secret.base_ha1(self.algorithm, &self.username, &self.realm) else {
            return false;
        };
        let nc_hex = self.nc.map(|n| format!("{n:08x}"));
        let qop = match (self.qop, &nc_hex, &self.cnonce) {
            (Some(q), Some(nc), Some(c)) => Some((q, nc.as_str(), c.as_str())),
            (None, _, _) => None,
            _ => return false,
        };
        let expected = compute_response(
            self.algorithm,
            &base,
            &self.nonce,
            qop,
            RequestInfo {
                method,
                uri: &self.uri,
                body,
            },
        );
        constant_time_eq(
            expected.as_bytes(),
            self.response.to_ascii_lowercase().as_bytes(),
        )
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn strip_scheme(value: &str) -> Result<&str, DigestError> {
    let v = value.trim_start();
    // `get`, not `[..6]`: byte 6 may fall inside a multi-byte character (found by fuzzing).
    let rest = match (v.get(..6), v.get(6..)) {
        (Some(scheme), Some(rest)) if scheme.eq_ignore_ascii_case("digest") => rest,
        _ => return Err(DigestError::NotDigest),
    };
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return Err(DigestError::NotDigest);
    }
    Ok(rest)
}

/// Iterator over `name=value` / `name="quoted value"` pairs separated by commas.
struct Params<'a> {
    rest: &'a str,
}

impl<'a> Params<'a> {
    fn new(s: &'a str) -> Self {
        Params { rest: s }
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = (Result<&'a str, DigestError>, std::borrow::Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.rest.trim_start_matches([' ', '\t', '\r', '\n', ',']);
        if s.is_empty() {
            return None;
        }
        let Some(eq) = s.find('=') else {
            self.rest = "";
            return Some((
                Err(DigestError::Malformed("parameter without `=`")),
                "".into(),
            ));
        };
        let name = s[..eq].trim();
        let after = s[eq + 1..].trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut escaped = false;
            let mut end = None;
            for (i, ch) in quoted.char_indices() {
                if escaped {
                    value.push(ch);
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    end = Some(i);
                    break;
                } else {
                    value.push(ch);
                }
            }
            match end {
                Some(i) => {
                    self.rest = &quoted[i + 1..];
                    Some((Ok(name), value.into()))
                }
                None => {
                    self.rest = "";
                    Some((
                        Err(DigestError::Malformed("unterminated quoted string")),
                        "".into(),
                    ))
                }
            }
        } else {
            let end = after.find(',').unwrap_or(after.len());
            self.rest = &after[end..];
            Some((Ok(name), after[..end].trim().into()))
        }
    }
}

#[cfg(test)]
mod tests;
