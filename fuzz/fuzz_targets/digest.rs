//! Digest header parsers. Property: for any challenge that parses, the Authorization this
//! client builds parses back and verifies with the same password.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regmirror::core::digest::{self, Authorization, Challenge, RequestInfo, Secret};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = Authorization::parse(s);
    let Ok(ch) = Challenge::parse(s) else { return };
    let secret = Secret::Password("Circle Of Life".into());
    let req = RequestInfo { method: "REGISTER", uri: "sip:regmirror.test", body: b"" };
    let Ok(header) = digest::authorization(&ch, "1001", &secret, req, 1, "0a4f113b") else { return };
    let parsed = Authorization::parse(&header).unwrap_or_else(|e| panic!("{e}: {header}"));
    assert_eq!(parsed.realm, ch.realm);
    assert_eq!(parsed.nonce, ch.nonce);
    assert_eq!(parsed.opaque, ch.opaque);
    assert!(parsed.verify(&secret, "REGISTER", b""), "{header}");
});
