//! Replays the fuzz corpus and crash regressions, and proptest-generated inputs, through every
//! network entry point (the same calls the fuzz targets make). A panic anywhere fails the test.

use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use regmirror::core::digest::{self, Authorization, Challenge, RequestInfo, Secret};
use regmirror::core::notify::{self, MAX_AOR, MAX_EXPIRES};
use regmirror::core::response::ResponseInfo;
use regmirror::core::sip::{self, Incoming, MAX_MESSAGE};
use rsip::SipMessage;

/// `parse_incoming` agrees with `parse_message`: same errors, same message, and for a response
/// it reads without rsip, the same `ResponseInfo` as the rsip path. True when it took that path.
fn check_incoming(data: &[u8]) -> bool {
    let full = sip::parse_message(data);
    if let Ok(SipMessage::Response(r)) = &full {
        read_response(&ResponseInfo::from_response(r));
    }
    match (sip::parse_incoming(data), &full) {
        (Ok(Incoming::Response(info)), Ok(SipMessage::Response(r))) => {
            assert_eq!(info, ResponseInfo::from_response(r));
            read_response(&info);
            return true;
        }
        (Ok(Incoming::Message(m)), Ok(f)) => assert_eq!(&m, f),
        (Err(e), Err(f)) => assert_eq!(&e, f),
        (fast, _) => panic!(
            "parse_incoming {fast:?} but parse_message {full:?} on\n{}",
            String::from_utf8_lossy(data)
        ),
    }
    false
}

/// What the response path reads of a response beyond its headers (must not panic).
fn read_response(info: &ResponseInfo) {
    info.challenges(false);
    info.challenges(true);
    info.granted_expires("1001", "10.77.0.20:5060");
}

/// What the runtime does with one datagram; checks the answer it would send parses back.
fn exercise_message(data: &[u8]) -> Option<SipMessage> {
    check_incoming(data);
    let msg = sip::parse_message(data).ok()?;
    let encoded = msg.to_string();
    assert_eq!(
        sip::parse_message(encoded.as_bytes()).as_ref(),
        Ok(&msg),
        "re-encoded:\n{encoded}"
    );
    match &msg {
        SipMessage::Request(req) => {
            if let Ok(n) = notify::parse_notification(req) {
                assert!(n.expires <= MAX_EXPIRES && n.aor.len() <= MAX_AOR);
                assert!(!notify::aor_user(&n.aor).is_empty());
                assert!(n
                    .verify(b"a key nobody signed with", 0, std::time::Duration::MAX)
                    .is_err());
            }
            let resp = sip::response_for(req, 400, "Bad Request");
            let Ok(SipMessage::Response(r)) = sip::parse_message(&resp) else {
                panic!(
                    "response_for output does not reparse:\n{}",
                    String::from_utf8_lossy(&resp)
                );
            };
            for h in ["Call-ID", "CSeq", "From", "Via"] {
                assert!(
                    sip::header_values(&r.headers, h).eq(sip::header_values(&req.headers, h)),
                    "{h}"
                );
            }
        }
        SipMessage::Response(resp) => {
            let _ = sip::challenges(resp);
        }
    }
    Some(msg)
}

/// TCP framing over a whole buffer, each frame through the message path.
fn exercise_stream(data: &[u8]) -> usize {
    let mut rest = data;
    let mut frames = 0;
    while let Ok(Some(n)) = sip::split_stream(rest) {
        assert!(n > 0 && n <= rest.len());
        if !sip::is_keepalive(&rest[..n]) {
            exercise_message(&rest[..n]);
            frames += 1;
        }
        rest = &rest[n..];
    }
    frames
}

/// Digest parsers; a challenge that parses must yield credentials that parse and verify.
fn exercise_digest(s: &str) {
    let _ = Authorization::parse(s);
    let Ok(ch) = Challenge::parse(s) else { return };
    let secret = Secret::Password("Circle Of Life".into());
    let req = RequestInfo {
        method: "REGISTER",
        uri: "sip:regmirror.test",
        body: b"",
    };
    if let Ok(h) = digest::authorization(&ch, "1001", &secret, req, 1, "0a4f113b") {
        let parsed = Authorization::parse(&h).unwrap_or_else(|e| panic!("{e}: {h}"));
        assert!(parsed.verify(&secret, "REGISTER", b""), "{h}");
    }
}

fn exercise_all(data: &[u8]) {
    exercise_message(data);
    exercise_stream(data);
    exercise_digest(&String::from_utf8_lossy(data));
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files directly under each subdirectory of `dir`, as (subdirectory name, contents).
fn files_under(dir: &Path) -> Vec<(String, PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(subdirs) = fs::read_dir(dir) else {
        return out;
    };
    for sub in subdirs.flatten() {
        let name = sub.file_name().to_string_lossy().into_owned();
        let Ok(files) = fs::read_dir(sub.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.path().is_file() {
                let bytes = fs::read(f.path()).unwrap();
                out.push((name.clone(), f.path(), bytes));
            }
        }
    }
    out.sort();
    out
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    files_under(&fuzz_dir().join("corpus"))
        .into_iter()
        .filter(|(t, p, _)| {
            t == target
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .map(|(_, _, b)| b)
        .collect()
}

#[test]
fn corpus_replays_through_entry_points() {
    let files = files_under(&fuzz_dir().join("corpus"));
    assert!(files.len() >= 12, "seed corpus missing: {}", files.len());
    for (target, path, bytes) in &files {
        let is_seed = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seed-"));
        match target.as_str() {
            "digest" => {
                let s = String::from_utf8_lossy(bytes);
                exercise_digest(&s);
                if is_seed && s.contains("nonce=") && !s.contains("username=") {
                    assert!(Challenge::parse(&s).is_ok(), "{}", path.display());
                }
            }
            "split_stream" => {
                let frames = exercise_stream(bytes);
                assert!(!is_seed || frames >= 1, "{}", path.display());
            }
            _ => {
                // Seeds are realistic messages: every one of them must parse.
                let parsed = exercise_message(bytes);
                assert!(
                    !is_seed || parsed.is_some(),
                    "{}: {:?}",
                    path.display(),
                    sip::parse_message(bytes).err()
                );
            }
        }
    }
}

#[test]
fn seed_notifications_and_challenges_parse() {
    let mut notifications = 0;
    let mut challenges = 0;
    for bytes in seeds("parse_message") {
        match sip::parse_message(&bytes).unwrap() {
            SipMessage::Request(r) if r.method == rsip::Method::Message => {
                notify::parse_notification(&r).unwrap();
                notifications += 1;
            }
            SipMessage::Response(r) => {
                for (_, c) in sip::challenges(&r) {
                    c.unwrap();
                    challenges += 1;
                }
            }
            _ => {}
        }
    }
    assert!(
        notifications >= 3 && challenges >= 4,
        "{notifications} {challenges}"
    );
}

#[test]
fn crash_regressions_replay() {
    // fuzz/artifacts/<target>/crash-* from cargo fuzz: every entry point, whatever the target.
    // Four are committed (three fixed crashes and the non-ASCII challenge parameter): a missing
    // directory must fail here, not pass with nothing replayed.
    let artifacts = files_under(&fuzz_dir().join("artifacts"));
    assert!(
        artifacts.len() >= 4,
        "expected the committed crash artifacts under fuzz/artifacts, found {}",
        artifacts.len()
    );
    for (_, _, bytes) in artifacts {
        exercise_all(&bytes);
    }
}

/// One of the seed messages, chosen by the strategy.
fn seed_message() -> impl Strategy<Value = Vec<u8>> {
    let all = seeds("parse_message");
    assert!(!all.is_empty());
    (0..all.len()).prop_map(move |i| all[i].clone())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
    DuplicateLine(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![
                    Just(b'\r'),
                    Just(b'\n'),
                    Just(b':'),
                    Just(b';'),
                    Just(b'"'),
                    Just(b' '),
                    any::<u8>()
                ],
                1..8
            )
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1..40usize).prop_map(|(i, n)| Mutation::Remove(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        any::<usize>().prop_map(Mutation::DuplicateLine),
    ]
}

fn apply(mut m: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for mu in muts {
        let len = m.len().max(1);
        match mu {
            Mutation::Flip(i, b) if !m.is_empty() => m[i % len] = *b,
            Mutation::Insert(i, v) => {
                let at = i % (m.len() + 1);
                m.splice(at..at, v.iter().copied());
            }
            Mutation::Remove(i, n) if !m.is_empty() => {
                let at = i % len;
                let end = (at + n).min(m.len());
                m.drain(at..end);
            }
            Mutation::Truncate(i) => m.truncate(i % (m.len() + 1)),
            Mutation::DuplicateLine(i) => {
                let lines: Vec<&[u8]> = m.split(|b| *b == b'\n').collect();
                let line = [lines[i % lines.len()], b"\n"].concat();
                let at = m.iter().position(|b| *b == b'\n').map_or(0, |p| p + 1);
                m.splice(at..at, line);
            }
            _ => {}
        }
    }
    m
}

fn notification(event: &str, aor: &str, expires: &str, extra: &str) -> String {
    format!(
        "MESSAGE sip:regmirror@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK1\r\n\
From: <sip:kamailio@10.0.0.2>;tag=k\r\nTo: <sip:regmirror@10.0.0.9>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\n\
X-RegMirror-Event: {event}\r\nX-RegMirror-AOR: {aor}\r\nX-RegMirror-Expires: {expires}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// One header line of a generated response: a name (any case, now and then unknown or compact)
/// and a value drawn from what registrars send, separators and quotes included.
/// Also says whether the line is already clean (`Name: value`, full name, value trimmed).
fn response_header() -> impl Strategy<Value = (String, bool)> {
    let name = prop::sample::select(vec![
        "Via",
        "VIA",
        "via",
        "Call-ID",
        "call-id",
        "Call-Id",
        "CSeq",
        "cseq",
        "From",
        "To",
        "to",
        "Contact",
        "contact",
        "Expires",
        "EXPIRES",
        "Min-Expires",
        "Retry-After",
        "WWW-Authenticate",
        "www-authenticate",
        "Proxy-Authenticate",
        "Server",
        "X-Odd",
        "v",
        "i",
        "m",
        "Content-Length",
    ]);
    let value = prop_oneof![
        "SIP/2\\.0/UDP 10\\.0\\.0\\.[0-9]:50[67]0;(rport=5070;)?branch=z9hG4bK[a-f0-9]{1,24}(;received=1\\.2\\.3\\.4)?(, SIP/2\\.0/UDP h;branch=x)?",
        "[0-9]{1,12} (REGISTER|register|OPTIONS|INVITE)",
        "[0-9a-f-]{1,36}(@h)?",
        "<sip:u[0-9]{1,3}@10\\.77\\.0\\.20:5060>(;expires=[0-9]{1,6})?(, <sip:x@y>;expires=1)?",
        "[0-9]{1,11}[ a-z;=()0-9]{0,8}",
        "Digest realm=\"[a-z.]{1,10}\", ?nonce=\"[0-9a-f/]{1,20}\"(, ?opaque=\"[0-9a-f]{1,8}\")?(, ?algorithm=(MD5|SHA-256))?(, ?qop=\"auth\")?(, Digest realm=\"r\",nonce=\"n\")?",
        "[ -~]{0,40}",
    ];
    (name, value, 0..10u8).prop_map(|(n, v, odd)| {
        let clean = odd > 2 && n.len() > 1 && v == v.trim_matches([' ', '\t']);
        let line = match odd {
            // Now and then a line that needs normalization (rsip path).
            0 => format!("{n}:{v}"),
            1 => format!("{n} : {v}"),
            2 => format!("{n}: {v}\r\n  {v}"),
            _ => format!("{n}: {v}"),
        };
        (line, clean)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Generated responses (mostly clean, as registrars send them): the rsip-free reading
    /// gives the same `ResponseInfo` as rsip, and takes over every clean one.
    #[test]
    fn incoming_responses_match_rsip(
        code in prop_oneof![Just(100u16), Just(200), Just(401), Just(407), Just(423), Just(503), 100..700u16],
        reason in "[A-Za-z ]{0,20}",
        headers in prop::collection::vec(response_header(), 0..14),
        body in "[a-z]{0,10}",
    ) {
        let mut text = format!("SIP/2.0 {code} {reason}\r\n");
        for h in ["Via: SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKdeadbeef0000000100000002", "From: <sip:a@b>;tag=1", "To: <sip:a@b>", "Call-ID: deadbeef-1-0-0", "CSeq: 1 REGISTER"] {
            text.push_str(h);
            text.push_str("\r\n");
        }
        for (h, _) in &headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        let fast = check_incoming(text.as_bytes());
        let clean = headers.iter().all(|(_, c)| *c);
        if clean && sip::parse_message(text.as_bytes()).is_ok() {
            prop_assert!(fast, "clean response not read on the fast path:\n{}", text);
        }
    }

    #[test]
    fn random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise_all(&data);
    }

    #[test]
    fn oversized_input_is_rejected(extra in 1..4096usize) {
        let data = vec![b'A'; MAX_MESSAGE + extra];
        prop_assert_eq!(sip::parse_message(&data), Err(sip::WireError::TooLarge(MAX_MESSAGE + extra)));
        prop_assert!(sip::split_stream(&data).is_err());
    }

    #[test]
    fn mutated_messages(m in seed_message(), muts in prop::collection::vec(mutation(), 1..6)) {
        let data = apply(m, &muts);
        exercise_all(&data);
    }

    #[test]
    fn pipelined_messages_frame_exactly(ms in prop::collection::vec(seed_message(), 1..5), keepalive in any::<bool>()) {
        let mut buf = Vec::new();
        for m in &ms {
            if keepalive { buf.extend_from_slice(b"\r\n\r\n"); }
            buf.extend_from_slice(m);
        }
        prop_assert_eq!(exercise_stream(&buf), ms.len());
    }

    #[test]
    fn random_notification_values(
        event in "\\PC{0,12}|save|expired|delete",
        aor in "\\PC{0,300}|[a-z0-9]{1,20}(@[a-z.]{1,20})?",
        expires in "\\PC{0,12}|[0-9]{1,12}",
        extra in "(X-RegMirror-(Contacts|Time|AOR|Event): [\\PC]{0,25}\r\n){0,3}",
    ) {
        let text = notification(&event, &aor, &expires, &extra);
        if let Some(SipMessage::Request(req)) = exercise_message(text.as_bytes()) {
            if let Ok(n) = notify::parse_notification(&req) {
                prop_assert!(n.aor.bytes().all(|b| b.is_ascii_graphic()));
                prop_assert_eq!(Some(n.expires), expires.trim().parse::<u32>().ok());
            }
        }
    }

    #[test]
    fn random_digest_params(
        params in prop::collection::vec(
            ("realm|nonce|opaque|algorithm|qop|stale|username|uri|response|nc|cnonce|[a-z]{1,6}", "\\PC{0,20}", any::<bool>()),
            0..10,
        ),
        sep in ",|, |\t,|,,",
    ) {
        let body: Vec<String> = params
            .iter()
            .map(|(k, v, quoted)| if *quoted { format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")) } else { format!("{k}={v}") })
            .collect();
        exercise_digest(&format!("Digest {}", body.join(&sep)));
    }
}

/// The fake registrar's answers (Asterisk's layout) are clean, so the driver reads them without
/// rsip.
#[test]
fn registrar_answers_take_the_fast_path() {
    use regmirror::core::testing::FakeRegistrar;
    let now = std::time::Instant::now();
    let mut reg = FakeRegistrar::new("10.77.0.11:5060".parse().unwrap(), "regmirror.test");
    reg.add_user("1001", Secret::Password("pw".into()));
    let req = "REGISTER sip:regmirror.test SIP/2.0\r\nVia: SIP/2.0/UDP 10.77.0.30:5070;branch=z9hG4bKdeadbeef0000000100000002;rport\r\n\
Max-Forwards: 70\r\nFrom: <sip:1001@regmirror.test>;tag=x\r\nTo: <sip:1001@regmirror.test>\r\nCall-ID: deadbeef-1-0-0\r\n\
CSeq: 1 REGISTER\r\nContact: <sip:1001@10.77.0.20:5060>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n";
    let r401 = reg.handle(now, req.as_bytes()).pop().unwrap();
    assert!(check_incoming(&r401), "{}", String::from_utf8_lossy(&r401));
}
