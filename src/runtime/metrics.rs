//! Counters the driver updates and the admin listener renders in Prometheus text format
//! (version 0.0.4). Gauges that describe the farm now (bindings by state, drift, node health)
//! come from a `FarmStatus` snapshot taken when `/metrics` is scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::status::FarmStatus;

/// Upper bounds (seconds) of the REGISTER latency buckets: loopback to Timer F.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 8.0, 32.0,
];

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    pub buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i] += 1;
        self.count += 1;
        self.sum += s;
    }
}

#[derive(Default)]
pub struct Metrics {
    pub notifications_accepted: AtomicU64,
    pub notifications_malformed: AtomicU64,
    pub notifications_untrusted: AtomicU64,
    /// Answered 503 while shutting down.
    pub notifications_refused: AtomicU64,
    pub datagrams_malformed: AtomicU64,
    pub datagrams_oversized: AtomicU64,
    pub credential_lookups: AtomicU64,
    /// Statements that read credentials (a batch of lookups is one).
    pub credential_queries: AtomicU64,
    pub credential_lookup_errors: AtomicU64,
    pub credential_unknown_users: AtomicU64,
    pub send_errors: AtomicU64,
    /// New REGISTER transactions after a failed one on the same binding.
    pub register_retries: AtomicU64,
    /// AORs replayed onto a node that came back or restarted empty (issue 5).
    pub replays: AtomicU64,
    /// Bindings found missing or stale by reconciliation and repaired (issue 5).
    pub drift_repaired: AtomicU64,
    pub reconcile_runs: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub reconcile_refused: AtomicU64,
    pub notifications_forged: AtomicU64,
    pub notifications_stale: AtomicU64,
    pub ami_errors: AtomicU64,
    /// Registration storms that held new work (`farm.storm_hold`).
    pub storm_holds: AtomicU64,
    /// 1 while a storm holds new work.
    pub storm_holding: AtomicU64,
    pub nodes_down: AtomicU64,
    /// 1 while this instance talks to the nodes (always, without `[ha]`).
    pub ha_active: AtomicU64,
    /// Times this secondary took over from its primary.
    pub ha_takeovers: AtomicU64,
    /// Final responses to our REGISTERs by status code.
    pub register_results: Mutex<BTreeMap<u16, u64>>,
    /// Binding state changes by (node, state).
    pub binding_transitions: Mutex<BTreeMap<String, BTreeMap<&'static str, u64>>>,
    /// REGISTER transaction latency (first send to final response) by node.
    pub register_latency: Mutex<BTreeMap<String, Histogram>>,
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_result(&self, code: u16) {
        if let Ok(mut m) = self.register_results.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    pub fn count_transition(&self, node: &str, state: &'static str) {
        if let Ok(mut m) = self.binding_transitions.lock() {
            // The node's name is allocated once, not per transition.
            let states = match m.get_mut(node) {
                Some(states) => states,
                None => m.entry(node.to_string()).or_default(),
            };
            *states.entry(state).or_default() += 1;
        }
    }

    pub fn observe_latency(&self, node: &str, d: Duration) {
        if let Ok(mut m) = self.register_latency.lock() {
            match m.get_mut(node) {
                Some(h) => h.observe(d),
                None => {
                    let mut h = Histogram::default();
                    h.observe(d);
                    m.insert(node.to_string(), h);
                }
            }
        }
    }

    /// Prometheus text. `farm` adds the gauges of the current state (absent when the driver
    /// did not answer in time: the counters still render).
    pub fn render(&self, farm: Option<&FarmStatus>) -> String {
        let mut o = String::with_capacity(8192);
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(&mut o, "regmirror_up", "gauge", "1 while the service runs");
        let _ = writeln!(o, "regmirror_up 1");

        family(
            &mut o,
            "regmirror_notifications_total",
            "counter",
            "Kamailio notifications by outcome",
        );
        for (result, c) in [
            ("accepted", &self.notifications_accepted),
            ("malformed", &self.notifications_malformed),
            ("untrusted", &self.notifications_untrusted),
            ("forged", &self.notifications_forged),
            ("stale", &self.notifications_stale),
            ("refused", &self.notifications_refused),
        ] {
            let _ = writeln!(
                o,
                "regmirror_notifications_total{{result=\"{result}\"}} {}",
                get(c)
            );
        }
        family(
            &mut o,
            "regmirror_datagrams_rejected_total",
            "counter",
            "datagrams dropped before parsing",
        );
        for (reason, c) in [
            ("malformed", &self.datagrams_malformed),
            ("oversized", &self.datagrams_oversized),
        ] {
            let _ = writeln!(
                o,
                "regmirror_datagrams_rejected_total{{reason=\"{reason}\"}} {}",
                get(c)
            );
        }
        for (name, help, c) in [
            (
                "regmirror_credential_lookups_total",
                "credential lookups in the database",
                &self.credential_lookups,
            ),
            (
                "regmirror_credential_queries_total",
                "database statements that read credentials (one per batch of lookups)",
                &self.credential_queries,
            ),
            (
                "regmirror_db_errors_total",
                "failed database queries (each is retried)",
                &self.credential_lookup_errors,
            ),
            (
                "regmirror_unknown_users_total",
                "notifications for users with no credential",
                &self.credential_unknown_users,
            ),
            (
                "regmirror_send_errors_total",
                "datagrams the socket refused",
                &self.send_errors,
            ),
            (
                "regmirror_register_retries_total",
                "REGISTERs retried after an error response or a timeout",
                &self.register_retries,
            ),
            (
                "regmirror_replays_total",
                "AORs replayed onto a node that came back",
                &self.replays,
            ),
            (
                "regmirror_drift_repaired_total",
                "bindings found missing or stale on a node by the audit and repaired",
                &self.drift_repaired,
            ),
            (
                "regmirror_reconcile_runs_total",
                "reconciliations from Kamailio's location table",
                &self.reconcile_runs,
            ),
            (
                "regmirror_reconcile_errors_total",
                "reconciliations that failed (retried with backoff)",
                &self.reconcile_errors,
            ),
            (
                "regmirror_reconcile_refused_total",
                "reconciliations (or their credential removals) refused by the circuit breaker",
                &self.reconcile_refused,
            ),
            (
                "regmirror_ami_errors_total",
                "AMI audits that failed",
                &self.ami_errors,
            ),
            (
                "regmirror_storm_holds_total",
                "registration storms during which new work on the nodes waited (farm.storm_hold)",
                &self.storm_holds,
            ),
        ] {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {}", get(c));
        }

        family(
            &mut o,
            "regmirror_nodes_down",
            "gauge",
            "nodes marked down by probing",
        );
        let _ = writeln!(o, "regmirror_nodes_down {}", get(&self.nodes_down));
        family(
            &mut o,
            "regmirror_storm_holding",
            "gauge",
            "1 while a registration storm holds new work on the nodes",
        );
        let _ = writeln!(o, "regmirror_storm_holding {}", get(&self.storm_holding));
        family(
            &mut o,
            "regmirror_ha_active",
            "gauge",
            "1 while this instance registers on the nodes, 0 in standby",
        );
        let _ = writeln!(o, "regmirror_ha_active {}", get(&self.ha_active));
        family(
            &mut o,
            "regmirror_ha_takeovers_total",
            "counter",
            "times this secondary took over from an unanswering primary",
        );
        let _ = writeln!(
            o,
            "regmirror_ha_takeovers_total {}",
            get(&self.ha_takeovers)
        );

        family(
            &mut o,
            "regmirror_register_responses_total",
            "counter",
            "final responses to REGISTER by status code",
        );
        if let Ok(m) = self.register_results.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(
                    o,
                    "regmirror_register_responses_total{{code=\"{code}\"}} {n}"
                );
            }
        }

        family(
            &mut o,
            "regmirror_register_latency_seconds",
            "histogram",
            "REGISTER transaction latency, first send to final response",
        );
        if let Ok(m) = self.register_latency.lock() {
            for (node, h) in m.iter() {
                let node = label(node);
                let mut cum = 0;
                for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                    cum += h.buckets[i];
                    let _ = writeln!(
                        o,
                        "regmirror_register_latency_seconds_bucket{{node=\"{node}\",le=\"{b}\"}} {cum}"
                    );
                }
                let _ = writeln!(
                    o,
                    "regmirror_register_latency_seconds_bucket{{node=\"{node}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    o,
                    "regmirror_register_latency_seconds_sum{{node=\"{node}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    o,
                    "regmirror_register_latency_seconds_count{{node=\"{node}\"}} {}",
                    h.count
                );
            }
        }

        family(
            &mut o,
            "regmirror_binding_transitions_total",
            "counter",
            "binding state changes by node and new state (each `failed` schedules a retry)",
        );
        if let Ok(m) = self.binding_transitions.lock() {
            for (node, states) in m.iter() {
                for (state, n) in states {
                    let _ = writeln!(
                        o,
                        "regmirror_binding_transitions_total{{node=\"{}\",state=\"{state}\"}} {n}",
                        label(node)
                    );
                }
            }
        }

        if let Some(f) = farm {
            render_farm(&mut o, f);
        }
        o
    }
}

fn render_farm(o: &mut String, f: &FarmStatus) {
    let s = &f.stats;
    for (name, help, v) in [
        (
            "regmirror_transactions_total",
            "REGISTER transactions started",
            s.transactions,
        ),
        (
            "regmirror_retransmits_total",
            "REGISTER retransmissions (UDP timer E)",
            s.retransmits,
        ),
        (
            "regmirror_transaction_timeouts_total",
            "REGISTER transactions that reached Timer F",
            s.timeouts,
        ),
        (
            "regmirror_challenges_total",
            "digest challenges answered",
            s.challenges,
        ),
        (
            "regmirror_credential_rejected_total",
            "fresh digest answers the node rejected",
            s.credential_rejected,
        ),
        (
            "regmirror_stray_responses_total",
            "responses matching no transaction",
            s.stray_responses,
        ),
        (
            "regmirror_storm_deferred_refreshes_total",
            "refreshes that fell due in a storm hold and waited for its end",
            s.refreshes_deferred,
        ),
    ] {
        family(o, name, "counter", help);
        let _ = writeln!(o, "{name} {v}");
    }
    family(
        o,
        "regmirror_live_aors",
        "gauge",
        "AORs Kamailio holds live (desired on every node)",
    );
    let _ = writeln!(o, "regmirror_live_aors {}", f.live_aors);
    family(
        o,
        "regmirror_queued_bindings",
        "gauge",
        "bindings waiting for their node's send budget",
    );
    let _ = writeln!(o, "regmirror_queued_bindings {}", s.queued);
    family(
        o,
        "regmirror_bindings",
        "gauge",
        "bindings by node and state",
    );
    for n in &f.nodes {
        let node = label(&n.name);
        for (state, v) in [
            ("registered", n.confirmed),
            ("registering", n.registering),
            ("unregistering", n.unregistering),
            ("failed", n.failing),
        ] {
            let _ = writeln!(
                o,
                "regmirror_bindings{{node=\"{node}\",state=\"{state}\"}} {v}"
            );
        }
    }
    family(
        o,
        "regmirror_binding_drift",
        "gauge",
        "bindings differing from the desired state, by node",
    );
    for n in &f.nodes {
        let _ = writeln!(
            o,
            "regmirror_binding_drift{{node=\"{}\"}} {}",
            label(&n.name),
            n.drift
        );
    }
    // One series per node for each of these, read straight from the node's status row (f64
    // prints integers without a fraction, exactly up to 2^53).
    type NodeValue = fn(&crate::status::NodeRow) -> f64;
    let per_node: [(&str, &str, &str, NodeValue); 9] = [
        (
            "regmirror_node_desired_bindings",
            "gauge",
            "bindings that should be registered on the node now (one per live AOR), by node",
            |n| n.desired as f64,
        ),
        (
            "regmirror_node_confirmed_bindings",
            "gauge",
            "desired bindings the node confirmed and has not possibly lost since, by node",
            |n| n.covered as f64,
        ),
        (
            "regmirror_node_coverage_ratio",
            "gauge",
            "confirmed / desired bindings (1 when none is desired), by node",
            |n| n.coverage_ratio(),
        ),
        (
            "regmirror_node_lag_seconds",
            "gauge",
            "age of the oldest desired binding the node has not confirmed (0 when all are), by node",
            |n| n.lag_seconds,
        ),
        (
            "regmirror_node_inflight",
            "gauge",
            "REGISTER operations in flight, by node",
            |n| n.inflight as f64,
        ),
        (
            "regmirror_node_window",
            "gauge",
            "REGISTER operations the node may have in flight now (farm.latency_target congestion window), by node",
            |n| n.window as f64,
        ),
        (
            "regmirror_register_challenges_total",
            "counter",
            "digest challenges (401/407) received, by node",
            |n| n.challenges as f64,
        ),
        (
            "regmirror_register_preemptive_total",
            "counter",
            "REGISTERs answering the node's latest nonce preemptively (farm.nonce_reuse), by node",
            |n| n.preemptive as f64,
        ),
        (
            "regmirror_register_preemptive_challenged_total",
            "counter",
            "preemptive REGISTERs the node challenged again (nonce expired or another realm), by node",
            |n| n.preemptive_challenged as f64,
        ),
    ];
    for (name, kind, help, get) in per_node {
        family(o, name, kind, help);
        for n in &f.nodes {
            let _ = writeln!(o, "{name}{{node=\"{}\"}} {}", label(&n.name), get(n));
        }
    }
    family(
        o,
        "regmirror_node_up",
        "gauge",
        "1 node up, 0 down (absent while unknown)",
    );
    for n in &f.nodes {
        let v = match n.health.as_str() {
            "up" => 1,
            "down" => 0,
            _ => continue,
        };
        let _ = writeln!(o, "regmirror_node_up{{node=\"{}\"}} {v}", label(&n.name));
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// Label values escaped per the exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line is `name{labels} value` with a family declared before it.
    fn assert_exposition(text: &str) {
        let mut families = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(families.insert(name.to_string()), "family twice: {name}");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            value.parse::<f64>().expect(line);
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| families.contains(*b))
                .unwrap_or(name);
            assert!(families.contains(base), "no TYPE before {line}");
        }
    }

    #[test]
    fn histogram_is_cumulative_and_counts_everything() {
        let m = Metrics::default();
        m.observe_latency("ast1", Duration::from_millis(1));
        m.observe_latency("ast1", Duration::from_millis(30));
        m.observe_latency("ast1", Duration::from_secs(40));
        let t = m.render(None);
        assert_exposition(&t);
        assert!(
            t.contains("regmirror_register_latency_seconds_bucket{node=\"ast1\",le=\"0.002\"} 1")
        );
        assert!(
            t.contains("regmirror_register_latency_seconds_bucket{node=\"ast1\",le=\"0.05\"} 2")
        );
        assert!(t.contains("regmirror_register_latency_seconds_bucket{node=\"ast1\",le=\"32\"} 2"));
        assert!(
            t.contains("regmirror_register_latency_seconds_bucket{node=\"ast1\",le=\"+Inf\"} 3")
        );
        assert!(t.contains("regmirror_register_latency_seconds_count{node=\"ast1\"} 3"));
    }

    #[test]
    fn farm_gauges_render() {
        let m = Metrics::default();
        m.count_result(200);
        m.count_result(401);
        m.count_transition("ast1", "registered");
        let mut f = FarmStatus::default();
        f.nodes.push(crate::status::NodeRow {
            name: "ast1".into(),
            health: "up".into(),
            confirmed: 3,
            drift: 1,
            challenges: 2,
            preemptive: 40,
            preemptive_challenged: 1,
            inflight: 5,
            window: 12,
            ..Default::default()
        });
        let t = m.render(Some(&f));
        assert_exposition(&t);
        assert!(t.contains("regmirror_node_window{node=\"ast1\"} 12"));
        assert!(t.contains("regmirror_node_inflight{node=\"ast1\"} 5"));
        assert!(t.contains("regmirror_register_responses_total{code=\"200\"} 1"));
        assert!(t.contains("regmirror_bindings{node=\"ast1\",state=\"registered\"} 3"));
        assert!(t.contains("regmirror_binding_drift{node=\"ast1\"} 1"));
        assert!(t.contains("regmirror_node_up{node=\"ast1\"} 1"));
        assert!(t.contains("regmirror_register_challenges_total{node=\"ast1\"} 2"));
        assert!(t.contains("regmirror_register_preemptive_total{node=\"ast1\"} 40"));
        assert!(t.contains("regmirror_register_preemptive_challenged_total{node=\"ast1\"} 1"));
    }

    #[test]
    fn node_coverage_and_lag_gauges_render() {
        let mut f = FarmStatus::default();
        for (name, desired, covered, lag) in [("ast1", 8, 6, 12.5), ("ast2", 0, 0, 0.0)] {
            f.nodes.push(crate::status::NodeRow {
                name: name.into(),
                desired,
                covered,
                lag_seconds: lag,
                ..Default::default()
            });
        }
        let t = Metrics::default().render(Some(&f));
        assert_exposition(&t);
        for family in [
            "regmirror_node_desired_bindings",
            "regmirror_node_confirmed_bindings",
            "regmirror_node_coverage_ratio",
            "regmirror_node_lag_seconds",
        ] {
            assert!(t.contains(&format!("# HELP {family} ")), "{family}");
            assert!(t.contains(&format!("# TYPE {family} gauge\n")), "{family}");
        }
        for line in [
            "regmirror_node_desired_bindings{node=\"ast1\"} 8",
            "regmirror_node_confirmed_bindings{node=\"ast1\"} 6",
            "regmirror_node_coverage_ratio{node=\"ast1\"} 0.75",
            "regmirror_node_lag_seconds{node=\"ast1\"} 12.5",
            // Nothing desired: fully covered, no lag (what a dashboard's "caught up" tests).
            "regmirror_node_desired_bindings{node=\"ast2\"} 0",
            "regmirror_node_coverage_ratio{node=\"ast2\"} 1",
            "regmirror_node_lag_seconds{node=\"ast2\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "no `{line}` in\n{t}");
        }
    }
}
