//! The rsip-free response path against the rsip path on one datagram: `parse_incoming` must
//! give the same errors and the same message as `parse_message`, and when it reads a response
//! without rsip, the same `ResponseInfo` as the rsip path derives; and what the response path
//! reads of it (challenges, the granted expiry) does not panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regmirror::core::response::ResponseInfo;
use regmirror::core::sip::{self, Incoming};
use rsip::SipMessage;

fn read(info: &ResponseInfo) {
    info.challenges(false);
    info.challenges(true);
    info.granted_expires("1001", "10.77.0.20:5060");
}

fuzz_target!(|data: &[u8]| {
    let full = sip::parse_message(data);
    match (sip::parse_incoming(data), &full) {
        (Ok(Incoming::Response(info)), Ok(SipMessage::Response(r))) => {
            assert_eq!(info, ResponseInfo::from_response(r));
            read(&info);
        }
        (Ok(Incoming::Message(m)), Ok(f)) => {
            assert_eq!(&m, f);
            if let SipMessage::Response(r) = &m {
                read(&ResponseInfo::from_response(r));
            }
        }
        (Err(e), Err(f)) => assert_eq!(&e, f),
        (fast, _) => panic!("parse_incoming {fast:?} but parse_message {full:?}"),
    }
});
