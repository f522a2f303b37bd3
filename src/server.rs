//! Running a node: bind the listener, serve the API, stop gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::config::ServeConfig;
use crate::registry::{Registry, RegistryConfig};

/// How long in-flight requests may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open the registry: {0}")]
    Open(#[from] crate::registry::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running node.
pub struct Server {
    pub addr: SocketAddr,
    pub registry: Arc<Registry>,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    purge: JoinHandle<()>,
}

pub async fn start(config: &ServeConfig) -> Result<Server, ServeError> {
    let registry = Arc::new(Registry::open(&RegistryConfig {
        data_dir: config.data_dir.clone(),
        max_manifest_size: config.max_manifest_size,
    })?);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(
        %addr,
        node_id = registry.node_id(),
        data_dir = %config.data_dir.display(),
        "registry listening (plain HTTP)"
    );
    let stop = CancellationToken::new();
    let purge = tokio::spawn(purge_uploads(
        registry.clone(),
        config.upload_ttl,
        stop.clone(),
    ));
    let app = api::router(registry.clone());
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopped.cancelled_owned())
            .await
    });
    Ok(Server {
        addr,
        registry,
        stop,
        task,
        purge,
    })
}

/// Hourly removal of abandoned upload sessions, until the node stops.
async fn purge_uploads(registry: Arc<Registry>, ttl: u64, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let reg = registry.clone();
        match tokio::task::spawn_blocking(move || reg.purge_stale_uploads(ttl)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "removed abandoned upload sessions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not purge upload sessions"),
            Err(e) => tracing::warn!(error = %e, "upload purge task failed"),
        }
    }
}

impl Server {
    /// Stops accepting connections and waits (bounded) for in-flight ones.
    /// Once it returns, nothing holds the registry open but `self.registry`'s
    /// other owners, so the data directory can be opened again.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.purge.await;
        match tokio::time::timeout(DRAIN_TIMEOUT, self.task).await {
            Ok(Ok(Ok(()))) => tracing::info!("registry stopped"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!(
                "in-flight requests still running after {DRAIN_TIMEOUT:?}; stopping anyway"
            ),
        }
    }
}
