//! regmirror's metrics, exposed through `prometheus-client` (OpenMetrics text). Counters and
//! gauges the driver updates live in the registry; what describes the farm now (bindings by
//! state, coverage, lag, drift, node health) is read from a `FarmStatus` snapshot taken when
//! `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::status::FarmStatus;

/// Upper bounds (seconds) of the REGISTER latency buckets: loopback to Timer F.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 8.0, 32.0,
];

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Label = (&'static str, String);
type Latency = Family<[Label; 1], Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    /// The farm snapshot the collector reads while one render runs.
    farm: Arc<Mutex<Option<FarmStatus>>>,
    render: Mutex<()>,
    pub notifications_accepted: Counter,
    pub notifications_malformed: Counter,
    pub notifications_untrusted: Counter,
    /// Answered 503 while shutting down.
    pub notifications_refused: Counter,
    pub notifications_forged: Counter,
    pub notifications_stale: Counter,
    pub datagrams_malformed: Counter,
    pub datagrams_oversized: Counter,
    pub credential_lookups: Counter,
    /// Statements that read credentials (a batch of lookups is one).
    pub credential_queries: Counter,
    pub credential_lookup_errors: Counter,
    pub credential_unknown_users: Counter,
    pub send_errors: Counter,
    /// New REGISTER transactions after a failed one on the same binding.
    pub register_retries: Counter,
    /// AORs replayed onto a node that came back or restarted empty (the core counts them).
    pub replays: Counter,
    /// Bindings found missing or stale by the audit and repaired.
    pub drift_repaired: Counter,
    /// The nodes' `ContactStatus` events about our contacts: there (created, updated) and
    /// removed.
    pub contact_events_present: Counter,
    pub contact_events_removed: Counter,
    pub reconcile_runs: Counter,
    pub reconcile_errors: Counter,
    pub reconcile_refused: Counter,
    pub ami_errors: Counter,
    /// Registration storms that held new work (`farm.storm_hold`).
    pub storm_holds: Counter,
    /// 1 while a storm holds new work.
    pub storm_holding: Gauge,
    pub nodes_down: Gauge,
    /// 1 while this instance talks to the nodes (always, without `[ha]`).
    pub ha_active: Gauge,
    /// Times this secondary took over from its primary.
    pub ha_takeovers: Counter,
    /// Final responses to our REGISTERs by status code.
    register_results: Family<[Label; 1], Counter>,
    /// Binding state changes by (node, state).
    binding_transitions: Family<[Label; 2], Counter>,
    /// REGISTER transaction latency (first send to final response) by node.
    register_latency: Latency,
    /// The families' members seen so far, found again without building their labels (these
    /// count every response and every state change).
    seen_results: RwLock<HashMap<u16, Counter>>,
    seen_nodes: RwLock<HashMap<String, NodeSeries>>,
}

/// One node's members of the per-node families.
#[derive(Default)]
struct NodeSeries {
    latency: Option<Histogram>,
    transitions: HashMap<&'static str, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::default();
        let notifications = Family::<[Label; 1], Counter>::default();
        r.register(
            "regmirror_notifications",
            "Kamailio notifications by outcome",
            notifications.clone(),
        );
        let outcome = |result: &str| {
            notifications
                .get_or_create(&[("result", result.to_string())])
                .clone()
        };
        let datagrams = Family::<[Label; 1], Counter>::default();
        r.register(
            "regmirror_datagrams_rejected",
            "datagrams dropped before parsing",
            datagrams.clone(),
        );
        let rejected = |reason: &str| {
            datagrams
                .get_or_create(&[("reason", reason.to_string())])
                .clone()
        };
        let contact_events = Family::<[Label; 1], Counter>::default();
        r.register(
            "regmirror_contact_events",
            "the nodes' ContactStatus events about regmirror's contacts, by change",
            contact_events.clone(),
        );
        let contact_event = |change: &str| {
            contact_events
                .get_or_create(&[("change", change.to_string())])
                .clone()
        };
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let credential_lookups = counter(
            "regmirror_credential_lookups",
            "credential lookups in the database",
        );
        let credential_queries = counter(
            "regmirror_credential_queries",
            "database statements that read credentials (one per batch of lookups)",
        );
        let credential_lookup_errors = counter(
            "regmirror_db_errors",
            "failed database queries (each is retried)",
        );
        let credential_unknown_users = counter(
            "regmirror_unknown_users",
            "notifications for users with no credential",
        );
        let send_errors = counter("regmirror_send_errors", "datagrams the socket refused");
        let register_retries = counter(
            "regmirror_register_retries",
            "REGISTERs retried after an error response or a timeout",
        );
        let replays = counter(
            "regmirror_replays",
            "AORs replayed onto a node that came back",
        );
        let drift_repaired = counter(
            "regmirror_drift_repaired",
            "bindings found missing or stale on a node by the audit and repaired",
        );
        let reconcile_runs = counter(
            "regmirror_reconcile_runs",
            "reconciliations from Kamailio's location table",
        );
        let reconcile_errors = counter(
            "regmirror_reconcile_errors",
            "reconciliations that failed (retried with backoff)",
        );
        let reconcile_refused = counter(
            "regmirror_reconcile_refused",
            "reconciliations (or their credential removals) refused by the circuit breaker",
        );
        let ami_errors = counter("regmirror_ami_errors", "AMI audits that failed");
        let storm_holds = counter(
            "regmirror_storm_holds",
            "registration storms during which new work on the nodes waited (farm.storm_hold)",
        );
        let ha_takeovers = counter(
            "regmirror_ha_takeovers",
            "times this secondary took over from an unanswering primary",
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            r.register(name, help, g.clone());
            g
        };
        gauge("regmirror_up", "1 while the service runs").set(1);
        let nodes_down = gauge("regmirror_nodes_down", "nodes marked down by probing");
        let storm_holding = gauge(
            "regmirror_storm_holding",
            "1 while a registration storm holds new work on the nodes",
        );
        let ha_active = gauge(
            "regmirror_ha_active",
            "1 while this instance registers on the nodes, 0 in standby",
        );
        let register_results = Family::default();
        r.register(
            "regmirror_register_responses",
            "final responses to REGISTER by status code",
            register_results.clone(),
        );
        let register_latency: Latency =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        r.register(
            "regmirror_register_latency_seconds",
            "REGISTER transaction latency, first send to final response",
            register_latency.clone(),
        );
        let binding_transitions = Family::default();
        r.register(
            "regmirror_binding_transitions",
            "binding state changes by node and new state (each `failed` schedules a retry)",
            binding_transitions.clone(),
        );
        let farm = Arc::new(Mutex::new(None));
        r.register_collector(Box::new(FarmCollector(farm.clone())));
        Metrics {
            registry: r,
            farm,
            render: Mutex::new(()),
            contact_events_present: contact_event("present"),
            contact_events_removed: contact_event("removed"),
            notifications_accepted: outcome("accepted"),
            notifications_malformed: outcome("malformed"),
            notifications_untrusted: outcome("untrusted"),
            notifications_forged: outcome("forged"),
            notifications_stale: outcome("stale"),
            notifications_refused: outcome("refused"),
            datagrams_malformed: rejected("malformed"),
            datagrams_oversized: rejected("oversized"),
            credential_lookups,
            credential_queries,
            credential_lookup_errors,
            credential_unknown_users,
            send_errors,
            register_retries,
            replays,
            drift_repaired,
            reconcile_runs,
            reconcile_errors,
            reconcile_refused,
            ami_errors,
            storm_holds,
            storm_holding,
            nodes_down,
            ha_active,
            ha_takeovers,
            register_results,
            binding_transitions,
            register_latency,
            seen_results: RwLock::default(),
            seen_nodes: RwLock::default(),
        }
    }
}

impl Metrics {
    pub fn inc(c: &Counter) {
        c.inc();
    }

    pub fn count_result(&self, code: u16) {
        if let Some(c) = read(&self.seen_results).get(&code) {
            c.inc();
            return;
        }
        let c = self
            .register_results
            .get_or_create(&[("code", code.to_string())])
            .clone();
        c.inc();
        write(&self.seen_results).insert(code, c);
    }

    pub fn count_transition(&self, node: &str, state: &'static str) {
        self.transition_counter(node, state).inc();
    }

    /// State changes to `state` on `node` so far.
    pub fn transitions(&self, node: &str, state: &'static str) -> u64 {
        self.transition_counter(node, state).get()
    }

    fn transition_counter(&self, node: &str, state: &'static str) -> Counter {
        if let Some(c) = read(&self.seen_nodes)
            .get(node)
            .and_then(|n| n.transitions.get(state))
        {
            return c.clone();
        }
        let c = self
            .binding_transitions
            .get_or_create(&[("node", node.to_string()), ("state", state.to_string())])
            .clone();
        let mut seen = write(&self.seen_nodes);
        let series = seen.entry(node.to_string()).or_default();
        series.transitions.insert(state, c.clone());
        c
    }

    pub fn observe_latency(&self, node: &str, d: Duration) {
        if let Some(h) = read(&self.seen_nodes)
            .get(node)
            .and_then(|n| n.latency.as_ref())
        {
            return h.observe(d.as_secs_f64());
        }
        let h = self
            .register_latency
            .get_or_create(&[("node", node.to_string())])
            .clone();
        h.observe(d.as_secs_f64());
        write(&self.seen_nodes)
            .entry(node.to_string())
            .or_default()
            .latency = Some(h);
    }

    /// OpenMetrics text. `farm` adds the gauges of the current state (absent when the driver
    /// did not answer in time: the counters still render).
    pub fn render(&self, farm: Option<&FarmStatus>) -> String {
        // One render at a time: the collector reads the snapshot this one set.
        let _one = self.render.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(mut f) = self.farm.lock() {
            *f = farm.cloned();
        }
        let mut o = String::with_capacity(8192);
        let _ = prometheus_client::encoding::text::encode(&mut o, &self.registry);
        o
    }
}

/// The farm's gauges, from the snapshot of the render in progress.
#[derive(Debug)]
struct FarmCollector(Arc<Mutex<Option<FarmStatus>>>);

impl Collector for FarmCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Ok(farm) = self.0.lock() else {
            return Ok(());
        };
        let Some(f) = farm.as_ref() else {
            return Ok(());
        };
        let s = &f.stats;
        for (name, help, v) in [
            (
                "regmirror_transactions",
                "REGISTER transactions started",
                s.transactions,
            ),
            (
                "regmirror_retransmits",
                "REGISTER retransmissions (UDP timer E)",
                s.retransmits,
            ),
            (
                "regmirror_transaction_timeouts",
                "REGISTER transactions that reached Timer F",
                s.timeouts,
            ),
            (
                "regmirror_challenges",
                "digest challenges answered",
                s.challenges,
            ),
            (
                "regmirror_credential_rejected",
                "fresh digest answers the node rejected",
                s.credential_rejected,
            ),
            (
                "regmirror_stray_responses",
                "responses matching no transaction",
                s.stray_responses,
            ),
            (
                "regmirror_storm_deferred_refreshes",
                "refreshes that fell due in a storm hold and waited for its end",
                s.refreshes_deferred,
            ),
        ] {
            ConstCounter::new(v).encode(e.encode_descriptor(
                name,
                help,
                None,
                MetricType::Counter,
            )?)?;
        }
        for (name, help, v) in [
            (
                "regmirror_live_aors",
                "AORs Kamailio holds live (desired on every node)",
                f.live_aors,
            ),
            (
                "regmirror_queued_bindings",
                "bindings waiting for their node's send budget",
                s.queued,
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)?;
        }
        let mut m = e.encode_descriptor(
            "regmirror_bindings",
            "bindings by node and state",
            None,
            MetricType::Gauge,
        )?;
        for n in &f.nodes {
            for (state, v) in [
                ("registered", n.confirmed),
                ("registering", n.registering),
                ("unregistering", n.unregistering),
                ("failed", n.failing),
            ] {
                let labels = [("node", n.name.as_str()), ("state", state)];
                gauge(v).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = e.encode_descriptor(
            "regmirror_binding_drift",
            "bindings differing from the desired state, by node",
            None,
            MetricType::Gauge,
        )?;
        for n in &f.nodes {
            gauge(n.drift).encode(m.encode_family(&[("node", n.name.as_str())])?)?;
        }
        // One series per node for each of these, read straight from the node's status row.
        type NodeValue = fn(&crate::status::NodeRow) -> f64;
        let per_node: [(&str, MetricType, &str, NodeValue); 10] = [
        (
            "regmirror_node_desired_bindings",
            MetricType::Gauge,
            "bindings that should be registered on the node now (one per live AOR), by node",
            |n| n.desired as f64,
        ),
        (
            "regmirror_node_confirmed_bindings",
            MetricType::Gauge,
            "desired bindings the node confirmed and has not possibly lost since, by node",
            |n| n.covered as f64,
        ),
        (
            "regmirror_node_coverage_ratio",
            MetricType::Gauge,
            "confirmed / desired bindings (1 when none is desired), by node",
            |n| n.coverage_ratio(),
        ),
        (
            "regmirror_node_lag_seconds",
            MetricType::Gauge,
            "age of the oldest desired binding the node has not confirmed (0 when all are), by node",
            |n| n.lag_seconds,
        ),
        (
            "regmirror_node_maintenance",
            MetricType::Gauge,
            "1 while Asterisk holds the node's Kamailio endpoint in maintenance (followed over AMI), by node",
            |n| f64::from(u8::from(n.maintenance)),
        ),
        (
            "regmirror_node_inflight",
            MetricType::Gauge,
            "REGISTER operations in flight, by node",
            |n| n.inflight as f64,
        ),
        (
            "regmirror_node_window",
            MetricType::Gauge,
            "REGISTER operations the node may have in flight now (farm.latency_target congestion window), by node",
            |n| n.window as f64,
        ),
        (
            "regmirror_register_challenges",
            MetricType::Counter,
            "digest challenges (401/407) received, by node",
            |n| n.challenges as f64,
        ),
        (
            "regmirror_register_preemptive",
            MetricType::Counter,
            "REGISTERs answering the node's latest nonce preemptively (farm.nonce_reuse), by node",
            |n| n.preemptive as f64,
        ),
        (
            "regmirror_register_preemptive_challenged",
            MetricType::Counter,
            "preemptive REGISTERs the node challenged again (nonce expired or another realm), by node",
            |n| n.preemptive_challenged as f64,
        ),
    ];
        for (name, kind, help, get) in per_node {
            let mut m = e.encode_descriptor(name, help, None, kind)?;
            for n in &f.nodes {
                let labels = [("node", n.name.as_str())];
                let v = get(n);
                match kind {
                    MetricType::Counter => {
                        ConstCounter::new(v as u64).encode(m.encode_family(&labels)?)?
                    }
                    // Whole numbers print without a fraction, as they did before.
                    _ if v.fract() == 0.0 && v.abs() < 9.0e15 => {
                        ConstGauge::new(v as i64).encode(m.encode_family(&labels)?)?
                    }
                    _ => ConstGauge::new(v).encode(m.encode_family(&labels)?)?,
                }
            }
        }
        let mut m = e.encode_descriptor(
            "regmirror_node_up",
            "1 node up, 0 down (absent while unknown)",
            None,
            MetricType::Gauge,
        )?;
        for n in &f.nodes {
            let v = match n.health.as_str() {
                "up" => 1,
                "down" => 0,
                _ => continue,
            };
            ConstGauge::new(v).encode(m.encode_family(&[("node", n.name.as_str())])?)?;
        }
        Ok(())
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn gauge(v: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line is `name{labels} value` with a family declared before it; the text
    /// ends with OpenMetrics' `# EOF`.
    fn assert_exposition(text: &str) {
        assert!(text.ends_with("# EOF\n"), "{text}");
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
            let base = ["_bucket", "_sum", "_count", "_total"]
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
            t.contains("regmirror_register_latency_seconds_bucket{le=\"0.002\",node=\"ast1\"} 1")
        );
        assert!(
            t.contains("regmirror_register_latency_seconds_bucket{le=\"0.05\",node=\"ast1\"} 2")
        );
        assert!(
            t.contains("regmirror_register_latency_seconds_bucket{le=\"32.0\",node=\"ast1\"} 2")
        );
        assert!(
            t.contains("regmirror_register_latency_seconds_bucket{le=\"+Inf\",node=\"ast1\"} 3")
        );
        assert!(t.contains("regmirror_register_latency_seconds_count{node=\"ast1\"} 3"));
    }

    #[test]
    fn members_found_again_count_in_the_same_series() {
        let m = Metrics::default();
        for _ in 0..3 {
            m.count_result(401);
            m.count_transition("ast1", "registered");
            m.observe_latency("ast1", Duration::from_millis(3));
        }
        let t = m.render(None);
        assert_exposition(&t);
        assert!(
            t.contains("regmirror_register_responses_total{code=\"401\"} 3\n"),
            "{t}"
        );
        assert!(t.contains(
            "regmirror_binding_transitions_total{node=\"ast1\",state=\"registered\"} 3\n"
        ));
        assert!(t.contains("regmirror_register_latency_seconds_count{node=\"ast1\"} 3\n"));
        assert_eq!(m.transitions("ast1", "registered"), 3);
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
