//! Kamailio's registration notifications (README.md, "The contract with Kamailio").

use std::time::Duration;

use thiserror::Error;

use super::sip::{header_values, valid_user_part};

/// Longest AOR accepted (usrloc's `username@domain` columns are 64 + 64 wide).
pub const MAX_AOR: usize = 255;
/// Longest expiry accepted: one year.
pub const MAX_EXPIRES: u32 = 365 * 24 * 3600;

pub const H_EVENT: &str = "X-RegMirror-Event";
pub const H_AOR: &str = "X-RegMirror-AOR";
pub const H_EXPIRES: &str = "X-RegMirror-Expires";
pub const H_CONTACTS: &str = "X-RegMirror-Contacts";
pub const H_TIME: &str = "X-RegMirror-Time";
/// Proof of origin: base64url (no padding) HMAC-SHA256 of [`Notification::signed_text`] under
/// the key shared with Kamailio (its `crypto_hmac_sha256`).
pub const H_AUTH: &str = "X-RegMirror-Auth";

/// What happened in Kamailio (for logs and metrics; the snapshot is what counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyEvent {
    Save,
    Expired,
    Delete,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Save => "save",
            NotifyEvent::Expired => "expired",
            NotifyEvent::Delete => "delete",
        }
    }
}

/// A snapshot of one AOR after a change in Kamailio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub event: NotifyEvent,
    /// The usrloc AOR as sent (`user` or `user@domain`, optionally `sip:`-prefixed).
    pub aor: String,
    /// Seconds until the AOR's last contact expires; 0 = no live contact.
    pub expires: u32,
    pub contacts: Option<u32>,
    /// Kamailio's clock in microseconds, to order snapshots.
    pub time_us: Option<u64>,
    /// The `X-RegMirror-Auth` value, if any ([`Notification::verify`]).
    pub auth: Option<String>,
}

/// Why a notification's proof of origin was not accepted.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("no X-RegMirror-Auth (or no X-RegMirror-Time) header")]
    Missing,
    #[error("X-RegMirror-Auth does not match")]
    Forged,
    #[error("X-RegMirror-Time is {skew_ms} ms away from our clock")]
    Stale { skew_ms: u64 },
}

impl Notification {
    /// What Kamailio signs: `event|aor|expires|contacts|time`, the header values as sent.
    pub fn signed_text(&self) -> String {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{}|{}|{}|{}|{}",
            self.event.as_str(),
            self.aor,
            self.expires,
            opt(self.contacts.map(u64::from)),
            opt(self.time_us)
        )
    }

    /// Checks the proof of origin: the keyed hash, and Kamailio's time within `max_skew` of
    /// `now_us` (our clock, microseconds since the Unix epoch) so a captured notification
    /// cannot be replayed later. Comparison in constant time.
    pub fn verify(&self, key: &[u8], now_us: u64, max_skew: Duration) -> Result<(), AuthError> {
        use base64::Engine as _;
        use hmac::Mac as _;
        let (Some(auth), Some(time_us)) = (self.auth.as_deref(), self.time_us) else {
            return Err(AuthError::Missing);
        };
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(auth.trim_end_matches('='))
            .map_err(|_| AuthError::Forged)?;
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(key).map_err(|_| AuthError::Forged)?;
        mac.update(self.signed_text().as_bytes());
        mac.verify_slice(&tag).map_err(|_| AuthError::Forged)?;
        let skew_us = now_us.abs_diff(time_us);
        if u128::from(skew_us) > max_skew.as_micros() {
            return Err(AuthError::Stale {
                skew_ms: skew_us / 1000,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NotifyError {
    #[error("notification must be a MESSAGE, got {0}")]
    NotMessage(String),
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("duplicate {0} header")]
    Duplicate(&'static str),
    #[error("invalid {header} header: {reason}")]
    Invalid {
        header: &'static str,
        reason: &'static str,
    },
}

fn invalid(header: &'static str, reason: &'static str) -> NotifyError {
    NotifyError::Invalid { header, reason }
}

/// Parses a notification. Header names are case-insensitive; values are validated and bounded.
pub fn parse_notification(req: &rsip::Request) -> Result<Notification, NotifyError> {
    if req.method != rsip::Method::Message {
        return Err(NotifyError::NotMessage(req.method.to_string()));
    }
    let get = |name: &'static str| -> Result<Option<&str>, NotifyError> {
        let mut it = header_values(&req.headers, name);
        let first = it.next();
        if it.next().is_some() {
            return Err(NotifyError::Duplicate(name));
        }
        Ok(first.map(str::trim))
    };
    let need = |name: &'static str| get(name)?.ok_or(NotifyError::Missing(name));

    let event = match need(H_EVENT)?.to_ascii_lowercase().as_str() {
        "save" => NotifyEvent::Save,
        "expired" => NotifyEvent::Expired,
        "delete" => NotifyEvent::Delete,
        _ => return Err(invalid(H_EVENT, "expected save, expired or delete")),
    };
    let aor = need(H_AOR)?;
    validate_aor(aor).map_err(|reason| invalid(H_AOR, reason))?;
    let expires: u32 =
        parse_num(need(H_EXPIRES)?).ok_or(invalid(H_EXPIRES, "not a decimal number"))?;
    if expires > MAX_EXPIRES {
        return Err(invalid(H_EXPIRES, "longer than one year"));
    }
    let contacts = get(H_CONTACTS)?
        .map(|v| parse_num::<u32>(v).ok_or(invalid(H_CONTACTS, "not a decimal number")))
        .transpose()?;
    let time_us = get(H_TIME)?
        .map(|v| parse_num::<u64>(v).ok_or(invalid(H_TIME, "not a decimal number")))
        .transpose()?;
    let auth = get(H_AUTH)?
        .map(|v| {
            (v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_=".contains(&b)))
            .then(|| v.to_string())
            .ok_or(invalid(H_AUTH, "not base64url"))
        })
        .transpose()?;
    Ok(Notification {
        event,
        aor: aor.to_string(),
        expires,
        contacts,
        time_us,
        auth,
    })
}

/// Digits only: `str::parse` would also take a leading `+`.
fn parse_num<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn is_domain_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)
}

fn validate_aor(aor: &str) -> Result<(), &'static str> {
    if aor.len() > MAX_AOR {
        return Err("too long");
    }
    let bare = strip_sip(aor);
    let (user, domain) = match bare.split_once('@') {
        Some((u, d)) => (u, Some(d)),
        None => (bare, None),
    };
    if user.is_empty() {
        return Err("empty user part");
    }
    if !valid_user_part(user) {
        return Err("forbidden character in user part");
    }
    if let Some(d) = domain {
        if d.is_empty() || !d.bytes().all(is_domain_char) {
            return Err("malformed domain part");
        }
    }
    Ok(())
}

fn strip_sip(aor: &str) -> &str {
    match aor.get(..4) {
        Some(p) if p.eq_ignore_ascii_case("sip:") => &aor[4..],
        _ => aor,
    }
}

/// The user part of an AOR: `1001` for `1001`, `1001@example.org` or `sip:1001@example.org`.
pub fn aor_user(aor: &str) -> &str {
    let bare = strip_sip(aor);
    bare.split_once('@').map_or(bare, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sip::parse_message;

    fn notification(extra: &str) -> String {
        format!(
            "MESSAGE sip:regmirror@10.0.0.9:5070 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK.n1\r\n\
From: <sip:kamailio@10.0.0.2>;tag=k1\r\n\
To: <sip:regmirror@10.0.0.9:5070>\r\n\
Call-ID: n1@10.0.0.2\r\n\
CSeq: 10 MESSAGE\r\n\
{extra}Content-Length: 0\r\n\r\n"
        )
    }

    fn parse(extra: &str) -> Result<Notification, NotifyError> {
        match parse_message(notification(extra).as_bytes()) {
            Ok(rsip::SipMessage::Request(r)) => parse_notification(&r),
            other => panic!("{other:?}"),
        }
    }

    /// The vector is what Kamailio 5.6's `crypto_hmac_sha256("save|1001|60|1|1700000000000000",
    /// "k3y", ...)` wrote (measured).
    #[test]
    fn verifies_kamailios_hmac_and_the_clock() {
        const T: u64 = 1_700_000_000_000_000;
        let signed = |auth: &str| {
            parse(&format!("X-RegMirror-Event: save\r\nX-RegMirror-AOR: 1001\r\nX-RegMirror-Expires: 60\r\nX-RegMirror-Contacts: 1\r\nX-RegMirror-Time: {T}\r\n{auth}")).unwrap()
        };
        let skew = Duration::from_secs(30);
        let good = signed("X-RegMirror-Auth: 0swXSReGs5UiikIjghBuqdaHzjhDo4-b1C0-GTCs1UM\r\n");
        assert_eq!(good.signed_text(), "save|1001|60|1|1700000000000000");
        assert_eq!(good.verify(b"k3y", T + 29_000_000, skew), Ok(()));
        assert_eq!(good.verify(b"k3y", T - 29_000_000, skew), Ok(()));
        assert_eq!(
            good.verify(b"k3y", T + 31_000_000, skew),
            Err(AuthError::Stale { skew_ms: 31_000 })
        );
        assert_eq!(good.verify(b"other", T, skew), Err(AuthError::Forged));
        assert_eq!(signed("").verify(b"k3y", T, skew), Err(AuthError::Missing));
        // Any field changed (here the event): the tag no longer matches.
        let mut changed = good.clone();
        changed.event = NotifyEvent::Delete;
        assert_eq!(changed.verify(b"k3y", T, skew), Err(AuthError::Forged));
        let bad = signed("X-RegMirror-Auth: AAAA\r\n");
        assert_eq!(bad.verify(b"k3y", T, skew), Err(AuthError::Forged));
        assert!(parse("X-RegMirror-Event: save\r\nX-RegMirror-AOR: 1\r\nX-RegMirror-Expires: 1\r\nX-RegMirror-Auth: a b\r\n").is_err());
    }

    #[test]
    fn parses_full_and_minimal() {
        let n = parse("X-RegMirror-Event: save\r\nx-regmirror-aor: 1001@regmirror.test\r\nX-RegMirror-Expires: 3597\r\nX-RegMirror-Contacts: 2\r\nX-REGMIRROR-TIME: 1795364123456789\r\n").unwrap();
        assert_eq!(
            n,
            Notification {
                event: NotifyEvent::Save,
                aor: "1001@regmirror.test".into(),
                expires: 3597,
                contacts: Some(2),
                time_us: Some(1795364123456789),
                auth: None,
            }
        );
        let n = parse(
            "X-RegMirror-Event: Expired\r\nX-RegMirror-AOR: 1001\r\nX-RegMirror-Expires: 0\r\n",
        )
        .unwrap();
        assert_eq!(
            (n.event, n.aor.as_str(), n.expires, n.contacts, n.time_us),
            (NotifyEvent::Expired, "1001", 0, None, None)
        );
    }

    #[test]
    fn errors_name_the_header() {
        let ok = "X-RegMirror-Event: delete\r\nX-RegMirror-AOR: 1001\r\nX-RegMirror-Expires: 0\r\n";
        assert_eq!(
            parse("X-RegMirror-AOR: 1001\r\nX-RegMirror-Expires: 0\r\n"),
            Err(NotifyError::Missing(H_EVENT))
        );
        assert_eq!(
            parse(&ok.replace("delete", "purge")),
            Err(invalid(H_EVENT, "expected save, expired or delete"))
        );
        assert_eq!(
            parse(&format!("{ok}X-RegMirror-AOR: 1002\r\n")),
            Err(NotifyError::Duplicate(H_AOR))
        );
        assert_eq!(
            parse(&ok.replace("Expires: 0", "Expires: +5")),
            Err(invalid(H_EXPIRES, "not a decimal number"))
        );
        assert_eq!(
            parse(&ok.replace("Expires: 0", "Expires: 31536001")),
            Err(invalid(H_EXPIRES, "longer than one year"))
        );
        assert_eq!(
            parse(&ok.replace("Expires: 0", "Expires: 99999999999")),
            Err(invalid(H_EXPIRES, "not a decimal number"))
        );
        assert_eq!(
            parse(&format!("{ok}X-RegMirror-Contacts: two\r\n")),
            Err(invalid(H_CONTACTS, "not a decimal number"))
        );
        assert_eq!(
            parse(&format!("{ok}X-RegMirror-Time: -1\r\n")),
            Err(invalid(H_TIME, "not a decimal number"))
        );
        for (aor, reason) in [
            ("@regmirror.test", "empty user part"),
            ("sip:", "empty user part"),
            ("10 01", "forbidden character in user part"),
            ("1001;x=y", "forbidden character in user part"),
            ("1001>", "forbidden character in user part"),
            ("1001@", "malformed domain part"),
            ("1001@a@b", "malformed domain part"),
        ] {
            assert_eq!(
                parse(&ok.replace("AOR: 1001", &format!("AOR: {aor}"))),
                Err(invalid(H_AOR, reason)),
                "{aor}"
            );
        }
        let long = "a".repeat(MAX_AOR + 1);
        assert_eq!(
            parse(&ok.replace("AOR: 1001", &format!("AOR: {long}"))),
            Err(invalid(H_AOR, "too long"))
        );
    }

    #[test]
    fn only_message_is_a_notification() {
        let m = notification("").replace("MESSAGE", "OPTIONS");
        let Ok(rsip::SipMessage::Request(r)) = parse_message(m.as_bytes()) else {
            panic!()
        };
        assert_eq!(
            parse_notification(&r),
            Err(NotifyError::NotMessage("OPTIONS".into()))
        );
    }

    #[test]
    fn user_part() {
        assert_eq!(aor_user("1001"), "1001");
        assert_eq!(aor_user("1001@regmirror.test"), "1001");
        assert_eq!(aor_user("sip:1001@regmirror.test"), "1001");
        assert_eq!(aor_user("SIP:1001"), "1001");
        assert_eq!(aor_user(""), "");
        assert_eq!(aor_user("sé"), "sé");
    }
}
