//! Changes to what the farm should hold: reconciliation from Kamailio's `location`,
//! credential lookups, drift audits, and `[[nodes]]` reloads (SIGHUP).

use std::time::Duration;

use crate::config::Config;
use crate::core::binding::refresh_period;
use crate::core::mirror::{drop_refused, Mirror};
use crate::core::notify::aor_user;
use crate::runtime::background::{self, AuditSnapshot, Lookup, Reconciliation};
use crate::runtime::credentials::CredentialSource;
use crate::runtime::metrics::Metrics;
use crate::runtime::node_events;

use super::{node_of, Driver};

impl<S: CredentialSource> Driver<S> {
    /// What a node's manager session reported.
    pub(super) fn on_node_event(&mut self, r: node_events::Report) {
        match r {
            node_events::Report::Maintenance(u) => self.on_maintenance(u),
            node_events::Report::Contact(c) => self.on_contact_change(c),
        }
    }

    /// A node reported a change of one of our contacts: repaired at once if it makes the node
    /// differ from what is wanted (the same repairs as an audit's listing, for one user).
    fn on_contact_change(&mut self, c: node_events::ContactChange) {
        if !self.ha.is_active() {
            return;
        }
        let Some(node) = self.nodes.iter().position(|n| n.name == c.node) else {
            return;
        };
        let (change, counter) = if c.present {
            ("present", &self.metrics.contact_events_present)
        } else {
            ("removed", &self.metrics.contact_events_removed)
        };
        Metrics::inc(counter);
        let r = self
            .mirror
            .contact_changed(self.now, node as u16, &c.user, c.present);
        let repaired = (r.missing + r.stale) as u64;
        if repaired > 0 {
            self.metrics.drift_repaired.inc_by(repaired);
            tracing::warn!(node = %c.node, user = %c.user, change,
                "contact changed on the node behind regmirror's back: drift repaired");
        }
    }

    /// A node's manager said which endpoints are in maintenance (`None`: it cannot say now).
    /// The node is in maintenance while its Kamailio endpoint is: Asterisk then answers the
    /// proxy's calls and OPTIONS with 503 and the dispatcher takes it out of rotation, while
    /// regmirror's REGISTERs for users still land, so it comes back complete.
    fn on_maintenance(&mut self, u: node_events::Update) {
        let was = self.in_maintenance(&u.node);
        match u.endpoints {
            Some(e) => self.maintenance.insert(u.node.clone(), e),
            None => self.maintenance.remove(&u.node),
        };
        let is = self.in_maintenance(&u.node);
        if was != is {
            let endpoint = self.kamailio_endpoint(&u.node).unwrap_or_default();
            if is {
                tracing::warn!(node = %u.node, endpoint, "node in maintenance: the proxy's requests get 503; bindings are kept");
            } else {
                tracing::info!(node = %u.node, endpoint, "node out of maintenance");
            }
        }
    }

    fn kamailio_endpoint(&self, node: &str) -> Option<&str> {
        let n = self.config.nodes.iter().find(|n| n.name == node)?;
        Some(n.kamailio_endpoint.as_str())
    }

    /// The node's Kamailio endpoint is in maintenance, as far as its manager said last.
    pub(super) fn in_maintenance(&self, node: &str) -> bool {
        let (Some(set), Some(endpoint)) =
            (self.maintenance.get(node), self.kamailio_endpoint(node))
        else {
            return false;
        };
        set.contains(endpoint)
    }

    /// Whether `user`'s own endpoint is in maintenance on `node` (its REGISTERs get 503).
    pub(super) fn user_in_maintenance(&self, node: &str, user: &str) -> bool {
        self.maintenance
            .get(node)
            .is_some_and(|set| set.contains(user))
    }

    pub(super) fn on_reconcile(&mut self, r: Reconciliation) {
        let Reconciliation { at, snapshot: r } = r;
        if !self.ha.is_active() {
            return; // read before going standby
        }
        let first = !self.mirror.is_reconciled();
        self.location_read = true;
        if let Err(refused) = self.mirror.reconcile(at, &r.live) {
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
        let now = self.now;
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

    pub(super) fn on_lookup(&mut self, l: Lookup) {
        self.lookups_pending.remove(&l.user);
        if !self.ha.is_active() {
            return;
        }
        if l.result.is_none() {
            // The user is gone: the nodes cannot authenticate its unregister any more.
            self.remove_over_ami(&l.user);
        }
        let known = l.result.is_some();
        let now = self.now;
        self.mirror.set_credential(now, &l.user, l.result);
        if known && l.after_outage {
            self.mirror.retry_credential_failures(now, &l.user);
        }
    }

    /// SIGHUP: applies `[[nodes]]` changes. A new node gets every live binding (paced replay);
    /// a removed node's bindings are forgotten, not unregistered (the node may be gone).
    pub(super) fn on_reload(&mut self, new: Config) {
        if !self.ha.is_active() {
            return self.reload_standby(new);
        }
        let now = self.now;
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
            self.spawn_node_tasks(n);
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

    pub(super) fn on_audit(&mut self, a: AuditSnapshot) {
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
        let r = self.mirror.audit(self.now, node as u16, &users);
        let repaired = (r.missing + r.stale) as u64;
        self.metrics.drift_repaired.inc_by(repaired);
        if repaired > 0 {
            tracing::warn!(node = %a.node, missing = r.missing, stale = r.stale, "drift repaired");
        } else {
            tracing::debug!(node = %a.node, contacts = listed, "audit: no drift");
        }
    }

    /// An empty mirror over the current nodes (standby, and what a takeover starts from).
    pub(super) fn new_mirror(&self) -> Mirror {
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
                self.spawn_node_tasks(n);
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

    /// A user without a credential any more: the nodes cannot authenticate its unregister, so
    /// its contacts (ours only) are deleted through AMI on every node that has `ami` set.
    fn remove_over_ami(&mut self, user: &str) {
        self.ami_removals.remove(
            &self.config.nodes,
            &self.config.kamailio.contact_host,
            user,
            &self.metrics,
        );
    }

    /// The audit loop and the manager session (maintenance, contact changes) of a node added by
    /// a reload.
    fn spawn_node_tasks(&self, n: &crate::config::NodeConfig) {
        node_events::spawn_watchers(
            std::slice::from_ref(n),
            &self.config.kamailio.contact_host,
            &self.node_events_tx,
            &self.metrics,
        );
        let interval = self.config.farm.audit_interval;
        background::spawn_auditor(
            n,
            interval,
            interval,
            &self.config.kamailio.contact_host,
            &self.audit_tx,
            &self.metrics,
            &self.gates(),
        );
    }
}

/// REGISTERs per second per node that refreshing `live` bindings costs at `register_expires`
/// (each is refreshed Timer F and a few seconds before its expiry, at worst at half of it:
/// `binding::refresh_delay`).
fn refreshes_per_second(live: usize, register_expires: u32, margin: Duration) -> f64 {
    let every = refresh_period(register_expires, margin).as_secs_f64();
    live as f64 / every.max(1.0)
}
