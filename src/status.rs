//! What an operator reads about the farm and about one user: the types `/status.json`,
//! `/status/<user>.json`, the status page, `/metrics` and `regmirror status` share, and the
//! builders that read them off the `Mirror`.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::core::mirror::{coverage_ratio, BindingState, BindingView, Mirror, NodeId};

/// One node as `status` shows it. `desired` is the number of live AORs (each is wanted on every
/// node); `drift` counts bindings that differ from that: not (yet) confirmed, or left over.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeRow {
    pub name: String,
    pub address: String,
    /// `up`, `down` or `unknown` (no health probe has answered yet).
    pub health: String,
    /// Asterisk holds the node's Kamailio endpoint in maintenance (`res_pjsip_maintenance`,
    /// followed over AMI): Kamailio's calls go to the other nodes; bindings are kept.
    #[serde(default)]
    pub maintenance: bool,
    /// Bindings that should be on the node now (`core::mirror::Coverage`).
    pub desired: u64,
    /// Bindings in state `registered`, desired or not, being replayed or not.
    pub confirmed: u64,
    /// Desired bindings the node confirmed and has not possibly lost since (a failure, the
    /// node down, its replay): `covered / desired` is the coverage.
    #[serde(default)]
    pub covered: u64,
    /// `covered / desired` in percent, rounded down: 100 only when nothing is missing.
    #[serde(default)]
    pub coverage_percent: f64,
    /// How long the oldest desired binding that is not covered has waited, in seconds (0: none).
    #[serde(default)]
    pub lag_seconds: f64,
    pub registering: u64,
    pub unregistering: u64,
    pub failing: u64,
    pub drift: u64,
    /// Digest challenges (401/407) received from the node.
    #[serde(default)]
    pub challenges: u64,
    /// REGISTERs answering the node's latest nonce preemptively (`farm.nonce_reuse`), and how
    /// many of them the node challenged again: the reuse hit rate is 1 - challenged / preemptive.
    #[serde(default)]
    pub preemptive: u64,
    #[serde(default)]
    pub preemptive_challenged: u64,
    /// REGISTER operations in flight, and how many the node may have now (the congestion
    /// window of `farm.latency_target`, at most `max_inflight_per_node`).
    #[serde(default)]
    pub inflight: u64,
    #[serde(default)]
    pub window: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BindingRow {
    pub user: String,
    pub node: String,
    pub state: String,
    pub last_result: String,
    /// Seconds until the next refresh, retransmission or retry.
    #[serde(default)]
    pub next_action_seconds: Option<f64>,
    /// How long the binding has differed from what is wanted, in seconds (none: it does not).
    #[serde(default)]
    pub waiting_seconds: Option<f64>,
}

/// The order of a binding list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BindingSort {
    /// Bindings that are not registered first (then by user).
    #[default]
    Problems,
    User,
    Node,
    /// The soonest refresh, retransmission or retry first.
    Next,
    /// The longest waiting first (a binding not yet on its node, or left over), then the rest
    /// by user.
    Age,
}

impl BindingSort {
    pub const ALL: [BindingSort; 5] = [
        BindingSort::Problems,
        BindingSort::User,
        BindingSort::Node,
        BindingSort::Next,
        BindingSort::Age,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BindingSort::Problems => "problems",
            BindingSort::User => "user",
            BindingSort::Node => "node",
            BindingSort::Next => "next",
            BindingSort::Age => "age",
        }
    }

    pub fn parse(s: &str) -> Option<BindingSort> {
        BindingSort::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

/// Which bindings a farm summary lists: at most `max` (0: counts only) of those whose user
/// starts with `user_prefix`, in `sort` order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BindingList {
    pub max: usize,
    pub user_prefix: String,
    pub sort: BindingSort,
}

impl BindingList {
    /// Counts only.
    pub fn none() -> BindingList {
        BindingList::default()
    }
}

/// The `Mirror`'s counters, for `/metrics` and the status page.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsView {
    pub transactions: u64,
    pub retransmits: u64,
    pub timeouts: u64,
    pub challenges: u64,
    pub credential_rejected: u64,
    pub stray_responses: u64,
    pub queued: u64,
    #[serde(default)]
    pub refreshes_deferred: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct FarmStatus {
    pub version: String,
    pub uptime_seconds: u64,
    pub live_aors: u64,
    pub nodes: Vec<NodeRow>,
    pub stats: StatsView,
    /// Total bindings, of which `bindings` lists the first few of the `bindings_matched` that
    /// the query's `BindingList` asked for.
    pub bindings_total: u64,
    #[serde(default)]
    pub bindings_matched: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<BindingRow>,
    /// Role in an active/standby pair (`standalone` without `[ha]`).
    #[serde(default)]
    pub ha: HaView,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserBinding {
    pub node: String,
    pub health: String,
    /// The user's own endpoint is in maintenance on the node: its REGISTERs get 503 and wait
    /// for the node's `Retry-After`.
    #[serde(default)]
    pub maintenance: bool,
    /// `registered`, `registering`, `unregistering`, `failed` or `absent`.
    pub state: String,
    pub last_result: String,
    /// Seconds until the next refresh, retransmission or retry.
    pub next_action_seconds: Option<f64>,
    pub granted_expires: u32,
    pub failures: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserStatus {
    pub user: String,
    /// Kamailio holds the AOR live: bindings are wanted on every node.
    pub live: bool,
    /// One row per node, `absent` where the user has no binding.
    pub nodes: Vec<UserBinding>,
}

impl UserStatus {
    /// Whether any node holds (or is working on) a binding.
    pub fn has_binding(&self) -> bool {
        self.nodes.iter().any(|b| b.state != "absent")
    }
}

/// A node's health as people read it: `up`, or `up, maintenance`.
pub fn health_text(health: &str, maintenance: bool) -> String {
    if maintenance {
        format!("{health}, maintenance")
    } else {
        health.to_string()
    }
}

impl NodeRow {
    /// `covered / desired`, 1 when nothing is desired.
    pub fn coverage_ratio(&self) -> f64 {
        coverage_ratio(self.desired, self.covered)
    }
}

/// `part / whole` in percent rounded down to 0.1 (in integers: 99.96% must not read 100%),
/// 100 when `whole` is 0.
fn floor_percent(whole: u64, part: u64) -> f64 {
    match part.min(whole).saturating_mul(1000).checked_div(whole) {
        Some(permille) => permille as f64 / 10.0,
        None => 100.0,
    }
}

/// `coverage_percent` as people read it: `100%`, `97.3%`.
pub fn percent_text(p: f64) -> String {
    format!("{p}%")
}

/// `lag_seconds` as people read it: `0 s`, `0.4 s`, `12 s`.
pub fn lag_text(s: f64) -> String {
    match s {
        s if s <= 0.0 => "0 s".into(),
        s if s < 10.0 => format!("{s:.1} s"),
        s => format!("{s:.0} s"),
    }
}

/// Builds the farm summary with the binding rows `list` asks for, in one go. `health` gives
/// each node's health (`unknown` until probed). The driver runs the same in slices
/// (`farm_summary`, then a `BindingScan` a chunk per turn).
pub fn farm_status(
    mirror: &Mirror,
    now: Instant,
    health: impl Fn(NodeId) -> &'static str,
    list: &BindingList,
) -> FarmStatus {
    let mut status = farm_summary(mirror, now, health);
    let mut scan = BindingScan::new(list.clone());
    scan.advance(mirror, now, usize::MAX); // the whole table at once
    scan.finish(mirror, now, &mut status);
    status
}

/// The farm summary without binding rows: per-node counts kept as bindings change, so O(nodes).
pub fn farm_summary(
    mirror: &Mirror,
    now: Instant,
    health: impl Fn(NodeId) -> &'static str,
) -> FarmStatus {
    let nodes: Vec<NodeRow> = mirror
        .nodes()
        .enumerate()
        .map(|(i, n)| {
            let h = mirror.node_health(i as NodeId);
            let c = h.as_ref().map(|h| h.coverage).unwrap_or_default();
            let counts = h.as_ref().map(|h| h.counts).unwrap_or_default();
            NodeRow {
                name: n.name.clone(),
                address: n.addr.to_string(),
                health: health(i as NodeId).to_string(),
                desired: c.desired as u64,
                covered: c.confirmed as u64,
                coverage_percent: floor_percent(c.desired as u64, c.confirmed as u64),
                // Milliseconds are plenty and keep the JSON short; rounded up, so a lag shows.
                lag_seconds: (c.lag(now).as_secs_f64() * 1000.0).ceil() / 1000.0,
                challenges: h.as_ref().map_or(0, |h| h.challenges),
                preemptive: h.as_ref().map_or(0, |h| h.preemptive),
                preemptive_challenged: h.as_ref().map_or(0, |h| h.preemptive_challenged),
                inflight: h.as_ref().map_or(0, |h| h.inflight as u64),
                window: h.as_ref().map_or(0, |h| h.window as u64),
                confirmed: counts.registered as u64,
                registering: counts.registering as u64,
                unregistering: counts.unregistering as u64,
                failing: counts.failed as u64,
                drift: counts.drift(c.desired) as u64,
                ..Default::default()
            }
        })
        .collect();
    let stats = mirror.stats();
    FarmStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_seconds: 0,
        live_aors: stats.live_aors as u64,
        nodes,
        stats: StatsView {
            transactions: stats.transactions,
            retransmits: stats.retransmits,
            timeouts: stats.timeouts,
            challenges: stats.challenges,
            credential_rejected: stats.credential_rejected,
            stray_responses: stats.stray_responses,
            queued: stats.queued as u64,
            refreshes_deferred: stats.refreshes_deferred,
        },
        bindings_total: stats.bindings() as u64,
        bindings_matched: 0,
        bindings: Vec::new(),
        ha: Default::default(),
    }
}

/// The page's binding list, built over as many driver turns as it takes (`advance` walks a
/// chunk of the binding table each time), so listing millions of bindings never holds the
/// driver for more than one chunk. Bindings that change meanwhile are listed as the walk finds
/// them: a status page's view, not a snapshot.
#[derive(Debug)]
pub struct BindingScan {
    list: BindingList,
    next: usize,
    /// Binding-table indices of the best candidates so far (at most twice `list.max`).
    kept: Vec<usize>,
    matched: u64,
}

impl BindingScan {
    pub fn new(list: BindingList) -> BindingScan {
        BindingScan {
            list,
            next: 0,
            kept: Vec::new(),
            matched: 0,
        }
    }

    /// Walks up to `budget` more entries of the binding table; whether the walk is done.
    pub fn advance(&mut self, mirror: &Mirror, now: Instant, budget: usize) -> bool {
        let end = mirror.binding_slots();
        if self.list.max == 0 {
            self.next = end;
        }
        let stop = self.next.saturating_add(budget).min(end);
        let order = order(self.list.sort, now);
        for idx in self.next..stop {
            let Some(b) = mirror.binding_at(idx) else {
                continue;
            };
            if !b.aor.starts_with(self.list.user_prefix.as_str()) {
                continue;
            }
            self.matched += 1;
            self.kept.push(idx);
            // Only the first `max` in order are shown: keep at most twice that many, so the
            // list costs O(max) memory, not a sort of every binding.
            if self.kept.len() >= 2 * self.list.max {
                let max = self.list.max;
                let by_order =
                    |i: &usize, j: &usize| match (mirror.binding_at(*i), mirror.binding_at(*j)) {
                        (Some(a), Some(b)) => order(&a, &b),
                        _ => std::cmp::Ordering::Equal,
                    };
                self.kept.retain(|&i| mirror.binding_at(i).is_some());
                if self.kept.len() > max {
                    self.kept.select_nth_unstable_by(max - 1, by_order);
                    self.kept.truncate(max);
                }
            }
        }
        self.next = stop;
        self.next >= end
    }

    /// Puts the rows found into `status`.
    pub fn finish(self, mirror: &Mirror, now: Instant, status: &mut FarmStatus) {
        let mut listed: Vec<BindingView> = self
            .kept
            .iter()
            .filter_map(|&i| mirror.binding_at(i))
            .collect();
        listed.sort_unstable_by(order(self.list.sort, now));
        status.bindings = listed
            .iter()
            .take(self.list.max)
            .map(|b| BindingRow {
                user: b.aor.to_string(),
                node: status
                    .nodes
                    .get(usize::from(b.node))
                    .map_or_else(String::new, |n| n.name.clone()),
                state: b.state.as_str().into(),
                last_result: b.last_result.to_string(),
                next_action_seconds: b
                    .next_action
                    .map(|t| t.saturating_duration_since(now).as_secs_f64().round()),
                waiting_seconds: b
                    .waiting_since
                    .map(|t| now.saturating_duration_since(t).as_secs_f64().round()),
            })
            .collect();
        status.bindings_matched = self.matched;
    }
}

/// The page's order of bindings for `sort`.
fn order(
    sort: BindingSort,
    now: Instant,
) -> impl Fn(&BindingView, &BindingView) -> std::cmp::Ordering {
    let far = now + std::time::Duration::from_secs(86_400 * 365);
    move |a: &BindingView, b: &BindingView| match sort {
        BindingSort::Problems => {
            let ok = |v: &BindingView| v.state == BindingState::Registered;
            (ok(a), a.aor, a.node).cmp(&(ok(b), b.aor, b.node))
        }
        BindingSort::User => (a.aor, a.node).cmp(&(b.aor, b.node)),
        BindingSort::Node => (a.node, a.aor).cmp(&(b.node, b.aor)),
        BindingSort::Next => {
            (a.next_action.unwrap_or(far), a.aor).cmp(&(b.next_action.unwrap_or(far), b.aor))
        }
        BindingSort::Age => (a.waiting_since.unwrap_or(far), a.aor, a.node).cmp(&(
            b.waiting_since.unwrap_or(far),
            b.aor,
            b.node,
        )),
    }
}

/// One user's bindings on every node.
pub fn user_status(
    mirror: &Mirror,
    now: Instant,
    user: &str,
    health: impl Fn(NodeId) -> &'static str,
) -> UserStatus {
    let nodes = mirror
        .nodes()
        .enumerate()
        .map(|(i, n)| {
            let id = i as NodeId;
            let b = mirror.binding(user, id);
            UserBinding {
                node: n.name.clone(),
                health: health(id).to_string(),
                maintenance: false,
                state: b.as_ref().map_or("absent", |b| b.state.as_str()).into(),
                last_result: b
                    .as_ref()
                    .map_or_else(|| "-".into(), |b| b.last_result.to_string()),
                next_action_seconds: b
                    .as_ref()
                    .and_then(|b| b.next_action)
                    .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                granted_expires: b.as_ref().map_or(0, |b| b.granted_expires),
                failures: b.as_ref().map_or(0, |b| b.failures),
            }
        })
        .collect();
    UserStatus {
        user: user.to_string(),
        live: mirror.is_live(now, user),
        nodes,
    }
}

/// `ha` in `/status.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HaView {
    /// `standalone`, `primary` or `secondary`.
    pub role: String,
    /// `active` or `standby`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Consecutive probes the primary left unanswered (secondary only).
    #[serde(default)]
    pub peer_unanswered: u32,
    #[serde(default)]
    pub takeovers: u64,
    /// Live AORs received while standby, applied at takeover.
    #[serde(default)]
    pub standby_aors: u64,
}

impl Default for HaView {
    fn default() -> Self {
        HaView {
            role: "standalone".into(),
            state: "active".into(),
            peer: None,
            peer_unanswered: 0,
            takeovers: 0,
            standby_aors: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_percent_rounds_down() {
        assert_eq!(floor_percent(0, 0), 100.0);
        assert_eq!(floor_percent(10_000, 10_000), 100.0);
        assert_eq!(floor_percent(10_000, 9_999), 99.9);
        assert_eq!(floor_percent(1000, 997), 99.7);
        assert_eq!(floor_percent(3, 0), 0.0);
        assert_eq!(percent_text(99.9), "99.9%");
        assert_eq!(percent_text(100.0), "100%");
    }
}
