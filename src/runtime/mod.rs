//! The thin async shell around the sans-IO core: one UDP socket (plus one connection per TCP
//! node, `tcp`), the driver loop, credential lookups in the database, and the admin listener.
//! All protocol decisions live in `crate::core`.

pub mod admin;
pub mod ami;
pub mod background;
pub mod credentials;
pub mod driver;
pub mod ha;
pub mod metrics;
pub mod mmsg;
pub mod node_events;
pub mod node_list;
pub mod page;
pub mod tcp;

use std::sync::Arc;

use crate::config::{Config, NodeSource};

pub use driver::Driver;

/// Runs regmirror until `shutdown` resolves. With `config_path`, SIGHUP re-reads that file and
/// applies changes to the farm (`[[nodes]]` added or removed) without a restart; with the farm
/// list in the database (`node_list`), its changes apply the same way, within `node_list.poll`.
pub async fn run(
    mut config: Config,
    config_path: Option<std::path::PathBuf>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(16);
    if let Some(addr) = config.admin.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("admin listener on {addr}: {e}"))?;
        tracing::info!(%addr, "admin listener up");
        tokio::spawn(admin::serve(listener, metrics.clone(), admin_tx));
    }
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
    let farm_table = (config.node_list.source == NodeSource::Database)
        .then(|| node_list::pool(&config))
        .transpose()?;
    if let Some(pool) = &farm_table {
        config = node_list::first_read(pool, config).await;
        node_list::spawn_watcher(
            pool.clone(),
            config.clone(),
            reload_tx.clone(),
            metrics.clone(),
        );
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let loaded = match (Config::load(config_path.as_deref()), &farm_table) {
                    (Ok(c), Some(pool)) => node_list::read(pool, &c)
                        .await
                        .map(|(nodes, _)| Config { nodes, ..c })
                        .map_err(|e| e.to_string()),
                    (loaded, _) => loaded.map_err(|e| e.to_string()),
                };
                match loaded {
                    Ok(c) if c.nodes.is_empty() => {
                        tracing::error!("reload refused: no usable node; configuration unchanged")
                    }
                    Ok(c) => {
                        if reload_tx.send(c).await.is_err() {
                            return;
                        }
                    }
                    // A bad file changes nothing: the running configuration stays.
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; configuration unchanged")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (config_path, reload_tx, farm_table);
    let driver = Driver::bind(config, metrics, admin_rx).await?;
    driver.run(reload_rx, shutdown).await
}
