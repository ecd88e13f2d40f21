//! rsip 0.4 itself, without regmirror's pre-validation: its tokenizer and the typed header
//! parsers other modules might call. Finds what must never reach rsip unchecked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rsip::prelude::*;
use rsip::{Header, SipMessage};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = SipMessage::try_from(data) else {
        return;
    };
    let _ = msg.to_string();
    let headers = match &msg {
        SipMessage::Request(r) => &r.headers,
        SipMessage::Response(r) => &r.headers,
    };
    for h in headers.iter() {
        match h {
            Header::Via(v) => {
                let _ = v.typed();
            }
            Header::From(v) => {
                let _ = v.typed();
                let _ = v.tag();
            }
            Header::To(v) => {
                let _ = v.typed();
                let _ = v.tag();
            }
            Header::CSeq(v) => {
                let _ = v.typed();
            }
            Header::Contact(v) => {
                let _ = v.typed();
                let _ = v.expires();
            }
            Header::Expires(v) => {
                let _ = v.seconds();
            }
            Header::MinExpires(v) => {
                let _ = v.seconds();
            }
            Header::WwwAuthenticate(v) => {
                let _ = v.typed();
            }
            Header::ProxyAuthenticate(v) => {
                let _ = v.typed();
            }
            Header::Authorization(v) => {
                let _ = v.typed();
            }
            _ => {}
        }
    }
});
