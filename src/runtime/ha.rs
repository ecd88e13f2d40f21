//! The driver's side of an active/standby pair (`[ha]`): the peer monitor (`core::peer`), the
//! notifications kept while standby, and the `active` flag the reconciler and the auditors
//! follow (standby reads nothing and sends nothing to the nodes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{Config, HaRole};
use crate::core::peer::{self, PeerConfig, PeerMonitor, PeerState, Role};
use crate::core::sip::header_values;
use crate::status::HaView;

/// Live AORs remembered while standby. Beyond this, takeover relies on the reconciliation
/// alone (Kamailio's `location` is complete: usrloc writes through).
pub const STANDBY_MAX_AORS: usize = 500_000;

/// The latest live snapshot of an AOR received while standby.
struct Pending {
    at: Instant,
    expires: Duration,
    time_us: Option<u64>,
}

pub struct Ha {
    pub monitor: PeerMonitor,
    pub peer: Option<SocketAddr>,
    /// Random per process: tells our probes' answers from anything else.
    tag: u32,
    active_tx: watch::Sender<bool>,
    pending: HashMap<String, Pending>,
    dropped: u64,
}

impl Ha {
    pub fn new(config: &Config) -> Ha {
        let (role, peer, probe_interval, takeover_after) = match &config.ha {
            None => (Role::Standalone, None, Duration::from_secs(1), 3),
            Some(h) => (
                match h.role {
                    HaRole::Primary => Role::Primary,
                    HaRole::Secondary => Role::Secondary,
                },
                Some(h.peer),
                h.probe_interval,
                h.takeover_after,
            ),
        };
        let monitor = PeerMonitor::new(PeerConfig {
            role,
            probe_interval,
            takeover_after,
        });
        let (active_tx, _) = watch::channel(monitor.is_active());
        Ha {
            monitor,
            peer,
            tag: rand::random(),
            active_tx,
            pending: HashMap::new(),
            dropped: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.monitor.is_active()
    }

    pub fn role(&self) -> Role {
        self.monitor.role()
    }

    /// Follows `is_active` (the reconciler and the auditors wait on it).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.active_tx.subscribe()
    }

    /// Tells the background tasks; call after every transition.
    pub fn publish(&self) {
        self.active_tx.send_replace(self.is_active());
    }

    /// The peer for logs: `ip:port`, or `-` when standalone.
    pub fn peer_label(&self) -> String {
        self.peer.map_or_else(|| "-".into(), |p| p.to_string())
    }

    /// The tag our probes' Call-IDs carry (the door tells their answers by it).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// The peer's `X-RegMirror-HA`; a 2xx without one (not a regmirror) says nothing.
    pub fn peer_state(resp: &rsip::Response) -> Option<PeerState> {
        if !matches!(resp.status_code.code(), 200..=299) {
            return None;
        }
        header_values(&resp.headers, peer::H_HA)
            .next()
            .and_then(peer::parse_header)
    }

    pub fn probe(
        &self,
        local: SocketAddr,
        seq: u32,
        user_agent: &str,
    ) -> Option<(Vec<u8>, SocketAddr)> {
        let peer = self.peer?;
        let me = PeerState {
            role: self.role(),
            active: self.is_active(),
        };
        Some((
            peer::probe_request(local, peer, self.tag, seq, me, user_agent),
            peer,
        ))
    }

    /// Keeps the latest snapshot of an AOR while standby (an unregister drops it: a fresh
    /// mirror has nothing to undo, and the AMI audit removes what the primary left behind).
    pub fn remember(&mut self, now: Instant, user: &str, expires: Duration, time_us: Option<u64>) {
        if let (Some(t), Some(old)) = (time_us, self.pending.get(user).and_then(|p| p.time_us)) {
            if t < old {
                return;
            }
        }
        if expires.is_zero() {
            self.pending.remove(user);
            return;
        }
        if self.pending.len() >= STANDBY_MAX_AORS && !self.pending.contains_key(user) {
            self.pending.retain(|_, p| p.at + p.expires > now);
            if self.pending.len() >= STANDBY_MAX_AORS {
                self.dropped += 1;
                return;
            }
        }
        self.pending.insert(
            user.to_string(),
            Pending {
                at: now,
                expires,
                time_us,
            },
        );
    }

    /// The snapshots kept while standby, with what is left of their expiry at `now`.
    pub fn take_pending(&mut self, now: Instant) -> Vec<(String, Duration, Option<u64>)> {
        if self.dropped > 0 {
            tracing::warn!(
                dropped = self.dropped,
                "standby buffer was full: those AORs come from the reconciliation"
            );
            self.dropped = 0;
        }
        self.pending
            .drain()
            .filter_map(|(user, p)| {
                let left = (p.at + p.expires).checked_duration_since(now)?;
                (!left.is_zero()).then_some((user, left, p.time_us))
            })
            .collect()
    }

    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    pub fn view(&self) -> HaView {
        HaView {
            role: self.role().as_str().into(),
            state: if self.is_active() {
                "active"
            } else {
                "standby"
            }
            .into(),
            peer: self.peer.map(|p| p.to_string()),
            peer_unanswered: self.monitor.unanswered(),
            takeovers: self.monitor.takeovers(),
            standby_aors: self.pending.len() as u64,
        }
    }
}

/// Waits until the instance is active; `false` once the driver is gone.
pub async fn until_active(rx: &mut watch::Receiver<bool>) -> bool {
    rx.wait_for(|a| *a).await.is_ok()
}

/// Sleeps `d`, or less if the instance goes standby meanwhile.
pub async fn sleep_while_active(rx: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = rx.wait_for(|a| !*a) => {}
    }
}
