//! The farm list in the shared database: the rows of Kamailio's own `dispatcher` table (one set,
//! 1 by default) are the nodes, for Kamailio's dispatcher and for regmirror alike. A row says
//! where the node is (`destination`, `sip:ip:port[;transport=tcp]`) and what regmirror needs
//! besides (`attrs`, `name=ast1;ami=10.0.0.31:5038[;kamailio_endpoint=kamailio]`); the AMI
//! login is regmirror's (`[node_list] ami_user` and secret), never in a table Kamailio reads.
//! Pure: rows in, nodes and unusable rows (with why) out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{default_kamailio_endpoint, NodeConfig, Redacted, TransportKind};

/// Where the farm list comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeSource {
    /// `[[nodes]]` in this file (SIGHUP applies changes).
    #[default]
    Config,
    /// Kamailio's `dispatcher` table, followed every `poll`.
    Database,
}

/// `[node_list]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeListConfig {
    pub source: NodeSource,
    /// The dispatcher set that is the farm (Kamailio's `DS_FARM_SET`).
    pub dispatcher_set: i32,
    /// How often the table is read; a change applies within this.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// The AMI login for every node of the table that has `ami=` in its attrs.
    pub ami_user: Option<String>,
    /// Never logged.
    pub ami_secret: Option<Redacted>,
    pub ami_secret_file: Option<PathBuf>,
}

impl Default for NodeListConfig {
    fn default() -> Self {
        NodeListConfig {
            source: NodeSource::Config,
            dispatcher_set: 1,
            poll: Duration::from_secs(2),
            ami_user: None,
            ami_secret: None,
            ami_secret_file: None,
        }
    }
}

/// One row of Kamailio's `dispatcher` table (version 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatcherRow {
    pub id: u32,
    pub destination: String,
    pub flags: i32,
    pub priority: i32,
    pub attrs: String,
    pub description: String,
}

/// A row regmirror cannot mirror, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableRow {
    pub id: u32,
    pub destination: String,
    pub why: String,
}

impl std::fmt::Display for UnusableRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dispatcher row {} ({}): {}",
            self.id, self.destination, self.why
        )
    }
}

/// The nodes of `rows` in table order, and the rows that cannot be used (a later row with the
/// name or address of an earlier one included).
pub fn nodes_of_rows(
    rows: &[DispatcherRow],
    list: &NodeListConfig,
) -> (Vec<NodeConfig>, Vec<UnusableRow>) {
    let (mut nodes, mut unusable) = (Vec::<NodeConfig>::new(), Vec::new());
    for row in rows {
        let node = node_of_row(row, list).and_then(|n| {
            if nodes.iter().any(|m| m.name == n.name) {
                Err(format!("a row before it already has name={}", n.name))
            } else if nodes.iter().any(|m| m.address == n.address) {
                Err(format!("a row before it already has {}", n.address))
            } else {
                Ok(n)
            }
        });
        match node {
            Ok(n) => nodes.push(n),
            Err(why) => unusable.push(UnusableRow {
                id: row.id,
                destination: row.destination.clone(),
                why,
            }),
        }
    }
    (nodes, unusable)
}

fn node_of_row(row: &DispatcherRow, list: &NodeListConfig) -> Result<NodeConfig, String> {
    let (address, transport) = parse_destination(&row.destination)?;
    let (mut name, mut ami, mut endpoint) = (None, None, default_kamailio_endpoint());
    for pair in row
        .attrs
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key.trim() {
            "name" => name = Some(value.trim().to_string()),
            "ami" => {
                ami = Some(value.trim().parse::<SocketAddr>().map_err(|_| {
                    format!("attrs ami={value} is not ip:port (the node's AMI, usually port 5038)")
                })?)
            }
            "kamailio_endpoint" => endpoint = value.trim().to_string(),
            _ => {} // Kamailio's own attributes (weight, socket, ...)
        }
    }
    let name = name.ok_or("attrs has no name=<node name>")?;
    let login = ami.and(list.ami_user.as_ref().zip(list.ami_secret.as_ref()));
    let node = NodeConfig {
        name,
        address,
        transport,
        ami: login.and(ami),
        ami_user: login.map(|(u, _)| u.clone()),
        ami_secret: login.map(|(_, s)| s.clone()),
        ami_secret_file: None,
        kamailio_endpoint: endpoint,
    };
    match node.problem() {
        Some((field, why)) => Err(format!("{field}: {why}")),
        None => Ok(node),
    }
}

/// `sip:ip[:port][;transport=udp|tcp]` (port 5060 when absent).
fn parse_destination(uri: &str) -> Result<(SocketAddr, TransportKind), String> {
    let bad = |why: &str| format!("destination {uri:?}: {why}");
    let rest = uri
        .get(..4)
        .filter(|s| s.eq_ignore_ascii_case("sip:"))
        .map(|_| &uri[4..])
        .ok_or_else(|| bad("must start with sip:"))?;
    let mut parts = rest.split(';');
    let hostport = parts.next().unwrap_or_default();
    let address = hostport
        .parse::<SocketAddr>()
        .or_else(|_| hostport.parse().map(|ip| SocketAddr::new(ip, 5060)))
        .map_err(|_| bad("the host must be an IP address (ip or ip:port)"))?;
    let mut transport = TransportKind::Udp;
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            if k.eq_ignore_ascii_case("transport") {
                transport = match v.to_ascii_lowercase().as_str() {
                    "udp" => TransportKind::Udp,
                    "tcp" => TransportKind::Tcp,
                    _ => return Err(bad("regmirror reaches nodes over udp or tcp only")),
                };
            }
        }
    }
    Ok((address, transport))
}

/// The `destination` of a node's row.
pub fn destination_of(address: SocketAddr, transport: TransportKind) -> String {
    match transport {
        TransportKind::Udp => format!("sip:{address}"),
        TransportKind::Tcp => format!("sip:{address};transport=tcp"),
    }
}

/// The `attrs` of a node's row.
pub fn attrs_of(name: &str, ami: Option<SocketAddr>, kamailio_endpoint: &str) -> String {
    let mut attrs = format!("name={name}");
    if let Some(a) = ami {
        attrs.push_str(&format!(";ami={a}"));
    }
    if kamailio_endpoint != default_kamailio_endpoint() {
        attrs.push_str(&format!(";kamailio_endpoint={kamailio_endpoint}"));
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u32, destination: &str, attrs: &str) -> DispatcherRow {
        DispatcherRow {
            id,
            destination: destination.into(),
            flags: 0,
            priority: 0,
            attrs: attrs.into(),
            description: String::new(),
        }
    }

    fn with_login() -> NodeListConfig {
        NodeListConfig {
            ami_user: Some("regmirror".into()),
            ami_secret: Some(Redacted("s3cret-ami".into())),
            ..NodeListConfig::default()
        }
    }

    #[test]
    fn rows_written_by_the_cli_read_back_as_the_same_nodes() {
        let ami: SocketAddr = "10.0.0.33:5038".parse().unwrap();
        let rows = [
            row(1, "sip:10.0.0.31:5060", "name=ast1"),
            row(
                2,
                &destination_of("10.0.0.33:5070".parse().unwrap(), TransportKind::Tcp),
                &attrs_of("ast3", Some(ami), "kam"),
            ),
            row(3, "SIP:10.0.0.34", "weight=50;name=ast4"),
        ];
        let (nodes, unusable) = nodes_of_rows(&rows, &with_login());
        assert!(unusable.is_empty(), "{unusable:?}");
        let n: Vec<_> = nodes
            .iter()
            .map(|n| (n.name.as_str(), n.address.to_string(), n.transport, n.ami))
            .collect();
        assert_eq!(
            n,
            [
                ("ast1", "10.0.0.31:5060".into(), TransportKind::Udp, None),
                (
                    "ast3",
                    "10.0.0.33:5070".into(),
                    TransportKind::Tcp,
                    Some(ami)
                ),
                ("ast4", "10.0.0.34:5060".into(), TransportKind::Udp, None),
            ]
        );
        assert_eq!(nodes[1].kamailio_endpoint, "kam");
        assert_eq!(nodes[1].ami_secret, Some(Redacted("s3cret-ami".into())));
        assert_eq!(nodes[0].kamailio_endpoint, "kamailio");
    }

    #[test]
    fn a_row_without_an_ami_login_configured_is_mirrored_without_ami() {
        let (nodes, _) = nodes_of_rows(
            &[row(1, "sip:10.0.0.31:5060", "name=ast1;ami=10.0.0.31:5038")],
            &NodeListConfig::default(),
        );
        assert_eq!(nodes[0].ami, None);
    }

    #[test]
    fn unusable_rows_are_set_aside_with_why_and_the_rest_is_kept() {
        let rows = [
            row(1, "sip:10.0.0.31:5060", "name=ast1"),
            row(2, "sip:ast2.example.net:5060", "name=ast2"),
            row(3, "sip:10.0.0.32:5060", "duid=x"),
            row(4, "sip:10.0.0.33:5060;transport=tls", "name=ast3"),
            row(5, "sip:10.0.0.34:5060", "name=ast1"),
            row(6, "sip:10.0.0.31:5060", "name=ast5"),
            row(7, "sip:10.0.0.35:5060", "name=bad name"),
            row(8, "sip:10.0.0.36:5060", "name=ast6;ami=nowhere"),
            row(9, "10.0.0.37:5060", "name=ast7"),
            row(10, "sip:0.0.0.0:5060", "name=ast8"),
        ];
        let (nodes, unusable) = nodes_of_rows(&rows, &with_login());
        assert_eq!(nodes.len(), 1);
        let why: Vec<(u32, &str)> = unusable.iter().map(|u| (u.id, u.why.as_str())).collect();
        assert_eq!(why.len(), 9, "{why:?}");
        let has = |id: u32, part: &str| {
            why.iter()
                .any(|(i, w)| *i == id && w.contains(part))
                .then_some(())
                .ok_or(format!("row {id} not refused for {part:?}: {why:?}"))
        };
        has(2, "must be an IP address").unwrap();
        has(3, "no name=").unwrap();
        has(4, "udp or tcp only").unwrap();
        has(5, "already has name=ast1").unwrap();
        has(6, "already has 10.0.0.31:5060").unwrap();
        has(7, "name").unwrap();
        has(8, "ami=nowhere").unwrap();
        has(9, "must start with sip:").unwrap();
        has(10, "concrete").unwrap();
    }
}
