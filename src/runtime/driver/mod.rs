//! The driver: the loop that moves bytes between the sockets, the core and the background
//! tasks. One `now` per turn, read from tokio's clock (tests run it under paused time);
//! credentials come from any [`CredentialSource`] (the database in production, memory in tests
//! and the load generator). What arrives is decided by the core's door (`inbound.rs`); the
//! farm's changes (reconciliation, audits, reloads, HA) are applied in `farm.rs`.

mod farm;
mod inbound;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::mysql::MySqlPoolOptions;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, TransportKind};
use crate::core::door::{Door, DoorConfig};
use crate::core::mirror::{
    BindingState, Credential, Event, Mirror, MirrorConfig, Node, Transmit, Transport,
};
use crate::runtime::admin::AdminQuery;
use crate::runtime::background::{
    self, AmiRemovals, AuditSnapshot, Gates, Lookup, Reconciliation, AUDIT_LISTING_MAX,
};
use crate::runtime::credentials::{CredentialSource, MySqlCredentials};
use crate::runtime::ha::Ha;
use crate::runtime::metrics::Metrics;
use crate::runtime::mmsg;
use crate::runtime::node_events;
use crate::runtime::tcp::{Frame, TcpLinks};
use crate::status;
use crate::store;

/// How long a shutdown waits for in-flight transactions before exiting anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Binding-table entries a status page's list walks per turn of the loop (a few milliseconds).
const PAGE_SCAN_CHUNK: usize = 65_536;

/// A status page whose binding rows are still being gathered (`advance_page_scans`).
struct PageScan {
    status: status::FarmStatus,
    scan: status::BindingScan,
    reply: tokio::sync::oneshot::Sender<status::FarmStatus>,
}

pub struct Driver<S: CredentialSource = MySqlCredentials> {
    config: Config,
    socket: Arc<UdpSocket>,
    source: Arc<S>,
    door: Door,
    mirror: Mirror,
    mirror_config: MirrorConfig,
    nodes: Vec<Node>,
    metrics: Arc<Metrics>,
    /// This turn's time (tokio's clock) and wall clock in µs since the epoch.
    now: Instant,
    wall_us: u64,
    admin_rx: mpsc::Receiver<AdminQuery>,
    lookups_tx: mpsc::Sender<Lookup>,
    lookups_rx: mpsc::Receiver<Lookup>,
    lookups_pending: HashSet<String>,
    /// Users whose credential to look up, batched by the credential reader.
    lookup_queue: mpsc::UnboundedSender<String>,
    lookup_queue_rx: Option<mpsc::UnboundedReceiver<String>>,
    /// Per audited node (AMI set): bindings confirmed lately, oldest first. An audit's listing
    /// starts before its snapshot is applied; what the node confirmed meanwhile may be missing
    /// from the listing without being missing from the node.
    recently_confirmed: HashMap<String, VecDeque<(Instant, Arc<str>)>>,
    /// Shutting down: notifications are refused, in-flight transactions finish.
    draining: bool,
    reconcile_tx: mpsc::Sender<Reconciliation>,
    reconcile_rx: mpsc::Receiver<Reconciliation>,
    /// The reconciler's last read of the credential source succeeded.
    db_reachable: Arc<AtomicBool>,
    ami_removals: AmiRemovals,
    /// Status pages being built, a chunk of the binding table per turn.
    page_scans: Vec<PageScan>,
    /// A reconciliation snapshot has been read since start (applied, or refused by the breaker
    /// with the current state kept): this instance knows what is live.
    location_read: bool,
    audit_tx: mpsc::Sender<AuditSnapshot>,
    audit_rx: mpsc::Receiver<AuditSnapshot>,
    node_events_tx: mpsc::Sender<node_events::Report>,
    node_events_rx: mpsc::Receiver<node_events::Report>,
    /// Per node whose manager is followed: the endpoints in maintenance (absent: not known).
    maintenance: HashMap<String, BTreeSet<String>>,
    /// The last reconciliation's credentials and users, while its events are drained.
    reconcile_creds: HashMap<String, Credential>,
    reconcile_users: HashSet<String>,
    /// Connections to TCP nodes, and the messages read from them.
    tcp: TcpLinks,
    tcp_rx: mpsc::Receiver<Frame>,
    /// Active/standby (`[ha]`): while standby the mirror stays empty and nothing goes to the
    /// nodes; a takeover starts a fresh one.
    ha: Ha,
    /// Follows `Mirror::storm_holding`: the credential reader, the reconciler and the auditors
    /// wait while it is true (their reads cost the database and the nodes what the phones need
    /// in a storm).
    storm_tx: watch::Sender<bool>,
}

impl Driver<MySqlCredentials> {
    /// The production driver: credentials and `location` from the shared database.
    pub async fn bind(
        config: Config,
        metrics: Arc<Metrics>,
        admin_rx: mpsc::Receiver<AdminQuery>,
    ) -> anyhow::Result<Self> {
        // Lazy: regmirror starts and serves what it knows even while the database is down.
        let pool = MySqlPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(config.database.connect_timeout)
            .connect_lazy_with(
                store::connect_options(&config.database.url)
                    .map_err(|e| anyhow::anyhow!("database.url: {e}"))?,
            );
        let source = MySqlCredentials {
            pool,
            realm: config.sip.domain.clone(),
        };
        Driver::new(config, source, metrics, admin_rx)
    }
}

impl<S: CredentialSource> Driver<S> {
    /// Binds the SIP socket; call from within a tokio runtime.
    pub fn new(
        config: Config,
        source: S,
        metrics: Arc<Metrics>,
        admin_rx: mpsc::Receiver<AdminQuery>,
    ) -> anyhow::Result<Self> {
        let socket = bind_udp(config.sip.listen, config.sip.socket_buffer)
            .map_err(|e| anyhow::anyhow!("cannot bind SIP socket {}: {e}", config.sip.listen))?;
        let nodes: Vec<Node> = config.nodes.iter().map(node_of).collect();
        let mirror_config = MirrorConfig::from(&config);
        let mirror = Mirror::new(mirror_config.clone(), nodes.clone(), rand::random());
        let ha = Ha::new(&config);
        let door = Door::new(DoorConfig {
            peer: ha.peer.map(|p| (p, ha.tag())),
            ..DoorConfig::from(&config)
        });
        metrics.ha_active.set(i64::from(ha.is_active()));
        let (lookups_tx, lookups_rx) = mpsc::channel(4096);
        let (lookup_queue, lookup_queue_rx) = mpsc::unbounded_channel();
        let (reconcile_tx, reconcile_rx) = mpsc::channel(1);
        let (audit_tx, audit_rx) = mpsc::channel(16);
        // Contact changes arrive one per REGISTER of ours in a wave: room for a burst.
        let (node_events_tx, node_events_rx) = mpsc::channel(1024);
        let (tcp, tcp_rx) = TcpLinks::new(config.sip.listen.ip());
        tracing::info!(
            listen = %socket.local_addr().unwrap_or(config.sip.listen),
            advertise = %config.advertised_addr(),
            nodes = nodes.len(),
            "SIP socket bound"
        );
        let now = background::now();
        Ok(Driver {
            config,
            socket: Arc::new(socket),
            source: Arc::new(source),
            door,
            mirror,
            mirror_config,
            nodes,
            metrics,
            now,
            wall_us: 0,
            admin_rx,
            lookups_tx,
            lookups_rx,
            lookups_pending: HashSet::new(),
            lookup_queue,
            lookup_queue_rx: Some(lookup_queue_rx),
            recently_confirmed: HashMap::new(),
            draining: false,
            reconcile_tx,
            reconcile_rx,
            db_reachable: Arc::new(AtomicBool::new(false)),
            ami_removals: AmiRemovals::default(),
            page_scans: Vec::new(),
            location_read: false,
            audit_tx,
            audit_rx,
            node_events_tx,
            node_events_rx,
            maintenance: HashMap::new(),
            reconcile_creds: HashMap::new(),
            reconcile_users: HashSet::new(),
            tcp,
            tcp_rx,
            ha,
            storm_tx: watch::channel(false).0,
        })
    }

    /// Where the SIP socket listens (with the port the system chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Starts this turn: one `now` for everything it does.
    fn tick(&mut self) {
        self.now = background::now();
        self.wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    fn gates(&self) -> Gates {
        Gates {
            active: self.ha.subscribe(),
            storm: self.storm_tx.subscribe(),
        }
    }

    pub async fn run(
        mut self,
        mut reload: mpsc::Receiver<Config>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 65_536];
        let mut batch = mmsg::RecvBatch::new();
        tracing::info!(
            role = self.ha.role().as_str(),
            peer = %self.ha.peer_label(),
            state = if self.ha.is_active() { "active" } else { "standby" },
            "HA role"
        );
        if self.config.kamailio.notify_key.is_none() {
            tracing::warn!(
                "kamailio.notify_key is not set: notifications are trusted by their source \
                 address alone, which a host on Kamailio's network can forge"
            );
        }
        self.tick();
        // Starts the node probes (a standby secondary sends nothing to the nodes).
        if self.ha.is_active() {
            self.mirror.handle_timeout(self.now);
        }
        self.on_ha_timeout().await;
        self.spawn_background();
        self.flush().await;
        loop {
            let deadline = [self.mirror.poll_timeout(), self.ha.monitor.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                r = self.socket.readable() => {
                    self.tick();
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "recv failed");
                    }
                    // Drain what is already queued (up to 256 datagrams, recvmmsg batches)
                    // before going round the loop again.
                    for _ in 0..256 / mmsg::BATCH {
                        let fd = self.socket.as_raw_fd();
                        match self.socket.try_io(Interest::READABLE, || batch.recv(fd)) {
                            Ok(_) => {
                                for (bytes, from) in batch.iter() {
                                    self.on_datagram(bytes, from).await;
                                }
                            }
                            Err(e) => {
                                if e.kind() != std::io::ErrorKind::WouldBlock {
                                    tracing::warn!(error = %e, "recv failed");
                                }
                                break;
                            }
                        }
                    }
                }
                Some(l) = self.lookups_rx.recv() => { self.tick(); self.on_lookup(l) }
                Some(f) = self.tcp_rx.recv() => { self.tick(); self.on_stream_frame(f) }
                _ = sleep_until_opt(deadline) => {
                    self.tick();
                    if self.ha.is_active() {
                        self.mirror.handle_timeout(self.now);
                    }
                    self.on_ha_timeout().await;
                }
                Some(q) = self.admin_rx.recv() => { self.tick(); self.on_admin(q) }
                _ = std::future::ready(()), if !self.page_scans.is_empty() => {
                    self.tick();
                    self.advance_page_scans();
                }
                Some(r) = self.reconcile_rx.recv() => { self.tick(); self.on_reconcile(r) }
                Some(a) = self.audit_rx.recv() => { self.tick(); self.on_audit(a) }
                Some(r) = self.node_events_rx.recv() => { self.tick(); self.on_node_event(r) }
                Some(c) = reload.recv() => { self.tick(); self.on_reload(c) }
                _ = &mut shutdown => {
                    self.drain(&mut buf).await;
                    return Ok(());
                }
            }
            self.flush().await;
            self.publish_storm();
        }
    }

    fn spawn_background(&mut self) {
        if let Some(queue) = self.lookup_queue_rx.take() {
            background::spawn_credential_reader(
                self.source.clone(),
                queue,
                self.lookups_tx.clone(),
                self.metrics.clone(),
                self.storm_tx.subscribe(),
            );
        }
        background::spawn_reconciler(
            self.source.clone(),
            self.reconcile_tx.clone(),
            self.config.farm.reconcile_interval,
            self.metrics.clone(),
            self.db_reachable.clone(),
            self.gates(),
        );
        background::spawn_auditors(
            &self.config.nodes,
            self.config.farm.audit_interval,
            &self.config.kamailio.contact_host,
            &self.audit_tx,
            &self.metrics,
            &self.gates(),
        );
        node_events::spawn_watchers(
            &self.config.nodes,
            &self.config.kamailio.contact_host,
            &self.node_events_tx,
            &self.metrics,
        );
    }

    /// Tells the background readers, the metrics and the log when a storm hold begins or ends.
    fn publish_storm(&mut self) {
        let holding = self.ha.is_active() && self.mirror.storm_holding(self.now);
        if !self
            .storm_tx
            .send_if_modified(|h| std::mem::replace(h, holding) != holding)
        {
            return;
        }
        self.metrics.storm_holding.set(i64::from(holding));
        if holding {
            Metrics::inc(&self.metrics.storm_holds);
            tracing::info!(
                max_register_rate = self.config.farm.max_register_rate,
                storm_hold = ?self.config.farm.storm_hold,
                "registration storm: new work on the nodes waits (refreshes go)"
            );
        } else {
            let queued = self.mirror.stats().queued;
            tracing::info!(queued, "registration storm over: the nodes' queues drain");
        }
    }

    /// Walks the next chunk of the binding table for each page being built; answers those done.
    fn advance_page_scans(&mut self) {
        let mut i = 0;
        while i < self.page_scans.len() {
            let p = &mut self.page_scans[i];
            if p.scan.advance(&self.mirror, self.now, PAGE_SCAN_CHUNK) {
                let PageScan {
                    mut status,
                    scan,
                    reply,
                } = self.page_scans.swap_remove(i);
                scan.finish(&self.mirror, self.now, &mut status);
                let _ = reply.send(status);
            } else {
                i += 1;
            }
        }
    }

    fn on_admin(&mut self, q: AdminQuery) {
        // `unknown` until the node has answered anything (a probe or a REGISTER), and while
        // standby (nothing is sent to the nodes).
        let active = self.ha.is_active();
        let health = |node: u16| match self.mirror.node_health(node) {
            _ if !active => "unknown",
            Some(h) if h.up => "up",
            Some(h) if h.last_heard.is_some() || h.probe_failures > 0 => "down",
            _ => "unknown",
        };
        // The core counts replays; the counter follows it.
        let replays = self.metrics.replays.inner();
        replays.store(self.mirror.counter_stats().replayed, Ordering::Relaxed);
        match q {
            AdminQuery::Farm { bindings, reply } => {
                let mut s = status::farm_summary(&self.mirror, self.now, health);
                s.ha = self.ha.view();
                for n in &mut s.nodes {
                    n.maintenance = self.in_maintenance(&n.name);
                }
                if bindings.max == 0 {
                    let _ = reply.send(s);
                } else {
                    // The rows: a chunk of the binding table per turn of the loop.
                    self.page_scans.push(PageScan {
                        status: s,
                        scan: status::BindingScan::new(bindings),
                        reply,
                    });
                }
            }
            AdminQuery::User { user, reply } => {
                let mut u = status::user_status(&self.mirror, self.now, &user, health);
                for b in &mut u.nodes {
                    b.maintenance = self.user_in_maintenance(&b.node, &user);
                }
                let _ = reply.send(u);
            }
        }
    }

    /// Graceful shutdown: refuse notifications, let REGISTERs in flight finish (retransmitting
    /// as needed) for up to `SHUTDOWN_GRACE`, then return. Never unregisters anything itself:
    /// the nodes keep every binding until it expires or another instance refreshes it.
    async fn drain(&mut self, buf: &mut [u8]) {
        self.draining = true;
        self.tick();
        let deadline = self.now + SHUTDOWN_GRACE;
        self.flush().await;
        tracing::info!(
            in_flight = self.mirror.operations_in_flight(),
            grace = ?SHUTDOWN_GRACE,
            "shutting down: finishing transactions in flight; bindings stay registered on the nodes"
        );
        // A credential lookup still running may be what an in-flight REGISTER waits for.
        while !(self.mirror.operations_in_flight() == 0 && self.lookups_pending.is_empty())
            && self.now < deadline
        {
            let wake = self
                .mirror
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                r = self.socket.recv_from(buf) => {
                    self.tick();
                    if let Ok((n, from)) = r {
                        self.on_datagram(&buf[..n], from).await;
                    }
                }
                Some(l) = self.lookups_rx.recv() => { self.tick(); self.on_lookup(l) }
                Some(f) = self.tcp_rx.recv() => { self.tick(); self.on_stream_frame(f) }
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.tick();
                    self.mirror.handle_timeout(self.now);
                }
            }
            self.flush().await;
        }
        tracing::info!(
            unfinished = self.mirror.operations_in_flight() + self.lookups_pending.len(),
            "stopped"
        );
    }

    /// Drains the mirror's transmits and events.
    async fn flush(&mut self) {
        let mut udp = Vec::new();
        loop {
            let mut any = false;
            while let Some(t) = self.mirror.poll_transmit() {
                any = true;
                match t.transport {
                    Transport::Udp => udp.push(t),
                    Transport::Tcp => self.send_tcp(t.dest, t.payload),
                }
            }
            self.send_udp(&udp).await;
            udp.clear();
            // Events may produce transmits (credentials from a reconciliation): go round again.
            while let Some(ev) = self.mirror.poll_event() {
                any = true;
                self.on_event(ev);
            }
            if !any {
                break;
            }
        }
        // Sends the TCP links accepted, then dropped when the connect failed.
        let late = self.tcp.take_dropped();
        if late > 0 {
            self.metrics.send_errors.inc_by(late);
        }
        if !self.reconcile_users.is_empty() {
            // Taken, not cleared: a reconciliation's tables are as large as the farm.
            self.reconcile_creds = HashMap::new();
            self.reconcile_users = HashSet::new();
        }
        let down = (0..self.nodes.len())
            .filter(|&i| !self.mirror.node_up(i as u16))
            .count();
        self.metrics.nodes_down.set(down as i64);
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            ref e @ Event::BindingChanged {
                ref aor,
                node,
                state,
                ref reason,
                failures,
            } => {
                let name = self.node_name(node);
                self.metrics.count_transition(name, state.as_str());
                if e.is_retry_of_a_failure() {
                    tracing::debug!(user = %aor, node = %name, state = state.as_str(), reason = %reason, failures, "binding");
                } else {
                    tracing::info!(user = %aor, node = %name, state = state.as_str(), reason = %reason, "binding");
                }
                let aor = aor.clone();
                if state == BindingState::Registered {
                    self.note_confirmed(node, &aor);
                }
            }
            Event::CredentialRejected { aor, node } => {
                tracing::warn!(user = %aor, node = %self.node_name(node), "node rejected the credential; refetching");
                self.lookup(&aor);
            }
            Event::CredentialMissing { aor } => {
                // Just reconciled: the bulk read already answered for its users.
                if let Some(c) = self.reconcile_creds.get(&*aor) {
                    let c = c.clone();
                    self.mirror.set_credential(self.now, &aor, Some(c));
                } else if !self.reconcile_users.contains(&*aor) {
                    self.lookup(&aor);
                }
            }
            Event::BindingRemoved { aor, node } => {
                tracing::info!(user = %aor, node = %self.node_name(node), "binding removed");
            }
            Event::NodeDown { node } => {
                tracing::warn!(node = %self.node_name(node), "node down: its bindings wait for it");
                // A silent TCP connection may be half-open: the next probe opens a fresh one.
                if let Some(n) = self.nodes.get(usize::from(node)) {
                    self.tcp.close(n.addr);
                }
            }
            Event::NodeUp { node } => {
                tracing::info!(node = %self.node_name(node), "node up: replaying its bindings");
            }
            Event::Retrying { .. } => Metrics::inc(&self.metrics.register_retries),
            Event::TransactionDone {
                node, round_trip, ..
            } => self
                .metrics
                .observe_latency(self.node_name(node), round_trip),
        }
    }

    /// Remembers a confirmation for the node's next audit (nodes without AMI are not audited).
    fn note_confirmed(&mut self, node: u16, aor: &Arc<str>) {
        let Some(name) = self.nodes.get(usize::from(node)).map(|n| &n.name) else {
            return;
        };
        if !self
            .config
            .nodes
            .iter()
            .any(|n| &n.name == name && n.ami.is_some())
        {
            return;
        }
        let now = self.now;
        let recent = match self.recently_confirmed.get_mut(name) {
            Some(r) => r,
            None => self.recently_confirmed.entry(name.clone()).or_default(),
        };
        while recent.front().is_some_and(|(t, _)| {
            now.duration_since(*t) > AUDIT_LISTING_MAX + Duration::from_secs(10)
        }) {
            recent.pop_front();
        }
        recent.push_back((now, aor.clone()));
    }

    fn node_name(&self, node: u16) -> &str {
        self.nodes
            .get(usize::from(node))
            .map_or("(removed node)", |n| n.name.as_str())
    }

    /// Queues a lookup of the user's credential for the credential reader (once per user
    /// while one is pending).
    fn lookup(&mut self, user: &str) {
        if self.lookups_pending.insert(user.to_string()) {
            let _ = self.lookup_queue.send(user.to_string());
        }
    }

    fn send_tcp(&mut self, dest: SocketAddr, payload: Vec<u8>) {
        if let Err(e) = self.tcp.send(dest, payload) {
            Metrics::inc(&self.metrics.send_errors);
            tracing::debug!(%dest, error = ?e, "TCP send failed");
        }
    }

    /// Sends `out` in `sendmmsg` batches, waiting for the socket when it is full.
    async fn send_udp(&self, out: &[Transmit]) {
        let mut msgs: Vec<(&[u8], SocketAddr)> = Vec::with_capacity(mmsg::BATCH.min(out.len()));
        let mut i = 0;
        while i < out.len() {
            msgs.clear();
            let next = out[i..].iter().take(mmsg::BATCH);
            msgs.extend(next.map(|t| (t.payload.as_slice(), t.dest)));
            let fd = self.socket.as_raw_fd();
            match self
                .socket
                .try_io(Interest::WRITABLE, || mmsg::send_batch(fd, &msgs))
            {
                Ok(n) => i += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Err(e) = self.socket.writable().await {
                        tracing::warn!(error = %e, "send failed");
                        return;
                    }
                }
                Err(e) => {
                    // The kernel reports the failing datagram first: skip it.
                    Metrics::inc(&self.metrics.send_errors);
                    tracing::debug!(dest = %out[i].dest, error = %e, "send failed");
                    i += 1;
                }
            }
        }
    }

    async fn send(&self, payload: &[u8], dest: SocketAddr) {
        let r = match self.socket.try_send_to(payload, dest) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.socket.send_to(payload, dest).await
            }
            r => r,
        };
        if let Err(e) = r {
            Metrics::inc(&self.metrics.send_errors);
            tracing::debug!(%dest, error = %e, "send failed");
        }
    }
}

/// The core's view of a configured node.
fn node_of(n: &crate::config::NodeConfig) -> Node {
    Node {
        name: n.name.clone(),
        addr: n.address,
        transport: match n.transport {
            TransportKind::Udp => Transport::Udp,
            TransportKind::Tcp => Transport::Tcp,
        },
    }
}

/// Binds the SIP socket with larger kernel buffers: a burst of responses from a large farm
/// overflows the default receive buffer and every lost datagram costs a retransmission.
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: the kernel caps the sizes at net.core.{r,w}mem_max.
    let _ = s.set_recv_buffer_size(buffer);
    let _ = s.set_send_buffer_size(buffer);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    tracing::debug!(
        recv_buffer = s.recv_buffer_size().unwrap_or(0),
        send_buffer = s.send_buffer_size().unwrap_or(0),
        "SIP socket buffers"
    );
    UdpSocket::from_std(s.into())
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
