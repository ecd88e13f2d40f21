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
pub mod tcp;

use std::sync::Arc;

use crate::config::Config;

pub use driver::Driver;

/// Runs regmirror until `shutdown` resolves. With `config_path`, SIGHUP re-reads that file and
/// applies changes to the farm (`[[nodes]]` added or removed) without a restart.
pub async fn run(
    config: Config,
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
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match Config::load(config_path.as_deref()) {
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
    let _ = (config_path, reload_tx);
    let driver = Driver::bind(config, metrics, admin_rx).await?;
    driver.run(reload_rx, shutdown).await
}
