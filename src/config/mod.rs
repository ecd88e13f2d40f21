//! Service configuration: a TOML file, `REGMIRROR__SECTION__KEY` environment overrides, defaults,
//! and validation that names the bad key and why.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::core::farm::FarmConfig;
use crate::core::mirror::MirrorConfig;

mod node_list;
mod validate;

pub use node_list::{
    attrs_of, destination_of, nodes_of_rows, DispatcherRow, NodeListConfig, NodeSource, UnusableRow,
};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: `{key}`: {why}")]
    Invalid { key: String, why: String },
}

fn invalid(key: impl Into<String>, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        why: why.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub sip: SipConfig,
    pub kamailio: KamailioConfig,
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Where the farm list comes from: `[[nodes]]` above or the database (`node_list.rs`).
    #[serde(default)]
    pub node_list: NodeListConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub farm: FarmSettings,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Active/standby pair; absent = standalone (always active).
    #[serde(default)]
    pub ha: Option<HaConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HaRole {
    Primary,
    Secondary,
}

/// `[ha]`: two instances, both notified by Kamailio; only the active one talks to the nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    pub role: HaRole,
    /// The other instance's SIP socket (its `sip.listen`/`advertise`), ip:port.
    pub peer: SocketAddr,
    /// OPTIONS probe period of the secondary.
    #[serde(default = "default_ha_probe_interval", with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Consecutive unanswered probes after which the secondary takes over.
    #[serde(default = "default_takeover_after")]
    pub takeover_after: u32,
}

fn default_ha_probe_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_takeover_after() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Where regmirror receives Kamailio's notifications and the nodes' responses.
    pub listen: SocketAddr,
    /// Address written in Via (sent-by); defaults to `listen` when that is not a wildcard.
    pub advertise: Option<SocketAddr>,
    /// SIP domain and digest realm shared by Kamailio and Asterisk.
    pub domain: String,
    /// Expires asked of each node.
    pub register_expires: u32,
    pub user_agent: String,
    #[serde(with = "humantime_serde")]
    pub t1: Duration,
    #[serde(with = "humantime_serde")]
    pub t2: Duration,
    #[serde(with = "humantime_serde")]
    pub timer_f: Duration,
    /// RFC 5626 backoff after a failed registration: base and cap.
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Kernel receive/send buffer of the SIP socket in bytes (the kernel caps it at
    /// net.core.rmem_max): response bursts from a large farm overflow the default.
    pub socket_buffer: usize,
}

// The protocol's defaults (timers, expiry, backoff) are the core's; this file adds only
// what a running service needs beyond them.
impl Default for SipConfig {
    fn default() -> Self {
        let core = MirrorConfig::default();
        SipConfig {
            listen: "0.0.0.0:5070".parse().expect("static address"),
            advertise: None,
            domain: "regmirror.test".into(),
            register_expires: core.register_expires,
            user_agent: core.user_agent,
            t1: core.t1,
            t2: core.t2,
            timer_f: core.timer_f,
            retry_base: core.retry_base,
            retry_max: core.retry_max,
            socket_buffer: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KamailioConfig {
    /// Source addresses allowed to send notifications; anything else is dropped and counted.
    pub trusted: Vec<IpAddr>,
    /// Kamailio's SIP address as host[:port], written as the Contact host on every node.
    pub contact_host: String,
    /// Key shared with Kamailio (its NOTIFY_KEY) for the notifications' proof of origin
    /// (`X-RegMirror-Auth`): when set, a notification without a valid tag, or whose time is
    /// more than `notify_max_skew` from ours, is dropped and counted, whatever its source
    /// address. Unset: the source address alone is trusted (a warning at start). Never logged.
    #[serde(default)]
    pub notify_key: Option<Redacted>,
    /// The key read from this file instead (surrounding whitespace ignored).
    #[serde(default)]
    pub notify_key_file: Option<PathBuf>,
    #[serde(default = "default_notify_max_skew", with = "humantime_serde")]
    pub notify_max_skew: Duration,
    /// Kamailio's JSON-RPC over HTTP (`http://host:port/RPC`, one per proxy), for
    /// `regmirror node`: `dispatcher.reload` after a change of the farm list, the dispatcher's
    /// state of each node, and taking a node out of rotation at once. Empty: not used.
    #[serde(default)]
    pub rpc: Vec<String>,
}

fn default_notify_max_skew() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Udp,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    pub address: SocketAddr,
    #[serde(default)]
    pub transport: TransportKind,
    /// Asterisk manager interface (`host:port`, usually 5038) for the drift audit; optional.
    #[serde(default)]
    pub ami: Option<SocketAddr>,
    #[serde(default)]
    pub ami_user: Option<String>,
    /// Never logged: `Debug` shows `***`.
    #[serde(default)]
    pub ami_secret: Option<Redacted>,
    /// The AMI secret read from this file instead (surrounding whitespace ignored).
    #[serde(default)]
    pub ami_secret_file: Option<PathBuf>,
    /// The node's endpoint for Kamailio's requests. While Asterisk holds it in maintenance
    /// (`pjsip set maintenance on <it>` or `all`), followed over `ami`, the node shows as
    /// in maintenance.
    #[serde(default = "default_kamailio_endpoint")]
    pub kamailio_endpoint: String,
}

fn default_kamailio_endpoint() -> String {
    "kamailio".into()
}

/// A secret string whose `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Farm resilience: node health probes, replay pacing, reconciliation and drift audit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FarmSettings {
    /// OPTIONS probe period per node; `0s` turns probing off.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// An unanswered probe fails after this long (shorter than `sip.timer_f`).
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Consecutive failed probes that mark a node down.
    pub probe_failures: u32,
    /// REGISTERs per second per node when replaying onto a node that came back or was added
    /// (and for bindings found by reconciliation); 0 = unpaced.
    pub replay_rate: u32,
    /// A node's latest digest nonce answers every binding's REGISTER to it preemptively while
    /// younger than this (`0s` = off). Keep it below the nodes' `nonce_lifetime` (32 s).
    #[serde(with = "humantime_serde")]
    pub nonce_reuse: Duration,
    /// Congestion control: a node whose answers take longer than this gets fewer REGISTERs in
    /// flight (down to 4), more again while it answers faster (`0s` = fixed budget).
    #[serde(with = "humantime_serde")]
    pub latency_target: Duration,
    /// REGISTER operations in flight per node.
    pub max_inflight_per_node: usize,
    /// REGISTER operations started per second per node, replays included (0 = no limit).
    pub max_register_rate: u32,
    /// With `max_register_rate`: while Kamailio notifies faster than it, new registrations,
    /// unregistrations and replays wait (refreshes go) for at most this long per storm, so the
    /// nodes stay off the CPUs and database the phones need; then the queues drain at the cap.
    /// `0s` = off.
    #[serde(with = "humantime_serde")]
    pub storm_hold: Duration,
    /// Period of the full reconciliation against Kamailio's `location` table.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Circuit breaker: a reconciliation that would drop more than this share of the live
    /// users (and more than 10) is refused whole, logged and counted: a time-zone or realm
    /// mismatch makes every user look gone at once (ordinary churn drops far fewer). Bindings
    /// still end at their own expiry.
    pub reconcile_max_drop: f64,
    /// Period of the AMI drift audit's full listing of each node that has `ami` configured
    /// (changes in between arrive as the node's `ContactStatus` events).
    #[serde(with = "humantime_serde")]
    pub audit_interval: Duration,
}

// Health probing, pacing and the storm hold are on in a service (the core's defaults leave
// them off for tests); the rest are the core's.
impl Default for FarmSettings {
    fn default() -> Self {
        let core = FarmConfig::default();
        FarmSettings {
            probe_interval: Duration::from_secs(5),
            probe_timeout: core.probe_timeout,
            probe_failures: core.probe_failures,
            replay_rate: core.replay_rate,
            nonce_reuse: core.nonce_reuse,
            latency_target: Duration::from_millis(50),
            max_inflight_per_node: 128,
            max_register_rate: core.max_register_rate,
            storm_hold: Duration::from_secs(30),
            reconcile_interval: Duration::from_secs(60),
            reconcile_max_drop: MirrorConfig::default().reconcile_max_drop,
            audit_interval: Duration::from_secs(1800),
        }
    }
}

/// Who the core's door trusts (the HA peer and its probe tag are the driver's to add).
impl From<&Config> for crate::core::door::DoorConfig {
    fn from(c: &Config) -> Self {
        crate::core::door::DoorConfig {
            trusted: c.kamailio.trusted.clone(),
            notify_key: c
                .kamailio
                .notify_key
                .as_ref()
                .map(|k| k.0.as_bytes().to_vec()),
            notify_max_skew: c.kamailio.notify_max_skew,
            peer: None,
        }
    }
}

/// The core's configuration, from the service's.
impl From<&Config> for MirrorConfig {
    fn from(c: &Config) -> Self {
        MirrorConfig {
            domain: c.sip.domain.clone(),
            contact_host: c.kamailio.contact_host.clone(),
            local_addr: c.advertised_addr(),
            register_expires: c.sip.register_expires,
            t1: c.sip.t1,
            t2: c.sip.t2,
            timer_f: c.sip.timer_f,
            retry_base: c.sip.retry_base,
            retry_max: c.sip.retry_max,
            user_agent: c.sip.user_agent.clone(),
            max_inflight_per_node: c.farm.max_inflight_per_node,
            reconcile_max_drop: c.farm.reconcile_max_drop,
            farm: FarmConfig {
                probe_interval: (!c.farm.probe_interval.is_zero()).then_some(c.farm.probe_interval),
                probe_timeout: c.farm.probe_timeout,
                probe_failures: c.farm.probe_failures,
                replay_rate: c.farm.replay_rate,
                nonce_reuse: c.farm.nonce_reuse,
                latency_target: c.farm.latency_target,
                max_register_rate: c.farm.max_register_rate,
                storm_hold: c.farm.storm_hold,
            },
            ..MirrorConfig::default()
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// mysql://user:password@host:port/db. Never logged: `Debug` hides the password.
    pub url: String,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "mysql://regmirror@127.0.0.1:3306/regmirror".into(),
            max_connections: 4,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// `mysql://user:secret@host/db` -> `mysql://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match url_password(url) {
        Some((start, end)) => format!("{}***{}", &url[..start], &url[end..]),
        None => url.to_string(),
    }
}

/// Byte range of the password in `scheme://user:password@host/...`, if there is one.
fn url_password(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let at = start + url[start..].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    Some((colon + 1, at))
}

/// A secret kept in a file (surrounding whitespace ignored); `key` names the setting in errors.
fn secret_from_file(key: impl Into<String>, file: &Path) -> Result<Redacted, ConfigError> {
    std::fs::read_to_string(file)
        .map(|s| Redacted(s.trim().to_string()))
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", file.display())))
}

/// Secrets published in this repository for the compose demo. [`Config::load`] refuses them
/// unless `REGMIRROR_ALLOW_DEMO_SECRETS=yes` (set by docker-compose.yml only).
const DEMO_SECRETS: [&str; 6] = [
    "regmirror-demo",
    "regmirror-ami-demo",
    "regmirror-notify-demo-key",
    "kamailio-demo",
    "asterisk-demo",
    "provisioner-demo",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HTTP listener for /healthz, /readyz, /metrics and the status page. Loopback by default.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some("127.0.0.1:9070".parse().expect("static address")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// tracing filter directive, e.g. `info` or `regmirror=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl Config {
    /// Loads `path` (TOML) with `REGMIRROR__SECTION__KEY` environment overrides, then validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut b = config::Config::builder();
        if let Some(p) = path {
            b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
        }
        b = b.add_source(
            config::Environment::with_prefix("REGMIRROR")
                .prefix_separator("__")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("kamailio.trusted")
                .with_list_parse_key("kamailio.rpc")
                .try_parsing(true),
        );
        let mut cfg: Config = b.build()?.try_deserialize()?;
        for node in &mut cfg.nodes {
            if let Some(file) = &node.ami_secret_file {
                let key = format!("nodes.{}.ami_secret_file", node.name);
                node.ami_secret = Some(secret_from_file(key, file)?);
            }
        }
        if let Some(file) = &cfg.node_list.ami_secret_file {
            cfg.node_list.ami_secret = Some(secret_from_file("node_list.ami_secret_file", file)?);
        }
        if let Some(file) = &cfg.kamailio.notify_key_file {
            cfg.kamailio.notify_key = Some(secret_from_file("kamailio.notify_key_file", file)?);
        }
        cfg.validate()?;
        if std::env::var("REGMIRROR_ALLOW_DEMO_SECRETS").as_deref() != Ok("yes") {
            if let Some(key) = cfg.demo_secret_in_use() {
                return Err(invalid(
                    key,
                    "is a demo secret published with regmirror: set your own \
                     (REGMIRROR_ALLOW_DEMO_SECRETS=yes only for the demo stack)",
                ));
            }
        }
        Ok(cfg)
    }

    /// The first setting that holds one of [`DEMO_SECRETS`].
    fn demo_secret_in_use(&self) -> Option<String> {
        let demo = |v: &str| DEMO_SECRETS.contains(&v);
        let url = &self.database.url;
        if url_password(url).is_some_and(|(a, b)| demo(&url[a..b])) {
            return Some("database.url".into());
        }
        if self
            .kamailio
            .notify_key
            .as_ref()
            .is_some_and(|k| demo(&k.0))
        {
            return Some("kamailio.notify_key".into());
        }
        if self
            .node_list
            .ami_secret
            .as_ref()
            .is_some_and(|k| demo(&k.0))
        {
            return Some("node_list.ami_secret".into());
        }
        self.nodes
            .iter()
            .find(|n| n.ami_secret.as_ref().is_some_and(|k| demo(&k.0)))
            .map(|n| format!("nodes.{}.ami_secret", n.name))
    }

    /// Parses TOML text (tests, `check-config` of a string).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The address the nodes answer to (Via sent-by).
    pub fn advertised_addr(&self) -> SocketAddr {
        self.sip.advertise.unwrap_or(self.sip.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[sip]
listen = "10.0.0.5:5070"
domain = "regmirror.test"
[kamailio]
trusted = ["10.0.0.2"]
contact_host = "10.0.0.2:5060"
[[nodes]]
name = "ast1"
address = "10.0.0.31:5060"
[database]
url = "mysql://regmirror:hunter2@db/regmirror"
"#;

    #[test]
    fn good_config_loads_with_defaults() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.sip.register_expires, 600);
        assert_eq!(c.nodes[0].transport, TransportKind::Udp);
        assert_eq!(c.advertised_addr(), "10.0.0.5:5070".parse().unwrap());
    }

    #[test]
    fn tcp_nodes_are_accepted() {
        let c = Config::from_toml(&GOOD.replace(
            "address = \"10.0.0.31:5060\"",
            "address = \"10.0.0.31:5060\"\ntransport = \"tcp\"",
        ))
        .unwrap();
        assert_eq!(c.nodes[0].transport, TransportKind::Tcp);
    }

    #[test]
    fn database_password_never_in_debug() {
        let c = Config::from_toml(GOOD).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("regmirror:***@db"), "{dbg}");
    }

    fn err_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn each_bad_input_names_its_key() {
        let cases = [
            (
                GOOD.replace("10.0.0.5:5070", "0.0.0.0:5070"),
                "sip.advertise",
            ),
            (
                GOOD.replace("domain = \"regmirror.test\"", "domain = \"a b\""),
                "sip.domain",
            ),
            (
                GOOD.replace("trusted = [\"10.0.0.2\"]", "trusted = []"),
                "kamailio.trusted",
            ),
            (
                GOOD.replace("contact_host = \"10.0.0.2:5060\"", "contact_host = \"a@b\""),
                "kamailio.contact_host",
            ),
            (
                GOOD.replace("name = \"ast1\"", "name = \"a b\""),
                "nodes[0].name",
            ),
            (GOOD.replace("mysql://", "postgres://"), "database.url"),
            (
                format!("{GOOD}\n[[nodes]]\nname = \"ast1\"\naddress = \"10.0.0.32:5060\"\n"),
                "duplicate node name",
            ),
            (
                GOOD.replace(
                    "[[nodes]]\nname = \"ast1\"\naddress = \"10.0.0.31:5060\"",
                    "",
                ),
                "nodes",
            ),
        ];
        for (text, key) in cases {
            let e = err_of(&text);
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
    }

    #[test]
    fn farm_defaults_and_validation() {
        let c = Config::from_toml(GOOD).unwrap();
        assert_eq!(c.farm.probe_interval, Duration::from_secs(5));
        assert_eq!(c.farm.probe_failures, 2);
        assert_eq!(c.farm.replay_rate, 200);
        assert_eq!(c.farm.nonce_reuse, Duration::from_secs(20));
        assert_eq!(c.farm.reconcile_interval, Duration::from_secs(60));
        assert_eq!(c.farm.audit_interval, Duration::from_secs(1800));
        assert_eq!(c.farm.storm_hold, Duration::from_secs(30));
        let farm = |kv: &str| format!("{GOOD}\n[farm]\n{kv}\n");
        assert!(err_of(&farm("probe_timeout = \"40s\"")).contains("farm.probe_timeout"));
        assert!(err_of(&farm("probe_failures = 0")).contains("farm.probe_failures"));
        assert!(err_of(&farm("nonce_reuse = \"2h\"")).contains("farm.nonce_reuse"));
        assert!(err_of(&farm("nonce_reuse = \"20\"")).contains("nonce_reuse"));
        assert!(Config::from_toml(&farm("nonce_reuse = \"0s\"")).is_ok());
        assert_eq!(c.farm.latency_target, Duration::from_millis(50));
        assert!(err_of(&farm("latency_target = \"1m\"")).contains("farm.latency_target"));
        assert!(Config::from_toml(&farm("latency_target = \"0s\"")).is_ok());
        assert!(err_of(&farm("reconcile_interval = \"0s\"")).contains("farm.reconcile_interval"));
        assert!(Config::from_toml(&farm("probe_interval = \"0s\"\nreplay_rate = 0")).is_ok());
        assert!(err_of(&farm("storm_hold = \"11m\"")).contains("farm.storm_hold"));
        assert!(Config::from_toml(&farm("storm_hold = \"0s\"")).is_ok());
    }

    #[test]
    fn ami_settings_go_together_and_the_secret_is_never_shown() {
        let with_ami = GOOD.replace(
            "address = \"10.0.0.31:5060\"",
            "address = \"10.0.0.31:5060\"\nami = \"10.0.0.31:5038\"\nami_user = \"regmirror\"\nami_secret = \"t0psecret\"",
        );
        let c = Config::from_toml(&with_ami).unwrap();
        assert_eq!(c.nodes[0].ami, Some("10.0.0.31:5038".parse().unwrap()));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("t0psecret"), "{dbg}");
        let partial = with_ami.replace("ami_secret = \"t0psecret\"", "");
        assert!(err_of(&partial).contains("nodes[0].ami"));
    }

    #[test]
    fn ha_section_is_optional_and_validated() {
        assert!(Config::from_toml(GOOD).unwrap().ha.is_none());
        let ha = |kv: &str| format!("{GOOD}\n[ha]\n{kv}\n");
        let c = Config::from_toml(&ha("role = \"secondary\"\npeer = \"10.0.0.6:5070\"")).unwrap();
        let h = c.ha.unwrap();
        assert_eq!(h.role, HaRole::Secondary);
        assert_eq!(h.probe_interval, Duration::from_secs(1));
        assert_eq!(h.takeover_after, 3);
        let cases = [
            ("role = \"boss\"\npeer = \"10.0.0.6:5070\"", "role"),
            ("role = \"primary\"", "peer"),
            ("role = \"primary\"\npeer = \"10.0.0.5:5070\"", "ha.peer"),
            ("role = \"primary\"\npeer = \"0.0.0.0:5070\"", "ha.peer"),
            (
                "role = \"primary\"\npeer = \"10.0.0.6:5070\"\nprobe_interval = \"10ms\"",
                "ha.probe_interval",
            ),
            (
                "role = \"primary\"\npeer = \"10.0.0.6:5070\"\ntakeover_after = 0",
                "ha.takeover_after",
            ),
            (
                "role = \"primary\"\npeer = \"10.0.0.6:5070\"\ntakeover = 3",
                "takeover",
            ),
        ];
        for (kv, key) in cases {
            let e = err_of(&ha(kv));
            assert!(e.contains(key), "expected `{key}` in: {e}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_types_are_rejected() {
        let e = err_of(&GOOD.replace("[sip]", "[sip]\nlsten = \"x\""));
        assert!(e.contains("lsten"), "{e}");
        let e = err_of(&GOOD.replace("domain = \"regmirror.test\"", "register_expires = \"soon\""));
        assert!(
            e.contains("register_expires") || e.contains("invalid type"),
            "{e}"
        );
    }
}
