//! Farm health: per node, SIP OPTIONS probes and the up/down decision, plus the pacer that
//! spreads a replay over time. Pure: the `Mirror` owns one `Health` and one `Pacer` per node and
//! feeds them time and outcomes.

use std::time::{Duration, Instant};

use rand::Rng;

/// Health and replay settings (part of `MirrorConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmConfig {
    /// Time between OPTIONS probes to each node. `None` = no probes (the node is only marked down
    /// when REGISTERs time out).
    pub probe_interval: Option<Duration>,
    /// A probe unanswered this long failed. Shorter than Timer F so a dead node is seen quickly.
    pub probe_timeout: Duration,
    /// Consecutive failed probes after which the node is down.
    pub probe_failures: u32,
    /// Replay pace per node (REGISTERs per second) after a node comes up or is added, and for
    /// bindings added by reconciliation. 0 = unpaced (only the send budget limits).
    pub replay_rate: u32,
    /// A node's latest nonce answers other bindings' REGISTERs preemptively while younger than
    /// this (zero = never). Keep it below the nodes' `nonce_lifetime` (Asterisk: 32 s).
    pub nonce_reuse: Duration,
    /// Congestion control of the send budget (zero = off: `max_inflight_per_node` is a fixed
    /// window). When a node's answers take longer than this, its window of operations in flight
    /// shrinks (x0.7, at most once per target interval); while they come faster it grows by one
    /// per window of answers, up to `max_inflight_per_node`. Protects a farm (and whatever
    /// shares its CPUs and database) from registration storms; the backlog drains afterwards.
    pub latency_target: Duration,
    /// REGISTER operations started per second per node, whatever their cause (0 = no limit).
    /// Caps the farm's share of a machine or database it shares with the phone-facing path
    /// during a registration storm; the rest waits in the node's queue and drains afterwards.
    pub max_register_rate: u32,
    /// Storm hold (zero = off; needs `max_register_rate`): while Kamailio notifies faster than
    /// `max_register_rate` per second, every node's queue grows whatever regmirror does, so new
    /// work (registrations, unregistrations, replays) waits instead of taking CPU and database
    /// from the phones' path. Refreshes are scheduled this much earlier, so one falling due in a
    /// hold can wait for the hold's end and still have its usual margin before the node's expiry;
    /// one without that slack (a short grant) still goes. For at most this long per storm; then
    /// the queues drain at the cap, storm or not.
    pub storm_hold: Duration,
}

impl Default for FarmConfig {
    fn default() -> Self {
        FarmConfig {
            probe_interval: None,
            probe_timeout: Duration::from_secs(2),
            probe_failures: 2,
            replay_rate: 200,
            nonce_reuse: Duration::from_secs(20),
            latency_target: Duration::ZERO,
            max_register_rate: 0,
            storm_hold: Duration::ZERO,
        }
    }
}

/// The probe in flight: an OPTIONS with its own timers (retransmitted like any non-INVITE
/// request over UDP, so a lost datagram alone does not fail the probe).
#[derive(Debug)]
pub(crate) struct Probe {
    pub id: u32,
    pub cseq: u32,
    pub retransmit_at: Option<Instant>,
    pub interval: Duration,
    pub deadline: Instant,
    pub payload: Vec<u8>,
}

/// What a node's health timer asks the owner to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthAction {
    None,
    /// Time to send a new probe.
    SendProbe,
    /// Resend the probe in flight.
    Retransmit,
    /// The probe failed; `true` when that made the node go down.
    ProbeFailed(bool),
}

#[derive(Debug)]
pub(crate) struct Health {
    pub up: bool,
    /// Consecutive failed probes.
    pub failures: u32,
    pub last_heard: Option<Instant>,
    /// Last up/down transition.
    pub since: Option<Instant>,
    pub next_probe: Option<Instant>,
    pub probe: Option<Probe>,
    pub cseq: u32,
    pub probes_sent: u64,
    pub probes_failed: u64,
}

impl Health {
    /// Nodes start up: REGISTERs go out at once, and probes decide otherwise soon enough.
    pub fn new() -> Self {
        Health {
            up: true,
            failures: 0,
            last_heard: None,
            since: None,
            next_probe: None,
            probe: None,
            cseq: 0,
            probes_sent: 0,
            probes_failed: 0,
        }
    }

    /// Any response from the node. Returns `true` when it came back up.
    pub fn heard(&mut self, now: Instant) -> bool {
        self.last_heard = Some(now);
        self.failures = 0;
        if self.up {
            return false;
        }
        self.up = true;
        self.since = Some(now);
        true
    }

    /// The probe was answered: ends it and schedules the next one.
    pub fn probe_answered(&mut self, now: Instant, cfg: &FarmConfig) {
        self.probe = None;
        self.next_probe = cfg.probe_interval.map(|i| now + i);
    }

    /// Forces the node down (its REGISTERs time out). Returns `true` when it was up.
    pub fn mark_down(&mut self, now: Instant) -> bool {
        if !self.up {
            return false;
        }
        self.up = false;
        self.since = Some(now);
        true
    }

    pub fn deadline(&self) -> Option<Instant> {
        match &self.probe {
            Some(p) => Some(match p.retransmit_at {
                Some(r) if r < p.deadline => r,
                _ => p.deadline,
            }),
            None => self.next_probe,
        }
    }

    /// Advances the probe timers to `now`.
    pub fn on_timer(&mut self, now: Instant, cfg: &FarmConfig, t2: Duration) -> HealthAction {
        let Some(p) = self.probe.as_mut() else {
            return match self.next_probe {
                Some(t) if t <= now => {
                    self.next_probe = None;
                    HealthAction::SendProbe
                }
                _ => HealthAction::None,
            };
        };
        if now >= p.deadline {
            self.probe = None;
            self.probes_failed += 1;
            self.failures = self.failures.saturating_add(1);
            self.next_probe = cfg.probe_interval.map(|i| now + i);
            let down = self.up && self.failures >= cfg.probe_failures.max(1);
            if down {
                self.up = false;
                self.since = Some(now);
            }
            return HealthAction::ProbeFailed(down);
        }
        match p.retransmit_at {
            Some(at) if now >= at => {
                p.interval = (p.interval * 2).min(t2);
                p.retransmit_at = Some(now.max(at) + p.interval);
                HealthAction::Retransmit
            }
            _ => HealthAction::None,
        }
    }
}

/// Registration-storm detector behind `FarmConfig::storm_hold`: Kamailio's notifications
/// counted per window of at least a second.
#[derive(Debug, Default)]
pub(crate) struct StormGate {
    window_start: Option<Instant>,
    count: u32,
    /// The current window already, or else the last one, went over the threshold.
    hot: bool,
    /// Start of the current storm (set while `hot`).
    since: Option<Instant>,
    /// The latest time seen (for `poll_timeout`, which is given none).
    last_seen: Option<Instant>,
}

impl StormGate {
    /// One notification at `now`.
    pub fn arrival(&mut self, now: Instant, threshold: u32) {
        self.tick(now, threshold);
        self.count = self.count.saturating_add(1);
        if self.count > threshold {
            self.hot = true; // no need to wait for the window's end
            self.since.get_or_insert(now);
        }
    }

    /// Closes the window once a second has passed: its rate decides whether the storm goes on.
    pub fn tick(&mut self, now: Instant, threshold: u32) {
        self.last_seen = Some(self.last_seen.map_or(now, |t| t.max(now)));
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed < STORM_WINDOW {
            return;
        }
        self.hot = f64::from(self.count) > f64::from(threshold) * elapsed.as_secs_f64();
        if !self.hot {
            self.since = None;
        }
        self.count = 0;
        self.window_start = Some(now);
    }

    /// Whether new work is held at `now`: in a storm that began less than `hold` ago.
    pub fn holding(&self, now: Instant, hold: Duration) -> bool {
        self.hot && self.since.is_some_and(|s| now < s + hold)
    }

    /// The latest moment the current storm's hold can end (None outside a storm).
    pub fn hold_end(&self, hold: Duration) -> Option<Instant> {
        self.since.map(|s| s + hold)
    }

    pub fn now_hint(&self) -> Option<Instant> {
        self.last_seen
    }

    /// When `holding` may change on its own: the window's end or the hold's (only while holding).
    pub fn deadline(&self, now: Instant, hold: Duration) -> Option<Instant> {
        if !self.holding(now, hold) {
            return None;
        }
        let window_end = self.window_start? + STORM_WINDOW;
        Some(window_end.min(self.since? + hold))
    }
}

const STORM_WINDOW: Duration = Duration::from_secs(1);

/// How late a pacer may be and still send the slots it missed.
const CATCH_UP: Duration = Duration::from_millis(10);

/// Spreads a replay at `rate` per second with +-50% jitter per gap (the mean rate holds).
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    pub next_at: Option<Instant>,
}

impl Pacer {
    /// Whether a send may go at `now` (without booking a slot).
    pub fn ready(&self, now: Instant, rate: u32) -> bool {
        rate == 0 || self.next_at.is_none_or(|t| t <= now)
    }

    /// Whether one send may go at `now`; if so, books the next slot.
    pub fn take<R: Rng>(&mut self, now: Instant, rate: u32, rng: &mut R) -> bool {
        if rate == 0 {
            return true;
        }
        if self.next_at.is_some_and(|t| t > now) {
            return false;
        }
        let gap = Duration::from_secs(1).mul_f64(rng.gen_range(0.5..1.5) / f64::from(rate));
        // From the booked slot, not `now`, so a late wake-up does not slow the mean rate (a
        // timer wakes about once a millisecond: at 1,000/s and more, each wake sends the slots
        // it missed, up to 10 ms worth); after an idle spell start afresh instead of bursting.
        let base = match self.next_at {
            Some(t) if now.saturating_duration_since(t) <= gap.max(CATCH_UP) => t,
            _ => now,
        };
        self.next_at = Some(base + gap);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn cfg() -> FarmConfig {
        FarmConfig {
            probe_interval: Some(Duration::from_secs(5)),
            ..FarmConfig::default()
        }
    }

    fn start_probe(h: &mut Health, now: Instant) {
        h.probe = Some(Probe {
            id: 1,
            cseq: 1,
            retransmit_at: Some(now + Duration::from_millis(500)),
            interval: Duration::from_millis(500),
            deadline: now + Duration::from_secs(2),
            payload: vec![],
        });
    }

    #[test]
    fn down_after_n_failed_probes_up_on_any_response() {
        let c = cfg();
        let t0 = Instant::now();
        let mut h = Health::new();
        h.next_probe = Some(t0);
        assert_eq!(
            h.on_timer(t0, &c, Duration::from_secs(4)),
            HealthAction::SendProbe
        );
        start_probe(&mut h, t0);
        let mut actions = vec![];
        let mut now = t0;
        while let Some(d) = h.deadline() {
            now = d;
            let a = h.on_timer(now, &c, Duration::from_secs(4));
            actions.push(a);
            if matches!(a, HealthAction::ProbeFailed(_)) {
                break;
            }
        }
        // Retransmits at 0.5 s and 1.5 s, fails at 2 s: one failure is not enough.
        assert_eq!(
            actions,
            vec![
                HealthAction::Retransmit,
                HealthAction::Retransmit,
                HealthAction::ProbeFailed(false)
            ]
        );
        assert_eq!(now - t0, Duration::from_secs(2));
        assert!(h.up);
        assert_eq!(h.next_probe, Some(now + Duration::from_secs(5)));
        start_probe(&mut h, now);
        assert_eq!(
            h.on_timer(now + Duration::from_secs(2), &c, Duration::from_secs(4)),
            HealthAction::ProbeFailed(true)
        );
        assert!(!h.up);
        assert!(h.heard(now + Duration::from_secs(3)));
        assert!(h.up && h.failures == 0);
        assert!(!h.heard(now + Duration::from_secs(4)));
    }

    #[test]
    fn pacer_holds_the_mean_rate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut p = Pacer::default();
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent = 0;
        while sent < 1000 {
            if p.take(now, 200, &mut rng) {
                sent += 1;
            } else {
                now = p.next_at.unwrap_or(now);
            }
        }
        let secs = (now - t0).as_secs_f64();
        assert!((4.5..5.5).contains(&secs), "{secs}");
        assert!(Pacer::default().take(t0, 0, &mut rng));
    }
}
