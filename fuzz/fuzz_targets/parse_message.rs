//! Every network entry point on one datagram: parse_message, then what the runtime does next
//! (notification parsing and its proof of origin, the 200/400 answer for requests, challenge
//! extraction for responses).
//! Properties: a parsed message re-encodes (rsip's Display) to bytes that parse to the same
//! message; the answer built by `response_for` always parses back, same Call-ID, CSeq, From.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regmirror::core::{notify, sip};
use rsip::SipMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = sip::parse_message(data) else {
        return;
    };
    let encoded = msg.to_string();
    assert_eq!(
        sip::parse_message(encoded.as_bytes()).as_ref(),
        Ok(&msg),
        "re-encoded:\n{encoded}"
    );
    match msg {
        SipMessage::Request(req) => {
            if let Ok(n) = notify::parse_notification(&req) {
                let _ = notify::aor_user(&n.aor);
                // The proof of origin: any tag, any time, never a panic.
                let _ = n.verify(b"fuzz-key", u64::MAX / 2, std::time::Duration::from_secs(30));
            }
            let resp = sip::response_for(&req, 200, "OK");
            match sip::parse_message(&resp) {
                Ok(SipMessage::Response(r)) => {
                    for h in ["Call-ID", "CSeq", "From"] {
                        assert_eq!(
                            sip::header_values(&r.headers, h).collect::<Vec<_>>(),
                            sip::header_values(&req.headers, h).collect::<Vec<_>>(),
                            "{h}"
                        );
                    }
                }
                other => panic!(
                    "response_for output does not reparse: {other:?}\n{}",
                    String::from_utf8_lossy(&resp)
                ),
            }
        }
        SipMessage::Response(resp) => {
            let _ = sip::challenges(&resp);
        }
    }
});
