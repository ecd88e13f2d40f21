//! The farm list from the database (`[node_list] source = "database"`): read before the driver
//! starts, then every `node_list.poll`. A change goes down the channel a SIGHUP reload takes,
//! so nodes are added (and replayed to) and removed the same way whichever list they come from.

use std::sync::Arc;
use std::time::Duration;

use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use tokio::sync::mpsc;

use crate::config::{nodes_of_rows, Config, NodeConfig, NodeSource, UnusableRow};
use crate::runtime::metrics::Metrics;
use crate::store::{self, StoreError};

/// A pool of one lazy connection for the table (the driver has its own).
pub fn pool(config: &Config) -> anyhow::Result<MySqlPool> {
    Ok(MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(config.database.connect_timeout)
        .connect_lazy_with(
            store::connect_options(&config.database.url)
                .map_err(|e| anyhow::anyhow!("database.url: {e}"))?,
        ))
}

/// The usable nodes of the table and the rows set aside.
pub async fn read(
    pool: &MySqlPool,
    config: &Config,
) -> Result<(Vec<NodeConfig>, Vec<UnusableRow>), StoreError> {
    let rows = store::farm::farm_rows(pool, config.node_list.dispatcher_set).await?;
    Ok(nodes_of_rows(&rows, &config.node_list))
}

fn warn_unusable(unusable: &[UnusableRow]) {
    for u in unusable {
        tracing::warn!(row = u.id, destination = %u.destination, why = %u.why, "farm list: row not used");
    }
}

/// `config` with the table's nodes, waiting (and saying why) until the table can be read and
/// has a usable node: a farm of none mirrors nothing.
pub async fn first_read(pool: &MySqlPool, mut config: Config) -> Config {
    let mut said = String::new();
    loop {
        let why = match read(pool, &config).await {
            Ok((nodes, unusable)) if !nodes.is_empty() => {
                warn_unusable(&unusable);
                tracing::info!(
                    nodes = nodes.len(),
                    set = config.node_list.dispatcher_set,
                    "farm list read from the dispatcher table"
                );
                config.nodes = nodes;
                return config;
            }
            Ok((_, unusable)) => {
                warn_unusable(&unusable);
                format!(
                    "dispatcher set {} has no usable node (`regmirror node add`)",
                    config.node_list.dispatcher_set
                )
            }
            Err(e) => e.to_string(),
        };
        if why != said {
            tracing::error!(error = %why, "farm list: waiting for it (retried every 2 s)");
            said = why;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Follows the table: each change of the usable nodes is sent as a reload of `base` with them.
/// Errors are logged once per kind and counted in `regmirror_db_errors`; the farm stays as it is.
pub fn spawn_watcher(
    pool: MySqlPool,
    base: Config,
    reload: mpsc::Sender<Config>,
    metrics: Arc<Metrics>,
) {
    debug_assert_eq!(base.node_list.source, NodeSource::Database);
    tokio::spawn(async move {
        let (mut nodes, mut unusable, mut said) = (base.nodes.clone(), Vec::new(), None);
        let mut tick = tokio::time::interval(base.node_list.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (now, set_aside) = match read(&pool, &base).await {
                Ok(read) => read,
                Err(e) => {
                    metrics.credential_lookup_errors.inc();
                    let why = e.to_string();
                    if said.as_ref() != Some(&why) {
                        tracing::error!(error = %why, "farm list: cannot read it; the farm stays as it is");
                        said = Some(why);
                    }
                    continue;
                }
            };
            if said.take().is_some() {
                tracing::info!("farm list: read again");
            }
            if set_aside != unusable {
                warn_unusable(&set_aside);
                unusable = set_aside;
            }
            if now == nodes {
                continue;
            }
            if now.is_empty() {
                tracing::error!(
                    "farm list: no usable node left in the table; the farm stays as it is"
                );
                continue;
            }
            nodes = now;
            let mut next = base.clone();
            next.nodes = nodes.clone();
            if reload.send(next).await.is_err() {
                return;
            }
        }
    });
}
