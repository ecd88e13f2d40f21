use super::build::has_tag;
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
    let m = "OPTIONS 0 SIP/2.0\r\nX-Link: ://0 SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
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
        text.contains("CSeq: 314159 REGISTER\r\n") && text.ends_with("Content-Length: 0\r\n\r\n")
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
        let Ok(Incoming::Message(SipMessage::Response(r))) = parse_incoming(odd.as_bytes()) else {
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

#[test]
fn register_bytes_match_the_formatted_reference() {
    for (tcp, expires, cseq, auth) in [
        (false, 600, 1, None),
        (
            true,
            0,
            4_294_967_295,
            Some((false, "Digest username=\"u\"")),
        ),
        (false, 3600, 10, Some((true, "Digest x=1"))),
    ] {
        let r = RegisterRequest {
            domain: "regmirror.test",
            user: "1001",
            contact_host: "10.77.0.20:5060",
            local_addr: "[::1]:5070".parse().unwrap(),
            tcp,
            branch: "z9hG4bKdeadbeef0000000100000002",
            call_id: "deadbeef-1-0-0",
            from_tag: "deadbeef1n0g0",
            cseq,
            expires,
            authorization: auth,
            user_agent: "regmirror/0.1.0",
        };
        let mut want = format!(
            "REGISTER sip:regmirror.test SIP/2.0\r\nVia: SIP/2.0/{} [::1]:5070;branch=z9hG4bKdeadbeef0000000100000002;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:1001@regmirror.test>;tag=deadbeef1n0g0\r\n\
             To: <sip:1001@regmirror.test>\r\nCall-ID: deadbeef-1-0-0\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:1001@10.77.0.20:5060>{}\r\nExpires: {expires}\r\n",
            if tcp { "TCP" } else { "UDP" },
            if expires == 0 { ";expires=0" } else { "" },
        );
        if let Some((proxy, v)) = auth {
            let name = if proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            want.push_str(&format!("{name}: {v}\r\n"));
        }
        want.push_str("User-Agent: regmirror/0.1.0\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(String::from_utf8(r.to_bytes()).unwrap(), want);
    }
}
