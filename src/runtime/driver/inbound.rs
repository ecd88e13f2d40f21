//! What arrives from the network: the core's door decides, the driver counts, logs, answers
//! and hands notifications to the mirror (or, while standby, to the HA buffer).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::core::door::{Answered, Arrival, Dropped, NodeResponse, Received, Standing};
use crate::core::notify::{aor_user, AuthError, Notification};
use crate::core::peer::{self, Transition};
use crate::runtime::credentials::CredentialSource;
use crate::runtime::ha::Ha;
use crate::runtime::metrics::Metrics;
use crate::runtime::tcp::Frame;

use super::Driver;

impl<S: CredentialSource> Driver<S> {
    fn standing(&self) -> Standing {
        Standing {
            role: self.ha.role(),
            draining: self.draining,
            serving: self.ha.is_active()
                && !self.draining
                && self.location_read
                && self.db_reachable.load(Ordering::Relaxed),
        }
    }

    pub(super) async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let received = self.door.receive(
            bytes,
            from,
            Arrival::Datagram,
            self.standing(),
            self.wall_us,
        );
        if let Some((reply, to)) = self.on_received(received, from) {
            self.send(&reply, to).await;
        }
    }

    /// A message read from a TCP node's connection (already framed, keepalives skipped):
    /// responses go to the core as if they were datagrams from the node; its requests are
    /// answered on the same connection.
    pub(super) fn on_stream_frame(&mut self, f: Frame) {
        let received = self.door.receive(
            &f.bytes,
            f.node,
            Arrival::Stream,
            self.standing(),
            self.wall_us,
        );
        if let Some((reply, to)) = self.on_received(received, f.node) {
            self.send_tcp(to, reply);
        }
    }

    /// Applies the door's decision; returns the reply to send, if any.
    fn on_received(
        &mut self,
        received: Received<'_>,
        from: SocketAddr,
    ) -> Option<(Vec<u8>, SocketAddr)> {
        match received {
            Received::Nothing => None,
            Received::Dropped(d) => {
                self.on_dropped(d, from);
                None
            }
            Received::Response(r) => {
                self.on_response(&r, from);
                None
            }
            Received::PeerAnswer { seq, response } => {
                self.on_peer_answer(seq, &response);
                None
            }
            Received::Answered { reply, what } => {
                match what {
                    Answered::Notification(n) => self.on_notification(n),
                    Answered::BadNotification(e) => {
                        Metrics::inc(&self.metrics.notifications_malformed);
                        tracing::warn!(%from, reason = %e, "malformed notification");
                    }
                    Answered::ShuttingDown => Metrics::inc(&self.metrics.notifications_refused),
                    Answered::Options | Answered::NotAllowed => {}
                }
                Some((reply, from))
            }
        }
    }

    fn on_dropped(&self, d: Dropped, from: SocketAddr) {
        let m = &self.metrics;
        match d {
            Dropped::Oversized(len) => {
                Metrics::inc(&m.datagrams_oversized);
                tracing::debug!(%from, len, "oversized datagram dropped");
            }
            Dropped::Malformed(e) => {
                Metrics::inc(&m.datagrams_malformed);
                tracing::debug!(%from, reason = %e, "malformed message dropped");
            }
            Dropped::Untrusted(method) => {
                Metrics::inc(&m.notifications_untrusted);
                tracing::debug!(%from, %method, "request from an untrusted source dropped");
            }
            Dropped::Unproven { user, reason } => {
                let counter = match reason {
                    AuthError::Stale { .. } => &m.notifications_stale,
                    AuthError::Missing | AuthError::Forged => &m.notifications_forged,
                };
                Metrics::inc(counter);
                tracing::debug!(%from, user = %user, reason = %reason, "notification dropped");
            }
        }
    }

    fn on_response(&mut self, r: &NodeResponse<'_>, from: SocketAddr) {
        if !self.ha.is_active() {
            return; // late answers to a REGISTER sent before going standby
        }
        let (now, metrics, mirror) = (self.now, &self.metrics, &mut self.mirror);
        r.with_info(|info| {
            if matches!(info.code, 200..=699) {
                metrics.count_result(info.code);
            }
            mirror.handle_response_info(now, from, info);
        });
    }

    fn on_notification(&mut self, n: Notification) {
        Metrics::inc(&self.metrics.notifications_accepted);
        let user = aor_user(&n.aor);
        tracing::debug!(user = %user, event = ?n.event, expires = n.expires, "notification");
        let expires = Duration::from_secs(u64::from(n.expires));
        if self.ha.is_active() {
            self.mirror
                .aor_update(self.now, user, expires, n.time_us, None);
        } else {
            self.ha.remember(self.now, user, expires, n.time_us);
        }
    }

    /// Probes the primary (secondary only) and applies a takeover when it stops answering.
    pub(super) async fn on_ha_timeout(&mut self) {
        if let Some(t) = self.ha.monitor.handle_timeout(self.now) {
            self.on_transition(t);
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
        let (_, t) = self.ha.monitor.on_answer(self.now, seq, state);
        if let Some(t) = t {
            self.on_transition(t);
        }
    }

    fn on_transition(&mut self, t: Transition) {
        let now = self.now;
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
                let bindings = self.mirror.stats().bindings();
                self.mirror = self.new_mirror();
                self.reconcile_creds.clear();
                self.reconcile_users.clear();
                self.ha.clear_pending();
                self.metrics.nodes_down.set(0);
                tracing::warn!(
                    peer = %self.ha.peer_label(),
                    forgotten_bindings = bindings,
                    "HA: primary answers again: back to standby (nothing unregistered)"
                );
            }
        }
        self.ha.publish();
        self.metrics.ha_active.set(i64::from(self.ha.is_active()));
    }
}
