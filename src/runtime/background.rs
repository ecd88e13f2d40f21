//! The driver's background tasks: credential lookups, reconciliation from Kamailio's
//! `location`, the AMI drift audit and AMI removal of deleted users' contacts. Each reads or
//! asks off the driver task and sends its answer back over a channel; while standby or during a
//! registration storm they wait (their reads cost the database and the nodes what the phones
//! need then).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::NodeConfig;
use crate::core::mirror::Credential;
use crate::runtime::ami::{fetch_contact_users, remove_contacts, AmiTarget};
use crate::runtime::credentials::{CredentialSource, LiveSnapshot};
use crate::runtime::ha as ha_rt;
use crate::runtime::metrics::Metrics;
use crate::store;

/// Result of a credential lookup done off the driver task.
pub struct Lookup {
    pub user: String,
    pub result: Option<Credential>,
    /// The source failed before answering this lookup (an outage the nodes, which read the
    /// same database, may have rejected registrations during).
    pub after_outage: bool,
}

/// A reconciliation's read, taken at `at`: notifications after it win over the snapshot.
pub struct Reconciliation {
    pub at: Instant,
    pub snapshot: LiveSnapshot,
}

/// A node's contacts pointing at Kamailio, read over AMI.
pub struct AuditSnapshot {
    pub node: String,
    pub at: Instant,
    pub users: HashSet<String>,
}

/// What the tasks wait on: the HA `active` flag and the driver's storm hold.
#[derive(Clone)]
pub struct Gates {
    pub active: watch::Receiver<bool>,
    pub storm: watch::Receiver<bool>,
}

/// Waits until no registration storm holds new work; false once the driver is gone.
pub async fn until_calm(storm: &mut watch::Receiver<bool>) -> bool {
    storm.wait_for(|holding| !*holding).await.is_ok()
}

/// The shell's clock: tokio's, so tests run under its paused time.
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// An audit's contact listing is given up after this long.
pub const AUDIT_LISTING_MAX: Duration = Duration::from_secs(20);
/// AMI sessions per node removing deleted users' contacts at the same time.
const AMI_REMOVALS_PER_NODE: usize = 4;
/// How long the credential reader waits after the first lookup of a batch for more to queue.
const LOOKUP_LINGER: Duration = Duration::from_millis(10);

/// Reads the complete desired state every `interval`; on an error keeps the current state and
/// retries with backoff (regmirror serves what it knows meanwhile).
pub fn spawn_reconciler<S: CredentialSource>(
    source: Arc<S>,
    tx: mpsc::Sender<Reconciliation>,
    interval: Duration,
    metrics: Arc<Metrics>,
    db_reachable: Arc<AtomicBool>,
    mut gates: Gates,
) {
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            // Standby reads nothing; a takeover reads at once.
            if !ha_rt::until_active(&mut gates.active).await || !until_calm(&mut gates.storm).await
            {
                return;
            }
            let at = now();
            let read = source.live().await;
            db_reachable.store(read.is_ok(), Ordering::Relaxed);
            match read {
                Ok(snapshot) => {
                    if tx.send(Reconciliation { at, snapshot }).await.is_err() {
                        return;
                    }
                    wait = Duration::from_secs(1);
                    ha_rt::sleep_while_active(&mut gates.active, interval).await;
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

/// Looks credentials up off the driver task, every user queued meanwhile in one statement
/// (a storm of notifications costs the shared database one query per batch, not one per
/// registration); retries with backoff while the source is unreachable, so an outage delays
/// bindings but loses none.
pub fn spawn_credential_reader<S: CredentialSource>(
    source: Arc<S>,
    mut queue: mpsc::UnboundedReceiver<String>,
    tx: mpsc::Sender<Lookup>,
    metrics: Arc<Metrics>,
    mut storm: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut batch: Vec<String> = Vec::new();
        loop {
            if batch.is_empty() {
                match queue.recv().await {
                    Some(u) => batch.push(u),
                    None => return,
                }
                // Gather what arrives meanwhile: in a storm a point query takes about as long
                // as the next notification takes to come, so without a short wait batches
                // stay at one or two users.
                tokio::time::sleep(LOOKUP_LINGER).await;
                // New work waits out a storm anyway: read its credentials afterwards, in full
                // batches, rather than beside Kamailio's own queries.
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
                metrics.credential_lookups.inc_by(batch.len() as u64);
                Metrics::inc(&metrics.credential_queries);
                match source.credentials(&batch).await {
                    Ok(found) => {
                        for (user, result) in batch.drain(..).zip(found) {
                            if result.is_none() {
                                Metrics::inc(&metrics.credential_unknown_users);
                                tracing::warn!(user = %user, "no credential for this user: not mirrored");
                            }
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
                        Metrics::inc(&metrics.credential_lookup_errors);
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

/// One AMI audit loop per node that has `ami` configured, staggered over `interval`: a listing
/// costs its node about 0.1 ms of CPU per contact (2 s for 22,000), so nodes listing at the
/// same moment take a small box's every core at once (BENCHMARKS.md part 4).
pub fn spawn_auditors(
    nodes: &[NodeConfig],
    interval: Duration,
    contact_host: &str,
    tx: &mpsc::Sender<AuditSnapshot>,
    metrics: &Arc<Metrics>,
    gates: &Gates,
) {
    let audited: Vec<&NodeConfig> = nodes.iter().filter(|n| n.ami.is_some()).collect();
    for (i, n) in audited.iter().enumerate() {
        let first = interval.mul_f64((i + 1) as f64 / audited.len() as f64);
        spawn_auditor(n, first, interval, contact_host, tx, metrics, gates);
    }
}

/// The audit loop of one node (nothing without `ami`): its first listing after `first`.
pub fn spawn_auditor(
    n: &NodeConfig,
    first: Duration,
    interval: Duration,
    contact_host: &str,
    tx: &mpsc::Sender<AuditSnapshot>,
    metrics: &Arc<Metrics>,
    gates: &Gates,
) {
    let Some(target) = AmiTarget::of(n) else {
        return;
    };
    let name = n.name.clone();
    let (tx, metrics, contact_host) = (tx.clone(), metrics.clone(), contact_host.to_string());
    let Gates { active, mut storm } = gates.clone();
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
            let at = now();
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

/// Deletes a removed user's contacts (ours only) over AMI: the nodes cannot authenticate its
/// unregister any more.
#[derive(Default)]
pub struct AmiRemovals {
    /// Per node: AMI sessions removing contacts at once.
    slots: HashMap<String, Arc<Semaphore>>,
}

impl AmiRemovals {
    /// On every node of `nodes` that has `ami` configured.
    pub fn remove(
        &mut self,
        nodes: &[NodeConfig],
        contact_host: &str,
        user: &str,
        metrics: &Arc<Metrics>,
    ) {
        for n in nodes {
            let Some(target) = AmiTarget::of(n) else {
                continue;
            };
            let (node, user) = (n.name.clone(), user.to_string());
            let (contact_host, metrics) = (contact_host.to_string(), metrics.clone());
            let slots = self
                .slots
                .entry(n.name.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(AMI_REMOVALS_PER_NODE)))
                .clone();
            tokio::spawn(async move {
                // Asterisk closes unauthenticated sessions beyond its `authlimit` (50): many
                // users removed at once queue here instead.
                let Ok(_slot) = slots.acquire_owned().await else {
                    return;
                };
                match remove_contacts(&target, &contact_host, Some(&user), Duration::from_secs(20))
                    .await
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
}
