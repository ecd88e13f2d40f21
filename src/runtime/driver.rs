//! The driver loop: feeds datagrams, credential lookups and timeouts into the `Mirror`, then
//! drains its transmits and events (the str0m/quinn sans-IO loop).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::mysql::MySqlPoolOptions;
use sqlx::MySqlPool;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::config::{Config, TransportKind};
use crate::core::mirror::{BindingState, Credential, Event, Mirror, MirrorConfig, Node, Transport};
use crate::core::notify::{aor_user, parse_notification};
use crate::core::sip::{parse_message, response_for, MAX_MESSAGE};
use crate::runtime::admin::{AdminQuery, BindingRow, NodeRow, StatusSnapshot};
use crate::runtime::metrics::Metrics;
use crate::store;

/// Result of a credential lookup done off the driver task.
struct Lookup {
    user: String,
    result: Option<Credential>,
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
}

impl Driver {
    pub async fn bind(
        config: Config,
        metrics: Arc<Metrics>,
        admin_rx: mpsc::Receiver<AdminQuery>,
    ) -> anyhow::Result<Driver> {
        let socket = UdpSocket::bind(config.sip.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind SIP socket {}: {e}", config.sip.listen))?;
        // Lazy: regmirror starts and serves what it knows even while the database is down.
        let pool = MySqlPoolOptions::new()
            .max_connections(config.database.max_connections)
            .acquire_timeout(config.database.connect_timeout)
            .connect_lazy(&config.database.url)
            .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        let nodes: Vec<Node> = config
            .nodes
            .iter()
            .map(|n| Node {
                name: n.name.clone(),
                addr: n.address,
                transport: match n.transport {
                    TransportKind::Udp => Transport::Udp,
                    TransportKind::Tcp => Transport::Tcp,
                },
            })
            .collect();
        let mcfg = MirrorConfig {
            domain: config.sip.domain.clone(),
            contact_host: config.kamailio.contact_host.clone(),
            local_addr: config.advertised_addr(),
            register_expires: config.sip.register_expires,
            t1: config.sip.t1,
            t2: config.sip.t2,
            timer_f: config.sip.timer_f,
            retry_base: config.sip.retry_base,
            retry_max: config.sip.retry_max,
            user_agent: config.sip.user_agent.clone(),
            ..MirrorConfig::default()
        };
        let mirror = Mirror::new(mcfg, nodes.clone(), rand::random());
        let (lookups_tx, lookups_rx) = mpsc::channel(4096);
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
        })
    }

    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::pin!(shutdown);
        let mut buf = vec![0u8; 65_536];
        loop {
            let deadline = self
                .mirror
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    match r {
                        Ok((n, from)) => {
                            self.on_datagram(&buf[..n], from).await;
                            // Drain what is already queued before going round the loop again.
                            for _ in 0..256 {
                                match self.socket.try_recv_from(&mut buf) {
                                    Ok((n, from)) => self.on_datagram(&buf[..n], from).await,
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "recv failed"),
                    }
                }
                Some(l) = self.lookups_rx.recv() => {
                    self.lookups_pending.remove(&l.user);
                    self.mirror.set_credential(Instant::now(), &l.user, l.result);
                }
                _ = sleep_until_opt(deadline) => {
                    self.mirror.handle_timeout(Instant::now());
                }
                Some(q) = self.admin_rx.recv() => self.on_admin(q),
                _ = &mut shutdown => {
                    tracing::info!("shutting down: bindings stay registered on the nodes until they expire");
                    self.flush().await;
                    return Ok(());
                }
            }
            self.flush().await;
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
        let msg = match parse_message(bytes) {
            Ok(m) => m,
            Err(e) => {
                Metrics::inc(&self.metrics.datagrams_malformed);
                tracing::debug!(%from, reason = %e, "malformed datagram dropped");
                return;
            }
        };
        match msg {
            rsip::SipMessage::Response(resp) => {
                if matches!(resp.status_code.code(), 200..=699) {
                    self.metrics.count_result(resp.status_code.code());
                }
                self.mirror.handle_response(Instant::now(), from, &resp);
            }
            rsip::SipMessage::Request(req) => self.on_request(req, from).await,
        }
    }

    async fn on_request(&mut self, req: rsip::Request, from: SocketAddr) {
        if !self.config.kamailio.trusted.contains(&from.ip()) {
            // Never answered: an untrusted source learns nothing (and is never challenged).
            Metrics::inc(&self.metrics.notifications_untrusted);
            tracing::debug!(%from, method = %req.method, "request from an untrusted source dropped");
            return;
        }
        let reply = match req.method {
            rsip::Method::Options => response_for(&req, 200, "OK"),
            rsip::Method::Message => match parse_notification(&req) {
                Ok(n) => {
                    Metrics::inc(&self.metrics.notifications_accepted);
                    let user = aor_user(&n.aor).to_string();
                    tracing::debug!(user = %user, event = ?n.event, expires = n.expires, "notification");
                    self.mirror.aor_update(
                        Instant::now(),
                        &user,
                        Duration::from_secs(u64::from(n.expires)),
                        n.time_us,
                        None,
                    );
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

    fn on_admin(&mut self, q: AdminQuery) {
        match q {
            AdminQuery::Status(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
    }

    fn snapshot(&self) -> StatusSnapshot {
        let mut nodes: Vec<NodeRow> = self
            .nodes
            .iter()
            .map(|n| NodeRow {
                name: n.name.clone(),
                address: n.addr.to_string(),
                ..Default::default()
            })
            .collect();
        let mut bindings = Vec::new();
        for b in self.mirror.bindings() {
            let node = &mut nodes[usize::from(b.node)];
            match b.state {
                BindingState::Registered => node.registered += 1,
                BindingState::Registering => node.registering += 1,
                BindingState::Unregistering => node.unregistering += 1,
                BindingState::Failed => node.failed += 1,
            }
            bindings.push(BindingRow {
                aor: b.aor.to_string(),
                node: node.name.clone(),
                state: state_name(b.state),
                last_result: b.last_result.to_string(),
            });
        }
        StatusSnapshot { nodes, bindings }
    }

    /// Drains the mirror's transmits and events.
    async fn flush(&mut self) {
        while let Some(t) = self.mirror.poll_transmit() {
            match t.transport {
                Transport::Udp => self.send(&t.payload, t.dest).await,
                Transport::Tcp => {
                    // TCP nodes are not supported by this shell yet; config validation warns.
                    Metrics::inc(&self.metrics.send_errors);
                }
            }
        }
        while let Some(ev) = self.mirror.poll_event() {
            self.on_event(ev);
        }
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
                self.metrics.count_transition(&name, state_name(state));
                tracing::info!(user = %aor, node = %name, state = state_name(state), reason = %reason, "binding");
            }
            Event::CredentialRejected { aor, node } => {
                tracing::warn!(user = %aor, node = %self.node_name(node), "node rejected the credential; refetching");
                self.lookup(&aor);
            }
            Event::CredentialMissing { aor } => self.lookup(&aor),
            Event::BindingRemoved { aor, node } => {
                tracing::info!(user = %aor, node = %self.node_name(node), "binding removed");
            }
            Event::NodeDown { node } => {
                tracing::warn!(node = %self.node_name(node), "node down: its bindings wait for it");
            }
            Event::NodeUp { node } => {
                tracing::info!(node = %self.node_name(node), "node up: replaying its bindings");
            }
        }
    }

    fn node_name(&self, node: u16) -> String {
        self.nodes
            .get(usize::from(node))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| format!("#{node}"))
    }

    /// Looks the user's credential up off the driver task; retries with backoff while the
    /// database is unreachable, so an outage delays bindings but loses none.
    fn lookup(&mut self, user: &str) {
        if !self.lookups_pending.insert(user.to_string()) {
            return;
        }
        let pool = self.pool.clone();
        let tx = self.lookups_tx.clone();
        let realm = self.config.sip.domain.clone();
        let metrics = self.metrics.clone();
        let user = user.to_string();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(500);
            loop {
                Metrics::inc(&metrics.credential_lookups);
                match store::credentials::fetch_credential(&pool, &user, &realm).await {
                    Ok(found) => {
                        if found.is_none() {
                            Metrics::inc(&metrics.credential_unknown_users);
                            tracing::warn!(user = %user, "no credential for this user: not mirrored");
                        }
                        let result = found.map(|c| Credential {
                            username: c.username,
                            secret: c.secret,
                        });
                        let _ = tx.send(Lookup { user, result }).await;
                        return;
                    }
                    Err(e) => {
                        metrics
                            .credential_lookup_errors
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(user = %user, error = %e, retry_in = ?wait, "credential lookup failed");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
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

pub fn state_name(s: BindingState) -> &'static str {
    match s {
        BindingState::Registering => "registering",
        BindingState::Registered => "registered",
        BindingState::Unregistering => "unregistering",
        BindingState::Failed => "failed",
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
