//! `regmirror status [user]`: asks a running service's admin listener. Exit codes: 0 ok,
//! 1 usage (bad `--admin` URL), 2 the user has no binding on any node, 3 the service cannot be
//! reached or answered something unexpected.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

use crate::status::{health_text, lag_text, percent_text, FarmStatus, UserStatus};

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

/// Largest answer read (the status of 100,000 bindings is a few MB).
const MAX_BODY: usize = 16 * 1024 * 1024;

/// `GET path` on `base` (`http://host:port[/prefix]`): status code and body, within `timeout`.
pub fn http_get(base: &str, path: &str, timeout: Duration) -> Result<(u16, String), HttpError> {
    http_request(base, path, None, timeout)
}

/// `GET path`, or `POST path` with `json` as the body, on `base`: status code and body, within
/// `timeout`.
pub fn http_request(
    base: &str,
    path: &str,
    json: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), HttpError> {
    let bad_url = || HttpError::Url(base.into());
    let uri: Uri = format!("{}{path}", base.trim_end_matches('/'))
        .parse()
        .map_err(|_| bad_url())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad_url());
    }
    let authority = uri.authority().ok_or_else(bad_url)?.clone();
    let unreachable = |e| HttpError::Unreachable(base.into(), e);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(unreachable)?;
    let exchange = async {
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let stream = TcpStream::connect(addr).await.map_err(unreachable)?;
        let protocol = |e: hyper::Error| HttpError::Protocol(base.into(), e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(protocol)?;
        tokio::spawn(conn);
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let request = match json {
            None => Request::get(target),
            Some(_) => {
                Request::post(target).header(hyper::header::CONTENT_TYPE, "application/json")
            }
        }
        .header(hyper::header::HOST, authority.as_str())
        .body(Full::new(Bytes::from(json.unwrap_or("").to_owned())))
        .map_err(|_| bad_url())?;
        let response = sender.send_request(request).await.map_err(protocol)?;
        let code = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Protocol(base.into(), e.to_string()))?
            .to_bytes();
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    };
    runtime.block_on(async {
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(unreachable(std::io::ErrorKind::TimedOut.into())))
    })
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
pub(crate) fn table(rows: &[Vec<String>]) -> String {
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
            health_text(&n.health, n.maintenance),
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
            health_text(&b.health, b.maintenance),
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

    /// The answer is read by a real HTTP client: chunked bodies, the path under a prefix.
    #[test]
    fn reads_a_chunked_answer_under_a_prefix() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap() == 1 {
                head.push(byte[0]);
            }
            s.write_all(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let got = http_get(
            &format!("http://127.0.0.1:{port}/rm/"),
            "/status/u%401",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(got, (404, "hello world".to_string()));
        let head = server.join().unwrap();
        assert!(
            head.starts_with("GET /rm/status/u%401 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{head}"
        );
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
