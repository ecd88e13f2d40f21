//! The thin async shell around the sans-IO core: one UDP socket, the driver loop, credential
//! lookups in the database, and the admin listener. All protocol decisions live in `crate::core`.

pub mod admin;
pub mod ami;
pub mod driver;
pub mod inflight;
pub mod metrics;

use std::sync::Arc;

use crate::config::Config;

pub use driver::Driver;

/// Runs regmirror until `shutdown` resolves.
pub async fn run(
    config: Config,
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
    let driver = Driver::bind(config, metrics, admin_rx).await?;
    driver.run(shutdown).await
}
