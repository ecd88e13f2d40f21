//! Counters the driver updates and the admin listener renders in Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    pub notifications_accepted: AtomicU64,
    pub notifications_malformed: AtomicU64,
    pub notifications_untrusted: AtomicU64,
    pub datagrams_malformed: AtomicU64,
    pub datagrams_oversized: AtomicU64,
    pub credential_lookups: AtomicU64,
    pub credential_lookup_errors: AtomicU64,
    pub credential_unknown_users: AtomicU64,
    pub send_errors: AtomicU64,
    /// Farm resilience: audit repairs, reconciliations, AMI failures, nodes down (gauge).
    pub drift_repaired: AtomicU64,
    pub reconcile_runs: AtomicU64,
    pub reconcile_errors: AtomicU64,
    pub ami_errors: AtomicU64,
    pub nodes_down: AtomicU64,
    /// Final responses to our REGISTERs by status code.
    pub register_results: Mutex<BTreeMap<u16, u64>>,
    /// Binding state changes by (node, state).
    pub binding_transitions: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Current bindings by (node, state), refreshed by the driver.
    pub bindings: Mutex<BTreeMap<(String, &'static str), u64>>,
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
            *m.entry((node.to_string(), state)).or_default() += 1;
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "regmirror_notifications_total{result=\"accepted\"}",
                "notifications",
                &self.notifications_accepted,
            ),
            (
                "regmirror_notifications_total{result=\"malformed\"}",
                "",
                &self.notifications_malformed,
            ),
            (
                "regmirror_notifications_total{result=\"untrusted\"}",
                "",
                &self.notifications_untrusted,
            ),
            (
                "regmirror_datagrams_rejected_total{reason=\"malformed\"}",
                "datagrams",
                &self.datagrams_malformed,
            ),
            (
                "regmirror_datagrams_rejected_total{reason=\"oversized\"}",
                "",
                &self.datagrams_oversized,
            ),
            (
                "regmirror_credential_lookups_total",
                "credential_lookups",
                &self.credential_lookups,
            ),
            (
                "regmirror_db_errors_total",
                "db_errors",
                &self.credential_lookup_errors,
            ),
            (
                "regmirror_unknown_users_total",
                "unknown_users",
                &self.credential_unknown_users,
            ),
            (
                "regmirror_send_errors_total",
                "send_errors",
                &self.send_errors,
            ),
            ("regmirror_up", "up", &AtomicU64::new(1)),
        ];
        for (name, family, c) in counters {
            if !family.is_empty() {
                let base = name.split('{').next().unwrap_or(name);
                let kind = if base.ends_with("_total") {
                    "counter"
                } else {
                    "gauge"
                };
                let _ = writeln!(o, "# TYPE {base} {kind}");
            }
            let _ = writeln!(o, "{name} {}", c.load(Ordering::Relaxed));
        }
        for (name, kind, c) in [
            (
                "regmirror_drift_repaired_total",
                "counter",
                &self.drift_repaired,
            ),
            (
                "regmirror_reconcile_runs_total",
                "counter",
                &self.reconcile_runs,
            ),
            (
                "regmirror_reconcile_errors_total",
                "counter",
                &self.reconcile_errors,
            ),
            ("regmirror_ami_errors_total", "counter", &self.ami_errors),
            ("regmirror_nodes_down", "gauge", &self.nodes_down),
        ] {
            let _ = writeln!(
                o,
                "# TYPE {name} {kind}\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(o, "# TYPE regmirror_register_responses_total counter");
        if let Ok(m) = self.register_results.lock() {
            for (code, n) in m.iter() {
                let _ = writeln!(
                    o,
                    "regmirror_register_responses_total{{code=\"{code}\"}} {n}"
                );
            }
        }
        let _ = writeln!(o, "# TYPE regmirror_binding_transitions_total counter");
        if let Ok(m) = self.binding_transitions.lock() {
            for ((node, state), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "regmirror_binding_transitions_total{{node=\"{node}\",state=\"{state}\"}} {n}"
                );
            }
        }
        let _ = writeln!(o, "# TYPE regmirror_bindings gauge");
        if let Ok(m) = self.bindings.lock() {
            for ((node, state), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "regmirror_bindings{{node=\"{node}\",state=\"{state}\"}} {n}"
                );
            }
        }
        o
    }
}
