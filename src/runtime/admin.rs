//! Admin HTTP listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text), `/status` (an HTML
//! page that refreshes itself), `/status.json` (farm summary) and `/status/<user>.json` (one
//! user's bindings). HTTP/1.1 through hyper, one GET per connection, a bounded number of
//! connections and a bounded time for each; loopback by default.

use std::convert::Infallible;
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
use crate::runtime::page::{render_html, History, SAMPLE_EVERY};
use crate::status::{BindingList, BindingSort, FarmStatus, UserStatus};

/// Questions the admin listener asks the driver task (which owns the `Mirror`).
pub enum AdminQuery {
    /// Farm summary with the binding rows `bindings` asks for.
    Farm {
        bindings: BindingList,
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
        history: Default::default(),
    });
    // The page's picture of the last hour: one counts-only snapshot every SAMPLE_EVERY.
    let sampler = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        loop {
            tick.tick().await;
            let uptime = sampler.started.elapsed().as_secs();
            let list = BindingList::none();
            if let Some(f) = farm(&sampler.driver, &sampler.snapshots, list, uptime).await {
                if let Ok(mut h) = sampler.history.lock() {
                    h.push(&f);
                }
            }
        }
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
        async move {
            let uri = req.uri();
            Ok::<_, Infallible>(respond(&ctx, req.method(), uri.path(), uri.query()).await)
        }
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
    history: std::sync::Mutex<History>,
}

/// The last farm snapshots (counts only; with the page's binding rows, for its last search and
/// sort). Each lock is held across the driver query, so concurrent requests wait for that one
/// query, and each slot asks the driver at most once per `SNAPSHOT_TTL` (with 100,000 bindings a
/// page's summary takes the driver 20-35 ms: BENCHMARKS.md).
#[derive(Default)]
struct Snapshots {
    counts: tokio::sync::Mutex<Option<(Instant, BindingList, FarmStatus)>>,
    page: tokio::sync::Mutex<Option<(Instant, BindingList, FarmStatus)>>,
}

type Reply = (StatusCode, &'static str, String);

fn unavailable() -> Reply {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain",
        "driver not running\n".to_string(),
    )
}

async fn respond(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Response<Full<Bytes>> {
    let (status, ctype, body) = route(ctx, method, path, query).await;
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn route(ctx: &Ctx, method: &Method, path: &str, query: Option<&str>) -> Reply {
    let Ctx {
        ref metrics,
        ref driver,
        ref snapshots,
        started,
        ref history,
    } = *ctx;
    let farm = |bindings, uptime| farm(driver, snapshots, bindings, uptime);
    let counts = BindingList::none;
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
        "/readyz" => match farm(counts(), uptime).await {
            Some(_) => (ok, "text/plain", "ready\n".to_string()),
            None => unavailable(),
        },
        "/metrics" => {
            let f = farm(counts(), uptime).await;
            (ok, metrics::CONTENT_TYPE, metrics.render(f.as_ref()))
        }
        "/status.json" => match farm(counts(), uptime).await {
            Some(s) => (
                ok,
                "application/json",
                serde_json::to_string(&s).unwrap_or_default(),
            ),
            None => unavailable(),
        },
        "/" | "/status" => {
            let list = page_list(query);
            match farm(list.clone(), uptime).await {
                Some(s) => {
                    let page = match history.lock() {
                        Ok(h) => render_html(&s, &h, &list),
                        Err(_) => render_html(&s, &History::default(), &list),
                    };
                    (ok, "text/html; charset=utf-8", page)
                }
                None => unavailable(),
            }
        }
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

/// Binding rows shown on the HTML page.
const PAGE_BINDINGS: usize = 500;

/// The page's binding list from its query: `user` (a prefix) and `sort`; anything else, or a
/// value that is not one, is ignored.
fn page_list(query: Option<&str>) -> BindingList {
    let mut list = BindingList {
        max: PAGE_BINDINGS,
        ..BindingList::default()
    };
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = percent_decode(&value.replace('+', " ")) else {
            continue;
        };
        match key {
            "user" if crate::core::mirror::user_part(&value) == Some(value.as_str()) => {
                list.user_prefix = value
            }
            "sort" => list.sort = BindingSort::parse(&value).unwrap_or_default(),
            _ => {}
        }
    }
    list
}
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
    bindings: BindingList,
    uptime: u64,
) -> Option<FarmStatus> {
    let slot = if bindings.max == 0 {
        &snapshots.counts
    } else {
        &snapshots.page
    };
    let mut cached = slot.lock().await;
    let mut f = match cached.as_ref() {
        Some((at, list, f)) if at.elapsed() < SNAPSHOT_TTL && *list == bindings => f.clone(),
        other => {
            // Another search or sort: still at most one driver query per SNAPSHOT_TTL.
            if let Some((at, _, _)) = other {
                tokio::time::sleep(SNAPSHOT_TTL.saturating_sub(at.elapsed())).await;
            }
            let list = bindings.clone();
            let f = ask(driver, |reply| AdminQuery::Farm { bindings, reply }).await?;
            *cached = Some((Instant::now(), list, f.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// Searches of the page each ask the driver, but no more than once per SNAPSHOT_TTL, with
    /// the page's list (500 rows, the prefix and the sort asked for).
    #[tokio::test]
    async fn distinct_searches_ask_the_driver_at_most_once_a_second() {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        tokio::spawn(async move {
            while let Some(q) = rx.recv().await {
                if let AdminQuery::Farm { bindings, reply } = q {
                    if bindings.max > 0 {
                        seen.lock().unwrap().push((Instant::now(), bindings));
                    }
                    let _ = reply.send(FarmStatus::default());
                }
            }
        });
        tokio::spawn(serve(listener, Arc::new(Metrics::default()), tx));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.unwrap();
            String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200")
        };
        let paths = [
            "/status?user=10&sort=user",
            "/status?user=11",
            "/status?sort=next",
        ];
        let answers: Vec<_> = paths.iter().map(|p| tokio::spawn(get(p))).collect();
        for a in answers {
            assert!(a.await.unwrap());
        }
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 3);
        for w in asked.windows(2) {
            assert!(w[1].0 - w[0].0 >= SNAPSHOT_TTL - Duration::from_millis(50));
        }
        let mut lists: Vec<_> = asked
            .iter()
            .map(|(_, l)| (l.user_prefix.clone(), l.sort))
            .collect();
        lists.sort_by_key(|l| l.0.clone());
        assert_eq!(
            lists,
            [
                (String::new(), BindingSort::Next),
                ("10".into(), BindingSort::User),
                ("11".into(), BindingSort::Problems)
            ]
        );
        assert!(asked.iter().all(|(_, l)| l.max == PAGE_BINDINGS));
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
