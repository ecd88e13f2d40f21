//! Property tests: whatever the losses and faults, bindings converge.

use std::time::Duration;

use proptest::prelude::*;
use regmirror::core::digest::Secret;
use regmirror::core::mirror::{BindingState, Credential, MirrorConfig, Transport};
use regmirror::core::testing::{Scripted, Sim};

fn sim(seed: u64, nodes: usize) -> Sim {
    let cfg = MirrorConfig {
        domain: "regmirror.test".into(),
        contact_host: "10.77.0.20:5060".into(),
        ..MirrorConfig::default()
    };
    let mut s = Sim::new(cfg, nodes, Transport::Udp, seed);
    s.add_user("1001", Secret::Password("s3cret".into()));
    s
}

fn cred() -> Credential {
    Credential {
        username: "1001".into(),
        secret: Secret::Password("s3cret".into()),
    }
}

fn scripted() -> impl Strategy<Value = Scripted> {
    prop_oneof![
        Just(Scripted::Pass),
        Just(Scripted::Stale),
        Just(Scripted::Drop),
        Just(Scripted::Status(403)),
        Just(Scripted::Status(500)),
        (61u32..2000).prop_map(Scripted::IntervalTooBrief),
        proptest::option::of(1u32..300).prop_map(Scripted::Unavailable),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any pattern of up to 80 lost packets: registered everywhere in the end, then
    /// unregistered everywhere (up to 20 more losses) once the AOR dies.
    #[test]
    fn random_loss_converges(
        seed in any::<u64>(),
        loss in proptest::collection::vec(proptest::bool::weighted(0.5), 0..80),
        loss2 in proptest::collection::vec(proptest::bool::weighted(0.5), 0..20),
    ) {
        let mut s = sim(seed, 2);
        s.loss = loss.into_iter().collect();
        let now = s.now;
        s.mirror.aor_update(now, "1001", Duration::from_secs(86_400), None, Some(cred()));
        s.run_for(Duration::from_secs(3 * 3600));
        for n in 0..2u16 {
            prop_assert_eq!(s.mirror.binding("1001", n).map(|b| b.state), Some(BindingState::Registered));
            let c = s.mirror.node_health(n).unwrap().coverage;
            prop_assert_eq!((c.desired, c.confirmed, c.lag(s.now)), (1, 1, Duration::ZERO));
        }
        prop_assert_eq!(s.mirror.check_coverage(s.now), Ok(()));
        prop_assert!(s.registrars.iter().all(|r| r.contact("1001", s.now).is_some()));

        s.loss = loss2.into_iter().collect();
        let now = s.now;
        s.mirror.aor_update(now, "1001", Duration::ZERO, None, None);
        s.run_for(Duration::from_secs(600));
        prop_assert!(s.registrars.iter().all(|r| r.contact("1001", s.now).is_none()));
        prop_assert_eq!(s.mirror.stats().aors, 0);
        prop_assert_eq!(s.mirror.check_coverage(s.now), Ok(()));
        prop_assert_eq!(s.mirror.node_health(0).unwrap().coverage.desired, 0);
    }

    /// Any sequence of registrar faults: the binding ends up registered, and a fault never
    /// causes a retry storm (bounded requests).
    #[test]
    fn random_faults_converge(seed in any::<u64>(), script in proptest::collection::vec(scripted(), 0..12)) {
        let mut s = sim(seed, 1);
        let faults = script.len();
        s.registrars[0].script = script.into_iter().collect();
        let now = s.now;
        s.mirror.aor_update(now, "1001", Duration::from_secs(86_400), None, Some(cred()));
        // The coverage bookkeeping holds through every fault, not only at the end.
        for _ in 0..4 * 60 {
            s.run_for(Duration::from_secs(60));
            prop_assert_eq!(s.mirror.check_coverage(s.now), Ok(()));
        }
        prop_assert_eq!(s.mirror.binding("1001", 0).map(|b| b.state), Some(BindingState::Registered));
        prop_assert_eq!(s.mirror.node_health(0).unwrap().coverage.confirmed, 1);
        prop_assert!(s.registrars[0].contact("1001", s.now).is_some());
        // Refreshes (~27 in 4 h, 2 requests each) plus retransmissions of dropped ones
        // plus the faults themselves.
        prop_assert!(s.registrars[0].log.len() <= 2 * 30 + 11 * faults + 2 * faults, "{}", s.registrars[0].log.len());
    }
}
