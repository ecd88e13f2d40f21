//! Checks of a loaded configuration: each bad value is refused with its key and the reason.

use super::*;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.sip;
        if s.domain.is_empty() || s.domain.contains(|c: char| c.is_whitespace() || c == '@') {
            return Err(invalid(
                "sip.domain",
                "must be a host name without spaces or `@`",
            ));
        }
        if !(60..=86_400).contains(&s.register_expires) {
            return Err(invalid(
                "sip.register_expires",
                "must be between 60 and 86400 seconds",
            ));
        }
        if s.t1.is_zero() {
            return Err(invalid(
                "sip.t1",
                "must be greater than zero (RFC 3261: 500ms)",
            ));
        }
        if s.t2 < s.t1 {
            return Err(invalid("sip.t2", "must be at least sip.t1"));
        }
        if s.timer_f < s.t1 {
            return Err(invalid("sip.timer_f", "must be at least t1"));
        }
        if s.retry_base.is_zero() || s.retry_max < s.retry_base {
            return Err(invalid(
                "sip.retry_max",
                "retry_base must be > 0 and retry_max >= retry_base",
            ));
        }
        if !(65_536..=268_435_456).contains(&s.socket_buffer) {
            return Err(invalid(
                "sip.socket_buffer",
                "must be between 65536 and 268435456 bytes",
            ));
        }
        if s.advertise.is_none() && s.listen.ip().is_unspecified() {
            return Err(invalid(
                "sip.advertise",
                "required when sip.listen is a wildcard address: the nodes must know where to answer",
            ));
        }
        if self.kamailio.trusted.is_empty() {
            return Err(invalid(
                "kamailio.trusted",
                "list at least one Kamailio source address",
            ));
        }
        if let Some(Redacted(key)) = &self.kamailio.notify_key {
            if key.len() < 16
                || !key
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
            {
                return Err(invalid(
                    "kamailio.notify_key",
                    "must be at least 16 printable characters, no quotes or backslashes",
                ));
            }
        }
        if self.kamailio.notify_max_skew < Duration::from_secs(1) {
            return Err(invalid("kamailio.notify_max_skew", "must be at least 1s"));
        }
        let ch = &self.kamailio.contact_host;
        if ch.is_empty() || ch.contains(|c: char| c.is_whitespace() || "@;<>\"".contains(c)) {
            return Err(invalid(
                "kamailio.contact_host",
                "must be host[:port] with no spaces, `@`, `;` or brackets",
            ));
        }
        let from_table = self.node_list.source == NodeSource::Database;
        if from_table && !self.nodes.is_empty() {
            return Err(invalid(
                "nodes",
                "node_list.source = \"database\" takes the farm from the dispatcher table: remove [[nodes]]",
            ));
        }
        if !from_table && self.nodes.is_empty() {
            return Err(invalid(
                "nodes",
                "configure at least one Asterisk node ([[nodes]] with name and address, or node_list.source = \"database\")",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut addrs = std::collections::HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some((field, why)) = n.problem() {
                return Err(invalid(format!("nodes[{i}].{field}"), why));
            }
            if !names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("nodes[{i}].name"),
                    format!("duplicate node name `{}`", n.name),
                ));
            }
            if !addrs.insert(n.address) {
                return Err(invalid(
                    format!("nodes[{i}].address"),
                    format!("duplicate node address {}", n.address),
                ));
            }
        }
        if !self.database.url.starts_with("mysql://")
            && !self.database.url.starts_with("mariadb://")
        {
            return Err(invalid(
                "database.url",
                "must start with mysql:// or mariadb://",
            ));
        }
        let l = &self.node_list;
        if l.poll < Duration::from_millis(100) || l.poll > Duration::from_secs(600) {
            return Err(invalid("node_list.poll", "must be between 100ms and 10m"));
        }
        if l.ami_user.is_some() != l.ami_secret.is_some()
            || !single_lines(&l.ami_user, &l.ami_secret)
        {
            return Err(invalid(
                "node_list.ami_user",
                "set ami_user and ami_secret (or ami_secret_file) together, each a non-empty single line",
            ));
        }
        for (i, url) in self.kamailio.rpc.iter().enumerate() {
            if !url.starts_with("http://") {
                return Err(invalid(
                    format!("kamailio.rpc[{i}]"),
                    "must be Kamailio's JSON-RPC over HTTP, http://host:port/RPC",
                ));
            }
        }
        let f = &self.farm;
        if f.probe_timeout.is_zero() || f.probe_timeout >= s.timer_f {
            return Err(invalid(
                "farm.probe_timeout",
                "must be > 0 and shorter than sip.timer_f",
            ));
        }
        if !f.probe_interval.is_zero() && f.probe_interval < Duration::from_millis(100) {
            return Err(invalid(
                "farm.probe_interval",
                "must be 0s (off) or at least 100ms",
            ));
        }
        if !(1..=100).contains(&f.probe_failures) {
            return Err(invalid("farm.probe_failures", "must be between 1 and 100"));
        }
        if f.replay_rate > 100_000 {
            return Err(invalid(
                "farm.replay_rate",
                "must be at most 100000 per second (0 = unpaced)",
            ));
        }
        if f.max_register_rate > 100_000 {
            return Err(invalid(
                "farm.max_register_rate",
                "must be at most 100000 per second (0 = no limit)",
            ));
        }
        if f.storm_hold > Duration::from_secs(600) {
            return Err(invalid(
                "farm.storm_hold",
                "must be 0s (off) or at most 10m (the farm lags Kamailio by that much in a storm)",
            ));
        }
        if f.nonce_reuse > Duration::from_secs(3600) {
            return Err(invalid(
                "farm.nonce_reuse",
                "must be 0s (off) or at most 1h (below the nodes' nonce_lifetime)",
            ));
        }
        if !f.latency_target.is_zero()
            && !(Duration::from_millis(1)..=Duration::from_secs(30)).contains(&f.latency_target)
        {
            return Err(invalid(
                "farm.latency_target",
                "must be 0s (off) or between 1ms and 30s",
            ));
        }
        if !(1..=1_000_000).contains(&f.max_inflight_per_node) {
            return Err(invalid(
                "farm.max_inflight_per_node",
                "must be between 1 and 1000000",
            ));
        }
        if f.reconcile_interval < Duration::from_secs(1) {
            return Err(invalid("farm.reconcile_interval", "must be at least 1s"));
        }
        if f.reconcile_max_drop.is_nan()
            || f.reconcile_max_drop <= 0.0
            || f.reconcile_max_drop > 1.0
        {
            return Err(invalid(
                "farm.reconcile_max_drop",
                "must be a share above 0 and at most 1 (1 = no breaker)",
            ));
        }
        if f.audit_interval < Duration::from_secs(1) {
            return Err(invalid("farm.audit_interval", "must be at least 1s"));
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be at least 1"));
        }
        if self.database.connect_timeout.is_zero() {
            return Err(invalid(
                "database.connect_timeout",
                "must be greater than zero",
            ));
        }
        if let Some(ha) = &self.ha {
            if ha.peer.port() == 0 || ha.peer.ip().is_unspecified() {
                return Err(invalid(
                    "ha.peer",
                    "must be the other instance's concrete ip:port",
                ));
            }
            if ha.peer == self.advertised_addr() || ha.peer == s.listen {
                return Err(invalid(
                    "ha.peer",
                    "is this instance's own SIP address: give the other instance's",
                ));
            }
            if ha.probe_interval < Duration::from_millis(100)
                || ha.probe_interval > Duration::from_secs(60)
            {
                return Err(invalid(
                    "ha.probe_interval",
                    "must be between 100ms and 60s",
                ));
            }
            if !(1..=100).contains(&ha.takeover_after) {
                return Err(invalid("ha.takeover_after", "must be between 1 and 100"));
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(invalid(
                "log.level",
                format!("not a tracing filter (e.g. `info`, `regmirror=debug,info`): {e}"),
            ));
        }
        Ok(())
    }
}

/// An AMI user and secret are each absent or a non-empty single line.
fn single_lines(user: &Option<String>, secret: &Option<Redacted>) -> bool {
    let ok = |v: &str| !v.is_empty() && !v.contains(|c: char| c.is_control());
    user.as_deref().is_none_or(ok) && secret.as_ref().is_none_or(|s| ok(&s.0))
}

impl NodeConfig {
    /// What is wrong with this node on its own (its field and why), if anything.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Some((
                "name",
                "must be non-empty letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        if self.address.port() == 0 || self.address.ip().is_unspecified() {
            return Some(("address", "must be a concrete ip:port".into()));
        }
        let parts = (
            self.ami.is_some(),
            self.ami_user.is_some(),
            self.ami_secret.is_some(),
        );
        if parts != (false, false, false) && parts != (true, true, true) {
            return Some((
                "ami",
                "set ami, ami_user and ami_secret together (or none)".into(),
            ));
        }
        if !single_lines(&self.ami_user, &self.ami_secret) {
            return Some((
                "ami_user",
                "AMI user and secret must be non-empty single lines".into(),
            ));
        }
        if !crate::core::sip::valid_user_part(&self.kamailio_endpoint) {
            return Some((
                "kamailio_endpoint",
                "must be the name of the node's PJSIP endpoint for Kamailio".into(),
            ));
        }
        None
    }
}
