//! `regmirror status [user]`: asks a running service's admin listener. Exit codes: 0 ok,
//! 1 usage (bad `--admin` URL), 2 the user has no binding on any node, 3 the service cannot be
//! reached or answered something unexpected.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;
use thiserror::Error;

use crate::status::{lag_text, percent_text, FarmStatus, UserStatus};

#[derive(Args)]
pub struct StatusArgs {
    /// Show this user's binding on each node (state, last result, next refresh).
    pub user: Option<String>,
    /// The service's admin listener.
    #[arg(long, env = "REGMIRROR_ADMIN", default_value = "http://127.0.0.1:9070")]
    pub admin: String,
    /// Print the service's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("invalid admin URL `{0}`: expected http://host:port")]
    Url(String),
    #[error("cannot reach {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("unexpected answer from {0}: {1}")]
    Protocol(String, String),
}

impl HttpError {
    pub fn exit_code(&self) -> u8 {
        match self {
            HttpError::Url(_) => 1,
            _ => 3,
        }
    }
}

/// `GET path` on `base` (`http://host:port[/prefix]`): status code and body. HTTP/1.0 so the
/// server closes and no chunked decoding is needed.
pub fn http_get(base: &str, path: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    let rest = base
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(base.into()))?;
    let (hostport, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if hostport.is_empty() {
        return Err(HttpError::Url(base.into()));
    }
    let target = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| HttpError::Unreachable(base.into(), e))?
        .next()
        .ok_or_else(|| HttpError::Url(base.into()))?;
    let unreachable = |e| HttpError::Unreachable(base.into(), e);
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(unreachable)?;
    s.set_read_timeout(Some(timeout)).map_err(unreachable)?;
    s.set_write_timeout(Some(timeout)).map_err(unreachable)?;
    write!(
        s,
        "GET {prefix}{path} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .map_err(unreachable)?;
    let mut raw = Vec::new();
    s.take(16 * 1024 * 1024)
        .read_to_end(&mut raw)
        .map_err(unreachable)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| HttpError::Protocol(base.into(), "no HTTP header".into()))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| head.starts_with("HTTP/1."))
        .ok_or_else(|| HttpError::Protocol(base.into(), "no HTTP status line".into()))?;
    Ok((code, body.to_string()))
}

/// Bytes of a user id written as they are in a URL path; everything else is percent-encoded.
const USER_ID: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.');

fn encode(user: &str) -> String {
    percent_encoding::utf8_percent_encode(user, USER_ID).to_string()
}

/// Runs the command, printing to stdout/stderr; returns the exit code.
pub fn run(args: StatusArgs) -> u8 {
    let timeout = Duration::from_secs(5);
    let path = match &args.user {
        Some(u) => format!("/status/{}.json", encode(u)),
        None => "/status.json".into(),
    };
    let (code, body) = match http_get(&args.admin, &path, timeout) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("regmirror: {e}");
            return e.exit_code();
        }
    };
    match code {
        200 => {}
        400 if args.user.is_some() => {
            eprintln!("regmirror: invalid user id");
            return 1;
        }
        _ => {
            eprintln!("regmirror: {} answered {code}: {}", args.admin, body.trim());
            return 3;
        }
    }
    match &args.user {
        None => match serde_json::from_str::<FarmStatus>(&body) {
            Ok(f) => {
                if args.json {
                    println!("{body}");
                } else {
                    print!("{}", format_farm(&f));
                }
                0
            }
            Err(e) => {
                eprintln!("regmirror: unexpected answer from {}: {e}", args.admin);
                3
            }
        },
        Some(user) => match serde_json::from_str::<UserStatus>(&body) {
            Ok(u) => {
                if args.json {
                    println!("{body}");
                } else {
                    print!("{}", format_user(&u));
                }
                if u.has_binding() {
                    0
                } else {
                    eprintln!("regmirror: {user} has no binding on any node");
                    2
                }
            }
            Err(e) => {
                eprintln!("regmirror: unexpected answer from {}: {e}", args.admin);
                3
            }
        },
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut o = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(o, "{}", line.join("  ").trim_end());
    }
    o
}

pub fn format_farm(f: &FarmStatus) -> String {
    let mut o = format!(
        "regmirror {}, up {} s: {} live AOR(s), {} binding(s) on {} node(s)\n",
        f.version,
        f.uptime_seconds,
        f.live_aors,
        f.bindings_total,
        f.nodes.len()
    );
    // Without `[ha]` nothing is said: standalone is always active.
    if f.ha.role != "standalone" {
        let _ = writeln!(
            o,
            "HA {} ({}), peer {}, {} takeover(s){}",
            f.ha.role,
            f.ha.state,
            f.ha.peer.as_deref().unwrap_or("-"),
            f.ha.takeovers,
            if f.ha.state == "standby" {
                ": the peer registers on the nodes"
            } else {
                ""
            }
        );
    }
    let mut rows = vec![[
        "NODE",
        "ADDRESS",
        "HEALTH",
        "COVERAGE",
        "LAG",
        "DESIRED",
        "CONFIRMED",
        "REGISTERING",
        "UNREGISTERING",
        "FAILING",
        "DRIFT",
    ]
    .map(String::from)
    .to_vec()];
    for n in &f.nodes {
        rows.push(vec![
            n.name.clone(),
            n.address.clone(),
            n.health.clone(),
            percent_text(n.coverage_percent),
            lag_text(n.lag_seconds),
            n.desired.to_string(),
            n.confirmed.to_string(),
            n.registering.to_string(),
            n.unregistering.to_string(),
            n.failing.to_string(),
            n.drift.to_string(),
        ]);
    }
    o.push_str(&table(&rows));
    o
}

pub fn format_user(u: &UserStatus) -> String {
    let mut o = format!(
        "user {}: {}\n",
        u.user,
        if u.live {
            "live in Kamailio"
        } else {
            "not live in Kamailio"
        }
    );
    let mut rows = vec![[
        "NODE",
        "HEALTH",
        "STATE",
        "LAST RESULT",
        "NEXT ACTION",
        "GRANTED",
        "FAILURES",
    ]
    .map(String::from)
    .to_vec()];
    for b in &u.nodes {
        rows.push(vec![
            b.node.clone(),
            b.health.clone(),
            b.state.clone(),
            b.last_result.clone(),
            b.next_action_seconds
                .map_or_else(|| "-".into(), |s| format!("in {s:.0} s")),
            if b.granted_expires > 0 {
                format!("{} s", b.granted_expires)
            } else {
                "-".into()
            },
            b.failures.to_string(),
        ]);
    }
    o.push_str(&table(&rows));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_usage_errors() {
        for u in ["127.0.0.1:9070", "https://x:1", "http://"] {
            let e = http_get(u, "/", Duration::from_millis(100)).unwrap_err();
            assert_eq!(e.exit_code(), 1, "{u}: {e}");
        }
    }

    #[test]
    fn closed_port_is_unreachable() {
        // Bind then drop: the port is very likely closed right after.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = http_get(
            &format!("http://127.0.0.1:{port}"),
            "/",
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 3, "{e}");
    }

    #[test]
    fn farm_shows_the_ha_role_only_in_a_pair() {
        let mut f = FarmStatus::default();
        assert!(!format_farm(&f).contains("HA "));
        f.ha.role = "secondary".into();
        f.ha.state = "standby".into();
        f.ha.peer = Some("10.0.0.40:5070".into());
        let t = format_farm(&f);
        assert!(
            t.contains("HA secondary (standby), peer 10.0.0.40:5070"),
            "{t}"
        );
    }

    #[test]
    fn farm_shows_each_nodes_coverage_and_lag() {
        let mut f = FarmStatus::default();
        for (name, desired, covered, percent, lag) in [
            ("ast1", 1000, 1000, 100.0, 0.0),
            ("ast2", 1000, 973, 97.3, 41.26),
            ("ast3", 1000, 999, 99.9, 3.04),
        ] {
            f.nodes.push(crate::status::NodeRow {
                name: name.into(),
                address: "10.0.0.1:5060".into(),
                health: "up".into(),
                desired,
                covered,
                coverage_percent: percent,
                lag_seconds: lag,
                ..Default::default()
            });
        }
        let t = format_farm(&f);
        let row = |node: &str| -> Vec<String> {
            let line = t.lines().find(|l| l.starts_with(node)).unwrap_or_default();
            line.split_whitespace().map(String::from).collect()
        };
        let header = row("NODE");
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        let (cov, lag) = (col("COVERAGE"), col("LAG"));
        assert_eq!(row("ast1")[cov], "100%", "{t}");
        assert_eq!(row("ast1")[lag..lag + 2], ["0", "s"], "{t}");
        assert_eq!(row("ast2")[cov], "97.3%", "{t}");
        assert_eq!(row("ast2")[lag..lag + 2], ["41", "s"], "{t}");
        assert_eq!(row("ast3")[cov], "99.9%", "{t}");
        assert_eq!(row("ast3")[lag..lag + 2], ["3.0", "s"], "{t}");
    }

    #[test]
    fn user_ids_are_percent_encoded() {
        assert_eq!(encode("10+01/x"), "10%2B01%2Fx");
        assert_eq!(encode("1001"), "1001");
    }
}
