//! Admin HTTP listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/status` (an HTML
//! page that refreshes itself), `/status.json` (farm summary) and `/status/<user>.json` (one
//! user's bindings). HTTP/1.1 through hyper, one GET per connection, a bounded number of
//! connections and a bounded time for each; loopback by default.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::metrics::{self, Metrics};
use crate::status::{lag_text, percent_text, FarmStatus, UserStatus};

/// Questions the admin listener asks the driver task (which owns the `Mirror`).
pub enum AdminQuery {
    /// Farm summary with at most `bindings` binding rows (0 = counts only).
    Farm {
        bindings: usize,
        reply: oneshot::Sender<FarmStatus>,
    },
    /// One user's bindings on every node.
    User {
        user: String,
        reply: oneshot::Sender<UserStatus>,
    },
}

/// Serves the admin endpoints (`/readyz` answers 200 while the driver answers queries). At
/// most `MAX_CONNECTIONS` at a time (more are closed at once), and the driver is asked for
/// the farm at most once per `SNAPSHOT_TTL`, so a flood costs the driver nothing.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, driver: mpsc::Sender<AdminQuery>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let ctx = Arc::new(Ctx {
        metrics,
        driver,
        snapshots: Snapshots::default(),
        started: Instant::now(),
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECTION_MAX, connection(stream, ctx)).await;
            drop(slot);
        });
    }
}

/// One connection: one request (no keep-alive), its head within `HEAD_READ_MAX`.
async fn connection(stream: TcpStream, ctx: Arc<Ctx>) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(respond(&ctx, req.method(), req.uri().path()).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_READ_MAX)
        .max_buf_size(HEAD_MAX)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// What every connection shares.
struct Ctx {
    metrics: Arc<Metrics>,
    driver: mpsc::Sender<AdminQuery>,
    snapshots: Snapshots,
    started: Instant,
}

/// The last farm snapshots (counts only; with the page's binding rows). Each lock is held across
/// the driver query, so concurrent requests wait for that one query.
#[derive(Default)]
struct Snapshots {
    counts: tokio::sync::Mutex<Option<(Instant, FarmStatus)>>,
    page: tokio::sync::Mutex<Option<(Instant, FarmStatus)>>,
}

type Reply = (StatusCode, &'static str, String);

fn unavailable() -> Reply {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "driver not running\n".to_string(),
    )
}

async fn respond(ctx: &Ctx, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = route(ctx, method, path).await;
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn route(ctx: &Ctx, method: &Method, path: &str) -> Reply {
    let Ctx {
        ref metrics,
        ref driver,
        ref snapshots,
        started,
    } = *ctx;
    let farm = |bindings, uptime| farm(driver, snapshots, bindings, uptime);
    let uptime = started.elapsed().as_secs();
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".to_string(),
        );
    }
    let ok = StatusCode::OK;
    match path {
        "/healthz" => (ok, "text/plain", "ok\n".to_string()),
        "/readyz" => match farm(0, uptime).await {
            Some(_) => (ok, "text/plain", "ready\n".to_string()),
            None => unavailable(),
        },
        "/metrics" => {
            let f = farm(0, uptime).await;
            (ok, metrics::CONTENT_TYPE, metrics.render(f.as_ref()))
        }
        "/status.json" => match farm(0, uptime).await {
            Some(s) => (
                ok,
                "application/json",
                serde_json::to_string(&s).unwrap_or_default(),
            ),
            None => unavailable(),
        },
        "/" | "/status" => match farm(PAGE_BINDINGS, uptime).await {
            Some(s) => (ok, "text/html; charset=utf-8", render_html(&s)),
            None => unavailable(),
        },
        p => match p
            .strip_prefix("/status/")
            .and_then(|u| u.strip_suffix(".json"))
            .map(percent_decode)
        {
            Some(Some(user)) if crate::core::mirror::user_part(&user) == Some(&user) => {
                match ask(driver, |reply| AdminQuery::User { user, reply }).await {
                    Some(s) => (
                        ok,
                        "application/json",
                        serde_json::to_string(&s).unwrap_or_default(),
                    ),
                    None => unavailable(),
                }
            }
            Some(_) => (
                StatusCode::BAD_REQUEST,
                "text/plain",
                "invalid user\n".into(),
            ),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ),
        },
    }
}

/// Binding rows shown on the HTML page (problems first).
const PAGE_BINDINGS: usize = 500;
/// Concurrent admin connections; more are closed at once.
const MAX_CONNECTIONS: usize = 32;
/// A connection's whole life, and the time its request head may take to arrive.
const CONNECTION_MAX: Duration = Duration::from_secs(10);
const HEAD_READ_MAX: Duration = Duration::from_secs(5);
/// Largest request head read (hyper's smallest buffer).
const HEAD_MAX: usize = 8192;
/// How long one farm snapshot serves every request.
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);

async fn farm(
    driver: &mpsc::Sender<AdminQuery>,
    snapshots: &Snapshots,
    bindings: usize,
    uptime: u64,
) -> Option<FarmStatus> {
    let slot = if bindings == 0 {
        &snapshots.counts
    } else {
        &snapshots.page
    };
    let mut cached = slot.lock().await;
    let mut f = match cached.as_ref() {
        Some((at, f)) if at.elapsed() < SNAPSHOT_TTL => f.clone(),
        _ => {
            let f = ask(driver, |reply| AdminQuery::Farm { bindings, reply }).await?;
            *cached = Some((Instant::now(), f.clone()));
            f
        }
    };
    f.uptime_seconds = uptime;
    Some(f)
}

async fn ask<T>(
    driver: &mpsc::Sender<AdminQuery>,
    q: impl FnOnce(oneshot::Sender<T>) -> AdminQuery,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    driver.send(q(tx)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .ok()?
        .ok()
}

/// A path segment, percent-decoded (`None` when the result is not UTF-8).
fn percent_decode(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: plain HTML, no script, refreshes itself every 5 s.
pub fn render_html(s: &FarmStatus) -> String {
    let mut o = String::with_capacity(16_384);
    o.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>regmirror status</title><style>\
         body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}\
         h1{font-size:1.5em;margin:0 0 .2em}.sub{color:#666;margin-bottom:1.2em}\
         table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border:1px solid #ccc;padding:4px 12px;text-align:left}th{background:#f3f3f3}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}\
         .up,.registered{color:#080;font-weight:600}.down,.failed{color:#c00;font-weight:600}\
         .unknown,.registering,.unregistering,.standby{color:#a60}.partial{color:#a60;font-weight:600}\
         .active,.full{color:#080;font-weight:600}.zero{color:#999}\
         </style></head><body>",
    );
    let _ = write!(
        o,
        "<h1>regmirror</h1><div class=\"sub\">version {} &middot; up {} s &middot; \
         <span id=\"live-aors\">{}</span> live AOR(s) &middot; {} binding(s) &middot; {} node(s)</div>",
        esc(&s.version),
        s.uptime_seconds,
        s.live_aors,
        s.bindings_total,
        s.nodes.len()
    );
    let _ = write!(
        o,
        "<div class=\"sub\">role <span id=\"ha-role\">{}</span> &middot; \
         <span id=\"ha-state\" class=\"{1}\">{1}</span>{2} &middot; {3} takeover(s)</div>",
        esc(&s.ha.role),
        esc(&s.ha.state),
        s.ha.peer
            .as_deref()
            .map(|p| format!(" &middot; peer {}", esc(p)))
            .unwrap_or_default(),
        s.ha.takeovers
    );
    o.push_str(
        "<h2>Farm</h2><table id=\"nodes\"><tr><th>node</th><th>address</th><th>health</th>\
         <th>coverage</th><th>lag</th><th>desired</th><th>confirmed</th><th>registering</th>\
         <th>unregistering</th><th>failing</th><th>drift</th></tr>",
    );
    let num = |o: &mut String, class: &str, v: u64| {
        let z = if v == 0 { " zero" } else { "" };
        let _ = write!(o, "<td class=\"n {class}{z}\">{v}</td>");
    };
    for n in &s.nodes {
        let _ = write!(
            o,
            "<tr class=\"node\" data-node=\"{0}\"><td class=\"name\">{0}</td><td>{1}</td>\
             <td class=\"{2}\">{2}</td>",
            esc(&n.name),
            esc(&n.address),
            esc(&n.health)
        );
        let _ = write!(
            o,
            "<td class=\"n coverage {}\">{}</td><td class=\"n lag{}\">{}</td>",
            if n.covered >= n.desired {
                "full"
            } else {
                "partial"
            },
            percent_text(n.coverage_percent),
            if n.lag_seconds > 0.0 { "" } else { " zero" },
            lag_text(n.lag_seconds)
        );
        num(&mut o, "desired", n.desired);
        num(&mut o, "confirmed", n.confirmed);
        num(&mut o, "registering", n.registering);
        num(&mut o, "unregistering", n.unregistering);
        num(&mut o, "failing", n.failing);
        num(&mut o, "drift", n.drift);
        o.push_str("</tr>");
    }
    let st = &s.stats;
    let _ = write!(
        o,
        "</table><h2>Traffic</h2><table id=\"stats\"><tr><th>transactions</th><th>retransmits</th>\
         <th>timeouts</th><th>challenges</th><th>credential rejected</th><th>queued</th></tr>\
         <tr><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
         <td class=\"n\">{}</td><td class=\"n\">{}</td></tr></table>",
        st.transactions, st.retransmits, st.timeouts, st.challenges, st.credential_rejected, st.queued
    );
    o.push_str(
        "<h2>Bindings</h2><table id=\"bindings\"><tr><th>user</th><th>node</th><th>state</th>\
         <th>last result</th></tr>",
    );
    for b in &s.bindings {
        let _ = write!(
            o,
            "<tr class=\"binding\"><td>{}</td><td>{}</td><td class=\"{2}\">{2}</td><td>{3}</td></tr>",
            esc(&b.user),
            esc(&b.node),
            esc(&b.state),
            esc(&b.last_result)
        );
    }
    let shown = s.bindings.len() as u64;
    if s.bindings_total > shown {
        let _ = write!(
            o,
            "<tr><td colspan=\"4\">&hellip; {} more (problems are listed first)</td></tr>",
            s.bindings_total - shown
        );
    }
    o.push_str("</table></body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{farm_status, BindingRow, NodeRow};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn page_escapes_and_lists_nodes() {
        let s = FarmStatus {
            version: "0.1.0".into(),
            live_aors: 1,
            nodes: vec![NodeRow {
                name: "ast<1>".into(),
                address: "10.0.0.1:5060".into(),
                health: "unknown".into(),
                desired: 1,
                confirmed: 1,
                ..Default::default()
            }],
            bindings_total: 1,
            bindings: vec![BindingRow {
                user: "1001".into(),
                node: "ast<1>".into(),
                state: "registered".into(),
                last_result: "200 OK".into(),
            }],
            ..Default::default()
        };
        let h = render_html(&s);
        assert!(h.contains("ast&lt;1&gt;") && !h.contains("ast<1>"), "{h}");
        assert!(h.contains("http-equiv=\"refresh\""));
        assert!(h.contains("<td class=\"n confirmed\">1</td>"));
    }

    /// The mirror's coverage reaches the JSON and the page: a live user whose credential is
    /// still being looked up is desired and not covered, its wait is the lag.
    #[test]
    fn nodes_show_the_mirrors_coverage_and_lag() {
        use crate::core::digest::Secret;
        use crate::core::mirror::{Credential, MirrorConfig, Transport};
        use crate::core::testing::Sim;
        let cfg = MirrorConfig {
            domain: "regmirror.test".into(),
            ..MirrorConfig::default()
        };
        let mut s = Sim::new(cfg, 2, Transport::Udp, 1);
        s.add_user("1001", Secret::Password("pw".into()));
        let now = s.now;
        s.mirror
            .aor_update(now, "1001", Duration::from_secs(600), None, None);
        s.run_for(Duration::from_millis(2500));
        // (desired, covered, coverage %, lag s) of every node
        let every_node = |f: &FarmStatus, want: (u64, u64, f64, f64)| {
            for n in &f.nodes {
                let got = (n.desired, n.covered, n.coverage_percent, n.lag_seconds);
                assert_eq!(got, want, "{n:?}");
            }
        };
        let f = farm_status(&s.mirror, s.now, |_| "up", 0);
        every_node(&f, (1, 0, 0.0, 2.5));
        let h = render_html(&f);
        assert!(
            h.contains("<td class=\"n coverage partial\">0%</td>"),
            "{h}"
        );
        assert!(h.contains("<td class=\"n lag\">2.5 s</td>"), "{h}");
        let now = s.now;
        let c = Credential {
            username: "1001".into(),
            secret: Secret::Password("pw".into()),
        };
        s.mirror.set_credential(now, "1001", Some(c));
        s.run_for(Duration::from_secs(1));
        let f = farm_status(&s.mirror, s.now, |_| "up", 0);
        every_node(&f, (1, 1, 100.0, 0.0));
        let json = serde_json::to_string(&f).unwrap();
        assert!(
            json.contains("\"coverage_percent\":100.0,\"lag_seconds\":0.0"),
            "{json}"
        );
        let h = render_html(&f);
        assert!(h.contains("<td class=\"n coverage full\">100%</td>"), "{h}");
        assert!(h.contains("<td class=\"n lag zero\">0 s</td>"), "{h}");
    }

    /// Issue 15: a flood of requests costs the driver at most one farm query per second, and
    /// connections beyond the limit are closed at once.
    #[tokio::test]
    async fn a_flood_is_served_from_one_snapshot_and_connections_are_limited() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::AsyncWriteExt;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let queries = Arc::new(AtomicUsize::new(0));
        let counted = queries.clone();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                if let AdminQuery::Farm { reply, .. } = q {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(FarmStatus::default());
                }
            }
        });
        tokio::spawn(serve(listener, Arc::new(Metrics::default()), tx));

        let get = || async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
        };
        let mut flood = Vec::new();
        for _ in 0..20 {
            for _ in 0..10 {
                flood.push(tokio::spawn(get()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut ok = 0;
        for f in flood {
            ok += usize::from(f.await.unwrap());
        }
        assert!(ok > 0);
        assert!(
            queries.load(Ordering::Relaxed) <= 2,
            "{} farm queries for 200 requests in 0.4 s",
            queries.load(Ordering::Relaxed)
        );

        // Idle connections up to the limit stay open; the next one is closed at once.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(2), extra.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        drop(idle);
    }

    #[tokio::test]
    async fn a_request_head_that_never_ends_is_cut_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        tokio::spawn(serve(listener, Arc::new(Metrics::default()), tx));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: 1\r\n")
            .await
            .unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let r = tokio::time::timeout(HEAD_READ_MAX * 2, s.read_to_end(&mut out)).await;
        assert!(r.is_ok(), "still open after {:?}", t0.elapsed());
        assert!(t0.elapsed() >= HEAD_READ_MAX - Duration::from_millis(100));
        // And a complete request is answered, with the headers the clients read.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let text = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200 ok\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(text.contains("cache-control: no-store\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("10%2B01").as_deref(), Some("10+01"));
        assert_eq!(percent_decode("%FF"), None);
        // A `%` that starts no escape stays as it is (a user part may hold `%`).
        assert_eq!(percent_decode("%zz").as_deref(), Some("%zz"));
    }
}
