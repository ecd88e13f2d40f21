//! Node-level nonce reuse against Asterisk-like stateless nonces on a virtual clock: a nonce a
//! node gave for one user answers every user's REGISTER to that node while it is young.

use std::collections::HashSet;
use std::time::Duration;

use regmirror::core::digest::{ha1, Algorithm, Secret};
use regmirror::core::mirror::{
    BindingState, Credential, Event, LastResult, MirrorConfig, Transport,
};
use regmirror::core::testing::Sim;

const DOMAIN: &str = "regmirror.test";

fn config(reuse: Duration) -> MirrorConfig {
    let mut c = MirrorConfig {
        domain: DOMAIN.into(),
        contact_host: "10.77.0.20:5060".into(),
        local_addr: "10.77.0.30:5070".parse().unwrap(),
        ..MirrorConfig::default()
    };
    c.farm.nonce_reuse = reuse;
    c
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn cred(user: &str, password: &str) -> Credential {
    Credential {
        username: user.into(),
        secret: Secret::Password(password.into()),
    }
}

/// `nodes` Asterisk-like registrars knowing users u0..u(users-1) with password "pw".
fn sim(nodes: usize, users: usize, reuse: Duration) -> Sim {
    let mut s = Sim::new(config(reuse), nodes, Transport::Udp, 11);
    for r in &mut s.registrars {
        r.stateless_nonces = true;
    }
    for i in 0..users {
        s.add_user(&format!("u{i}"), Secret::Password("pw".into()));
    }
    s
}

/// Registers u0..u(users-1), one every `gap`, each live for `live`.
fn register_spread(s: &mut Sim, users: usize, gap: Duration, live: Duration) {
    for i in 0..users {
        let u = format!("u{i}");
        let now = s.now;
        s.mirror
            .aor_update(now, &u, live, None, Some(cred(&u, "pw")));
        s.run_for(gap);
    }
}

fn all_registered(s: &Sim, users: usize) -> bool {
    (0..users).all(|i| {
        (0..s.registrars.len()).all(|n| {
            s.mirror
                .binding(&format!("u{i}"), n as u16)
                .is_some_and(|b| b.state == BindingState::Registered)
                && s.registrars[n].contact(&format!("u{i}"), s.now).is_some()
        })
    })
}

#[test]
fn hundred_users_within_a_second_cost_one_challenge_per_node() {
    let mut s = sim(3, 100, secs(20));
    register_spread(&mut s, 100, ms(10), secs(3600));
    s.run_for(secs(1));
    assert!(all_registered(&s, 100));
    for r in &s.registrars {
        assert_eq!(r.challenges_sent, 1, "one challenge for 100 users");
        assert_eq!(r.log.len(), 101);
        // Everyone answered the one nonce; nonce-counts are shared, increasing, 8 hex digits.
        let auths: Vec<_> = r
            .log
            .iter()
            .filter_map(|x| x.authorization.as_ref())
            .collect();
        assert_eq!(auths.len(), 100);
        assert!(auths.iter().all(|a| a.nonce == auths[0].nonce));
        let ncs: Vec<u32> = auths.iter().map(|a| a.nc.unwrap()).collect();
        assert_eq!(ncs, (1..=100).collect::<Vec<u32>>());
        let cnonces: HashSet<_> = auths.iter().map(|a| a.cnonce.clone()).collect();
        assert_eq!(cnonces.len(), 100, "a fresh cnonce per request");
    }
    let st = s.mirror.stats();
    assert_eq!(st.preemptive, 99 * 3);
    assert_eq!(st.preemptive_challenged, 0);
    assert_eq!(st.challenges, 3);
    let h = s.mirror.node_health(0).unwrap();
    assert_eq!(
        (h.challenges, h.preemptive, h.preemptive_challenged),
        (1, 99, 0)
    );

    // Before: without reuse every user costs a challenge on every node.
    let mut s = sim(3, 100, Duration::ZERO);
    register_spread(&mut s, 100, ms(10), secs(3600));
    s.run_for(secs(1));
    assert!(all_registered(&s, 100));
    assert!(s.registrars.iter().all(|r| r.challenges_sent == 100));
    assert_eq!(s.mirror.stats().preemptive, 0);
}

#[test]
fn expired_nonce_gets_stale_and_recovers_with_one_round_trip() {
    // An operator lowered nonce_lifetime below the reuse window.
    let mut s = sim(1, 3, secs(20));
    s.registrars[0].nonce_lifetime = secs(10);
    register_spread(&mut s, 1, ms(10), secs(3600));
    s.run_for(secs(15));
    let before = s.registrars[0].log.len();
    let now = s.now;
    s.mirror
        .aor_update(now, "u1", secs(3600), None, Some(cred("u1", "pw")));
    s.run_for(secs(1));
    assert!(all_registered(&s, 2));
    let log = &s.registrars[0].log[before..];
    assert_eq!(log.len(), 2, "{log:?}");
    // The preemptive answer (nc 2 on the old nonce) is stale; the new nonce is answered at once.
    let first = log[0].authorization.as_ref().unwrap();
    assert_eq!((first.nc, log[0].answered), (Some(2), 401));
    let second = log[1].authorization.as_ref().unwrap();
    assert_ne!(second.nonce, first.nonce);
    assert_eq!(log[1].answered, 200);
    assert_eq!(s.mirror.stats().preemptive_challenged, 1);
    assert_eq!(s.mirror.stats().credential_rejected, 0);
    assert!(s
        .take_events()
        .iter()
        .all(|e| !matches!(e, Event::CredentialRejected { .. })));

    // Beyond the reuse window nothing is guessed: one plain REGISTER, one answer.
    s.run_for(secs(30));
    let before = s.registrars[0].log.len();
    let now = s.now;
    s.mirror
        .aor_update(now, "u2", secs(3600), None, Some(cred("u2", "pw")));
    s.run_for(secs(1));
    let log = &s.registrars[0].log[before..];
    assert_eq!(log.len(), 2);
    assert!(log[0].authorization.is_none());
    assert_eq!(log[1].answered, 200);
}

#[test]
fn wrong_password_with_a_young_nonce_ends_rejected_without_looping() {
    let mut s = sim(2, 2, secs(20));
    register_spread(&mut s, 1, ms(10), secs(3600));
    let before: Vec<usize> = s.registrars.iter().map(|r| r.log.len()).collect();
    let now = s.now;
    s.mirror
        .aor_update(now, "u1", secs(3600), None, Some(cred("u1", "wrong")));
    s.run_for(secs(2));
    for (n, r) in s.registrars.iter().enumerate() {
        let log = &r.log[before[n]..];
        // Preemptive answer, plain 401; fresh answer, plain 401; then backing off.
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log
            .iter()
            .all(|x| x.authorization.is_some() && x.answered == 401));
        let b = s.mirror.binding("u1", n as u16).unwrap();
        assert_eq!(b.state, BindingState::Failed);
        assert_eq!(b.last_result, LastResult::CredentialRejected);
    }
    assert_eq!(s.mirror.stats().credential_rejected, 2);
    let ev = s.take_events();
    assert_eq!(
        ev.iter()
            .filter(|e| matches!(e, Event::CredentialRejected { .. }))
            .count(),
        2
    );
    // Corrected: registers at once, preemptively on the nonce the rejection brought.
    let before: Vec<usize> = s.registrars.iter().map(|r| r.log.len()).collect();
    let now = s.now;
    s.mirror.set_credential(now, "u1", Some(cred("u1", "pw")));
    s.run_for(ms(100));
    assert!(all_registered(&s, 2));
    assert!(s
        .registrars
        .iter()
        .zip(before)
        .all(|(r, b)| r.log.len() == b + 1));
}

#[test]
fn refresh_after_an_hour_uses_a_new_challenge() {
    let mut cfg = config(secs(20));
    cfg.register_expires = 3600;
    let mut s = Sim::new(cfg, 2, Transport::Udp, 5);
    for r in &mut s.registrars {
        r.stateless_nonces = true;
    }
    for i in 0..100 {
        s.add_user(&format!("u{i}"), Secret::Password("pw".into()));
    }
    register_spread(&mut s, 100, ms(10), secs(7200));
    let first_nonce = s.registrars[0].log[1]
        .authorization
        .as_ref()
        .unwrap()
        .nonce
        .clone();
    let before: Vec<usize> = s.registrars.iter().map(|r| r.log.len()).collect();
    s.run_for(secs(3600));
    assert!(all_registered(&s, 100));
    for (r, b) in s.registrars.iter().zip(before) {
        let log = &r.log[b..];
        let refreshes = log.iter().filter(|x| x.answered == 200).count();
        assert_eq!(refreshes, 100);
        // The first refresh finds only an hour-old nonce: it asks for a new challenge instead
        // of guessing; refreshes (the first ones spread over the second half of the grant) then
        // share one challenge per 20 s window at most.
        assert!(log[0].authorization.is_none());
        let challenged = log.iter().filter(|x| x.answered == 401).count();
        let span = log.last().unwrap().at - log[0].at;
        let windows = (span.as_secs() / 20 + 1) as usize;
        println!("refresh: {challenged} challenges for 100 refreshes over {span:?}");
        assert!(
            (1..=windows).contains(&challenged),
            "{challenged} challenges for {windows} windows"
        );
        assert!(log
            .iter()
            .filter_map(|x| x.authorization.as_ref())
            .all(|a| a.nonce != first_nonce));
    }
    assert_eq!(s.mirror.stats().preemptive_challenged, 0);
}

#[test]
fn mixed_realms_and_algorithms_per_node() {
    let mut s = sim(2, 20, secs(20));
    s.registrars[0].algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
    s.registrars[1].realm = "other.test".into();
    // A user known only by its stored MD5 HA1 of the first realm.
    let stored = Secret::Ha1Md5 {
        realm: DOMAIN.into(),
        ha1: ha1(Algorithm::Md5, "h1", DOMAIN, "pw"),
    };
    s.add_user("h1", Secret::Password("pw".into()));
    register_spread(&mut s, 20, ms(10), secs(3600));
    let now = s.now;
    s.mirror.aor_update(
        now,
        "h1",
        secs(3600),
        None,
        Some(Credential {
            username: "h1".into(),
            secret: stored,
        }),
    );
    s.run_for(secs(1));
    assert!(all_registered(&s, 20));
    // Node 0: one challenge; passwords answer SHA-256, the HA1 user MD5 on the same nonce.
    let r0 = &s.registrars[0];
    assert_eq!(r0.challenges_sent, 1);
    for x in &r0.log {
        if let Some(a) = &x.authorization {
            assert_eq!(x.answered, 200);
            let want = if x.user == "h1" {
                Algorithm::Md5
            } else {
                Algorithm::Sha256
            };
            assert_eq!(a.algorithm, want, "{}", x.user);
        }
    }
    // Node 1 (another realm): one challenge for the passwords; the HA1 of the other realm
    // guesses nothing and cannot answer.
    let r1 = &s.registrars[1];
    assert_eq!(r1.challenges_sent, 2);
    assert!(r1
        .log
        .iter()
        .filter_map(|x| x.authorization.as_ref())
        .all(|a| a.realm == "other.test" && a.username != "h1"));
    let h1 = s.mirror.binding("h1", 1).unwrap();
    assert_eq!(h1.last_result, LastResult::NoUsableChallenge);
    assert_eq!(
        s.mirror.binding("h1", 0).unwrap().state,
        BindingState::Registered
    );

    // The node changes realm: the cached nonce is answered once in the old realm, challenged,
    // and the new realm is learnt for everyone after.
    s.registrars[0].realm = "new.test".into();
    let before = s.registrars[0].log.len();
    let now = s.now;
    for i in 0..3 {
        let u = format!("n{i}");
        s.add_user(&u, Secret::Password("pw".into()));
        s.mirror
            .aor_update(now, &u, secs(3600), None, Some(cred(&u, "pw")));
        s.run_for(ms(10));
    }
    s.run_for(secs(1));
    let log = &s.registrars[0].log[before..];
    let codes: Vec<u16> = log.iter().map(|x| x.answered).collect();
    assert_eq!(codes, vec![401, 200, 200, 200], "{log:?}");
    assert!(log[1..]
        .iter()
        .all(|x| x.authorization.as_ref().unwrap().realm == "new.test"));
}
