//! CPU cost of the sans-IO core, layer by layer, and of one full REGISTER transaction
//! (REGISTER -> 401 -> REGISTER with digest -> 200) through the `Mirror`.
//!
//! `cargo bench --bench core` (add `-- --quick` for a short run). See BENCHMARKS.md.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use regmirror::core::digest::{self, RequestInfo, Secret};
use regmirror::core::mirror::{Credential, Mirror, MirrorConfig, Node, Transport};
use regmirror::core::sip::{challenges, parse_incoming, parse_message, Incoming};
use regmirror::core::testing::FakeRegistrar;
use regmirror::core::{response::ResponseInfo, sip::RegisterRequest};

const DOMAIN: &str = "regmirror.test";
const AORS_PER_ROUND: usize = 4096;

fn node_addr() -> SocketAddr {
    SocketAddr::from(([10, 77, 0, 11], 5060))
}

fn config() -> MirrorConfig {
    MirrorConfig {
        domain: DOMAIN.into(),
        contact_host: "10.77.0.20:5060".into(),
        // Every registration takes the challenge round trip (what the target counts);
        // with reuse on, later AORs would answer the first one's nonce preemptively.
        farm: regmirror::core::farm::FarmConfig {
            nonce_reuse: Duration::ZERO,
            ..Default::default()
        },
        ..MirrorConfig::default()
    }
}

fn register(user: &str, branch: &str, auth: Option<&str>) -> Vec<u8> {
    RegisterRequest {
        domain: DOMAIN,
        user,
        contact_host: "10.77.0.20:5060",
        local_addr: SocketAddr::from(([10, 77, 0, 30], 5070)),
        tcp: false,
        branch,
        call_id: "5d2c7e1a-2a-0",
        from_tag: "5d2c7e1a2ag0",
        cseq: 1,
        expires: 600,
        authorization: auth.map(|a| (false, a)),
        user_agent: "regmirror/0.1.0",
    }
    .to_bytes()
}

/// Asterisk-formatted 401 and 200 for a REGISTER, produced by the fake registrar.
fn sample_responses() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let now = Instant::now();
    let mut reg = FakeRegistrar::new(node_addr(), DOMAIN);
    reg.keep_log = false;
    reg.add_user("1001", Secret::Password("secret1001".into()));
    let req = register("1001", "z9hG4bK5d2c7e1a0000002a00000000", None);
    let r401 = reg.handle(now, &req).pop().unwrap_or_default();
    let msg = parse_message(&r401).expect("401 parses");
    let rsip::SipMessage::Response(resp) = msg else {
        panic!("not a response")
    };
    let ch = challenges(&resp)
        .into_iter()
        .find_map(|(_, c)| c.ok())
        .expect("challenge");
    let auth = digest::authorization(
        &ch,
        "1001",
        &Secret::Password("secret1001".into()),
        RequestInfo {
            method: "REGISTER",
            uri: "sip:regmirror.test",
            body: b"",
        },
        1,
        "0123456789abcdef",
    )
    .expect("answer");
    let req2 = register("1001", "z9hG4bK5d2c7e1a0000002a00000001", Some(&auth));
    let r200 = reg.handle(now, &req2).pop().unwrap_or_default();
    (r401, r200, req2)
}

fn as_response(bytes: &[u8]) -> rsip::Response {
    match parse_message(bytes) {
        Ok(rsip::SipMessage::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

fn layers(c: &mut Criterion) {
    let (r401, r200, req2) = sample_responses();
    let mut g = c.benchmark_group("layers");

    g.bench_function("build_register", |b| {
        b.iter(|| register(black_box("1001"), "z9hG4bK5d2c7e1a0000002a00000000", None))
    });
    g.bench_function("build_register_with_auth", |b| {
        let auth = "Digest username=\"1001\", realm=\"regmirror.test\", nonce=\"1732300001/9e3779b97f4a7c15\", uri=\"sip:regmirror.test\", response=\"0123456789abcdef0123456789abcdef\", algorithm=MD5, opaque=\"5d2c7e1a0b9f8e7d\", qop=auth, nc=00000001, cnonce=\"0123456789abcdef\"";
        b.iter(|| {
            register(
                black_box("1001"),
                "z9hG4bK5d2c7e1a0000002a00000001",
                Some(auth),
            )
        })
    });

    // The raw parser alone, then ours (normalization + rsip + cross-check).
    g.bench_function("rsip_parse_401", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(r401.as_slice())))
    });
    g.bench_function("parse_message_401", |b| {
        b.iter(|| parse_message(black_box(&r401)))
    });
    g.bench_function("rsip_parse_200", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(r200.as_slice())))
    });
    g.bench_function("parse_message_200", |b| {
        b.iter(|| parse_message(black_box(&r200)))
    });
    // The rsip-free path for clean responses (what the driver uses).
    g.bench_function("parse_incoming_401", |b| {
        b.iter(|| match parse_incoming(black_box(&r401)) {
            Ok(Incoming::Response(info)) => info.challenges(false).len(),
            _ => 0,
        })
    });
    g.bench_function("parse_incoming_200", |b| {
        b.iter(|| match parse_incoming(black_box(&r200)) {
            Ok(Incoming::Response(info)) => info.granted_expires("1001", "10.77.0.20:5060"),
            _ => None,
        })
    });
    g.bench_function("rsip_parse_register_auth", |b| {
        b.iter(|| rsip::SipMessage::try_from(black_box(req2.as_slice())))
    });

    let resp401 = as_response(&r401);
    g.bench_function("challenges_from_401", |b| {
        b.iter(|| challenges(black_box(&resp401)))
    });
    g.bench_function("parse_and_challenges_401", |b| {
        b.iter(|| {
            let r = as_response(black_box(&r401));
            challenges(&r)
        })
    });
    g.bench_function("response_info_401", |b| {
        b.iter(|| {
            let info = ResponseInfo::from_response(black_box(&resp401));
            info.challenges(false)
        })
    });

    let ch = challenges(&resp401)
        .into_iter()
        .find_map(|(_, c)| c.ok())
        .expect("challenge");
    let password = Secret::Password("secret1001".into());
    let stored = Secret::Ha1Md5 {
        realm: DOMAIN.into(),
        ha1: digest::ha1(digest::Algorithm::Md5, "1001", DOMAIN, "secret1001"),
    };
    let req = RequestInfo {
        method: "REGISTER",
        uri: "sip:regmirror.test",
        body: b"",
    };
    g.bench_function("digest_answer_password", |b| {
        b.iter(|| {
            digest::authorization(
                black_box(&ch),
                "1001",
                &password,
                req,
                1,
                "0123456789abcdef",
            )
        })
    });
    g.bench_function("digest_answer_stored_ha1", |b| {
        b.iter(|| {
            digest::authorization(black_box(&ch), "1001", &stored, req, 1, "0123456789abcdef")
        })
    });

    let resp200 = as_response(&r200);
    g.bench_function("parse_and_info_200", |b| {
        b.iter(|| {
            let r = as_response(black_box(&r200));
            let info = ResponseInfo::from_response(&r);
            info.granted_expires("1001", "10.77.0.20:5060")
        })
    });
    g.bench_function("response_info_200", |b| {
        b.iter(|| {
            let info = ResponseInfo::from_response(black_box(&resp200));
            info.granted_expires("1001", "10.77.0.20:5060")
        })
    });
    g.finish();
}

/// A mirror with one node and a fake registrar that knows `names`.
struct Round {
    mirror: Mirror,
    reg: FakeRegistrar,
}

fn round(names: &[String]) -> Round {
    let node = Node {
        name: "ast1".into(),
        addr: node_addr(),
        transport: Transport::Udp,
    };
    let mut reg = FakeRegistrar::new(node_addr(), DOMAIN);
    reg.keep_log = false;
    for n in names {
        reg.add_user(n, Secret::Password("pw".into()));
    }
    Round {
        mirror: Mirror::new(config(), vec![node], 7),
        reg,
    }
}

/// One AOR's first registration: `aor_update`, then both round trips. `timed` adds up the
/// mirror's share only (parse + handle_response + poll_transmit), or everything when `all`.
fn one_transaction(r: &mut Round, name: &str, now: Instant, all: bool) -> Duration {
    let cred = Credential {
        username: name.to_string(),
        secret: Secret::Password("pw".into()),
    };
    let mut mine = Duration::ZERO;
    let t = Instant::now();
    r.mirror
        .aor_update(now, name, Duration::from_secs(3600), None, Some(cred));
    let mut out = r.mirror.poll_transmit();
    mine += t.elapsed();
    let from = node_addr();
    let mut rounds = 0;
    while let Some(tx) = out.take() {
        let t = Instant::now();
        let resps = r.reg.handle(now, &tx.payload);
        let theirs = t.elapsed();
        if all {
            mine += theirs;
        }
        let t = Instant::now();
        for bytes in &resps {
            match parse_incoming(bytes) {
                Ok(Incoming::Response(info)) => r.mirror.handle_response_info(now, from, &info),
                Ok(Incoming::Message(rsip::SipMessage::Response(resp))) => {
                    r.mirror.handle_response(now, from, &resp)
                }
                _ => {}
            }
        }
        out = r.mirror.poll_transmit();
        while r.mirror.poll_event().is_some() {}
        mine += t.elapsed();
        rounds += 1;
        assert!(rounds <= 2, "more than two round trips");
    }
    assert_eq!(rounds, 2, "expected REGISTER/401 then REGISTER/200");
    mine
}

fn full_transaction(c: &mut Criterion) {
    let names: Vec<String> = (0..AORS_PER_ROUND).map(|i| format!("u{i}")).collect();
    let mut g = c.benchmark_group("transaction");
    for (label, all) in [
        ("register_401_register_200_mirror_side", false),
        ("register_401_register_200_incl_fake_registrar", true),
    ] {
        g.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    // Fresh mirror and registrar per round keep memory bounded (untimed).
                    let mut r = round(&names);
                    let now = Instant::now();
                    let mut in_round = 0;
                    for name in names.iter().take((iters - done) as usize) {
                        total += one_transaction(&mut r, name, now, all);
                        in_round += 1;
                    }
                    done += in_round as u64;
                    assert_eq!(r.mirror.stats().registered, in_round);
                }
                total
            })
        });
    }
    g.finish();
}

/// The status page's cost with 100,000 bindings (50,000 AORs on 2 nodes, all registered):
/// the farm summary with the page's 500 rows, in each order and with a search, then the HTML.
fn status_page(c: &mut Criterion) {
    use regmirror::core::digest::Secret;
    use regmirror::core::mirror::{Credential, Transport};
    use regmirror::core::testing::Sim;
    use regmirror::runtime::page::{render_html, History};
    use regmirror::status::{farm_status, BindingList, BindingSort};
    // `cargo test --all-targets` runs each bench once, unoptimised: a small farm there.
    let benching = std::env::args().any(|a| a == "--bench");
    let aors: usize = if benching { 50_000 } else { 200 };
    let mut sim = Sim::new(config(), 2, Transport::Udp, 7);
    let now = sim.now;
    for i in 0..aors {
        let user = format!("{}", 100_000 + i);
        let secret = Secret::Password(format!("pw{i}"));
        sim.add_user(&user, secret.clone());
        sim.mirror
            .aor_update(now, &user, Duration::from_secs(3600), None, None);
        let credential = Credential {
            username: user.clone(),
            secret,
        };
        sim.mirror.set_credential(now, &user, Some(credential));
    }
    sim.run_for(Duration::from_secs(120));
    let list = |sort, prefix: &str| BindingList {
        max: 500,
        user_prefix: prefix.into(),
        sort,
    };
    let f = farm_status(
        &sim.mirror,
        sim.now,
        |_| "up",
        &list(BindingSort::Problems, ""),
    );
    assert_eq!(f.bindings_total, 2 * aors as u64, "not all registered");
    let mut g = c.benchmark_group("status_page_100k");
    g.sample_size(20);
    for (label, sort, prefix) in [
        ("summary_problems_first", BindingSort::Problems, ""),
        ("summary_by_next_action", BindingSort::Next, ""),
        ("summary_search_prefix", BindingSort::User, "1234"),
    ] {
        let l = list(sort, prefix);
        g.bench_function(label, |b| {
            b.iter(|| farm_status(&sim.mirror, sim.now, |_| "up", &l))
        });
    }
    let history = History::default();
    let l = list(BindingSort::Problems, "");
    g.bench_function("render_html", |b| b.iter(|| render_html(&f, &history, &l)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = layers, full_transaction, status_page
}
criterion_main!(benches);
