use super::*;
use rand::SeedableRng;

#[test]
fn backoff_stays_within_rfc5626_window() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let (base, max) = (Duration::from_secs(30), Duration::from_secs(1800));
    for f in 1..30u16 {
        let w = base.saturating_mul(1 << (f - 1).min(20)).min(max);
        let d = backoff(&mut rng, base, max, f);
        assert!(d >= w / 2 && d <= w, "{f}: {d:?}");
    }
}

#[test]
fn first_refresh_spreads_over_the_second_half_of_the_grant() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let margin = Duration::from_secs(66);
    let d: Vec<u64> = (0..1000)
        .map(|_| first_refresh_delay(&mut rng, 600, margin).as_secs())
        .collect();
    assert!(d.iter().all(|&s| (300..=534).contains(&s)), "{d:?}");
    // Spread, not bunched: each quarter of the window gets a share.
    for q in 0..4u64 {
        let (lo, hi) = (300 + q * 58, 300 + (q + 1) * 58);
        let n = d.iter().filter(|&&s| (lo..hi).contains(&s)).count();
        assert!((150..=350).contains(&n), "{n} in {lo}..{hi}");
    }
    // A short grant has no room to spread: the usual refresh.
    let s = first_refresh_delay(&mut rng, 60, margin);
    assert!(
        s <= Duration::from_secs(30) && s >= Duration::from_secs(28),
        "{s:?}"
    );
}

#[test]
fn refresh_before_expiry() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..100 {
        let d = refresh_delay(&mut rng, 600, Duration::from_secs(36));
        assert!(
            d <= Duration::from_secs(564) && d >= Duration::from_secs(535),
            "{d:?}"
        );
        let d = refresh_delay(&mut rng, 60, Duration::from_secs(36));
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_millis(28_500),
            "{d:?}"
        );
        assert_eq!(
            refresh_delay(&mut rng, 2, Duration::from_secs(36)),
            MIN_REFRESH
        );
    }
}

fn policy() -> Policy {
    Policy {
        retry_base: Duration::from_secs(30),
        retry_max: Duration::from_secs(1800),
        unregister_attempts: 3,
        refresh_margin: Duration::from_secs(36),
        storm_hold: Duration::ZERO,
    }
}

fn txn(now: Instant, expires: u32, auth: AuthSent) -> Txn {
    Txn {
        id: 7,
        cseq: 1,
        expires,
        auth,
        timers: NonInviteClient::new(now, &Timers::default(), false),
        sent_at: now,
        payload: b"REGISTER".to_vec(),
    }
}

fn binding(phase: Phase, op: Op, server_bound: bool) -> Binding {
    Binding {
        phase,
        op,
        server_bound,
        ..Binding::default()
    }
}

#[test]
fn what_a_binding_does_when_its_aor_is_wanted_or_not() {
    use Op::{Register as R, Unregister as U};
    let cases = [
        // (phase, op, bound, want) -> step, op afterwards
        (Phase::Absent, R, false, true, Step::Begin, R),
        (Phase::Absent, R, false, false, Step::Wait, R),
        (Phase::Registered, R, true, false, Step::Start(U), R),
        (Phase::Registered, R, true, true, Step::Wait, R),
        (Phase::InFlight, R, true, false, Step::Wait, R),
        (Phase::Queued, R, true, false, Step::Wait, U),
        (Phase::Queued, R, false, false, Step::Remove, R),
        (Phase::Queued, U, true, true, Step::Wait, R),
        (Phase::Backoff, U, true, true, Step::Start(R), U),
        (Phase::Backoff, R, true, false, Step::Start(U), R),
        (Phase::Backoff, R, false, false, Step::Remove, R),
        (Phase::Backoff, R, false, true, Step::Wait, R),
        (Phase::Backoff, U, true, false, Step::Wait, U),
    ];
    for (phase, op, bound, want, step, op_after) in cases {
        let mut b = binding(phase, op, bound);
        assert_eq!(b.on_want(want), step, "{phase:?} {op:?} {bound} {want}");
        assert_eq!(b.op, op_after, "{phase:?} {op:?} {bound} {want}");
    }
}

#[test]
fn a_grant_schedules_the_refresh_and_never_exceeds_what_was_asked() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let now = Instant::now();
    let mut b = binding(Phase::InFlight, Op::Register, false);
    // The node overstates the grant: the refresh still comes within the 600 s asked for.
    let step = b.on_success(
        now,
        &txn(now, 600, AuthSent::None),
        Some(7200),
        true,
        &policy(),
        &mut rng,
    );
    assert_eq!(step, Step::Wait);
    assert_eq!(
        (b.phase, b.granted, b.confirmed),
        (Phase::Registered, 600, true)
    );
    let refresh = b.action_at.unwrap() - now;
    assert!(refresh >= Duration::from_secs(300) && refresh <= Duration::from_secs(564));
    assert_eq!(b.state(), Some(BindingState::Registered));

    // The AOR died while the REGISTER was in flight: unregister at once.
    let mut b = binding(Phase::InFlight, Op::Register, false);
    let t = txn(now, 600, AuthSent::None);
    let step = b.on_success(now, &t, None, false, &policy(), &mut rng);
    assert_eq!(step, Step::Start(Op::Unregister));

    // An unregister done: forget, or register again if wanted meanwhile.
    for (want, step) in [(false, Step::Remove), (true, Step::Start(Op::Register))] {
        let mut b = binding(Phase::InFlight, Op::Unregister, true);
        let t = txn(now, 0, AuthSent::None);
        assert_eq!(b.on_success(now, &t, None, want, &policy(), &mut rng), step);
        assert!(!b.server_bound && !b.confirmed);
    }
}

#[test]
fn final_responses_resend_fail_or_succeed() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(4);
    let now = Instant::now();
    let reg = txn(now, 600, AuthSent::None);
    let unreg = txn(now, 0, AuthSent::None);
    let mut b = binding(Phase::InFlight, Op::Register, false);
    assert_eq!(b.on_final(&reg, 202, None, None, &mut rng), Final::Success);
    assert_eq!(
        b.on_final(&reg, 407, None, None, &mut rng),
        Final::Challenge { proxy: true }
    );
    // 423 with a longer Min-Expires: learnt and resent, a few times at most.
    for _ in 0..MAX_ROUNDS {
        assert_eq!(
            b.on_final(&reg, 423, Some(900), None, &mut rng),
            Final::Resend
        );
    }
    assert_eq!(b.min_expires, 900);
    assert_eq!(
        b.on_final(&reg, 423, Some(900), None, &mut rng),
        Final::Failed(LastResult::Status(423), None)
    );
    // 404 to an unregister: nothing left to remove. To a register: a failure.
    assert_eq!(
        b.on_final(&unreg, 404, None, None, &mut rng),
        Final::Success
    );
    assert_eq!(
        b.on_final(&reg, 404, None, None, &mut rng),
        Final::Failed(LastResult::Status(404), None)
    );
    // Retry-After is honoured with up to 10% jitter and capped.
    for (asked, lo) in [(300u32, 300u64), (u32::MAX, u64::from(MAX_RETRY_AFTER_S))] {
        let Final::Failed(_, Some(w)) = b.on_final(&reg, 503, None, Some(asked), &mut rng) else {
            panic!("503 with Retry-After");
        };
        assert!(
            w >= Duration::from_secs(lo) && w < Duration::from_secs(lo * 11 / 10),
            "{w:?}"
        );
    }
}

#[test]
fn a_challenge_to_a_fresh_answer_is_a_rejection_unless_stale_or_outdated() {
    let now = Instant::now();
    let fresh = txn(now, 600, AuthSent::Fresh);
    let preemptive = txn(now, 600, AuthSent::Preemptive);
    let mut b = binding(Phase::InFlight, Op::Register, false);
    assert_eq!(
        b.on_challenge(&fresh, false, false, 1),
        Err(LastResult::CredentialRejected)
    );
    assert_eq!(b.on_challenge(&fresh, true, false, 2), Ok(Step::Resend));
    assert_eq!(b.on_challenge(&fresh, false, true, 2), Ok(Step::Resend));
    assert_eq!((b.realm, b.auth_next), (2, AuthNext::Fresh));
    let mut b = binding(Phase::InFlight, Op::Register, false);
    for _ in 0..MAX_ROUNDS {
        assert_eq!(
            b.on_challenge(&preemptive, false, false, 1),
            Ok(Step::Resend)
        );
    }
    assert_eq!(
        b.on_challenge(&preemptive, false, false, 1),
        Err(LastResult::TooManyRoundTrips)
    );
}

#[test]
fn failures_back_off_and_unregisters_give_up() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let now = Instant::now();
    let p = policy();
    let mut b = binding(Phase::InFlight, Op::Register, false);
    assert_eq!(
        b.on_failure(now, LastResult::Timeout, None, true, &p, &mut rng),
        Step::Wait
    );
    // A REGISTER that timed out may have arrived.
    assert!(b.server_bound);
    assert_eq!(b.state(), Some(BindingState::Failed));
    let wait = b.action_at.unwrap() - now;
    assert!(wait >= p.retry_base / 2 && wait <= p.retry_base, "{wait:?}");
    // The node's Retry-After wins over the backoff.
    let w = Duration::from_secs(77);
    b.on_failure(now, LastResult::Status(503), Some(w), true, &p, &mut rng);
    assert_eq!(b.action_at, Some(now + w));
    // Not wanted any more: unregister what may be there.
    assert_eq!(
        b.on_failure(now, LastResult::Status(500), None, false, &p, &mut rng),
        Step::Start(Op::Unregister)
    );
    let mut b = binding(Phase::InFlight, Op::Unregister, true);
    for _ in 1..p.unregister_attempts {
        assert_eq!(
            b.on_failure(now, LastResult::Timeout, None, false, &p, &mut rng),
            Step::Wait
        );
    }
    assert_eq!(
        b.on_failure(now, LastResult::Timeout, None, false, &p, &mut rng),
        Step::Remove
    );
}

#[test]
fn timers_retransmit_time_out_and_fall_due() {
    let now = Instant::now();
    let timers = Timers::default();
    let mut b = binding(Phase::InFlight, Op::Register, false);
    b.txn = Some(Box::new(txn(now, 600, AuthSent::None)));
    assert!(matches!(b.on_txn_timer(now, &timers), TxnTimer::Quiet));
    assert!(matches!(
        b.on_txn_timer(now + timers.t1, &timers),
        TxnTimer::Retransmit
    ));
    assert!(matches!(
        b.on_txn_timer(now + timers.timer_f, &timers),
        TxnTimer::TimedOut(t) if t.id == 7
    ));
    assert!(b.txn.is_none());

    let due = now + Duration::from_secs(500);
    let mut b = binding(Phase::Registered, Op::Register, true);
    b.action_at = Some(due);
    assert_eq!(b.on_due(now, None), Step::Wait);
    // Due in a storm hold with slack to spare: it waits, once.
    b.refresh_slack = 20;
    let hold_end = Some(due + Duration::from_secs(60));
    let deferred = b.refresh_deferral(due, hold_end);
    assert_eq!(deferred, Some(due + Duration::from_secs(20)));
    assert_eq!(b.on_due(due, deferred), Step::Deferred);
    assert_eq!((b.action_at, b.refresh_slack), (deferred, 0));
    assert_eq!(b.refresh_deferral(due, hold_end), None);
    assert_eq!(b.on_due(deferred.unwrap(), None), Step::Start(Op::Register));
    let mut b = binding(Phase::Backoff, Op::Register, false);
    b.action_at = Some(due);
    assert_eq!(b.on_due(due, None), Step::Retry);
}
