//! A node's congestion window (`farm.latency_target`): how many operations may be in flight,
//! cut when answers come slower than the node's unloaded round trip plus the target (or not at
//! all), grown by one per window of timely answers. Delay-based, like LEDBAT (RFC 6817): a
//! registrar's queue shows up as latency long before it drops anything.

use std::time::{Duration, Instant};

/// The window never closes below this many operations in flight.
pub const MIN_WINDOW: f64 = 4.0;

/// How long a node's fastest answer counts as its unloaded round trip (two periods kept).
pub const BASE_PERIOD: Duration = Duration::from_secs(10);

/// Multiplicative decrease on congestion.
const CUT: f64 = 0.7;

#[derive(Debug, Clone)]
pub struct Window {
    /// Operations allowed in flight (unbounded until the first answer).
    size: f64,
    /// No second cut before this (one per target interval).
    cut_until: Option<Instant>,
    /// Fastest answer of the previous and of the current base period: the node's unloaded
    /// round trip, so a distant node is not mistaken for a congested one.
    base_prev: Option<Duration>,
    base_cur: Option<Duration>,
    base_period_end: Option<Instant>,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            size: f64::MAX,
            cut_until: None,
            base_prev: None,
            base_cur: None,
            base_period_end: None,
        }
    }
}

impl Window {
    /// Operations allowed in flight: `max` without a `target`, else the window within
    /// `MIN_WINDOW..=max`.
    pub fn budget(&self, max: usize, target: Duration) -> usize {
        if target.is_zero() {
            max
        } else {
            (self.size.min(max as f64) as usize).max(MIN_WINDOW as usize)
        }
    }

    /// One answer's round trip (`None`: no answer at all) adjusts the window.
    pub fn feedback(&mut self, now: Instant, rtt: Option<Duration>, target: Duration, max: usize) {
        if target.is_zero() {
            return;
        }
        let max = max.max(1) as f64;
        self.size = self.size.min(max);
        if self.base_period_end.is_none_or(|t| now >= t) {
            self.base_prev = self.base_cur.take();
            self.base_period_end = Some(now + BASE_PERIOD);
        }
        if let Some(r) = rtt {
            self.base_cur = Some(self.base_cur.map_or(r, |b| b.min(r)));
        }
        let base = match (self.base_prev, self.base_cur) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or_default(),
        };
        if rtt.is_none_or(|r| r > base + target) {
            if self.cut_until.is_none_or(|t| now >= t) {
                self.size = (self.size * CUT).max(MIN_WINDOW);
                self.cut_until = Some(now + target);
            }
        } else {
            self.size = (self.size + 1.0 / self.size).min(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(50);

    #[test]
    fn no_target_no_window() {
        let mut w = Window::default();
        w.feedback(Instant::now(), None, Duration::ZERO, 32);
        assert_eq!(w.budget(32, Duration::ZERO), 32);
    }

    #[test]
    fn slow_answers_cut_once_per_target_and_timely_ones_grow_it_back() {
        let now = Instant::now();
        let mut w = Window::default();
        let base = Duration::from_millis(20);
        w.feedback(now, Some(base), TARGET, 32);
        assert_eq!(w.budget(32, TARGET), 32);
        // Slower than base + target: cut to 70%, and not again within the target.
        w.feedback(now, Some(base + TARGET * 2), TARGET, 32);
        assert_eq!(w.budget(32, TARGET), 22);
        w.feedback(now + TARGET / 2, None, TARGET, 32);
        assert_eq!(w.budget(32, TARGET), 22);
        // No answers at all keep cutting, down to the floor.
        for i in 1..40 {
            w.feedback(now + TARGET * i, None, TARGET, 32);
        }
        assert_eq!(w.budget(32, TARGET), MIN_WINDOW as usize);
        // Timely answers grow it by about one per window's worth.
        let later = now + TARGET * 40;
        for _ in 0..200 {
            w.feedback(later, Some(base), TARGET, 32);
        }
        assert!(w.budget(32, TARGET) >= 16, "{w:?}");
    }

    #[test]
    fn a_distant_node_is_not_mistaken_for_a_congested_one() {
        let now = Instant::now();
        let mut w = Window::default();
        // 300 ms every time: that is the node's unloaded round trip, not congestion.
        for i in 0..100u32 {
            w.feedback(
                now + TARGET * i,
                Some(Duration::from_millis(300)),
                TARGET,
                32,
            );
        }
        assert_eq!(w.budget(32, TARGET), 32);
    }
}
