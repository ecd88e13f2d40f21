//! Memory per binding and throughput at scale. The small run is a regular test; the full
//! 100,000 AORs x 3 nodes run is `#[ignore]`d: `cargo test --release --test core_scale -- --ignored --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use regmirror::core::digest::Secret;
use regmirror::core::mirror::{Credential, Mirror, MirrorConfig, Transport};
use regmirror::core::testing::Sim;

/// Counts live heap bytes so the mirror's own footprint can be measured.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Registers `aors` x `nodes` through fake registrars; returns (mirror, bytes per binding, wall time).
fn run(aors: usize, nodes: usize) -> (Mirror, f64, Duration) {
    let cfg = MirrorConfig {
        domain: "regmirror.test".into(),
        contact_host: "10.77.0.20:5060".into(),
        ..MirrorConfig::default()
    };
    let baseline = LIVE.load(Ordering::Relaxed);
    let mut s = Sim::new(cfg, nodes, Transport::Udp, 42);
    s.keep_sent = false;
    for r in &mut s.registrars {
        r.keep_log = false;
        // One shared test password: the fake looks users up by name.
    }
    let names: Vec<String> = (0..aors).map(|i| format!("u{i}")).collect();
    for n in &names {
        s.add_user(n, Secret::Password("pw".into()));
    }
    let t0 = Instant::now();
    let now = s.now;
    for n in &names {
        s.mirror.aor_update(
            now,
            n,
            Duration::from_secs(86_400),
            None,
            Some(Credential {
                username: n.clone(),
                secret: Secret::Password("pw".into()),
            }),
        );
    }
    s.run_for(Duration::from_secs(60));
    let wall = t0.elapsed();
    assert_eq!(s.mirror.stats().registered, aors * nodes);
    let Sim {
        mirror,
        registrars,
        events,
        ..
    } = s;
    drop(registrars);
    drop(events);
    drop(names);
    let bytes = (LIVE.load(Ordering::Relaxed) - baseline) as f64;
    (mirror, bytes / (aors * nodes) as f64, wall)
}

#[test]
fn memory_per_binding_is_bounded() {
    let (m, per_binding, _) = run(3000, 3);
    println!("{per_binding:.0} bytes per binding (3000 AORs x 3 nodes)");
    assert!(per_binding < 512.0, "{per_binding} bytes per binding");
    drop(m);
}

#[test]
#[ignore]
fn hundred_thousand_aors_on_three_nodes() {
    let (m, per_binding, wall) = run(100_000, 3);
    let txns = m.stats().transactions;
    println!(
        "300k bindings: {per_binding:.0} B/binding, {txns} transactions in {wall:?} ({:.0}/s incl. fake registrar and rsip parsing)",
        txns as f64 / wall.as_secs_f64()
    );
    assert!(per_binding < 512.0);
}
