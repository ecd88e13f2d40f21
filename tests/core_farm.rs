//! Farm resilience (issue 5) against fake registrars on a virtual clock: node health, paced
//! replay, run-time nodes, reconciliation, drift audit, lossy network.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::mirror::{
    BindingState, Coverage, Credential, Event, FarmConfig, MirrorConfig, Transport,
};
use regmirror::core::testing::Sim;

const DOMAIN: &str = "regmirror.test";
const CONTACT: &str = "10.77.0.20:5060";

fn config() -> MirrorConfig {
    MirrorConfig {
        domain: DOMAIN.into(),
        contact_host: CONTACT.into(),
        local_addr: "10.77.0.30:5070".parse().unwrap(),
        farm: FarmConfig {
            probe_interval: Some(secs(5)),
            probe_timeout: secs(2),
            probe_failures: 2,
            replay_rate: 200,
            ..FarmConfig::default()
        },
        ..MirrorConfig::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn user(i: usize) -> String {
    format!("u{i}")
}

fn cred(user: &str) -> Credential {
    Credential {
        username: user.into(),
        secret: Secret::Password(format!("pw-{user}")),
    }
}

/// A sim with `aors` users known to every registrar, all live (notified at the start).
fn sim_with(nodes: usize, aors: usize, seed: u64) -> Sim {
    let mut s = Sim::new(config(), nodes, Transport::Udp, seed);
    go_live(&mut s, 0..aors);
    s
}

/// Users `range` become known to every registrar and live now (notified with their credential).
fn go_live(s: &mut Sim, range: std::ops::Range<usize>) {
    for i in range.clone() {
        let u = user(i);
        s.add_user(&u, Secret::Password(format!("pw-{u}")));
    }
    let now = s.now;
    for i in range {
        let u = user(i);
        s.mirror
            .aor_update(now, &u, secs(3600), None, Some(cred(&u)));
    }
}

fn is_register(p: &[u8]) -> bool {
    p.starts_with(b"REGISTER ")
}

fn is_options(p: &[u8]) -> bool {
    p.starts_with(b"OPTIONS ")
}

/// First time an event matching `f` was recorded, if any.
fn event_at(s: &Sim, f: impl Fn(&Event) -> bool) -> Option<Instant> {
    s.events.iter().find(|(_, e)| f(e)).map(|(t, _)| *t)
}

/// Runs in small steps until `cond` holds; returns when it first held.
fn run_until_cond(
    s: &mut Sim,
    step: Duration,
    limit: Duration,
    cond: impl Fn(&Sim) -> bool,
) -> Option<Instant> {
    let end = s.now + limit;
    while s.now < end {
        if cond(s) {
            return Some(s.now);
        }
        s.run_for(step);
    }
    cond(s).then_some(s.now)
}

#[test]
fn dead_node_is_marked_down_after_two_probes_and_gets_no_register_storm() {
    let mut s = sim_with(2, 50, 1);
    s.run_for(secs(10));
    assert_eq!(s.mirror.stats().registered, 100);
    assert!(s.registrars[1].options_received >= 2, "probes go out");

    let died = s.now;
    s.registrars[1].down = true;
    s.run_for(secs(20));
    let down_at = event_at(&s, |e| matches!(e, Event::NodeDown { node: 1 })).expect("node 1 down");
    // Two probes must fail (2 s each, 5 s apart) before the node is down, so at least 2 s and
    // at most one interval + 2 x (timeout + interval) after it died.
    let took = down_at - died;
    assert!(took >= secs(8) && took <= secs(15), "{took:?}");
    assert!(s.mirror.stats().probes_failed >= 2);
    assert!(!s.mirror.node_up(1) && s.mirror.node_up(0));
    assert!(event_at(&s, |e| matches!(e, Event::NodeDown { node: 0 })).is_none());

    // Ten minutes down: refreshes come due, a new user arrives, another leaves.
    s.add_user("new1", Secret::Password("pw-new1".into()));
    let now = s.now;
    s.mirror
        .aor_update(now, "new1", secs(3600), None, Some(cred("new1")));
    s.mirror
        .aor_update(now, &user(3), Duration::ZERO, None, None);
    s.run_for(secs(600));
    let to_dead: Vec<_> = s
        .sent
        .iter()
        .filter(|t| t.node == 1 && t.at > down_at)
        .collect();
    assert!(
        !to_dead.iter().any(|t| is_register(&t.payload)),
        "no REGISTER to a down node"
    );
    // Only probes: one every 7 s (5 s interval + 2 s timeout), 3 sends each (T1 retransmits).
    let probes = to_dead.iter().filter(|t| is_options(&t.payload)).count();
    assert!(
        (200..=300).contains(&probes),
        "{probes} probe datagrams in 600 s"
    );
    // The live node kept working: refreshed, registered the newcomer, unregistered the leaver.
    let r0 = &s.registrars[0];
    assert!(r0.contact("new1", s.now).is_some());
    assert!(r0.contact(&user(3), s.now).is_none());
    assert_eq!(r0.live_contacts(s.now), 50);
    assert!(
        r0.log.iter().filter(|r| r.authorization.is_some()).count() > 100,
        "refreshes on node 0"
    );
}

#[test]
fn returning_node_with_empty_contacts_gets_every_binding_back_at_the_replay_rate() {
    let n = 1000;
    let mut s = sim_with(2, n, 2);
    s.run_for(secs(30));
    assert_eq!(s.mirror.stats().registered, 2 * n);
    // One AOR refreshed by Kamailio lately: it is the first to be replayed.
    let now = s.now;
    s.mirror.aor_update(now, &user(777), secs(3600), None, None);
    s.run_for(secs(1));

    s.registrars[1].down = true;
    s.run_for(secs(20));
    assert!(!s.mirror.node_up(1));
    // The node comes back after a restart that lost astdb.
    s.registrars[1].restart_empty();
    s.registrars[1].down = false;
    let back = s.now;
    let mark = s.sent.len();
    let all = run_until_cond(&mut s, Duration::from_millis(100), secs(60), |s| {
        s.registrars[1].live_contacts(s.now) == n
    })
    .expect("every binding replayed");
    let up_at = event_at(&s, |e| matches!(e, Event::NodeUp { node: 1 })).expect("node up");
    let detect = up_at - back;
    let replay = all - up_at;
    println!(
        "node back: detected in {detect:?}; {n} bindings replayed in {replay:?} at replay_rate 200/s"
    );
    assert!(
        detect <= secs(6),
        "up detected by the next probe: {detect:?}"
    );
    // 1000 at 200/s = 5 s (+-jitter), plus round trips.
    assert!(
        replay >= Duration::from_millis(4500) && replay <= secs(7),
        "{replay:?}"
    );

    // Paced: first attempts (first REGISTER of each binding) per 1 s window stay near the rate.
    let mut seen = HashSet::new();
    let firsts: Vec<Instant> = s.sent[mark..]
        .iter()
        .filter(|t| t.node == 1 && is_register(&t.payload))
        .filter(|t| {
            let text = String::from_utf8_lossy(&t.payload);
            let call_id = text
                .lines()
                .find(|l| l.starts_with("Call-ID:"))
                .map(str::to_string);
            seen.insert(call_id)
        })
        .map(|t| t.at)
        .collect();
    assert_eq!(firsts.len(), n, "one replay per binding");
    for (i, t) in firsts.iter().enumerate() {
        let in_window = firsts[i..]
            .iter()
            .take_while(|u| **u < *t + secs(1))
            .count();
        assert!(in_window <= 260, "{in_window} REGISTERs within 1 s");
    }
    // Newest changed AOR first.
    let first = s.sent[mark..]
        .iter()
        .find(|t| t.node == 1 && is_register(&t.payload))
        .expect("a replay");
    assert!(
        String::from_utf8_lossy(&first.payload).contains("<sip:u777@regmirror.test>"),
        "newest first"
    );
    assert_eq!(s.mirror.stats().registered, 2 * n);
}

#[test]
fn added_node_receives_every_live_binding_and_moves_nothing_else() {
    let mut s = sim_with(1, 200, 3);
    // Add the node while the first REGISTERs are still in flight: their responses must still
    // find their (moved) bindings.
    s.run_for(Duration::from_micros(1500));
    assert!(s.mirror.stats().registering > 0);
    let id = s.add_node();
    assert_eq!(id, 1);
    s.run_for(secs(5));
    assert_eq!(s.registrars[1].live_contacts(s.now), 200);
    assert_eq!(s.registrars[0].live_contacts(s.now), 200);
    assert_eq!(s.mirror.stats().registered, 400);
    assert_eq!(
        s.mirror.stats().timeouts,
        0,
        "no transaction lost by the move"
    );
    assert_eq!(s.mirror.stats().stray_responses, 0);
    // Refreshes on the first node keep their Call-ID across the move.
    let before = s.registrars[0]
        .contact("u5", s.now)
        .unwrap()
        .call_id
        .clone();
    s.run_for(secs(700));
    let after = s.registrars[0].contact("u5", s.now).unwrap();
    assert_eq!(after.call_id, before);
    assert!(after.cseq > 2);
    assert_eq!(s.mirror.stats().registered, 400);

    // Removing the first node forgets its bindings; the other keeps working.
    let now = s.now;
    let gone = s.mirror.remove_node(now, 0).expect("removed");
    assert_eq!(gone.name, "ast1");
    assert_eq!(s.mirror.stats().registered, 200);
    s.run_for(secs(700));
    assert_eq!(s.registrars[1].live_contacts(s.now), 200);
    assert_eq!(
        s.mirror.binding("u5", 0).map(|b| b.state),
        Some(BindingState::Registered)
    );
}

#[test]
fn reconcile_adds_missing_and_removes_stale_but_keeps_newer_notifications() {
    let mut s = Sim::new(config(), 2, Transport::Udp, 4);
    for u in ["a", "b", "c", "d", "e"] {
        s.add_user(u, Secret::Password(format!("pw-{u}")));
    }
    let now = s.now;
    for u in ["a", "b", "c"] {
        s.mirror.aor_update(now, u, secs(3600), None, Some(cred(u)));
    }
    s.run_for(secs(2));
    assert_eq!(s.mirror.stats().registered, 6);
    let snapshot = s.now;
    s.run_for(secs(1));
    // A notification newer than the snapshot: not in it, but kept.
    let now = s.now;
    s.mirror
        .aor_update(now, "e", secs(3600), None, Some(cred("e")));
    s.run_for(secs(1));
    s.events.clear();
    s.mirror
        .reconcile(
            snapshot,
            &[
                ("b".into(), secs(300)),
                ("d@regmirror.test".into(), secs(600)),
            ],
        )
        .expect("two of five dropped is below the breaker's floor");
    // d is new: the mirror asks for its credential.
    let missing: Vec<_> = s
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::CredentialMissing { aor } => Some(aor.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(missing, vec!["d"]);
    let now = s.now;
    s.mirror.set_credential(now, "d", Some(cred("d")));
    s.run_for(secs(2));
    for r in &s.registrars {
        let live: HashSet<String> = r.contact_users(s.now, CONTACT);
        let want: HashSet<String> = ["b", "d", "e"].iter().map(|u| u.to_string()).collect();
        assert_eq!(live, want);
    }
    assert!(s.mirror.is_reconciled());
    // b lives as long as the table says (300 s from the snapshot), then goes.
    assert!(s.mirror.is_live(snapshot + secs(299), "b"));
    assert!(!s.mirror.is_live(snapshot + secs(301), "b"));
}

#[test]
fn audit_repairs_missing_and_stale_contacts() {
    let mut s = Sim::new(config(), 1, Transport::Udp, 5);
    for u in ["a", "b", "z"] {
        s.add_user(u, Secret::Password(format!("pw-{u}")));
    }
    let now = s.now;
    for u in ["a", "b"] {
        s.mirror.aor_update(now, u, secs(3600), None, Some(cred(u)));
    }
    s.run_for(secs(2));
    // Drift: the node lost b, and holds z that nobody registered (left from an earlier run).
    let now = s.now;
    let mut z = s.registrars[0].contact("a", now).unwrap().clone();
    z.uri = format!("sip:z@{CONTACT}");
    s.registrars[0].contacts.remove("b");
    s.registrars[0].contacts.insert("z".into(), z);
    let actual = s.registrars[0].contact_users(now, CONTACT);

    // Before any reconciliation the mirror does not know what is live: it only adds.
    let r = s.mirror.audit(now, 0, &actual);
    assert_eq!((r.missing, r.stale), (1, 0));
    s.run_for(secs(2));
    assert!(s.registrars[0].contact("b", s.now).is_some());
    assert!(s.registrars[0].contact("z", s.now).is_some());

    let now = s.now;
    s.mirror
        .reconcile(now, &[("a".into(), secs(3000)), ("b".into(), secs(3000))])
        .unwrap();
    let actual = s.registrars[0].contact_users(now, CONTACT);
    s.events.clear();
    let r = s.mirror.audit(now, 0, &actual);
    assert_eq!((r.missing, r.stale), (0, 1));
    assert!(s
        .take_events()
        .iter()
        .any(|e| matches!(e, Event::CredentialMissing { aor } if &**aor == "z")));
    let now = s.now;
    s.mirror.set_credential(now, "z", Some(cred("z")));
    s.run_for(secs(2));
    let users = s.registrars[0].contact_users(s.now, CONTACT);
    assert_eq!(users, ["a", "b"].iter().map(|u| u.to_string()).collect());
    assert_eq!(s.mirror.stats().drift_repaired, 2);
    // z is forgotten again once unregistered.
    assert!(s.mirror.binding("z", 0).is_none());
    // A clean node: nothing to repair.
    let now = s.now;
    let r = s.mirror.audit(now, 0, &users);
    assert_eq!((r.missing, r.stale), (0, 0));
}

/// The node's contact events repair one user at a time, without a listing: a confirmed
/// contact removed behind our back is registered again, one of a user that is not live is
/// unregistered, and the events of our own registrations change nothing.
#[test]
fn contact_events_repair_one_user_without_a_listing() {
    let mut s = Sim::new(config(), 2, Transport::Udp, 5);
    for u in ["a", "b", "z"] {
        s.add_user(u, Secret::Password(format!("pw-{u}")));
    }
    let now = s.now;
    for u in ["a", "b"] {
        s.mirror.aor_update(now, u, secs(3600), None, Some(cred(u)));
    }
    s.run_for(secs(2));
    let now = s.now;
    s.mirror
        .reconcile(now, &[("a".into(), secs(3000)), ("b".into(), secs(3000))])
        .unwrap();
    // Our own registrations' events: nothing to repair.
    for node in 0..2 {
        for u in ["a", "b"] {
            let r = s.mirror.contact_changed(now, node, u, true);
            assert_eq!((r.missing, r.stale), (0, 0));
        }
    }
    // Node 1 (index 1) loses b: only that binding is registered again.
    s.registrars[1].contacts.remove("b");
    let r = s.mirror.contact_changed(now, 1, "b", false);
    assert_eq!((r.missing, r.stale), (1, 0));
    // A removal of a user we do not mirror, or reported twice, changes nothing more.
    assert_eq!(s.mirror.contact_changed(now, 1, "nobody", false).missing, 0);
    assert_eq!(s.mirror.contact_changed(now, 1, "b", false).missing, 0);
    s.run_for(secs(2));
    assert!(s.registrars[1].contact("b", s.now).is_some());
    // A contact of ours for z, who is not live, appears on node 0: unregistered.
    let now = s.now;
    let mut z = s.registrars[0].contact("a", now).unwrap().clone();
    z.uri = format!("sip:z@{CONTACT}");
    s.registrars[0].contacts.insert("z".into(), z);
    let r = s.mirror.contact_changed(now, 0, "z", true);
    assert_eq!((r.missing, r.stale), (0, 1));
    let now = s.now;
    s.mirror.set_credential(now, "z", Some(cred("z")));
    s.run_for(secs(2));
    for r in &s.registrars {
        let users = r.contact_users(s.now, CONTACT);
        assert_eq!(users, ["a", "b"].iter().map(|u| u.to_string()).collect());
    }
    assert_eq!(s.mirror.stats().drift_repaired, 2);
}

#[test]
fn converges_with_5_percent_loss_and_50_ms_delay_through_a_node_restart() {
    let n = 200;
    let mut s = sim_with(3, n, 6);
    s.loss_rate = 0.05;
    s.latency = Duration::from_millis(50);
    s.run_for(secs(120));
    assert_eq!(s.mirror.stats().registered, 3 * n);
    assert!(
        event_at(&s, |e| matches!(e, Event::NodeDown { .. })).is_none(),
        "loss alone never takes a node down"
    );
    s.registrars[2].down = true;
    s.run_for(secs(30));
    assert!(!s.mirror.node_up(2));
    s.registrars[2].restart_empty();
    s.registrars[2].down = false;
    s.run_for(secs(90));
    for r in &s.registrars {
        assert_eq!(r.live_contacts(s.now), n, "{}", r.addr);
    }
    assert_eq!(s.mirror.stats().registered, 3 * n);
    assert_eq!(s.mirror.stats().nodes_down, 0);
}

/// `farm.latency_target`: a node whose answers slow down past its unloaded round trip plus the
/// target gets fewer REGISTERs in flight; a uniformly distant node keeps the whole budget; every
/// binding still ends up registered.
#[test]
fn congested_node_gets_a_smaller_window_and_still_gets_everything() {
    // Returns (in flight at most while congested, registered at the end).
    let run = |target_ms: u64, congested_ms: u64| {
        let mut cfg = config();
        cfg.max_inflight_per_node = 128;
        cfg.farm.probe_interval = None;
        cfg.farm.latency_target = Duration::from_millis(target_ms);
        let mut s = Sim::new(cfg, 1, Transport::Udp, 7);
        let n = 6000;
        // Unloaded: 5 ms answers for a few hundred AORs.
        s.registrars[0].response_delay = Duration::from_millis(5);
        go_live(&mut s, 0..300);
        s.run_for(secs(1));
        // A storm while the node is slow.
        s.registrars[0].response_delay = Duration::from_millis(congested_ms);
        go_live(&mut s, 300..n);
        let mut peak = 0;
        // One cut per round trip (x0.7): 128 -> the floor of 4 in about ten round trips.
        for step in 0..50 {
            s.run_for(Duration::from_millis(100));
            if step >= 35 {
                peak = peak.max(s.mirror.node_health(0).unwrap().inflight);
            }
        }
        // The node recovers; the backlog drains.
        s.registrars[0].response_delay = Duration::from_millis(5);
        s.run_for(secs(60));
        let registered = (0..n)
            .filter(|i| {
                s.mirror.binding(&user(*i), 0).map(|b| b.state) == Some(BindingState::Registered)
            })
            .count();
        (peak, registered, n)
    };
    let (peak, done, n) = run(50, 300);
    assert!(peak <= 6, "congested node kept {peak} in flight");
    assert_eq!(done, n);
    // Control off: the fixed budget stays full.
    let (peak, done, n) = run(0, 300);
    assert_eq!(peak, 128);
    assert_eq!(done, n);
}

/// A node that is merely far away (every answer 200 ms from the start) is not throttled.
#[test]
fn distant_node_keeps_its_budget() {
    let mut cfg = config();
    cfg.max_inflight_per_node = 128;
    cfg.farm.probe_interval = None;
    cfg.farm.latency_target = Duration::from_millis(50);
    let mut s = Sim::new(cfg, 1, Transport::Udp, 7);
    s.registrars[0].response_delay = Duration::from_millis(200);
    go_live(&mut s, 0..4000);
    let mut peak = 0;
    for _ in 0..30 {
        s.run_for(Duration::from_millis(100));
        peak = peak.max(s.mirror.node_health(0).unwrap().inflight);
    }
    assert!(peak >= 100, "a distant node was throttled to {peak}");
}

/// A replay paced faster than the node answers waits on the send budget without asking to be
/// woken in the past (the driver spun at 50% of a core doing that).
#[test]
fn replay_with_a_full_budget_does_not_ask_for_past_wakeups() {
    let mut cfg = config();
    cfg.max_inflight_per_node = 4;
    cfg.farm.replay_rate = 4000;
    let mut s = Sim::new(cfg, 1, Transport::Udp, 11);
    let n = 400;
    go_live(&mut s, 0..n);
    s.run_for(secs(5));
    let id = s.add_node();
    s.registrars[id].response_delay = Duration::from_millis(50);
    for _ in 0..20 {
        s.run_for(Duration::from_millis(7));
        let h = s.mirror.node_health(id as u16).unwrap();
        if h.replay_pending > 0 && h.inflight >= 4 {
            let next = s.mirror.poll_timeout().unwrap();
            assert!(next > s.now, "asked to wake {:?} in the past", s.now - next);
        }
    }
    s.run_for(secs(30));
    assert_eq!(s.registrars[id].live_contacts(s.now), n);
}

/// `farm.max_register_rate`: a storm of new registrations (and a replay onto a node that comes
/// back) starts at most that many operations per second on each node; the rest waits in the
/// node's queue and every binding still lands. Without the cap the same storm goes out at once.
#[test]
fn register_rate_caps_every_operation_per_node_and_everything_still_lands() {
    // Returns (most REGISTER operations started on a node in any 1 s window, seconds until
    // every binding was on both nodes).
    let run = |rate: u32| {
        let mut cfg = config();
        cfg.max_inflight_per_node = 128;
        cfg.farm.probe_interval = None;
        cfg.farm.replay_rate = 0;
        cfg.farm.max_register_rate = rate;
        let mut s = Sim::new(cfg, 2, Transport::Udp, 5);
        let n = 1500;
        let start = s.now;
        go_live(&mut s, 0..n);
        let done = run_until_cond(&mut s, Duration::from_millis(50), secs(60), |s| {
            (0..2).all(|r| s.registrars[r].live_contacts(s.now) == n)
        })
        .expect("every binding on both nodes");
        let mut peak = 0;
        for r in 0..2 {
            // Operations = first attempts (no Authorization or a preemptive one: CSeq 1).
            let starts: Vec<Instant> = s.registrars[r]
                .log
                .iter()
                .filter(|x| x.cseq == 1)
                .map(|x| x.at)
                .collect();
            for (i, t) in starts.iter().enumerate() {
                let in_window = starts[i..]
                    .iter()
                    .take_while(|u| **u < *t + secs(1))
                    .count();
                peak = peak.max(in_window);
            }
        }
        (peak, (done - start).as_secs_f64())
    };
    let (peak, took) = run(300);
    assert!(
        peak <= 300 + 30,
        "{peak} operations started in one second at a cap of 300"
    );
    assert!(
        (4.0..=7.0).contains(&took),
        "1500 at 300/s should take about 5 s, took {took:.1} s"
    );
    let (peak, took) = run(0);
    assert!(
        peak >= 1400,
        "without a cap the storm goes out at once: {peak} in 1 s"
    );
    assert!(took < 2.0, "without a cap: {took:.1} s");
}

/// The cap also paces a replay onto a node that came back empty, below `replay_rate`.
#[test]
fn register_rate_caps_a_replay_too() {
    let mut cfg = config();
    cfg.farm.replay_rate = 1000;
    cfg.farm.max_register_rate = 100;
    let mut s = Sim::new(cfg, 1, Transport::Udp, 9);
    let n = 300;
    go_live(&mut s, 0..n);
    s.run_for(secs(10));
    assert_eq!(s.registrars[0].live_contacts(s.now), n);
    s.registrars[0].down = true;
    s.run_for(secs(20));
    assert!(!s.mirror.node_up(0));
    s.registrars[0].restart_empty();
    s.registrars[0].down = false;
    let all = run_until_cond(&mut s, Duration::from_millis(50), secs(60), |s| {
        s.registrars[0].live_contacts(s.now) == n
    })
    .expect("every binding replayed");
    let up_at = event_at(&s, |e| matches!(e, Event::NodeUp { node: 0 })).expect("node up");
    let took = (all - up_at).as_secs_f64();
    // 300 at 100/s = 3 s (replay_rate alone would take 0.3 s).
    assert!((2.5..=4.5).contains(&took), "replay took {took:.1} s");
}

/// Refreshes of contacts a node holds go before a backlog of new registrations (here queued
/// behind `max_register_rate`): a storm must not let existing contacts lapse on the node.
#[test]
fn refreshes_go_before_a_storm_backlog_so_no_contact_lapses() {
    let mut cfg = config();
    cfg.register_expires = 300; // refreshed 36 s before expiry: 264 s after each 200
    cfg.farm.probe_interval = None;
    cfg.farm.replay_rate = 0;
    cfg.farm.max_register_rate = 100;
    let mut s = Sim::new(cfg, 1, Transport::Udp, 3);
    let old = 500;
    go_live(&mut s, 0..old);
    s.run_for(secs(250));
    assert_eq!(s.registrars[0].live_contacts(s.now), old);
    // 6,000 new registrations just before the old ones' refreshes fall due: 60 s of backlog
    // at the cap, past the old contacts' expiry (300 s).
    let n = old + 6000;
    go_live(&mut s, old..n);
    for _ in 0..160 {
        s.run_for(Duration::from_millis(500));
        let held = (0..old)
            .filter(|i| s.registrars[0].contact(&user(*i), s.now).is_some())
            .count();
        assert_eq!(held, old, "an existing contact lapsed during the storm");
    }
    let done = run_until_cond(&mut s, secs(1), secs(60), |s| {
        s.registrars[0].live_contacts(s.now) == n
    });
    assert!(done.is_some(), "the storm's bindings all landed");
}

/// Kamailio notifies `rate` new users per second for `secs_long`, from user `first` on (fed
/// every 10 ms, as a storm arrives). Returns the storm's start and end.
fn notify_storm(s: &mut Sim, first: usize, rate: usize, secs_long: u64) -> (Instant, Instant) {
    let start = s.now;
    let per_step = rate / 100;
    let mut next = first;
    for _ in 0..secs_long * 100 {
        go_live(s, next..next + per_step);
        next += per_step;
        s.run_for(Duration::from_millis(10));
    }
    (start, s.now)
}

/// Requests (retransmissions aside) the nodes got from users `users` in `[from, to)`.
fn requests_between(s: &Sim, users: std::ops::Range<usize>, from: Instant, to: Instant) -> usize {
    let names: HashSet<String> = users.map(user).collect();
    s.registrars
        .iter()
        .flat_map(|r| r.log.iter())
        .filter(|x| !x.retransmission && x.at >= from && x.at < to && names.contains(&x.user))
        .count()
}

fn storm_config(hold: u64) -> MirrorConfig {
    let mut cfg = config();
    cfg.register_expires = 300; // refreshed 36 s before expiry, less up to 5%: 251-264 s
    cfg.farm.probe_interval = None;
    cfg.farm.replay_rate = 0;
    cfg.farm.max_register_rate = 100;
    cfg.farm.storm_hold = secs(hold);
    cfg
}

/// `farm.storm_hold`: while Kamailio notifies faster than `max_register_rate`, new
/// registrations wait (the nodes stay off the CPUs and database the phones need), refreshes of
/// contacts without the slack to wait (a 60 s grant) still go, and once the storm is over
/// everything lands at the cap.
#[test]
fn a_storm_holds_new_registrations_but_not_short_grants_refreshes_and_everything_lands_after() {
    let mut cfg = storm_config(30);
    cfg.register_expires = 60; // refreshed 28.5-30 s after each 200: no slack for a 30 s hold
    let mut s = Sim::new(cfg, 2, Transport::Udp, 21);
    let old = 200;
    go_live(&mut s, 0..old);
    // The refreshes stay bunched (5% jitter): the ninth round falls due about 262-268 s.
    s.run_for(secs(261));
    assert!((0..2).all(|r| s.registrars[r].live_contacts(s.now) == old));
    assert!(!s.mirror.storm_holding(s.now), "200 at once is not a storm");
    // 200/s for 6 s (2x the cap; 60 s grants for all 1,400 need 47 refreshes/s per node); the
    // old contacts' refreshes fall due in it.
    let n = old + 1200;
    let (start, end) = notify_storm(&mut s, old, 200, 6);
    assert!(s.mirror.storm_holding(end - Duration::from_millis(10)));
    // The first second lets through what arrived before the rate showed (at most the cap).
    let during = requests_between(&s, old..n, start + secs(1), end);
    assert_eq!(
        during, 0,
        "new registrations went to the nodes during the storm"
    );
    let early = requests_between(&s, old..n, start, start + secs(1));
    assert!(
        early <= 2 * 110,
        "{early} requests before the storm was seen"
    );
    // Most of the 2 x 200 refreshes fall due inside the 6 s (held, none would go).
    let refreshed = requests_between(&s, 0..old, start, end);
    assert!(
        refreshed >= old / 2,
        "refreshes due in the storm were held too: {refreshed}"
    );
    assert_eq!(s.mirror.stats().refreshes_deferred, 0);
    let held = (0..old)
        .filter(|i| (0..2).all(|r| s.registrars[r].contact(&user(*i), s.now).is_some()))
        .count();
    assert_eq!(held, old, "an existing contact lapsed during the storm");
    // The storm ends a second after the last notification; the backlog drains at the cap.
    let done = run_until_cond(&mut s, Duration::from_millis(100), secs(120), |s| {
        (0..2).all(|r| s.registrars[r].live_contacts(s.now) == n)
    })
    .expect("every binding on both nodes after the storm");
    assert!(!s.mirror.storm_holding(s.now));
    let took = (done - end).as_secs_f64();
    // ~1,100 per node at what the refreshes leave of 100/s once the hold ends: ~20 s.
    assert!((12.0..=35.0).contains(&took), "drained in {took:.1} s");
}

/// Refreshes are scheduled `storm_hold` earlier, so one falling due in a hold waits for the
/// hold's end (at most `storm_hold`) and still reaches the node well before its contact expires.
#[test]
fn refreshes_due_in_a_storm_hold_wait_for_its_end_and_no_contact_lapses() {
    let mut s = Sim::new(storm_config(30), 2, Transport::Udp, 23);
    let old = 1000;
    go_live(&mut s, 0..old);
    s.run_for(secs(12)); // 2 x 1,000 at the cap of 100/s
    let registered = s.now;
    // The first refresh of a new binding falls anywhere from half the grant to 66 s before
    // expiry (Timer F, 4 s and the hold): 150-234 s after its 200, so a tenth fall in the storm.
    s.run_for(secs(213));
    let before = requests_between(&s, 0..old, registered, s.now);
    let (start, end) = notify_storm(&mut s, old, 400, 10);
    let n = old + 4000;
    let refreshed = requests_between(&s, 0..old, start + secs(1), end);
    assert_eq!(refreshed, 0, "refreshes went to the nodes during the hold");
    let deferred = s.mirror.stats().refreshes_deferred;
    assert!(
        deferred >= 100,
        "{deferred} refreshes waited ({before} went before the storm)"
    );
    // Every old contact stays on both nodes through its first expiry (about 300 s) while the
    // backlog drains; the deferred refreshes go at the hold's latest end (start + 30 s).
    while s.now < registered + secs(320) {
        s.run_for(secs(1));
        let lapsed = (0..old)
            .filter(|i| (0..2).any(|r| s.registrars[r].contact(&user(*i), s.now).is_none()))
            .count();
        assert_eq!(lapsed, 0, "contacts lapsed at {:?}", s.now - registered);
    }
    let after = requests_between(&s, 0..old, end, registered + secs(300));
    assert!(
        after as u64 >= deferred,
        "{after} refreshes after the hold for {deferred} deferred"
    );
    assert!((0..2).all(|r| s.registrars[r].live_contacts(s.now) == n));
}

/// A storm that lasts longer than `storm_hold` holds new work only that long; then the queue
/// drains at the cap while the storm goes on.
#[test]
fn a_storm_longer_than_the_hold_drains_at_the_cap_after_the_hold() {
    let mut s = Sim::new(storm_config(5), 1, Transport::Udp, 22);
    let (start, end) = notify_storm(&mut s, 0, 300, 20);
    let held = requests_between(&s, 0..6000, start + secs(1), start + secs(5));
    assert_eq!(held, 0, "new registrations went out during the hold");
    let after = requests_between(&s, 0..6000, start + secs(6), end);
    // 14 s at the cap of 100/s (an operation is one REGISTER or two with a challenge).
    assert!(
        (1200..=3000).contains(&after),
        "{after} requests after the hold"
    );
    // Next storm: held again after a quiet second.
    s.run_for(secs(2));
    let (start2, end2) = notify_storm(&mut s, 6000, 300, 3);
    let held2 = requests_between(&s, 6000..6900, start2 + secs(1), end2);
    assert_eq!(held2, 0, "a new storm after a quiet second is held again");
}

/// Bindings that land together (a storm) do not come due together again: their first refresh
/// is spread over the second half of the grant, so each later refresh wave is spread too and
/// never takes a node's whole `max_register_rate` for minutes.
#[test]
fn a_storms_first_refreshes_are_spread_over_the_second_half_of_the_grant() {
    let mut s = Sim::new(config(), 1, Transport::Udp, 24);
    let n = 2000;
    go_live(&mut s, 0..n);
    s.run_for(secs(5));
    assert_eq!(s.registrars[0].live_contacts(s.now), n);
    let t0 = s.now;
    s.run_for(secs(600));
    // 600 s grants: the first refreshes fall between 300 s and 564 s.
    let per_30s: Vec<usize> = (0..20)
        .map(|w| requests_between(&s, 0..n, t0 + secs(30 * w), t0 + secs(30 * (w + 1))))
        .collect();
    let refreshed: usize = per_30s.iter().sum();
    assert!(refreshed >= n, "{refreshed} refresh requests: {per_30s:?}");
    let peak = *per_30s.iter().max().unwrap();
    assert!(
        peak * 5 <= refreshed,
        "a fifth or more of the refreshes in one 30 s window: {per_30s:?}"
    );
    assert!(per_30s[..9].iter().all(|&c| c == 0), "{per_30s:?}");
    assert_eq!(s.registrars[0].live_contacts(s.now), n);
}

// ---- coverage and lag per node (issue 14) ----

/// Each node's coverage now, after checking the incremental bookkeeping against a recount
/// from every binding.
fn coverage(s: &Sim) -> Vec<Coverage> {
    if let Err(e) = s.mirror.check_coverage(s.now) {
        panic!("coverage bookkeeping: {e}");
    }
    (0..s.registrars.len() as u16)
        .map(|n| s.mirror.node_health(n).unwrap().coverage)
        .collect()
}

/// `(desired, confirmed, lag)` of each node now.
fn coverage_lag(s: &Sim) -> Vec<(usize, usize, Duration)> {
    coverage(s)
        .iter()
        .map(|c| (c.desired, c.confirmed, c.lag(s.now)))
        .collect()
}

/// Every node holds every desired binding: coverage 1, lag 0.
fn caught_up(s: &Sim) -> bool {
    coverage(s)
        .iter()
        .all(|c| c.ratio() == 1.0 && c.lag(s.now).is_zero())
}

/// A storm of new AORs against a rate-capped farm (held, then drained at the cap), one node
/// also slow to answer: while the backlog drains each node's lag is the age of the oldest user
/// it does not have yet (never less) and its coverage stays below 1; then lag 0, coverage 1.
#[test]
fn a_storm_shows_as_lag_that_rises_and_drains_to_full_coverage() {
    let mut s = Sim::new(storm_config(10), 2, Transport::Udp, 31);
    s.registrars[1].response_delay = Duration::from_millis(300);
    let n = 1500;
    let (start, end) = notify_storm(&mut s, 0, 300, 5);
    // notify_storm makes 3 users live per 10 ms step, in order.
    let notified = |i: usize| start + Duration::from_millis(10 * (i / 3) as u64);
    for (r, (desired, confirmed, lag)) in coverage_lag(&s).into_iter().enumerate() {
        assert_eq!(desired, n, "node {r}");
        assert!(
            confirmed < n && lag > secs(1),
            "node {r}: {confirmed} {lag:?}"
        );
    }
    let mut peak = Duration::ZERO;
    while !caught_up(&s) {
        assert!(
            s.now < end + secs(120),
            "never caught up: {:?}",
            coverage_lag(&s)
        );
        for (r, c) in coverage(&s).iter().enumerate() {
            let lag = c.lag(s.now);
            peak = peak.max(lag);
            let reg = &s.registrars[r];
            assert!(c.ratio() < 1.0 || lag.is_zero(), "node {r}: {c:?}");
            assert!(
                c.confirmed <= reg.live_contacts(s.now),
                "node {r} counts bindings it does not have: {c:?}"
            );
            // Above the oldest missing user's wait by no more than what answers on their way
            // back add (about 0.1 s of notifications at the cap, plus a round trip).
            if let Some(i) = (0..n).find(|&i| reg.contact(&user(i), s.now).is_none()) {
                let waited = s.now - notified(i);
                assert!(
                    lag >= waited && lag <= waited + secs(1),
                    "node {r}: lag {lag:?}, but {} has waited {waited:?}",
                    user(i)
                );
            }
        }
        s.run_for(Duration::from_millis(250));
    }
    let took = s.now - end;
    println!("storm of {n}: peak lag {peak:?}, caught up {took:?} after its end");
    // Held until a second after the storm, then 1,500 at 100/s: the last ones wait ~15 s.
    assert!(peak >= secs(8), "peak lag {peak:?}");
    assert_eq!(coverage_lag(&s), vec![(n, n, Duration::ZERO); 2]);
    assert!((0..2).all(|r| s.registrars[r].live_contacts(s.now) == n));
}

/// A node that goes down and comes back empty: from the moment it is marked down its
/// bindings are pending (it may lose them, and this one does), so its lag counts from then,
/// through the paced replay, back to 0 with coverage 1. The other node is untouched.
#[test]
fn a_node_back_empty_lags_from_going_down_until_its_replay_lands() {
    let n = 500;
    let mut s = sim_with(2, n, 32);
    s.run_for(secs(10));
    assert!(caught_up(&s));
    s.registrars[1].down = true;
    s.run_for(secs(20));
    assert!(!s.mirror.node_up(1));
    let down_at = event_at(&s, |e| matches!(e, Event::NodeDown { node: 1 })).expect("down");
    assert_eq!(
        coverage_lag(&s),
        vec![(n, n, Duration::ZERO), (n, 0, s.now - down_at)]
    );
    s.registrars[1].restart_empty();
    s.registrars[1].down = false;
    let mut covered = 0;
    while !caught_up(&s) {
        assert!(s.now < down_at + secs(90), "{:?}", coverage_lag(&s));
        s.run_for(Duration::from_millis(100));
        let c = coverage(&s);
        assert_eq!(c[0].confirmed, n);
        assert!(c[1].confirmed >= covered, "coverage went back: {c:?}");
        covered = c[1].confirmed;
        assert!(covered <= s.registrars[1].live_contacts(s.now), "{c:?}");
        if covered < n {
            assert_eq!(c[1].lag(s.now), s.now - down_at);
        }
    }
    let up_at = event_at(&s, |e| matches!(e, Event::NodeUp { node: 1 })).expect("up");
    let replay = s.now - up_at;
    // 500 at replay_rate 200/s.
    assert!(replay >= secs(2) && replay <= secs(4), "{replay:?}");
    assert_eq!(s.registrars[1].live_contacts(s.now), n);
}

/// A node added at run time: every live binding is pending on it until its replay lands.
#[test]
fn an_added_node_lags_until_its_replay_lands() {
    let n = 400;
    let mut s = sim_with(1, n, 36);
    s.run_for(secs(5));
    let added = s.now;
    s.add_node();
    assert_eq!(
        coverage_lag(&s),
        vec![(n, n, Duration::ZERO), (n, 0, Duration::ZERO)]
    );
    s.run_for(secs(1));
    let c = coverage(&s);
    assert!(
        c[1].confirmed < n && c[1].lag(s.now) == s.now - added,
        "{c:?}"
    );
    let done = run_until_cond(&mut s, Duration::from_millis(100), secs(10), caught_up)
        .expect("the new node catches up");
    assert!(done - added >= secs(1), "400 at 200/s: {:?}", done - added);
    assert_eq!(s.registrars[1].live_contacts(s.now), n);
}

/// A user Kamailio holds live but the database does not know: desired while its credential
/// is looked up (that wait is lag like any other), no longer once the lookup says unknown, so
/// it does not hold coverage below 1. Kamailio saving it again costs one more lookup.
#[test]
fn an_unknown_user_does_not_hold_coverage_below_one() {
    let mut s = sim_with(2, 5, 33);
    s.run_for(secs(2));
    assert!(caught_up(&s));
    for _ in 0..2 {
        s.take_events();
        let asked = s.now;
        s.mirror.aor_update(asked, "ghost", secs(3600), None, None);
        s.run_for(secs(1));
        assert!(s.take_events().contains(&Event::CredentialMissing {
            aor: "ghost".into()
        }));
        assert_eq!(coverage_lag(&s), vec![(6, 5, secs(1)); 2]);
        // The lookup answers: no such user.
        let now = s.now;
        s.mirror.set_credential(now, "ghost", None);
        assert_eq!(coverage_lag(&s), vec![(5, 5, Duration::ZERO); 2]);
        s.run_for(secs(60));
        assert!(caught_up(&s));
    }
    assert_eq!(coverage_lag(&s), vec![(5, 5, Duration::ZERO); 2]);
}

/// An AOR Kamailio drops (unregister) or that expires leaves the desired bindings at once,
/// confirmed or pending: coverage stays 1 and the lag stops counting it.
#[test]
fn unregistered_and_expired_aors_leave_the_desired_bindings() {
    let mut s = sim_with(2, 10, 34);
    // One more user whose credential lookup never answers, live for 30 s: pending meanwhile.
    let start = s.now;
    s.mirror.aor_update(start, "slow", secs(30), None, None);
    s.run_for(secs(2));
    assert_eq!(coverage_lag(&s), vec![(11, 10, secs(2)); 2]);
    // Kamailio: u0 unregistered. Out of the desired bindings before its unregister lands.
    let now = s.now;
    s.mirror
        .aor_update(now, &user(0), Duration::ZERO, None, None);
    assert_eq!(coverage_lag(&s), vec![(10, 9, secs(2)); 2]);
    s.run_for(secs(1));
    assert!((0..2).all(|r| s.registrars[r].contact(&user(0), s.now).is_none()));
    // "slow" expires: nothing pending any more.
    s.run_until(start + secs(30));
    assert_eq!(coverage_lag(&s), vec![(9, 9, Duration::ZERO); 2]);
    // u1's last contact expires and no notification says so: regmirror's own expiry timer.
    let now = s.now;
    s.mirror.aor_update(now, &user(1), secs(20), None, None);
    s.run_for(secs(21));
    assert_eq!(coverage_lag(&s), vec![(8, 8, Duration::ZERO); 2]);
    assert!((0..2).all(|r| s.registrars[r].contact(&user(1), s.now).is_none()));
}

/// A contact the audit finds missing on a node is pending from then until it is registered
/// again.
#[test]
fn a_contact_lost_behind_our_back_is_pending_until_the_audit_repairs_it() {
    let mut s = sim_with(2, 10, 35);
    s.run_for(secs(2));
    assert!(caught_up(&s));
    s.registrars[0].response_delay = Duration::from_millis(500);
    s.registrars[0].contacts.remove(&user(3));
    let now = s.now;
    let actual = s.registrars[0].contact_users(now, CONTACT);
    assert_eq!(s.mirror.audit(now, 0, &actual).missing, 1);
    s.run_for(Duration::from_millis(200));
    assert_eq!(
        coverage_lag(&s),
        vec![
            (10, 9, Duration::from_millis(200)),
            (10, 10, Duration::ZERO)
        ]
    );
    s.run_for(secs(2));
    assert!(caught_up(&s));
    assert!(s.registrars[0].contact(&user(3), s.now).is_some());
}

/// Issue 15: a `location` snapshot that would drop most live users at once (a time-zone or
/// realm mismatch makes everybody look gone) is refused whole; a smaller drop is applied.
#[test]
fn reconcile_circuit_breaker_refuses_a_mass_drop() {
    let mut s = Sim::new(config(), 1, Transport::Udp, 6);
    let users: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    for u in &users {
        s.add_user(u, Secret::Password(format!("pw-{u}")));
    }
    let now = s.now;
    for u in &users {
        s.mirror.aor_update(now, u, secs(3600), None, Some(cred(u)));
    }
    s.run_for(secs(5));
    assert_eq!(s.mirror.stats().registered, 40);

    // Everybody gone (or all but a few, beyond the default 90%): refused, nothing changes.
    let now = s.now;
    let few: Vec<(String, Duration)> = users[..2].iter().map(|u| (u.clone(), secs(600))).collect();
    for snapshot in [&[][..], &few[..]] {
        let refused = s.mirror.reconcile(now, snapshot).unwrap_err();
        assert_eq!(refused.live, 40);
        assert_eq!(refused.dropping, 40 - snapshot.len());
    }
    s.run_for(secs(5));
    assert_eq!(s.registrars[0].contact_users(s.now, CONTACT).len(), 40);
    assert!(users.iter().all(|u| s.mirror.is_live(s.now, u)));

    // A quarter gone (churn, lost notifications): applied, and those are unregistered.
    let now = s.now;
    let most: Vec<(String, Duration)> =
        users[10..].iter().map(|u| (u.clone(), secs(600))).collect();
    s.mirror.reconcile(now, &most).unwrap();
    s.run_for(secs(5));
    let left = s.registrars[0].contact_users(s.now, CONTACT);
    assert_eq!(left.len(), 30);
    assert!(!left.contains("u0") && left.contains("u10"));
}
