//! rsip 0.4 itself, without regmirror's pre-validation: its tokenizer and the typed header
//! parsers other modules might call. Finds what must never reach rsip unchecked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rsip::prelude::*;
use rsip::SipMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = SipMessage::try_from(data) else { return };
    if let Ok(h) = msg.via_header() {
        let _ = h.typed();
    }
    if let Ok(h) = msg.from_header() {
        let _ = h.typed();
        let _ = h.tag();
    }
    if let Ok(h) = msg.to_header() {
        let _ = h.typed();
    }
    if let Ok(h) = msg.cseq_header() {
        let _ = h.typed();
    }
    if let Ok(h) = msg.contact_header() {
        let _ = h.typed();
    }
    if let Some(h) = msg.expires_header() {
        let _ = h.typed();
    }
    let _ = msg.to_string();
});
