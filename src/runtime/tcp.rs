//! TCP transport to nodes: one persistent connection per TCP node, owned by a small task.
//!
//! The task connects on the first send (with a connect timeout), writes queued payloads in
//! order and frames what it reads with `core::sip::split_stream`, handing every message (CRLF
//! keepalives skipped) to the driver as `(node address, bytes)`. The driver parses it and feeds
//! the core exactly as a datagram. A framing error, a write error or EOF closes the connection;
//! the next send reconnects. A failed connect puts the link in backoff (doubling, capped), and
//! while it is in backoff sends fail at once: the core's Timer F and node health handle the
//! rest, so nothing queues without bound.
//!
//! regmirror opens connections and never listens on TCP: the Via sent-by names the UDP address,
//! and nodes answer on the connection the request came on (RFC 3261 18.2.2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::core::sip::{is_keepalive, split_stream};

/// How long a connect may take before the attempt counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write may block (a node that stopped reading) before the connection closes.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Payloads queued per link while it connects or writes; beyond that sends fail.
const QUEUE: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

const IDLE: u8 = 0;
const CONNECTING: u8 = 1;
const UP: u8 = 2;
const BACKOFF: u8 = 3;

/// A message read from a node's connection.
pub struct Frame {
    pub node: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The last connect failed; the link waits before trying again.
    Backoff,
    /// The queue is full (the node does not read fast enough).
    Full,
    /// The link's task is gone.
    Closed,
}

struct Link {
    tx: mpsc::Sender<Vec<u8>>,
    state: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every TCP node's link, created on first use.
pub struct TcpLinks {
    /// Local address outgoing connections bind to (port 0), so nodes see the SIP address's IP.
    local_ip: Option<std::net::IpAddr>,
    frames: mpsc::Sender<Frame>,
    links: HashMap<SocketAddr, Link>,
    /// Payloads dropped inside link tasks (queued, then the connect failed).
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

impl TcpLinks {
    /// `local_ip` unspecified lets the kernel choose the source address.
    pub fn new(local_ip: std::net::IpAddr) -> (TcpLinks, mpsc::Receiver<Frame>) {
        let (frames, rx) = mpsc::channel(4096);
        let links = TcpLinks {
            local_ip: (!local_ip.is_unspecified()).then_some(local_ip),
            frames,
            links: HashMap::new(),
            dropped: Arc::default(),
        };
        (links, rx)
    }

    /// Queues `payload` for `node`'s connection, connecting first if needed.
    pub fn send(&mut self, node: SocketAddr, payload: Vec<u8>) -> Result<(), SendError> {
        let link = self.links.entry(node).or_insert_with(|| {
            spawn_link(
                node,
                self.local_ip,
                self.frames.clone(),
                self.dropped.clone(),
            )
        });
        if link.state.load(Ordering::Relaxed) == BACKOFF {
            return Err(SendError::Backoff);
        }
        link.tx.try_send(payload).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Payloads dropped inside the link tasks since the last call (sends that failed late).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    /// Closes `node`'s connection (the node stopped answering); the next send reconnects.
    pub fn close(&mut self, node: SocketAddr) {
        self.links.remove(&node);
    }

    /// Closes the links of nodes no longer in the farm.
    pub fn retain(&mut self, nodes: impl IntoIterator<Item = SocketAddr>) {
        let keep: std::collections::HashSet<SocketAddr> = nodes.into_iter().collect();
        self.links.retain(|a, _| keep.contains(a));
    }

    /// Whether `node`'s connection is established (for tests and status).
    pub fn is_up(&self, node: SocketAddr) -> bool {
        self.links
            .get(&node)
            .is_some_and(|l| l.state.load(Ordering::Relaxed) == UP)
    }
}

fn spawn_link(
    node: SocketAddr,
    local_ip: Option<std::net::IpAddr>,
    frames: mpsc::Sender<Frame>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) -> Link {
    let (tx, rx) = mpsc::channel(QUEUE);
    let state = Arc::new(AtomicU8::new(IDLE));
    let task = tokio::spawn(run_link(node, local_ip, rx, frames, state.clone(), dropped));
    Link { tx, state, task }
}

async fn run_link(
    node: SocketAddr,
    local_ip: Option<std::net::IpAddr>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    frames: mpsc::Sender<Frame>,
    state: Arc<AtomicU8>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        state.store(IDLE, Ordering::Relaxed);
        // Connect on the first send only: an idle node costs no connection.
        let Some(first) = rx.recv().await else {
            return;
        };
        state.store(CONNECTING, Ordering::Relaxed);
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect(node, local_ip)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                fail(
                    node,
                    &e.to_string(),
                    &state,
                    &mut rx,
                    &dropped,
                    &mut backoff,
                )
                .await;
                continue;
            }
            Err(_) => {
                fail(
                    node,
                    "connect timed out",
                    &state,
                    &mut rx,
                    &dropped,
                    &mut backoff,
                )
                .await;
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        state.store(UP, Ordering::Relaxed);
        tracing::info!(node = %node, "TCP connection to node up");
        let reason = serve(node, stream, first, &mut rx, &frames, &dropped).await;
        match reason {
            Closed::Driver => return,
            Closed::Peer(why) => {
                // The next send reconnects: a node closing an idle connection is routine.
                tracing::info!(node = %node, reason = %why, "TCP connection to node closed")
            }
        }
    }
}

async fn connect(
    node: SocketAddr,
    local_ip: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = if node.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == node.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(node).await?;
    // SIP requests are small and latency matters more than packing.
    stream.set_nodelay(true)?;
    // A node that vanished without a FIN is found in about a minute, not after the kernel's
    // two-hour default (NodeDown closes the link sooner when probes run).
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka);
    Ok(stream)
}

/// A failed connect: drops what is queued (counted), then fails sends fast until `backoff` ends.
async fn fail(
    node: SocketAddr,
    why: &str,
    state: &AtomicU8,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    dropped: &std::sync::atomic::AtomicU64,
    backoff: &mut Duration,
) {
    state.store(BACKOFF, Ordering::Relaxed);
    let mut lost = 1u64; // the payload that triggered the connect
    while rx.try_recv().is_ok() {
        lost += 1;
    }
    dropped.fetch_add(lost, Ordering::Relaxed);
    tracing::warn!(node = %node, error = %why, retry_in = ?*backoff, "TCP connect to node failed");
    tokio::time::sleep(*backoff).await;
    // Sends raced with the state change: they are dropped too, not delivered late.
    while rx.try_recv().is_ok() {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

enum Closed {
    /// The driver dropped the link.
    Driver,
    /// EOF, an I/O error or unframeable data.
    Peer(String),
}

async fn serve(
    node: SocketAddr,
    stream: TcpStream,
    first: Vec<u8>,
    rx: &mut mpsc::Receiver<Vec<u8>>,
    frames: &mpsc::Sender<Frame>,
    dropped: &std::sync::atomic::AtomicU64,
) -> Closed {
    let (mut rd, mut wr) = stream.into_split();
    if let Err(e) = write(&mut wr, &first).await {
        dropped.fetch_add(1, Ordering::Relaxed);
        return Closed::Peer(e);
    }
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 8192];
    loop {
        tokio::select! {
            p = rx.recv() => {
                let Some(p) = p else { return Closed::Driver };
                if let Err(e) = write(&mut wr, &p).await {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return Closed::Peer(e);
                }
            }
            r = rd.read(&mut chunk) => {
                let n = match r {
                    Ok(0) => return Closed::Peer("EOF".into()),
                    Ok(n) => n,
                    Err(e) => return Closed::Peer(e.to_string()),
                };
                buf.extend_from_slice(&chunk[..n]);
                loop {
                    match split_stream(&buf) {
                        Ok(Some(len)) => {
                            let frame: Vec<u8> = buf.drain(..len).collect();
                            if is_keepalive(&frame) {
                                continue;
                            }
                            if frames.send(Frame { node, bytes: frame }).await.is_err() {
                                return Closed::Driver;
                            }
                        }
                        Ok(None) => break,
                        // The stream cannot be resynchronized.
                        Err(e) => return Closed::Peer(format!("framing error: {e}")),
                    }
                }
            }
        }
    }
}

async fn write(wr: &mut tokio::net::tcp::OwnedWriteHalf, payload: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(payload)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const RESP: &[u8] = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKx\r\n\
From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";

    /// A node's TCP listener on loopback, and its address.
    async fn node() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// Sends `payload` to the listener's address; the listener sees it on a new connection.
    async fn send_on_a_new_connection(
        links: &mut TcpLinks,
        listener: &TcpListener,
        payload: &[u8],
    ) -> tokio::net::TcpStream {
        links
            .send(listener.local_addr().unwrap(), payload.to_vec())
            .unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; payload.len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, payload);
        conn
    }

    #[tokio::test]
    async fn frames_responses_skips_keepalives_and_reconnects_after_eof() {
        let (listener, addr) = node().await;
        let (mut links, mut frames) = TcpLinks::new("127.0.0.1".parse().unwrap());
        let mut conn = send_on_a_new_connection(&mut links, &listener, b"REQ1").await;
        // A keepalive, then a response split across two writes.
        conn.write_all(b"\r\n\r\n").await.unwrap();
        conn.write_all(&RESP[..20]).await.unwrap();
        conn.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        conn.write_all(&RESP[20..]).await.unwrap();
        let f = frames.recv().await.unwrap();
        assert_eq!((f.node, f.bytes.as_slice()), (addr, RESP));
        assert!(links.is_up(addr));
        // The node closes: the next send opens a new connection.
        drop(conn);
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_on_a_new_connection(&mut links, &listener, b"REQ2").await;
    }

    #[tokio::test]
    async fn close_drops_the_connection_and_the_next_send_reconnects() {
        let (listener, addr) = node().await;
        let (mut links, _frames) = TcpLinks::new("127.0.0.1".parse().unwrap());
        let mut first = send_on_a_new_connection(&mut links, &listener, b"A").await;
        links.close(addr);
        let mut got = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(2), first.read(&mut got)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "old connection still open"
        );
        send_on_a_new_connection(&mut links, &listener, b"B").await;
    }

    #[tokio::test]
    async fn framing_error_closes_the_connection() {
        let (listener, addr) = node().await;
        let (mut links, _frames) = TcpLinks::new("0.0.0.0".parse().unwrap());
        links.send(addr, b"X".to_vec()).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let junk = vec![b'a'; crate::core::sip::MAX_MESSAGE + 10];
        let _ = conn.write_all(&junk).await;
        let mut rest = Vec::new();
        // regmirror closes its side: the read ends.
        let r = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "connection not closed after a framing error");
    }

    #[tokio::test]
    async fn refused_connect_fails_sends_fast_then_retries() {
        // A port with nothing listening.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let (mut links, _frames) = TcpLinks::new("127.0.0.1".parse().unwrap());
        links.send(addr, b"A".to_vec()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(links.send(addr, b"B".to_vec()), Err(SendError::Backoff));
        assert_eq!(links.take_dropped(), 1);
        // After the backoff the link accepts sends again (and connects once the node is up).
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::time::sleep(BACKOFF_MIN + Duration::from_millis(100)).await;
        links.send(addr, b"C".to_vec()).unwrap();
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 1];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"C");
    }
}
