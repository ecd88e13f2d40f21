//! Admin HTTP listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/status` (an HTML
//! page that refreshes itself) and `/status.json`. A deliberately small HTTP/1.1 subset: one
//! GET per connection, loopback by default.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::metrics::Metrics;

pub enum AdminQuery {
    Status(oneshot::Sender<StatusSnapshot>),
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub address: String,
    /// Answers probes (farm health).
    pub up: bool,
    pub registered: u64,
    pub registering: u64,
    pub unregistering: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BindingRow {
    pub aor: String,
    pub node: String,
    pub state: &'static str,
    pub last_result: String,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct StatusSnapshot {
    pub nodes: Vec<NodeRow>,
    pub bindings: Vec<BindingRow>,
}

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, driver: mpsc::Sender<AdminQuery>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let driver = driver.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle(stream, metrics, driver))
                .await;
        });
    }
}

async fn handle(
    mut stream: TcpStream,
    metrics: Arc<Metrics>,
    driver: mpsc::Sender<AdminQuery>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    // Read until the end of the request head (or the buffer is full).
    while len < buf.len() {
        let n = stream.read(&mut buf[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..len]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        )
    } else {
        match path {
            "/healthz" => ("200 OK", "text/plain", "ok\n".to_string()),
            "/readyz" => match status_of(&driver).await {
                Some(_) => ("200 OK", "text/plain", "ready\n".to_string()),
                None => (
                    "503 Service Unavailable",
                    "text/plain",
                    "driver not running\n".to_string(),
                ),
            },
            "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
            "/status.json" => match status_of(&driver).await {
                Some(s) => (
                    "200 OK",
                    "application/json",
                    serde_json::to_string(&s).unwrap_or_default(),
                ),
                None => (
                    "503 Service Unavailable",
                    "text/plain",
                    "driver not running\n".to_string(),
                ),
            },
            "/" | "/status" => match status_of(&driver).await {
                Some(s) => ("200 OK", "text/html; charset=utf-8", render_html(&s)),
                None => (
                    "503 Service Unavailable",
                    "text/plain",
                    "driver not running\n".to_string(),
                ),
            },
            _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

async fn status_of(driver: &mpsc::Sender<AdminQuery>) -> Option<StatusSnapshot> {
    let (tx, rx) = oneshot::channel();
    driver.send(AdminQuery::Status(tx)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .ok()?
        .ok()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn render_html(s: &StatusSnapshot) -> String {
    let mut o = String::with_capacity(8192);
    o.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">");
    o.push_str("<title>regmirror status</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}.registered{color:#070}.failed{color:#b00}</style></head><body>");
    o.push_str("<h1>regmirror</h1><h2>Farm</h2><table id=\"nodes\"><tr><th>node</th><th>address</th><th>registered</th><th>registering</th><th>unregistering</th><th>failed</th></tr>");
    for n in &s.nodes {
        let _ = write!(
            o,
            "<tr class=\"node\"><td>{}</td><td>{}</td><td class=\"registered\">{}</td><td>{}</td><td>{}</td><td class=\"failed\">{}</td></tr>",
            esc(&n.name),
            esc(&n.address),
            n.registered,
            n.registering,
            n.unregistering,
            n.failed
        );
    }
    o.push_str("</table><h2>Bindings</h2><table id=\"bindings\"><tr><th>user</th><th>node</th><th>state</th><th>last result</th></tr>");
    for b in s.bindings.iter().take(1000) {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            esc(&b.aor),
            esc(&b.node),
            b.state,
            b.state,
            esc(&b.last_result)
        );
    }
    if s.bindings.len() > 1000 {
        let _ = write!(
            o,
            "<tr><td colspan=4>... {} more</td></tr>",
            s.bindings.len() - 1000
        );
    }
    o.push_str("</table></body></html>\n");
    o
}
