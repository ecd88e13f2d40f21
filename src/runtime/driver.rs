//! The driver loop: feeds datagrams, credential lookups and timeouts into the `Mirror`, then
//! drains its transmits and events (the str0m/quinn sans-IO loop).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::{Config, Redacted, TransportKind};
use crate::core::mirror::{
    drop_refused, BindingState, Credential, Event, Mirror, MirrorConfig, Node, Transmit, Transport,
};
use crate::core::notify::{aor_user, parse_notification, AuthError, Notification};
use crate::core::peer::{self, Transition};
use crate::core::sip::{parse_incoming, parse_message, response_for, Incoming, MAX_MESSAGE};
use crate::core::{binding::refresh_period, response::ResponseInfo};
use crate::runtime::admin::AdminQuery;
use crate::runtime::ami::{fetch_contact_users, remove_contacts, AmiTarget};
use crate::runtime::ha::{self as ha_rt, Ha};
use crate::runtime::metrics::Metrics;
use crate::runtime::mmsg;
use crate::runtime::tcp::{Frame, TcpLinks};
use crate::status;
use crate::store;

/// Result of a credential lookup done off the driver task.
struct Lookup {
    user: String,
    result: Option<Credential>,
    /// The database failed before answering this lookup (an outage the nodes, which read the
    /// same database, may have rejected registrations during).
    after_outage: bool,
}

/// Kamailio's `location` (the complete desired state) and the credentials of its users.
struct ReconcileSnapshot {
    /// Taken just before the queries: notifications after it win over the snapshot.
    at: Instant,
    live: Vec<(String, Duration)>,
    credentials: HashMap<String, Credential>,
}

/// A node's contacts pointing at Kamailio, read over AMI.
struct AuditSnapshot {
    node: String,
    at: Instant,
    users: HashSet<String>,
}

pub struct Driver {
    config: Config,
    socket: Arc<UdpSocket>,
    pool: MySqlPool,
    mirror: Mirror,
    nodes: Vec<Node>,
    metrics: Arc<Metrics>,
    admin_rx: mpsc::Receiver<AdminQuery>,
    lookups_tx: mpsc::Sender<Lookup>,
    lookups_rx: mpsc::Receiver<Lookup>,
    lookups_pending: HashSet<String>,
    /// Per audited node (AMI set): bindings confirmed lately, oldest first. An audit's listing
    /// starts before its snapshot is applied; what the node confirmed meanwhile may be missing
    /// from the listing without being missing from the node.
    recently_confirmed: HashMap<String, VecDeque<(Instant, Arc<str>)>>,
    /// Users whose credential to look up, batched by the credential reader.
    lookup_queue: mpsc::UnboundedSender<String>,
    lookup_queue_rx: Option<mpsc::UnboundedReceiver<String>>,
    /// Shutting down: notifications are refused, in-flight transactions finish.
    draining: bool,
    reconcile_tx: mpsc::Sender<ReconcileSnapshot>,
    reconcile_rx: mpsc::Receiver<ReconcileSnapshot>,
    /// The reconciler's last read of the database succeeded.
    db_reachable: Arc<AtomicBool>,
    /// Per node: AMI sessions removing a deleted user's contacts at once.
    ami_removal_slots: HashMap<String, Arc<Semaphore>>,
    /// A reconciliation snapshot has been read since start (applied, or refused by the breaker
    /// with the current state kept): this instance knows what is live.
    location_read: bool,
    audit_tx: mpsc::Sender<AuditSnapshot>,
    audit_rx: mpsc::Receiver<AuditSnapshot>,
    /// The last reconciliation's credentials and users, while its events are drained.
    reconcile_creds: HashMap<String, Credential>,
    reconcile_users: HashSet<String>,
    /// Connections to TCP nodes, and the messages read from them.
    tcp: TcpLinks,
    tcp_rx: mpsc::Receiver<Frame>,
    /// Active/standby (`[ha]`): while standby the mirror stays empty and nothing goes to the
    /// nodes; a takeover starts a fresh one.
    ha: Ha,
    mirror_config: MirrorConfig,
    /// Follows `Mirror::storm_holding`: the credential reader, the reconciler and the auditors
    /// wait while it is true (their reads cost the database and the nodes what the phones need
    /// in a storm).
    storm_tx: watch::Sender<bool>,
}

/// How long a shutdown waits for in-flight transactions before exiting anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

impl Driver {
    pub async fn bind(
        config: Config,
        metrics: Arc<Metrics>,
        admin_rx: mpsc::Receiver<AdminQuery>,
    ) -> anyhow::Result<Driver> {
        let socket = bind_udp(config.sip.listen, config.sip.socket_buffer)
            .map_err(|e| anyhow::anyhow!("cannot bind SIP socket {}: {e}", config.sip.listen))?;
        // Lazy: regmirror starts and serves what it knows even while the database is down.
        let pool = MySqlPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(config.database.connect_timeout)
            .connect_lazy_with(
                store::connect_options(&config.database.url)
                    .map_err(|e| anyhow::anyhow!("database.url: {e}"))?,
            );
        let nodes: Vec<Node> = config.nodes.iter().map(node_of).collect();
        let mcfg = MirrorConfig::from(&config);
        let mirror = Mirror::new(mcfg.clone(), nodes.clone(), rand::random());
        let ha = Ha::new(&config);
        metrics
            .ha_active
            .store(u64::from(ha.is_active()), Ordering::Relaxed);
        let (lookups_tx, lookups_rx) = mpsc::channel(4096);
        let (lookup_queue, lookup_queue_rx) = mpsc::unbounded_channel();
        let (reconcile_tx, reconcile_rx) = mpsc::channel(1);
        let (audit_tx, audit_rx) = mpsc::channel(16);
        let (tcp, tcp_rx) = TcpLinks::new(config.sip.listen.ip());
        tracing::info!(
            listen = %config.sip.listen,
            advertise = %config.advertised_addr(),
            nodes = nodes.len(),
            "SIP socket bound"
        );
        Ok(Driver {
            config,
            socket: Arc::new(socket),
            pool,
            mirror,
            nodes,
            metrics,
            admin_rx,
            lookups_tx,
            lookups_rx,
            lookups_pending: HashSet::new(),
            recently_confirmed: HashMap::new(),
            lookup_queue,
            lookup_queue_rx: Some(lookup_queue_rx),
            draining: false,
            reconcile_tx,
            reconcile_rx,
            db_reachable: Arc::new(AtomicBool::new(false)),
            location_read: false,
            ami_removal_slots: HashMap::new(),
            audit_tx,
            audit_rx,
            reconcile_creds: HashMap::new(),
            reconcile_users: HashSet::new(),
            tcp,
            tcp_rx,
            ha,
            mirror_config: mcfg,
            storm_tx: watch::channel(false).0,
        })
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
        // Starts the node probes (a standby secondary sends nothing to the nodes).
        if self.ha.is_active() {
            self.mirror.handle_timeout(Instant::now());
        }
        self.on_ha_timeout(Instant::now()).await;
        self.spawn_credential_reader();
        self.spawn_reconciler();
        self.spawn_auditors();
        self.flush().await;
        loop {
            let deadline = [self.mirror.poll_timeout(), self.ha.monitor.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                r = self.socket.readable() => {
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
                Some(l) = self.lookups_rx.recv() => self.on_lookup(l),
                Some(f) = self.tcp_rx.recv() => self.on_stream_frame(f),
                _ = sleep_until_opt(deadline) => {
                    if self.ha.is_active() {
                        self.mirror.handle_timeout(Instant::now());
                    }
                    self.on_ha_timeout(Instant::now()).await;
                }
                Some(q) = self.admin_rx.recv() => self.on_admin(q),
                Some(r) = self.reconcile_rx.recv() => self.on_reconcile(r),
                Some(a) = self.audit_rx.recv() => self.on_audit(a),
                Some(c) = reload.recv() => self.on_reload(c),
                _ = &mut shutdown => {
                    self.drain(&mut buf).await;
                    return Ok(());
                }
            }
            self.flush().await;
            self.publish_storm();
        }
    }

    /// Tells the background readers, the metrics and the log when a storm hold begins or ends.
    fn publish_storm(&mut self) {
        let holding = self.ha.is_active() && self.mirror.storm_holding(Instant::now());
        if !self
            .storm_tx
            .send_if_modified(|h| std::mem::replace(h, holding) != holding)
        {
            return;
        }
        self.metrics
            .storm_holding
            .store(u64::from(holding), Ordering::Relaxed);
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

    fn on_reconcile(&mut self, r: ReconcileSnapshot) {
        if !self.ha.is_active() {
            return; // read before going standby
        }
        let first = !self.mirror.is_reconciled();
        self.location_read = true;
        if let Err(refused) = self.mirror.reconcile(r.at, &r.live) {
            Metrics::inc(&self.metrics.reconcile_refused);
            tracing::error!(
                live = refused.live,
                dropping = refused.dropping,
                max_share = self.mirror.config().reconcile_max_drop,
                "reconciliation refused: the snapshot of `location` would drop too many live users \
                 at once (Kamailio and MariaDB time zones, or the realm, disagree?); nothing changed"
            );
            return;
        }
        let now = Instant::now();
        // Live in Kamailio but no credential: removed from ps_endpoints/ps_auths. The same
        // breaker: a realm mismatch makes every credential look gone.
        let gone: Vec<String> = r
            .live
            .iter()
            .map(|(aor, _)| aor_user(aor))
            .filter(|u| !r.credentials.contains_key(*u) && self.mirror.is_live(now, u))
            .map(str::to_string)
            .collect();
        let refuse_removals = drop_refused(
            r.live.len(),
            gone.len(),
            self.mirror.config().reconcile_max_drop,
        );
        if refuse_removals {
            Metrics::inc(&self.metrics.reconcile_refused);
            tracing::error!(
                live = r.live.len(),
                without_credential = gone.len(),
                realm = %self.config.sip.domain,
                "reconciliation: too many live users have no credential in this realm; \
                 none of them is removed"
            );
        } else {
            for user in &gone {
                self.mirror.set_credential(now, user, None);
                self.remove_over_ami(user);
            }
        }
        let removed = if refuse_removals { 0 } else { gone.len() };
        self.reconcile_users.clear();
        self.reconcile_users
            .extend(r.live.iter().map(|(aor, _)| aor_user(aor).to_string()));
        self.reconcile_creds = r.credentials;
        Metrics::inc(&self.metrics.reconcile_runs);
        let level_first = if first {
            "first reconciliation"
        } else {
            "reconciliation"
        };
        tracing::info!(
            live = r.live.len(),
            removed_users = removed,
            "{level_first} done"
        );
        let cap = self.config.farm.max_register_rate;
        // The core refreshes Timer F + 4 s before expiry, and a storm hold's length earlier.
        let hold = if cap > 0 {
            self.config.farm.storm_hold
        } else {
            Duration::ZERO
        };
        let needed = refreshes_per_second(
            r.live.len(),
            self.config.sip.register_expires,
            self.config.sip.timer_f + Duration::from_secs(4) + hold,
        );
        if cap > 0 && needed > 0.8 * f64::from(cap) {
            tracing::warn!(
                live = r.live.len(),
                refreshes_per_second = needed.round(),
                max_register_rate = cap,
                "farm.max_register_rate leaves no room beyond refreshing the live bindings: raise it (or sip.register_expires)"
            );
        }
    }

    fn on_lookup(&mut self, l: Lookup) {
        self.lookups_pending.remove(&l.user);
        if !self.ha.is_active() {
            return;
        }
        if l.result.is_none() {
            // The user is gone: the nodes cannot authenticate its unregister any more.
            self.remove_over_ami(&l.user);
        }
        let known = l.result.is_some();
        let now = Instant::now();
        self.mirror.set_credential(now, &l.user, l.result);
        if known && l.after_outage {
            self.mirror.retry_credential_failures(now, &l.user);
        }
    }

    /// SIGHUP: applies `[[nodes]]` changes. A new node gets every live binding (paced replay);
    /// a removed node's bindings are forgotten, not unregistered (the node may be gone).
    fn on_reload(&mut self, new: Config) {
        if !self.ha.is_active() {
            return self.reload_standby(new);
        }
        let now = Instant::now();
        let (mut added, mut removed) = (0, 0);
        // Remove from the highest index down: ids above a removed node shift by one.
        for i in (0..self.nodes.len()).rev() {
            if !new.nodes.iter().any(|n| n.name == self.nodes[i].name) && self.nodes.len() > 1 {
                if let Some(gone) = self.mirror.remove_node(now, i as u16) {
                    tracing::warn!(node = %gone.name, "node removed from the farm");
                    self.nodes.remove(i);
                    self.config.nodes.retain(|n| n.name != gone.name);
                    removed += 1;
                }
            }
        }
        for n in &new.nodes {
            if self.nodes.iter().any(|m| m.name == n.name) {
                continue;
            }
            let node = node_of(n);
            self.mirror.add_node(now, node.clone());
            tracing::warn!(node = %n.name, address = %n.address, "node added to the farm: replaying live bindings");
            self.nodes.push(node);
            self.config.nodes.push(n.clone());
            self.spawn_auditor(n, self.config.farm.audit_interval);
            added += 1;
        }
        if added + removed > 0 {
            self.tcp.retain(self.nodes.iter().map(|n| n.addr));
        }
        tracing::info!(
            added,
            removed,
            nodes = self.nodes.len(),
            "configuration reloaded (only [[nodes]] changes apply without a restart)"
        );
    }

    fn on_audit(&mut self, a: AuditSnapshot) {
        if !self.ha.is_active() {
            return;
        }
        let Some(node) = self.nodes.iter().position(|n| n.name == a.node) else {
            return;
        };
        let listed = a.users.len();
        let mut users = a.users;
        if let Some(recent) = self.recently_confirmed.get(&a.node) {
            let since = recent.iter().rev().take_while(|(t, _)| *t >= a.at);
            users.extend(since.map(|(_, u)| u.to_string()));
        }
        // Repairs start now, not when the listing started (timers would begin in the past).
        let r = self.mirror.audit(Instant::now(), node as u16, &users);
        let repaired = (r.missing + r.stale) as u64;
        self.metrics
            .drift_repaired
            .fetch_add(repaired, Ordering::Relaxed);
        if repaired > 0 {
            tracing::warn!(node = %a.node, missing = r.missing, stale = r.stale, "drift repaired");
        } else {
            tracing::debug!(node = %a.node, contacts = listed, "audit: no drift");
        }
    }

    /// Reads the complete desired state every `reconcile_interval`; on a database error keeps
    /// the current state and retries with backoff (regmirror serves what it knows meanwhile).
    fn spawn_reconciler(&self) {
        let pool = self.pool.clone();
        let tx = self.reconcile_tx.clone();
        let realm = self.config.sip.domain.clone();
        let interval = self.config.farm.reconcile_interval;
        let metrics = self.metrics.clone();
        let db_reachable = self.db_reachable.clone();
        let mut active = self.ha.subscribe();
        let mut storm = self.storm_tx.subscribe();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                // Standby reads nothing; a takeover reads at once.
                if !ha_rt::until_active(&mut active).await || !until_calm(&mut storm).await {
                    return;
                }
                let at = Instant::now();
                let read = async {
                    let live = store::credentials::live_aors_db_now(&pool).await?;
                    let creds = store::credentials::live_credentials(&pool, &realm).await?;
                    Ok::<_, store::StoreError>((live, creds))
                };
                let read = read.await;
                db_reachable.store(read.is_ok(), Ordering::Relaxed);
                match read {
                    Ok((live, creds)) => {
                        let snapshot = ReconcileSnapshot {
                            at,
                            live: live
                                .into_iter()
                                .map(|(a, s)| (a, Duration::from_secs(u64::from(s))))
                                .collect(),
                            credentials: creds
                                .into_iter()
                                .map(|c| {
                                    (
                                        c.username.clone(),
                                        Credential {
                                            username: c.username,
                                            secret: c.secret,
                                        },
                                    )
                                })
                                .collect(),
                        };
                        if tx.send(snapshot).await.is_err() {
                            return;
                        }
                        wait = Duration::from_secs(1);
                        ha_rt::sleep_while_active(&mut active, interval).await;
                    }
                    Err(e) => {
                        Metrics::inc(&metrics.reconcile_errors);
                        tracing::warn!(error = %e, retry_in = ?wait, "reconciliation failed; keeping the current state");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(interval);
                    }
                }
            }
        });
    }

    /// A user without a credential any more: the nodes cannot authenticate its unregister, so
    /// delete its contacts (ours only) through AMI on every node that has `ami` configured.
    fn remove_over_ami(&mut self, user: &str) {
        for n in &self.config.nodes {
            let (Some(addr), Some(ami_user), Some(secret)) = (n.ami, &n.ami_user, &n.ami_secret)
            else {
                continue;
            };
            let target = AmiTarget {
                addr,
                user: ami_user.clone(),
                secret: secret.0.clone(),
            };
            let (node, user) = (n.name.clone(), user.to_string());
            let contact_host = self.config.kamailio.contact_host.clone();
            let metrics = self.metrics.clone();
            let slots = self
                .ami_removal_slots
                .entry(n.name.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(AMI_REMOVALS_PER_NODE)))
                .clone();
            tokio::spawn(async move {
                // Asterisk closes unauthenticated sessions beyond its `authlimit` (50): many
                // users removed at once queue here instead.
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                match remove_contacts(&target, &contact_host, &user, Duration::from_secs(20)).await
                {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::warn!(user = %user, node = %node, contacts = n, "removed user: contact deleted over AMI")
                    }
                    Err(e) => {
                        Metrics::inc(&metrics.ami_errors);
                        tracing::warn!(user = %user, node = %node, error = %e, "removed user: AMI contact deletion failed");
                    }
                }
            });
        }
    }

    /// One AMI audit loop per node that has `ami` configured.
    fn spawn_auditors(&self) {
        let audited = self.config.nodes.iter().filter(|n| n.ami.is_some()).count();
        for (i, n) in self
            .config
            .nodes
            .iter()
            .filter(|n| n.ami.is_some())
            .enumerate()
        {
            // Staggered: a listing costs its node about 0.1 ms of CPU per contact (2 s for
            // 22,000), so nodes listing at the same moment take a small box's every core at once
            // (BENCHMARKS.md part 4).
            let first = self
                .config
                .farm
                .audit_interval
                .mul_f64((i + 1) as f64 / audited as f64);
            self.spawn_auditor(n, first);
        }
    }

    fn spawn_auditor(&self, n: &crate::config::NodeConfig, first: Duration) {
        {
            let (Some(addr), Some(user), Some(secret)) = (n.ami, &n.ami_user, &n.ami_secret) else {
                return;
            };
            let target = AmiTarget {
                addr,
                user: user.clone(),
                secret: secret.0.clone(),
            };
            let name = n.name.clone();
            let tx = self.audit_tx.clone();
            let contact_host = self.config.kamailio.contact_host.clone();
            let interval = self.config.farm.audit_interval;
            let metrics = self.metrics.clone();
            let active = self.ha.subscribe();
            let mut storm = self.storm_tx.subscribe();
            tokio::spawn(async move {
                let mut wait = first;
                loop {
                    tokio::time::sleep(wait).await;
                    wait = interval;
                    if !*active.borrow() {
                        continue; // standby: the active instance audits
                    }
                    // A listing costs the node ~0.1 ms of CPU per contact: not during a storm.
                    if !until_calm(&mut storm).await {
                        return;
                    }
                    let at = Instant::now();
                    match fetch_contact_users(&target, &contact_host, AUDIT_LISTING_MAX).await {
                        Ok(users) => {
                            let s = AuditSnapshot {
                                node: name.clone(),
                                at,
                                users,
                            };
                            if tx.send(s).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            Metrics::inc(&metrics.ami_errors);
                            tracing::warn!(node = %name, ami = %target.addr, error = %e, "drift audit skipped");
                        }
                    }
                }
            });
        }
    }

    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if bytes.len() > MAX_MESSAGE {
            Metrics::inc(&self.metrics.datagrams_oversized);
            tracing::debug!(%from, len = bytes.len(), "oversized datagram dropped");
            return;
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return; // CRLF keepalive
        }
        // Answers to our HA probes (1/s, from the peer only) carry X-RegMirror-HA: read by rsip.
        if self.ha.is_peer(from) && bytes.starts_with(b"SIP/2.0 ") {
            if let Ok(rsip::SipMessage::Response(resp)) = parse_message(bytes) {
                if let Some(seq) = self.ha.probe_answer(&resp, from) {
                    return self.on_peer_answer(seq, &resp);
                }
            }
        }
        let msg = match parse_incoming(bytes) {
            Ok(m) => m,
            Err(e) => {
                Metrics::inc(&self.metrics.datagrams_malformed);
                tracing::debug!(%from, reason = %e, "malformed datagram dropped");
                return;
            }
        };
        match msg {
            Incoming::Response(info) => self.on_response(&info, from),
            Incoming::Message(rsip::SipMessage::Response(resp)) => {
                self.on_response(&ResponseInfo::from_response(&resp), from)
            }
            Incoming::Message(rsip::SipMessage::Request(req)) => self.on_request(req, from).await,
        }
    }

    fn on_response(&mut self, resp: &ResponseInfo<'_>, from: SocketAddr) {
        if !self.ha.is_active() {
            return; // late answers to a REGISTER sent before going standby
        }
        if matches!(resp.code, 200..=699) {
            self.metrics.count_result(resp.code);
        }
        self.mirror.handle_response_info(Instant::now(), from, resp);
    }

    /// A message read from a TCP node's connection (already framed, keepalives skipped).
    /// Responses go to the core as if they were datagrams from the node. A node's OPTIONS is
    /// answered 200 on the same connection (a keepalive check); other requests 405, ACK nothing:
    /// notifications come from Kamailio over UDP only.
    fn on_stream_frame(&mut self, f: Frame) {
        let msg = match parse_message(&f.bytes) {
            Ok(m) => m,
            Err(e) => {
                Metrics::inc(&self.metrics.datagrams_malformed);
                tracing::debug!(node = %f.node, reason = %e, "malformed message on TCP dropped");
                return;
            }
        };
        let reply = match msg {
            rsip::SipMessage::Response(resp) => {
                return self.on_response(&ResponseInfo::from_response(&resp), f.node)
            }
            rsip::SipMessage::Request(req) => match req.method {
                rsip::Method::Ack => return,
                rsip::Method::Options => response_for(&req, 200, "OK"),
                _ => response_for(&req, 405, "Method Not Allowed"),
            },
        };
        self.send_tcp(f.node, reply);
    }

    fn send_tcp(&mut self, dest: SocketAddr, payload: Vec<u8>) {
        if let Err(e) = self.tcp.send(dest, payload) {
            Metrics::inc(&self.metrics.send_errors);
            tracing::debug!(%dest, error = ?e, "TCP send failed");
        }
    }

    async fn on_request(&mut self, req: rsip::Request, from: SocketAddr) {
        let peer_probe = req.method == rsip::Method::Options && self.ha.is_peer(from);
        if !self.config.kamailio.trusted.contains(&from.ip()) && !peer_probe {
            // Never answered: an untrusted source learns nothing (and is never challenged).
            Metrics::inc(&self.metrics.notifications_untrusted);
            tracing::debug!(%from, method = %req.method, "request from an untrusted source dropped");
            return;
        }
        let reply = match req.method {
            rsip::Method::Message if self.draining => {
                // Kamailio's transaction ends at once instead of retransmitting to a dying socket.
                Metrics::inc(&self.metrics.notifications_refused);
                response_for(&req, 503, "Shutting Down")
            }
            // Says who does the work. Active means doing it: not draining, the database read
            // (the first reconciliation) and still readable; otherwise the secondary must not
            // stand down for us.
            rsip::Method::Options => peer::with_header(
                response_for(&req, 200, "OK"),
                self.ha.role(),
                self.ha.is_active()
                    && !self.draining
                    && self.location_read
                    && self.db_reachable.load(Ordering::Relaxed),
            ),
            rsip::Method::Message => match parse_notification(&req) {
                Ok(n) if !self.proof_of_origin(&n, from) => return,
                Ok(n) => {
                    Metrics::inc(&self.metrics.notifications_accepted);
                    let user = aor_user(&n.aor).to_string();
                    tracing::debug!(user = %user, event = ?n.event, expires = n.expires, "notification");
                    let expires = Duration::from_secs(u64::from(n.expires));
                    if self.ha.is_active() {
                        self.mirror
                            .aor_update(Instant::now(), &user, expires, n.time_us, None);
                    } else {
                        self.ha.remember(Instant::now(), &user, expires, n.time_us);
                    }
                    response_for(&req, 200, "OK")
                }
                Err(e) => {
                    Metrics::inc(&self.metrics.notifications_malformed);
                    tracing::warn!(%from, reason = %e, "malformed notification");
                    response_for(&req, 400, "Bad Notification")
                }
            },
            rsip::Method::Ack => return,
            _ => response_for(&req, 405, "Method Not Allowed"),
        };
        self.send(&reply, from).await;
    }

    /// With `kamailio.notify_key`: the notification's keyed hash and time check out. Anything
    /// else is dropped unanswered (its source address may be forged) and counted.
    fn proof_of_origin(&self, n: &Notification, from: SocketAddr) -> bool {
        let Some(Redacted(key)) = &self.config.kamailio.notify_key else {
            return true;
        };
        let now_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        match n.verify(key.as_bytes(), now_us, self.config.kamailio.notify_max_skew) {
            Ok(()) => true,
            Err(e) => {
                let counter = match e {
                    AuthError::Stale { .. } => &self.metrics.notifications_stale,
                    AuthError::Missing | AuthError::Forged => &self.metrics.notifications_forged,
                };
                Metrics::inc(counter);
                tracing::debug!(%from, user = %aor_user(&n.aor), reason = %e, "notification dropped");
                false
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
        self.metrics
            .replays
            .store(self.mirror.stats().replayed, Ordering::Relaxed);
        match q {
            AdminQuery::Farm { bindings, reply } => {
                let mut s = status::farm_status(&self.mirror, Instant::now(), health, bindings);
                s.ha = self.ha.view();
                let _ = reply.send(s);
            }
            AdminQuery::User { user, reply } => {
                let _ = reply.send(status::user_status(
                    &self.mirror,
                    Instant::now(),
                    &user,
                    health,
                ));
            }
        }
    }

    /// Graceful shutdown: refuse notifications, let REGISTERs in flight finish (retransmitting
    /// as needed) for up to `SHUTDOWN_GRACE`, then return. Never unregisters anything itself:
    /// the nodes keep every binding until it expires or another instance refreshes it.
    async fn drain(&mut self, buf: &mut [u8]) {
        self.draining = true;
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        self.flush().await;
        tracing::info!(
            in_flight = self.mirror.operations_in_flight(),
            grace = ?SHUTDOWN_GRACE,
            "shutting down: finishing transactions in flight; bindings stay registered on the nodes"
        );
        // A credential lookup still running may be what an in-flight REGISTER waits for.
        while !(self.mirror.operations_in_flight() == 0 && self.lookups_pending.is_empty())
            && Instant::now() < deadline
        {
            let wake = self
                .mirror
                .poll_timeout()
                .map_or(deadline, |t| t.min(deadline));
            tokio::select! {
                r = self.socket.recv_from(buf) => {
                    if let Ok((n, from)) = r {
                        self.on_datagram(&buf[..n], from).await;
                    }
                }
                Some(l) = self.lookups_rx.recv() => self.on_lookup(l),
                Some(f) = self.tcp_rx.recv() => self.on_stream_frame(f),
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {
                    self.mirror.handle_timeout(Instant::now());
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
            self.metrics.send_errors.fetch_add(late, Ordering::Relaxed);
        }
        if !self.reconcile_users.is_empty() {
            self.reconcile_creds.clear();
            self.reconcile_users.clear();
        }
        let down = (0..self.nodes.len())
            .filter(|&i| !self.mirror.node_up(i as u16))
            .count();
        self.metrics
            .nodes_down
            .store(down as u64, Ordering::Relaxed);
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::BindingChanged {
                aor,
                node,
                state,
                reason,
            } => {
                let name = self.node_name(node);
                self.metrics.count_transition(&name, state.as_str());
                if state == BindingState::Registered {
                    self.note_confirmed(&name, &aor);
                }
                tracing::info!(user = %aor, node = %name, state = state.as_str(), reason = %reason, "binding");
            }
            Event::CredentialRejected { aor, node } => {
                tracing::warn!(user = %aor, node = %self.node_name(node), "node rejected the credential; refetching");
                self.lookup(&aor);
            }
            Event::CredentialMissing { aor } => {
                // Just reconciled: the bulk read already answered for its users.
                if let Some(c) = self.reconcile_creds.get(&*aor) {
                    let c = c.clone();
                    self.mirror.set_credential(Instant::now(), &aor, Some(c));
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
                .observe_latency(&self.node_name(node), round_trip),
        }
    }

    /// Probes the primary (secondary only) and applies a takeover when it stops answering.
    async fn on_ha_timeout(&mut self, now: Instant) {
        if let Some(t) = self.ha.monitor.handle_timeout(now) {
            self.on_transition(now, t);
        }
        while let Some(seq) = self.ha.monitor.poll_probe() {
            let probe = self.ha.probe(
                self.config.advertised_addr(),
                seq,
                &self.config.sip.user_agent,
            );
            if let Some((bytes, peer)) = probe {
                self.send(&bytes, peer).await;
            }
        }
    }

    fn on_peer_answer(&mut self, seq: u32, resp: &rsip::Response) {
        let Some(state) = Ha::peer_state(resp) else {
            return;
        };
        if state.role == peer::Role::Secondary {
            tracing::warn!(peer = %self.ha.peer_label(), "the HA peer is configured secondary too: make one of the two primary");
        }
        let (_, t) = self.ha.monitor.on_answer(Instant::now(), seq, state);
        if let Some(t) = t {
            self.on_transition(Instant::now(), t);
        }
    }

    fn on_transition(&mut self, now: Instant, t: Transition) {
        match t {
            Transition::Activated { unanswered } => {
                // What a starting instance does: probe the nodes, apply what Kamailio said
                // meanwhile, reconcile from `location` (the reconciler reads at once).
                self.mirror.handle_timeout(now);
                let pending = self.ha.take_pending(now);
                let n = pending.len();
                for (user, expires, time_us) in pending {
                    self.mirror.aor_update(now, &user, expires, time_us, None);
                }
                Metrics::inc(&self.metrics.ha_takeovers);
                tracing::warn!(
                    peer = %self.ha.peer_label(),
                    unanswered,
                    standby_aors = n,
                    "HA: primary not answering: taking over (active)"
                );
            }
            Transition::Deactivated => {
                // Forget without unregistering: the contacts stay on the nodes and the primary
                // re-registers every live AOR at its start.
                let bindings = self.mirror.bindings().count();
                self.mirror = self.new_mirror();
                self.reconcile_creds.clear();
                self.reconcile_users.clear();
                self.ha.clear_pending();
                self.metrics.nodes_down.store(0, Ordering::Relaxed);
                tracing::warn!(
                    peer = %self.ha.peer_label(),
                    forgotten_bindings = bindings,
                    "HA: primary answers again: back to standby (nothing unregistered)"
                );
            }
        }
        self.ha.publish();
        self.metrics
            .ha_active
            .store(u64::from(self.ha.is_active()), Ordering::Relaxed);
    }

    /// An empty mirror over the current nodes (standby, and what a takeover starts from).
    fn new_mirror(&self) -> Mirror {
        Mirror::new(
            self.mirror_config.clone(),
            self.nodes.clone(),
            rand::random(),
        )
    }

    /// SIGHUP while standby: take the new node list; the (empty) mirror is rebuilt on it.
    fn reload_standby(&mut self, new: Config) {
        for n in &new.nodes {
            if !self.config.nodes.iter().any(|m| m.name == n.name) {
                self.spawn_auditor(n, self.config.farm.audit_interval);
            }
        }
        self.config.nodes = new.nodes.clone();
        self.nodes = new.nodes.iter().map(node_of).collect();
        self.mirror = self.new_mirror();
        self.tcp.retain(self.nodes.iter().map(|n| n.addr));
        tracing::info!(
            nodes = self.nodes.len(),
            "configuration reloaded in standby (only [[nodes]] changes apply without a restart)"
        );
    }

    /// Remembers a confirmation for the node's next audit (nodes without AMI are not audited).
    fn note_confirmed(&mut self, node: &str, aor: &Arc<str>) {
        if !self
            .config
            .nodes
            .iter()
            .any(|n| n.name == node && n.ami.is_some())
        {
            return;
        }
        let now = Instant::now();
        let recent = self.recently_confirmed.entry(node.to_string()).or_default();
        while recent.front().is_some_and(|(t, _)| {
            now.duration_since(*t) > AUDIT_LISTING_MAX + Duration::from_secs(10)
        }) {
            recent.pop_front();
        }
        recent.push_back((now, aor.clone()));
    }

    fn node_name(&self, node: u16) -> String {
        self.nodes
            .get(usize::from(node))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("#{node}"))
    }

    /// Queues a lookup of the user's credential for the credential reader (once per user
    /// while one is pending).
    fn lookup(&mut self, user: &str) {
        if self.lookups_pending.insert(user.to_string()) {
            let _ = self.lookup_queue.send(user.to_string());
        }
    }

    /// Looks credentials up off the driver task, every user queued meanwhile in one statement
    /// (a storm of notifications costs the shared database one query per batch, not one per
    /// registration); retries with backoff while the database is unreachable, so an outage
    /// delays bindings but loses none.
    fn spawn_credential_reader(&mut self) {
        let Some(mut queue) = self.lookup_queue_rx.take() else {
            return;
        };
        let pool = self.pool.clone();
        let tx = self.lookups_tx.clone();
        let realm = self.config.sip.domain.clone();
        let metrics = self.metrics.clone();
        let mut storm = self.storm_tx.subscribe();
        tokio::spawn(async move {
            let mut batch: Vec<String> = Vec::new();
            loop {
                if batch.is_empty() {
                    match queue.recv().await {
                        Some(u) => batch.push(u),
                        None => return,
                    }
                    // Gather what arrives meanwhile: in a storm a point query takes about as
                    // long as the next notification takes to come, so without a short wait
                    // batches stay at one or two users.
                    tokio::time::sleep(LOOKUP_LINGER).await;
                    // New work waits out a storm anyway: read its credentials afterwards, in
                    // full batches, rather than beside Kamailio's own queries.
                    if !until_calm(&mut storm).await {
                        return;
                    }
                }
                while batch.len() < store::credentials::MAX_BATCH {
                    match queue.try_recv() {
                        Ok(u) => batch.push(u),
                        Err(_) => break,
                    }
                }
                let mut wait = Duration::from_millis(500);
                let mut after_outage = false;
                loop {
                    metrics
                        .credential_lookups
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    Metrics::inc(&metrics.credential_queries);
                    match store::credentials::fetch_credentials(&pool, &batch, &realm).await {
                        Ok(found) => {
                            for (user, found) in batch.drain(..).zip(found) {
                                if found.is_none() {
                                    Metrics::inc(&metrics.credential_unknown_users);
                                    tracing::warn!(user = %user, "no credential for this user: not mirrored");
                                }
                                let result = found.map(|c| Credential {
                                    username: c.username,
                                    secret: c.secret,
                                });
                                let lookup = Lookup {
                                    user,
                                    result,
                                    after_outage,
                                };
                                if tx.send(lookup).await.is_err() {
                                    return;
                                }
                            }
                            break;
                        }
                        Err(e) => {
                            metrics
                                .credential_lookup_errors
                                .fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(users = batch.len(), error = %e, retry_in = ?wait, "credential lookup failed");
                            after_outage = true;
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
        });
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

/// Waits until no registration storm holds new work; false once the driver is gone.
async fn until_calm(storm: &mut watch::Receiver<bool>) -> bool {
    storm.wait_for(|holding| !*holding).await.is_ok()
}

/// An audit's contact listing is given up after this long.
const AUDIT_LISTING_MAX: Duration = Duration::from_secs(20);
/// AMI sessions per node removing deleted users' contacts at the same time.
const AMI_REMOVALS_PER_NODE: usize = 4;

/// How long the credential reader waits after the first lookup of a batch for more to queue.
const LOOKUP_LINGER: Duration = Duration::from_millis(10);

/// REGISTERs per second per node that refreshing `live` bindings costs at `register_expires`
/// (each is refreshed Timer F and a few seconds before its expiry, at worst at half of it:
/// `binding::refresh_delay`).
fn refreshes_per_second(live: usize, register_expires: u32, margin: Duration) -> f64 {
    let every = refresh_period(register_expires, margin).as_secs_f64();
    live as f64 / every.max(1.0)
}
