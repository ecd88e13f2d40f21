//! TCP framing. Properties: a frame is never empty nor longer than the buffer, and more bytes
//! arriving never change where the first frame ends.
#![no_main]
use libfuzzer_sys::fuzz_target;
use regmirror::core::sip;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(n)) = sip::split_stream(rest) {
        assert!(n > 0 && n <= rest.len());
        assert_eq!(sip::split_stream(&rest[..n]), Ok(Some(n)));
        if !sip::is_keepalive(&rest[..n]) {
            let _ = sip::parse_message(&rest[..n]);
        }
        rest = &rest[n..];
    }
    // Any prefix of a buffer that is still incomplete is incomplete too.
    if let Ok(None) = sip::split_stream(rest) {
        for cut in [rest.len() / 2, rest.len().saturating_sub(1)] {
            assert_eq!(sip::split_stream(&rest[..cut]), Ok(None));
        }
    }
});
