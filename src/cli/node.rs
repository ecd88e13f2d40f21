//! `regmirror node list | add | drain | resume | remove`: the farm list (the database's
//! dispatcher table, or `[[nodes]]`) and each node's maintenance mode (Asterisk's
//! `res_pjsip_maintenance`, switched over the node's AMI). Draining puts the node's Kamailio
//! endpoint in maintenance: Asterisk answers Kamailio's new calls and OPTIONS with 503, so the
//! dispatcher fails calls over (and, with `kamailio.rpc`, is told to skip the node at once),
//! while regmirror's REGISTERs still land and the node stays complete. `add` and `remove` write
//! the dispatcher table and reload every proxy's dispatcher; both regmirror instances follow
//! the table. Exit codes: 0 done (also when there was nothing to do), 1 usage, configuration,
//! unknown node or refused, 3 a database, AMI or Kamailio RPC unreachable (nothing changed),
//! 4 the calls did not end within `--timeout` (the node stays in maintenance).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::json;
use sqlx::mysql::MySqlPool;

use super::kamailio_rpc::{self, RpcError};
use super::status::HttpError;
use crate::config::{
    attrs_of, destination_of, nodes_of_rows, Config, DispatcherRow, NodeConfig, NodeSource,
    TransportKind, UnusableRow,
};
use crate::runtime::ami::{
    channel_count, fetch_contact_users, remove_contacts, set_maintenance, AmiError, AmiTarget,
};
use crate::runtime::node_events::endpoints_in_maintenance;
use crate::status::{lag_text, percent_text, FarmStatus};
use crate::store::{self, farm, StoreError};

/// One AMI exchange may take this long.
const AMI_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a drain counts the node's channels.
const POLL_EVERY: Duration = Duration::from_secs(1);

#[derive(Args)]
pub struct NodeArgs {
    /// The service's configuration file (its farm list and AMI settings).
    #[arg(short, long, env = "REGMIRROR_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Database URL of an account that may write the dispatcher table (`add`, `remove`;
    /// default: the configuration's `database.url`).
    #[arg(long, env = "REGMIRROR_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: NodeCommand,
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Each node: Kamailio's dispatcher state, maintenance, channels in progress, and the
    /// service's health, coverage and lag; then the table's rows that cannot be used.
    List {
        /// The service's admin listener (optional: without it the service's columns show `-`).
        #[arg(long, env = "REGMIRROR_ADMIN", default_value = "http://127.0.0.1:9070")]
        admin: String,
    },
    /// Adds a node to the farm list; Kamailio routes calls to it and regmirror mirrors every
    /// live binding onto it at its own pace.
    Add {
        node: String,
        /// The node's SIP address, ip:port.
        #[arg(long)]
        address: SocketAddr,
        /// `udp` or `tcp`.
        #[arg(long, default_value = "udp", value_parser = parse_transport)]
        transport: TransportKind,
        /// The node's AMI, ip:port (login: the configuration's `node_list.ami_user`).
        #[arg(long)]
        ami: Option<SocketAddr>,
        /// The node's endpoint for Kamailio's requests.
        #[arg(long, default_value = "kamailio")]
        kamailio_endpoint: String,
    },
    /// Puts the node's Kamailio endpoint in maintenance and waits for its calls to end.
    Drain {
        node: String,
        /// How long to wait for the calls in progress to end.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Takes the node out of maintenance: Kamailio sends it calls again.
    Resume { node: String },
    /// Drains the node, takes it out of the farm list, then deletes regmirror's contacts from
    /// it. It stays in maintenance.
    Remove {
        node: String,
        /// How long to wait for the calls in progress to end.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The node is gone for good (its AMI does not answer): take it out of the farm list
        /// without draining it or deleting contacts from it.
        #[arg(long)]
        gone: bool,
    },
}

fn parse_transport(s: &str) -> Result<TransportKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(TransportKind::Udp),
        "tcp" => Ok(TransportKind::Tcp),
        _ => Err("udp or tcp".into()),
    }
}

/// Runs the command (within a tokio runtime); returns the exit code.
pub async fn run(args: NodeArgs) -> u8 {
    let result = match Config::load(args.config.as_deref()) {
        Err(e) => Err(NodeError::Config(e.to_string())),
        Ok(config) => match Farm::load(config, args.database_url).await {
            Err(e) => Err(e),
            Ok(farm) => match args.command {
                NodeCommand::List { admin } => farm.list(&admin).await,
                NodeCommand::Add {
                    node,
                    address,
                    transport,
                    ami,
                    kamailio_endpoint,
                } => {
                    farm.add(&node, address, transport, ami, &kamailio_endpoint)
                        .await
                }
                NodeCommand::Drain { node, timeout } => farm.drain(&node, timeout).await,
                NodeCommand::Resume { node } => farm.resume(&node).await,
                NodeCommand::Remove {
                    node,
                    timeout,
                    gone,
                } => farm.remove(&node, timeout, gone).await,
            },
        },
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("regmirror: {e}");
            e.exit_code()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{0}")]
    Config(String),
    #[error("unknown node `{0}` (the farm list has: {1})")]
    Unknown(String, String),
    #[error(
        "node `{0}` has no `ami` configured: its maintenance mode cannot be switched from here"
    )]
    NoAmi(String),
    #[error("no node but `{0}` is known to be out of maintenance (the others are in it, or their AMI is unreachable or not configured): that would leave Kamailio no node for calls")]
    LastActive(String),
    #[error("node `{0}`: {1}; nothing was changed")]
    Ami(String, AmiError),
    #[error("node `{0}`: still {1} channel(s) after {2:?}; it stays in maintenance (`regmirror node resume {0}` takes it out)")]
    StillBusy(String, usize, Duration),
    #[error("the farm list is `[[nodes]]` in the configuration file: edit it and send SIGHUP to each instance (or set node_list.source = \"database\")")]
    NotInDatabase,
    #[error("{0}; nothing was changed")]
    Refused(String),
    #[error("farm list (dispatcher table): {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Rpc(#[from] RpcError),
}

impl NodeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Ami(..) | NodeError::Rpc(_) => 3,
            NodeError::Store(e) => super::exit_code(e).max(3),
            NodeError::StillBusy(..) => 4,
            _ => 1,
        }
    }
}

/// The farm list as the service would read it, with the table's rows when it is one.
struct Farm {
    config: Config,
    pool: Option<MySqlPool>,
    rows: Vec<DispatcherRow>,
    unusable: Vec<UnusableRow>,
}

impl Farm {
    async fn load(mut config: Config, url: Option<String>) -> Result<Farm, NodeError> {
        if config.node_list.source == NodeSource::Config {
            return Ok(Farm {
                config,
                pool: None,
                rows: Vec::new(),
                unusable: Vec::new(),
            });
        }
        let url = url
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| config.database.url.clone());
        let pool = store::connect(&url).await?;
        let rows = farm::farm_rows(&pool, config.node_list.dispatcher_set).await?;
        let (nodes, unusable) = nodes_of_rows(&rows, &config.node_list);
        config.nodes = nodes;
        Ok(Farm {
            config,
            pool: Some(pool),
            rows,
            unusable,
        })
    }

    fn nodes(&self) -> &[NodeConfig] {
        &self.config.nodes
    }

    fn node(&self, name: &str) -> Result<&NodeConfig, NodeError> {
        self.nodes().iter().find(|n| n.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.nodes().iter().map(|n| n.name.as_str()).collect();
            NodeError::Unknown(name.into(), names.join(", "))
        })
    }

    fn find(&self, name: &str) -> Result<(&NodeConfig, AmiTarget), NodeError> {
        let n = self.node(name)?;
        let target = AmiTarget::of(n).ok_or_else(|| NodeError::NoAmi(name.into()))?;
        Ok((n, target))
    }

    /// Refuses when no node other than `name` is known to be out of maintenance.
    async fn another_takes_calls(&self, name: &str) -> Result<(), NodeError> {
        for other in self.nodes().iter().filter(|o| o.name != name) {
            if in_maintenance(other).await == Some(false) {
                return Ok(());
            }
        }
        Err(NodeError::LastActive(name.into()))
    }

    /// `dispatcher.reload` on every proxy; how many reloaded. A proxy that cannot be reached
    /// (one of a pair is down) is skipped: it reads the table when it starts. One that answers
    /// with an error, or none reached at all, fails the change.
    async fn reload_kamailio(&self) -> Result<usize, RpcError> {
        let mut reloaded = 0;
        let mut unreachable = None;
        for url in &self.config.kamailio.rpc {
            match kamailio_rpc::call(url, "dispatcher.reload", json!([])).await {
                Ok(_) => reloaded += 1,
                Err(e @ RpcError::Http(_, HttpError::Unreachable(..))) => {
                    eprintln!("regmirror: {e}: skipped (it reads the farm list when it starts)");
                    unreachable = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match unreachable {
            Some(e) if reloaded == 0 => Err(e),
            _ => Ok(reloaded),
        }
    }

    /// `dispatcher.set_state` of `node` on every proxy (best effort: the dispatcher's own
    /// probes reach the same state within about 15 s).
    async fn set_dispatcher_state(&self, node: &NodeConfig, state: &str) {
        let uri = destination_of(node.address, node.transport);
        let set = self.config.node_list.dispatcher_set;
        for url in &self.config.kamailio.rpc {
            match kamailio_rpc::call(url, "dispatcher.set_state", json!([state, set, uri])).await {
                Ok(_) => println!("{}: Kamailio {url}: dispatcher state {state}", node.name),
                Err(e) => eprintln!("regmirror: {}: {e} (its probes will follow)", node.name),
            }
        }
    }

    async fn add(
        &self,
        name: &str,
        address: SocketAddr,
        transport: TransportKind,
        ami: Option<SocketAddr>,
        kamailio_endpoint: &str,
    ) -> Result<(), NodeError> {
        let pool = self.pool.as_ref().ok_or(NodeError::NotInDatabase)?;
        farm::check_writable(pool).await?;
        let destination = destination_of(address, transport);
        let attrs = attrs_of(name, ami, kamailio_endpoint);
        // The row read back as the service would: a name, address or endpoint it cannot use
        // is refused before anything is written.
        let candidate = DispatcherRow {
            id: 0,
            destination: destination.clone(),
            flags: 0,
            priority: 0,
            attrs: attrs.clone(),
            description: name.into(),
        };
        let (nodes, bad) = nodes_of_rows(std::slice::from_ref(&candidate), &self.config.node_list);
        if let Some(b) = bad.first() {
            return Err(NodeError::Refused(format!("node `{name}`: {}", b.why)));
        }
        if let Some(existing) = self.nodes().iter().find(|n| n.name == name) {
            if *existing == nodes[0] {
                println!("{name}: already in the farm list as {destination}; nothing to do");
                return Ok(());
            }
            return Err(NodeError::Refused(format!(
                "a node named `{name}` is already in the farm list, at {} (`regmirror node remove {name}` first)",
                existing.address
            )));
        }
        if let Some(other) = self.nodes().iter().find(|n| n.address == address) {
            return Err(NodeError::Refused(format!(
                "{address} is already node `{}`",
                other.name
            )));
        }
        let set = self.config.node_list.dispatcher_set;
        let id = farm::insert_farm_row(pool, set, &destination, &attrs, name).await?;
        let proxies = match self.reload_kamailio().await {
            Ok(n) => n,
            Err(e) => {
                // Undo: the table says what Kamailio routes to.
                farm::delete_farm_row(pool, set, id).await?;
                let _ = self.reload_kamailio().await;
                return Err(NodeError::Refused(format!("{e}; the row was taken back")));
            }
        };
        println!(
            "{name}: added to the farm list (dispatcher set {set}, row {id}: {destination} {attrs}); \
             {proxies} Kamailio proxy(ies) reloaded; regmirror mirrors every live binding onto it \
             within {:?} at farm.replay_rate",
            self.config.node_list.poll
        );
        if let Some(true) = in_maintenance(&nodes[0]).await {
            println!(
                "{name}: its endpoint {kamailio_endpoint} is in maintenance (a drain or remove \
                 before?): Kamailio's calls go elsewhere until `regmirror node resume {name}`"
            );
        }
        Ok(())
    }

    async fn drain(&self, name: &str, timeout: Duration) -> Result<(), NodeError> {
        let (node, target) = self.find(name)?;
        let ami = |e| NodeError::Ami(name.into(), e);
        let already = endpoints_in_maintenance(&target, AMI_TIMEOUT)
            .await
            .map_err(ami)?
            .contains(&node.kamailio_endpoint);
        if !already {
            // Another node must take the calls.
            self.another_takes_calls(name).await?;
            set_maintenance(&target, &node.kamailio_endpoint, true, AMI_TIMEOUT)
                .await
                .map_err(ami)?;
        }
        println!(
            "{name}: maintenance {} (endpoint {}): Kamailio's new calls get 503 there and go to the other nodes; \
             regmirror keeps mirroring it",
            if already { "was already on" } else { "on" },
            node.kamailio_endpoint
        );
        self.set_dispatcher_state(node, "ip").await;
        let end = Instant::now() + timeout;
        let mut shown = None;
        loop {
            let channels = channel_count(&target, AMI_TIMEOUT).await.map_err(|e| {
                NodeError::Ami(name.into(), e) // maintenance stays on: re-running drain resumes the wait
            })?;
            if channels == 0 {
                println!("{name}: drained: no calls in progress");
                return Ok(());
            }
            if shown != Some(channels) {
                println!("{name}: {channels} channel(s) in progress, waiting");
                shown = Some(channels);
            }
            if Instant::now() >= end {
                return Err(NodeError::StillBusy(name.into(), channels, timeout));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn resume(&self, name: &str) -> Result<(), NodeError> {
        let (node, target) = self.find(name)?;
        set_maintenance(&target, &node.kamailio_endpoint, false, AMI_TIMEOUT)
            .await
            .map_err(|e| NodeError::Ami(name.into(), e))?;
        println!(
            "{name}: maintenance off (endpoint {}): Kamailio sends it calls again",
            node.kamailio_endpoint
        );
        self.set_dispatcher_state(node, "ap").await;
        Ok(())
    }

    async fn remove(&self, name: &str, timeout: Duration, gone: bool) -> Result<(), NodeError> {
        let pool = self.pool.as_ref().ok_or(NodeError::NotInDatabase)?;
        farm::check_writable(pool).await?;
        let node = self.node(name)?;
        let target = match gone {
            true => None,
            false => Some(self.find(name)?.1),
        };
        self.another_takes_calls(name).await?;
        if !gone {
            self.drain(name, timeout).await?;
        }
        let set = self.config.node_list.dispatcher_set;
        let rows: Vec<&DispatcherRow> = self
            .rows
            .iter()
            .filter(|r| {
                nodes_of_rows(std::slice::from_ref(*r), &self.config.node_list)
                    .0
                    .first()
                    == Some(node)
            })
            .collect();
        for r in &rows {
            farm::delete_farm_row(pool, set, r.id).await?;
        }
        if let Err(e) = self.reload_kamailio().await {
            // Undo: the table says what Kamailio routes to (the node stays drained).
            for r in &rows {
                farm::insert_farm_row(pool, set, &r.destination, &r.attrs, &r.description).await?;
            }
            return Err(NodeError::Refused(format!(
                "{e}; the row was put back and `{name}` stays in maintenance"
            )));
        }
        println!(
            "{name}: taken out of the farm list (dispatcher set {set}); Kamailio reloaded; \
             regmirror stops mirroring it within {:?}",
            self.config.node_list.poll
        );
        let Some(target) = target else {
            println!("{name}: removed (gone: not drained, its contacts not deleted)");
            return Ok(());
        };
        // Once no instance refreshes there any more, regmirror's contacts go; a REGISTER that
        // was in flight may land after a first sweep, so sweep until two listings are empty.
        tokio::time::sleep(self.config.node_list.poll + Duration::from_secs(1)).await;
        let contact_host = &self.config.kamailio.contact_host;
        let ami = |e| NodeError::Ami(name.into(), e);
        let (mut removed, mut empty_in_a_row) = (0, 0);
        let end = Instant::now() + Duration::from_secs(60);
        while empty_in_a_row < 2 {
            let users = fetch_contact_users(&target, contact_host, AMI_TIMEOUT)
                .await
                .map_err(ami)?;
            if users.is_empty() {
                empty_in_a_row += 1;
            } else {
                empty_in_a_row = 0;
                removed += remove_contacts(&target, contact_host, None, 30 * AMI_TIMEOUT)
                    .await
                    .map_err(ami)?;
            }
            if Instant::now() >= end {
                return Err(NodeError::Refused(format!(
                    "{name}: still holds regmirror's contacts after 60 s (is an instance still mirroring it?)"
                )));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        println!(
            "{name}: removed: {removed} of regmirror's contact(s) deleted from it, none left; \
             it stays in maintenance"
        );
        Ok(())
    }

    async fn list(&self, admin: &str) -> Result<(), NodeError> {
        let farm: Option<FarmStatus> = {
            let admin = admin.to_string();
            tokio::task::spawn_blocking(move || {
                let (code, body) =
                    super::status::http_get(&admin, "/status.json", Duration::from_secs(3)).ok()?;
                (code == 200).then(|| serde_json::from_str(&body).ok())?
            })
            .await
            .ok()
            .flatten()
        };
        // Kamailio's view: the first proxy that answers.
        let mut dispatcher = None;
        for url in &self.config.kamailio.rpc {
            if let Ok(v) = kamailio_rpc::call(url, "dispatcher.list", json!([])).await {
                dispatcher = Some(kamailio_rpc::dispatcher_flags(&v));
                break;
            }
        }
        let mut rows = vec![[
            "NODE",
            "ADDRESS",
            "DISPATCHER",
            "MAINTENANCE",
            "CHANNELS",
            "HEALTH",
            "COVERAGE",
            "LAG",
        ]
        .map(String::from)
        .to_vec()];
        for n in self.nodes() {
            let (maintenance, channels) = match AmiTarget::of(n) {
                None => ("no ami".to_string(), "-".to_string()),
                Some(t) => (
                    match in_maintenance(n).await {
                        Some(true) => "on".into(),
                        Some(false) => "off".into(),
                        None => "unknown".into(),
                    },
                    channel_count(&t, AMI_TIMEOUT)
                        .await
                        .map_or_else(|_| "-".into(), |c| c.to_string()),
                ),
            };
            let uri = destination_of(n.address, n.transport);
            let ds = dispatcher.as_ref().map_or_else(
                || "-".to_string(),
                |d| {
                    d.iter()
                        .find(|(u, _)| *u == uri)
                        .map_or_else(|| "not loaded".into(), |(_, f)| dispatcher_state(f))
                },
            );
            let row = farm
                .as_ref()
                .and_then(|f| f.nodes.iter().find(|r| r.name == n.name));
            rows.push(vec![
                n.name.clone(),
                n.address.to_string(),
                ds,
                maintenance,
                channels,
                row.map_or_else(|| "-".into(), |r| r.health.clone()),
                row.map_or_else(|| "-".into(), |r| percent_text(r.coverage_percent)),
                row.map_or_else(|| "-".into(), |r| lag_text(r.lag_seconds)),
            ]);
        }
        print!("{}", super::status::table(&rows));
        for u in &self.unusable {
            println!("{u}: not used");
        }
        Ok(())
    }
}

/// Kamailio's flags (`AP`, `IP`, `DX`, ...) in words.
fn dispatcher_state(flags: &str) -> String {
    let word = match flags.chars().next() {
        Some('A') => "active",
        Some('I') => "inactive",
        Some('D') => "disabled",
        Some('T') => "trying",
        _ => "unknown",
    };
    format!("{word} ({flags})")
}

/// Whether the node's Kamailio endpoint is in maintenance (`None`: cannot tell).
async fn in_maintenance(n: &NodeConfig) -> Option<bool> {
    let target = AmiTarget::of(n)?;
    let set = endpoints_in_maintenance(&target, AMI_TIMEOUT).await.ok()?;
    Some(set.contains(&n.kamailio_endpoint))
}
