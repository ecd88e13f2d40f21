//! Mirror against fake registrars on a virtual clock (issue 3 acceptance).

use std::time::Duration;

use regmirror::core::digest::{ha1, Algorithm, Authorization, Secret};
use regmirror::core::mirror::{
    BindingState, Credential, Event, Mirror, MirrorConfig, Node, Transport,
};
use regmirror::core::testing::{Scripted, Sim};

const DOMAIN: &str = "regmirror.test";
const CONTACT: &str = "10.77.0.20:5060";

fn config() -> MirrorConfig {
    MirrorConfig {
        domain: DOMAIN.into(),
        contact_host: CONTACT.into(),
        local_addr: "10.77.0.30:5070".parse().unwrap(),
        ..MirrorConfig::default()
    }
}

fn cred(user: &str, password: &str) -> Credential {
    Credential {
        username: user.into(),
        secret: Secret::Password(password.into()),
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn sim(nodes: usize) -> Sim {
    let mut s = Sim::new(config(), nodes, Transport::Udp, 7);
    s.add_user("1001", Secret::Password("s3cret".into()));
    s
}

/// Header value of `name` in a raw request.
fn header<'a>(payload: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(payload).ok()?;
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn states(sim: &Sim, aor: &str) -> Vec<Option<BindingState>> {
    (0..sim.registrars.len())
        .map(|n| sim.mirror.binding(aor, n as u16).map(|b| b.state))
        .collect()
}

#[test]
fn registers_with_digest_on_three_nodes() {
    let mut s = sim(3);
    let now = s.now;
    s.mirror.aor_update(
        now,
        "1001@regmirror.test",
        secs(3600),
        None,
        Some(cred("1001", "s3cret")),
    );
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 3]);
    for r in &s.registrars {
        let c = r.contact("1001", s.now).expect("contact on every node");
        assert_eq!(c.uri, "sip:1001@10.77.0.20:5060");
        // One unauthenticated attempt, one answered challenge.
        assert_eq!(r.log.len(), 2);
        assert!(r.log[0].authorization.is_none());
        assert!(r.log[1].authorization.is_some());
        assert_eq!(r.log[0].call_id, r.log[1].call_id);
        assert_eq!(r.log[1].cseq, r.log[0].cseq + 1);
    }
    // Call-IDs differ per node; the request is what the contract says.
    let first = &s.sent[0].payload;
    let text = std::str::from_utf8(first).unwrap();
    assert!(
        text.starts_with("REGISTER sip:regmirror.test SIP/2.0\r\n"),
        "{text}"
    );
    assert!(header(first, "Via")
        .unwrap()
        .starts_with("SIP/2.0/UDP 10.77.0.30:5070;branch=z9hG4bK"));
    assert!(header(first, "Via").unwrap().ends_with(";rport"));
    assert!(header(first, "From")
        .unwrap()
        .starts_with("<sip:1001@regmirror.test>;tag="));
    assert_eq!(header(first, "To"), Some("<sip:1001@regmirror.test>"));
    assert_eq!(header(first, "Contact"), Some("<sip:1001@10.77.0.20:5060>"));
    assert_eq!(header(first, "Expires"), Some("600"));
    assert_eq!(header(first, "Max-Forwards"), Some("70"));
    assert_eq!(header(first, "Content-Length"), Some("0"));
    let ids: std::collections::HashSet<_> = s
        .registrars
        .iter()
        .map(|r| r.log[0].call_id.clone())
        .collect();
    assert_eq!(ids.len(), 3);
    let changes: Vec<_> = s
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::BindingChanged {
                state: BindingState::Registered,
                reason,
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec!["200 OK"; 3]);
    assert_eq!(s.mirror.stats().registered, 3);
}

/// A 401 exactly as Asterisk 22 sends it (no spaces after commas).
#[test]
fn answers_recorded_asterisk22_challenge() {
    let node = Node {
        name: "ast1".into(),
        addr: "10.77.0.11:5060".parse().unwrap(),
        transport: Transport::Udp,
    };
    let mut m = Mirror::new(config(), vec![node], 1);
    let now = std::time::Instant::now();
    m.aor_update(now, "1001", secs(600), None, Some(cred("1001", "s3cret")));
    let req = m.poll_transmit().expect("REGISTER");
    let via = header(&req.payload, "Via").unwrap();
    let call_id = header(&req.payload, "Call-ID").unwrap();
    let resp = format!(
        "SIP/2.0 401 Unauthorized\r\n\
         Via: {via};received=10.77.0.30\r\n\
         Call-ID: {call_id}\r\n\
         From: <sip:1001@regmirror.test>;tag=x\r\n\
         To: <sip:1001@regmirror.test>;tag=z9hG4bKPj0c1\r\n\
         CSeq: 1 REGISTER\r\n\
         WWW-Authenticate: Digest realm=\"regmirror.test\",nonce=\"1732300000/3fc9a2d6e5b8a1f4c0d7e6b5a4c3d2e1\",opaque=\"5d2c7e1a0b9f8e7d\",algorithm=MD5,qop=\"auth\"\r\n\
         Server: Asterisk PBX 22.1.0\r\n\
         Content-Length:  0\r\n\r\n"
    );
    let rsip::SipMessage::Response(r) = rsip::SipMessage::try_from(resp.as_str()).unwrap() else {
        panic!()
    };
    m.handle_response(now + ms(2), "10.77.0.11:5060".parse().unwrap(), &r);
    let again = m.poll_transmit().expect("authenticated REGISTER");
    assert_eq!(header(&again.payload, "CSeq"), Some("2 REGISTER"));
    assert_eq!(header(&again.payload, "Call-ID"), Some(call_id));
    let a = Authorization::parse(header(&again.payload, "Authorization").unwrap()).unwrap();
    assert_eq!(a.realm, "regmirror.test");
    assert_eq!(a.nonce, "1732300000/3fc9a2d6e5b8a1f4c0d7e6b5a4c3d2e1");
    assert_eq!(a.opaque.as_deref(), Some("5d2c7e1a0b9f8e7d"));
    assert_eq!(a.uri, "sip:regmirror.test");
    assert_eq!(a.nc, Some(1));
    assert_eq!(a.algorithm, Algorithm::Md5);
    assert!(a.verify(&Secret::Password("s3cret".into()), "REGISTER", b""));
    // Also answerable from the stored HA1 (ps_auths.md5_cred).
    let stored = Secret::Ha1Md5 {
        realm: DOMAIN.into(),
        ha1: ha1(Algorithm::Md5, "1001", DOMAIN, "s3cret"),
    };
    assert!(a.verify(&stored, "REGISTER", b""));
    // A response from another address is not accepted.
    assert_eq!(m.stats().stray_responses, 0);
    m.handle_response(now, "10.9.9.9:5060".parse().unwrap(), &r);
    assert_eq!(m.stats().stray_responses, 1);
}

#[test]
fn prefers_sha256_among_several_challenges_and_md5_for_stored_ha1() {
    let mut s = sim(1);
    s.registrars[0].algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(3600), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
    assert_eq!(
        s.registrars[0].log[1]
            .authorization
            .as_ref()
            .unwrap()
            .algorithm,
        Algorithm::Sha256
    );

    let mut s = sim(1);
    s.registrars[0].algorithms = vec![Algorithm::Sha256, Algorithm::Md5];
    let stored = Secret::Ha1Md5 {
        realm: DOMAIN.into(),
        ha1: ha1(Algorithm::Md5, "1001", DOMAIN, "s3cret"),
    };
    let now = s.now;
    s.mirror.aor_update(
        now,
        "1001",
        secs(3600),
        None,
        Some(Credential {
            username: "1001".into(),
            secret: stored,
        }),
    );
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
    assert_eq!(
        s.registrars[0].log[1]
            .authorization
            .as_ref()
            .unwrap()
            .algorithm,
        Algorithm::Md5
    );
}

#[test]
fn stale_nonce_is_retried_not_a_failure_and_refresh_gets_a_new_challenge() {
    let mut s = sim(1);
    // Challenge, then a stale=true answer to the first authenticated attempt.
    s.registrars[0].script = [Scripted::Pass, Scripted::Stale].into_iter().collect();
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
    assert!(s
        .take_events()
        .iter()
        .all(|e| !matches!(e, Event::CredentialRejected { .. })));
    let n_before = s.registrars[0].log.len();
    // The refresh, long after the nonce reuse window, guesses no stale nonce: 401, then the new
    // nonce with nc=1.
    s.run_for(secs(600));
    let log = &s.registrars[0].log[n_before..];
    let ok = log
        .iter()
        .position(|r| r.answered == 200)
        .expect("refreshed");
    let refresh = &log[..=ok];
    assert_eq!(refresh.len(), 2, "{refresh:?}");
    assert!(refresh[0].authorization.is_none());
    assert_eq!(refresh[0].answered, 401);
    let second = refresh[1].authorization.as_ref().unwrap();
    assert_eq!(second.nc, Some(1));
    let first_nonce = &s.registrars[0].log[2].authorization.as_ref().unwrap().nonce;
    assert_ne!(&second.nonce, first_nonce);
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
}

#[test]
fn interval_too_brief_retries_with_min_expires_and_keeps_it() {
    let mut s = sim(1);
    s.registrars[0].min_expires = 900;
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
    let log = &s.registrars[0].log;
    assert_eq!(
        log.iter().map(|r| r.answered).collect::<Vec<_>>(),
        vec![401, 423, 200]
    );
    assert_eq!(log[2].expires, 900);
    assert_eq!(s.mirror.binding("1001", 0).unwrap().granted_expires, 900);
    // Refresh: straight to 900 (with the stale round trip the old nonce costs).
    s.run_for(secs(900));
    assert!(s.registrars[0].log[3..].iter().all(|r| r.expires == 900));
    assert!(s.registrars[0].contact("1001", s.now).is_some());
}

fn send_times(s: &Sim, node: usize) -> Vec<u128> {
    s.sent
        .iter()
        .filter(|p| p.node == node)
        .map(|p| (p.at - s.start).as_millis())
        .collect()
}

#[test]
fn lost_requests_retransmit_e_doubling_to_t2_then_f_times_out_and_backs_off() {
    let mut s = sim(1);
    s.latency = Duration::ZERO;
    s.registrars[0].drop_requests = 11;
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(32) - ms(1));
    assert_eq!(
        send_times(&s, 0),
        vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
    );
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registering)]);
    s.run_for(ms(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed)]);
    let ev = s.take_events();
    assert!(ev.iter().any(|e| matches!(e, Event::BindingChanged { state: BindingState::Failed, reason, .. } if reason == "timeout")));
    // First retry after 50-100% of retry_base (30 s).
    let next = s.mirror.binding("1001", 0).unwrap().next_action.unwrap() - s.start;
    assert!(next >= secs(32 + 15) && next <= secs(32 + 30), "{next:?}");
    s.run_for(secs(31));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
    assert_eq!(s.mirror.stats().retransmits, 10);
    assert_eq!(s.mirror.stats().timeouts, 1);
}

#[test]
fn provisional_response_switches_retransmits_to_t2() {
    let mut s = sim(1);
    s.latency = Duration::ZERO;
    s.registrars[0].send_trying = true;
    // request, 100 Trying delivered; the 401 and everything after lost.
    s.loss = [false, false]
        .into_iter()
        .chain(std::iter::repeat_n(true, 100))
        .collect();
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(32) - ms(1));
    assert_eq!(
        send_times(&s, 0),
        vec![0, 500, 4500, 8500, 12500, 16500, 20500, 24500, 28500]
    );
    s.run_for(ms(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed)]);
}

#[test]
fn tcp_has_no_retransmits_only_timer_f() {
    let mut s = Sim::new(config(), 1, Transport::Tcp, 3);
    s.add_user("1001", Secret::Password("s3cret".into()));
    s.registrars[0].drop_requests = 1;
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(32) - ms(1));
    assert_eq!(send_times(&s, 0), vec![0]);
    assert!(header(&s.sent[0].payload, "Via")
        .unwrap()
        .starts_with("SIP/2.0/TCP "));
    s.run_for(ms(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed)]);
}

/// 1,000 bindings failing at once must not retry in lockstep.
#[test]
fn backoff_jitter_spreads_a_thousand_failing_bindings() {
    let mut s = Sim::new(config(), 1, Transport::Udp, 11);
    s.registrars[0].fail_all = Some(503);
    s.keep_sent = true;
    let now = s.now;
    for i in 0..1000 {
        let u = format!("u{i}");
        s.mirror
            .aor_update(now, &u, secs(86400), None, Some(cred(&u, "pw")));
    }
    s.run_for(secs(1));
    assert_eq!(s.mirror.stats().failed, 1000);
    s.run_for(secs(600));
    // Second attempts: every one inside 15-30 s, spread over that window.
    let log = &s.registrars[0].log;
    let mut per_user: std::collections::HashMap<&str, Vec<Duration>> = Default::default();
    for r in log {
        per_user.entry(&r.user).or_default().push(r.at - s.start);
    }
    let mut buckets = [0usize; 16];
    for times in per_user.values() {
        let second = times[1];
        assert!(second >= secs(15) && second <= secs(31), "{second:?}");
        buckets[((second.as_secs_f64() - 15.0) as usize).min(15)] += 1;
        // Later attempts keep growing: third within 30-60 s after the second.
        let gap = times[2] - times[1];
        assert!(gap >= secs(30) && gap <= secs(61), "{gap:?}");
    }
    let max = *buckets.iter().max().unwrap();
    assert!(max < 120, "lockstep: {buckets:?}");
    assert!(buckets[..15].iter().all(|&b| b > 20), "gaps: {buckets:?}");
}

#[test]
fn timeouts_then_backoff_spread_over_time() {
    let mut cfg = config();
    cfg.max_inflight_per_node = 2000; // this test is about jitter, not pacing
    let mut s = Sim::new(cfg, 1, Transport::Udp, 5);
    s.registrars[0].drop_requests = u32::MAX;
    s.keep_sent = false;
    s.registrars[0].keep_log = true;
    let now = s.now;
    for i in 0..1000 {
        let u = format!("u{i}");
        s.mirror
            .aor_update(now, &u, secs(86400), None, Some(cred(&u, "pw")));
    }
    s.run_for(secs(33));
    assert_eq!(s.mirror.stats().failed, 1000);
    let mut nexts: Vec<_> = s
        .mirror
        .bindings()
        .map(|b| b.next_action.unwrap() - s.start)
        .collect();
    nexts.sort();
    assert!(nexts[0] >= secs(47) && nexts[999] <= secs(62));
    // Not lockstep: no 100 ms window holds more than 2% of the retries.
    let crowd = nexts.windows(20).map(|w| w[19] - w[0]).min().unwrap();
    assert!(crowd > ms(100), "{crowd:?}");
}

#[test]
fn refresh_before_expiry_keeps_contact_alive() {
    let mut s = sim(2);
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    let first_ok = s.registrars[0]
        .log
        .iter()
        .filter(|r| r.answered == 200)
        .count();
    assert_eq!(first_ok, 1);
    for _ in 0..(7000 / 10) {
        s.run_for(secs(10));
        for r in &s.registrars {
            assert!(
                r.contact("1001", s.now).is_some(),
                "lapsed at {:?}",
                s.elapsed()
            );
        }
    }
    // 600 s grants: the first refresh 300-564 s after the registration (spread so a storm's
    // bindings do not come due together), then refreshed between 535 s and 564 s apart.
    let oks: Vec<_> = s.registrars[0]
        .log
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| r.at)
        .collect();
    assert!(oks.len() >= 12, "{}", oks.len());
    let first = oks[1] - oks[0];
    assert!(first >= secs(300) && first <= secs(565), "{first:?}");
    for w in oks[1..].windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= secs(535) && gap <= secs(565), "{gap:?}");
    }
    // Refreshes keep the state; no event churn.
    let ev = s.take_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::BindingChanged { .. }))
            .count(),
        4,
        "{ev:?}"
    );
}

#[test]
fn aor_expiry_unregisters_on_every_node_and_forgets() {
    let mut s = sim(3);
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(120), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(119));
    assert!(s
        .registrars
        .iter()
        .all(|r| r.contact("1001", s.now).is_some()));
    s.take_events();
    s.run_for(secs(2));
    for r in &s.registrars {
        assert!(r.contacts.is_empty(), "contact removed, not left to lapse");
        let last = r.log.iter().rev().find(|x| x.answered == 200).unwrap();
        assert_eq!(last.expires, 0);
    }
    let unreg = s
        .sent
        .iter()
        .rev()
        .find(|p| header(&p.payload, "Expires") == Some("0"))
        .unwrap();
    assert_eq!(
        header(&unreg.payload, "Contact"),
        Some("<sip:1001@10.77.0.20:5060>;expires=0")
    );
    let ev = s.take_events();
    let removed = ev
        .iter()
        .filter(|e| matches!(e, Event::BindingRemoved { .. }))
        .count();
    assert_eq!(removed, 3, "{ev:?}");
    assert_eq!(s.mirror.stats().aors, 0);
    assert_eq!(s.mirror.bindings().count(), 0);
}

#[test]
fn multi_device_aor_lives_until_last_contact_goes() {
    let mut s = sim(3);
    let now = s.now;
    // Two phones: the later one expires in 300 s.
    s.mirror.aor_update(
        now,
        "1001",
        secs(300),
        Some(1_000),
        Some(cred("1001", "s3cret")),
    );
    s.run_for(secs(100));
    // One phone unregisters; the other still has 200 s left.
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(200), Some(2_000), None);
    s.run_for(secs(50));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 3]);
    // A delayed older snapshot saying "gone" is ignored.
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", Duration::ZERO, Some(1_500), None);
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 3]);
    assert_eq!(s.mirror.stats().stale_snapshots, 1);
    // The last phone unregisters.
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", Duration::ZERO, Some(3_000), None);
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![None; 3]);
    assert!(s.registrars.iter().all(|r| r.contacts.is_empty()));
}

#[test]
fn credential_rejected_then_corrected() {
    let mut s = sim(3);
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "wrong")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed); 3]);
    let ev = s.take_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::CredentialRejected { .. }))
            .count(),
        3
    );
    assert_eq!(s.mirror.stats().credential_rejected, 3);
    // Each node: no auth, fresh answer rejected; then waiting, not hammering.
    assert!(s.registrars.iter().all(|r| r.log.len() == 2));
    // The driver refetches after a rejection; the same wrong secret back changes nothing
    // (no immediate retry loop of REGISTER, 401, database query).
    let now = s.now;
    s.mirror
        .set_credential(now, "1001", Some(cred("1001", "wrong")));
    s.run_for(ms(500));
    assert!(s.registrars.iter().all(|r| r.log.len() == 2));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed); 3]);
    let now = s.now;
    s.mirror
        .set_credential(now, "1001", Some(cred("1001", "s3cret")));
    s.run_for(ms(100));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 3]);
}

/// Issue 15: the nodes read the same database. While it is down they reject regmirror's right
/// credential; once the credential store answers again with the same secret, the failed
/// bindings are retried at once instead of waiting out their backoff.
#[test]
fn same_credential_after_a_database_outage_retries_at_once() {
    let mut s = sim(2);
    for r in &mut s.registrars {
        r.add_user("1001", Secret::Password("unreadable".into())); // the node's database is down
    }
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed); 2]);
    for r in &mut s.registrars {
        r.add_user("1001", Secret::Password("s3cret".into())); // and back
    }
    // The driver's refetch hit the outage too; it answers now, unchanged.
    let now = s.now;
    s.mirror
        .set_credential(now, "1001", Some(cred("1001", "s3cret")));
    s.mirror.retry_credential_failures(now, "1001");
    s.run_for(ms(200));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 2]);
}

#[test]
fn credential_replaced_while_a_request_is_in_flight_is_used_at_once() {
    // A password change reaches regmirror while REGISTERs signed with the old one are on
    // their way; their rejection must not park the binding in backoff with the new one known.
    let mut s = sim(2);
    for r in &mut s.registrars {
        r.response_delay = ms(200);
    }
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "wrong")));
    // The challenge comes back at 200 ms and the answer with the old secret leaves: change
    // the credential while that answer is in flight.
    s.run_for(ms(300));
    let now = s.now;
    s.mirror
        .set_credential(now, "1001", Some(cred("1001", "s3cret")));
    s.run_for(secs(2));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 2]);
    assert!(!s
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::CredentialRejected { .. })));
}

#[test]
fn aor_back_during_unregister_ends_registered() {
    let mut s = sim(3);
    for r in &mut s.registrars {
        r.response_delay = ms(200);
    }
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(2));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 3]);
    let now = s.now;
    s.mirror.aor_update(now, "1001", Duration::ZERO, None, None);
    s.run_for(ms(50));
    assert_eq!(
        states(&s, "1001"),
        vec![Some(BindingState::Unregistering); 3]
    );
    let now = s.now;
    s.mirror.aor_update(now, "1001", secs(3600), None, None);
    s.run_for(secs(3));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 3]);
    assert!(s
        .registrars
        .iter()
        .all(|r| r.contact("1001", s.now).is_some()));
}

#[test]
fn credential_missing_is_reported_and_filled_in() {
    let mut s = sim(2);
    let now = s.now;
    s.mirror
        .aor_update(now, "1001@regmirror.test", secs(3600), None, None);
    s.run_for(secs(1));
    let ev = s.take_events();
    assert_eq!(ev, vec![Event::CredentialMissing { aor: "1001".into() }]);
    assert!(s.sent.is_empty());
    let now = s.now;
    s.mirror
        .set_credential(now, "1001", Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered); 2]);
}

#[test]
fn removed_user_is_unregistered_everywhere_and_forgotten() {
    let mut s = sim(2);
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(3600), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    let now = s.now;
    s.mirror.set_credential(now, "1001", None);
    s.run_for(secs(1));
    assert!(s.registrars.iter().all(|r| r.contacts.is_empty()));
    assert_eq!(s.mirror.stats().aors, 0);
}

#[test]
fn retry_after_is_honoured_and_errors_back_off() {
    let mut s = sim(1);
    s.registrars[0].script = [Scripted::Unavailable(Some(120))].into_iter().collect();
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Failed)]);
    let next = s.mirror.binding("1001", 0).unwrap().next_action.unwrap() - s.start;
    assert!(next >= secs(120) && next <= secs(133), "{next:?}");
    s.run_for(secs(133));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);

    for code in [403u16, 404, 500, 603] {
        let mut s = sim(1);
        s.registrars[0].script = [Scripted::Status(code)].into_iter().collect();
        let now = s.now;
        s.mirror
            .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
        s.run_for(secs(1));
        let b = s.mirror.binding("1001", 0).unwrap();
        assert_eq!(b.state, BindingState::Failed, "{code}");
        assert!(b.last_result.to_string().starts_with(&code.to_string()));
        s.run_for(secs(31));
        assert_eq!(
            states(&s, "1001"),
            vec![Some(BindingState::Registered)],
            "{code}"
        );
    }
}

/// A node answering 503 with `Retry-After` again and again (a user's endpoint in maintenance):
/// the first failure and the recovery are told; the retries in between are marked as such, so
/// the log does not say the same thing twice per retry.
#[test]
fn retries_of_a_failure_are_marked_and_the_first_failure_and_recovery_are_not() {
    let mut s = sim(1);
    s.registrars[0].script = [
        Scripted::Unavailable(Some(300)),
        Scripted::Unavailable(Some(300)),
        Scripted::Unavailable(Some(300)),
    ]
    .into_iter()
    .collect();
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1200));
    assert_eq!(states(&s, "1001"), vec![Some(BindingState::Registered)]);
    let told: Vec<(BindingState, bool)> = s
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::BindingChanged { state, .. } => Some((state, e.is_retry_of_a_failure())),
            _ => None,
        })
        .collect();
    use BindingState::{Failed, Registered, Registering};
    assert_eq!(
        told,
        vec![
            (Registering, false),
            (Failed, false),
            (Registering, true),
            (Failed, true),
            (Registering, true),
            (Failed, true),
            (Registering, true),
            (Registered, false),
        ]
    );
}

#[test]
fn a_huge_retry_after_is_capped_and_a_grant_never_exceeds_what_was_asked() {
    // One AOR against a node answering its requests as scripted.
    let scripted = |script: Vec<Scripted>| {
        let mut s = sim(1);
        s.registrars[0].script = script.into_iter().collect();
        let now = s.now;
        s.mirror
            .aor_update(now, "1001", secs(7200), None, Some(cred("1001", "s3cret")));
        s.run_for(secs(1));
        s
    };
    let s = scripted(vec![Scripted::Unavailable(Some(u32::MAX))]);
    let next = s.mirror.binding("1001", 0).unwrap().next_action.unwrap() - s.start;
    // 30 minutes, plus up to 10% jitter
    assert!(next >= secs(1800) && next <= secs(1981), "{next:?}");

    let s = scripted(vec![Scripted::Pass, Scripted::Granted(u32::MAX)]);
    let asked = s.registrars[0].log.last().unwrap().expires;
    let b = s.mirror.binding("1001", 0).unwrap();
    assert_eq!(b.state, BindingState::Registered);
    assert_eq!(b.granted_expires, asked);
    assert!(b.next_action.unwrap() - s.start < secs(u64::from(asked)));
}

#[test]
fn send_budget_paces_a_burst() {
    let mut cfg = config();
    cfg.max_inflight_per_node = 10;
    // Every operation two round trips, as without nonce reuse.
    cfg.farm.nonce_reuse = Duration::ZERO;
    let mut s = Sim::new(cfg, 2, Transport::Udp, 9);
    s.latency = ms(20);
    let now = s.now;
    for i in 0..200 {
        let u = format!("u{i}");
        s.add_user(&u, Secret::Password("pw".into()));
        s.mirror
            .aor_update(now, &u, secs(3600), None, Some(cred(&u, "pw")));
    }
    let st = s.mirror.stats();
    assert_eq!(st.queued, 2 * 190);
    assert_eq!(s.mirror.stats().transactions, 20);
    s.run_for(secs(2));
    assert_eq!(s.mirror.stats().registered, 400);
    // At most 10 operations per node were ever outstanding: 80 ms per op, 20 ops per 10 slots.
    let per_node_first: Vec<_> = s
        .registrars
        .iter()
        .map(|r| r.log.iter().filter(|x| x.authorization.is_none()).count())
        .collect();
    assert_eq!(per_node_first, vec![200, 200]);
    assert!(s.elapsed() >= ms(1600 - 100));
}

#[test]
fn invalid_aor_strings_are_refused() {
    let mut s = sim(1);
    let now = s.now;
    s.mirror.aor_update(
        now,
        "bad user\r\nVia: x",
        secs(60),
        None,
        Some(cred("x", "y")),
    );
    s.mirror
        .aor_update(now, "", secs(60), None, Some(cred("x", "y")));
    s.run_for(secs(1));
    assert!(s.sent.is_empty());
    assert_eq!(s.mirror.stats().invalid_aors, 2);
}

#[test]
fn credential_debug_is_redacted() {
    let c = cred("1001", "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
}

/// The core reports each transaction's outcome (node, round trip from the first send, final
/// code) and each retry after a failure, so the shell never re-reads the bytes it sent.
#[test]
fn transaction_outcomes_and_retries_are_reported() {
    let mut s = sim(2);
    s.latency = ms(5);
    s.registrars[1]
        .script
        .push_back(Scripted::Unavailable(Some(20)));
    let now = s.now;
    s.mirror
        .aor_update(now, "1001", secs(600), None, Some(cred("1001", "s3cret")));
    s.run_for(secs(1));
    let done: Vec<(u16, u16, Duration)> = s
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::TransactionDone {
                node,
                round_trip,
                code,
            } => Some((node, code, round_trip)),
            _ => None,
        })
        .collect();
    // node 0: 401 then 200; node 1: 503 (scripted, before any challenge)
    let codes = |n: u16| {
        done.iter()
            .filter(|d| d.0 == n)
            .map(|d| d.1)
            .collect::<Vec<_>>()
    };
    assert_eq!(codes(0), [401, 200], "{done:?}");
    assert_eq!(codes(1), [503], "{done:?}");
    assert!(
        done.iter().all(|d| d.2 == ms(10)),
        "two 5 ms hops: {done:?}"
    );
    // Retry-After 20 s: one retry on node 1, which then registers.
    s.run_for(secs(25));
    let events = s.take_events();
    let retries: Vec<u16> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retrying { node } => Some(*node),
            _ => None,
        })
        .collect();
    assert_eq!(retries, [1], "{events:?}");
    assert_eq!(states(&s, "1001"), [Some(BindingState::Registered); 2]);
    assert_eq!(s.mirror.operations_in_flight(), 0);
}
