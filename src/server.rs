//! Running a node: open the data directory, start consensus and the peer
//! listener, serve the API, stop gracefully.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api;
use crate::api::authn::Authn;
use crate::api::proxy::Forwarder;
use crate::auth::token::Tokens;
use crate::cluster::discovery;
use crate::cluster::peer::{PeerTls, Secret};
use crate::cluster::service::secret_check;
use crate::cluster::types::NodeAddr;
use crate::cluster::{Cluster, ClusterConfig, ClusterError};
use crate::config::ServeConfig;
use crate::conn::{self, TcpAccept};
use crate::db::Db;
use crate::registry::Registry;
use crate::replication::service::BlobService;
use crate::storage::{identity, BlobStore, Layout};

/// How long no upload session must have been used before a stopping node
/// closes its listener: a client between two requests of a push is still
/// pushing.
const UPLOADS_QUIET: Duration = Duration::from_secs(2);
/// How long the background loops get to stop by themselves.
const LOOPS_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot set up the data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read the cluster secret: {0}")]
    Secret(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot set up authentication: {0}")]
    Auth(String),
    #[error("cannot set up a mirror: {0}")]
    Mirror(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// A running node.
pub struct Server {
    pub addr: SocketAddr,
    /// The peer listener's address; `None` for a standalone node.
    pub peer_addr: Option<SocketAddr>,
    /// The `--metrics-listen` listener's address, if any.
    pub metrics_addr: Option<SocketAddr>,
    pub registry: Arc<Registry>,
    cluster: Arc<Cluster>,
    db: Db,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    purge: JoinHandle<()>,
    repair: JoinHandle<()>,
    scrub: JoinHandle<()>,
    tally: JoinHandle<()>,
    trim: JoinHandle<()>,
    collection: JoinHandle<()>,
    delivery: JoinHandle<()>,
    metrics_task: Option<JoinHandle<()>>,
    stopping: crate::config::Shutdown,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_err = |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    Ok((listener, local))
}

fn load_secret(config: &ServeConfig) -> Result<Secret, ServeError> {
    match &config.cluster_secret_file {
        None => Ok(Secret::none()),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ServeError::Secret(format!("{}: {e}", path.display())))?;
            Secret::new(&text).map_err(|e| ServeError::Secret(format!("{}: {e}", path.display())))
        }
    }
}

/// How other members reach this node: `--advertise`, else the peer listen
/// address when it names one, else the local address that routes to the
/// peers, else the address the host name resolves to (a container's
/// `/etc/hosts` names its own), else the host name.
async fn advertise(config: &ServeConfig, api: SocketAddr, peer: SocketAddr) -> NodeAddr {
    if let Some(adv) = &config.advertise {
        let host = adv.rsplit_once(':').map(|(h, _)| h).unwrap_or(adv);
        return NodeAddr {
            peer: adv.clone(),
            api: format!("{host}:{}", api.port()),
        };
    }
    let name = hostname();
    let ip = match peer.ip() {
        ip if !ip.is_unspecified() => Some(ip),
        _ if config.peers.is_empty() => None,
        _ => match discovery::address_towards(&config.peers).await {
            Some(ip) => Some(ip),
            None => tokio::net::lookup_host((name.as_str(), 0))
                .await
                .ok()
                .and_then(|mut addrs| addrs.find(|a| !a.ip().is_loopback()))
                .map(|a| a.ip()),
        },
    };
    let host = match ip {
        Some(IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(IpAddr::V4(ip)) => ip.to_string(),
        None => name,
    };
    tracing::info!(address = %host, "advertising this node to its peers");
    NodeAddr {
        peer: format!("{host}:{}", peer.port()),
        api: format!("{host}:{}", api.port()),
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc {
        0 if end > 0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "localhost".into(),
    }
}

pub async fn start(config: &ServeConfig) -> Result<Server, ServeError> {
    let layout = Layout::new(&config.data_dir);
    let setup = |reason: String| ServeError::DataDir {
        dir: config.data_dir.display().to_string(),
        reason,
    };
    crate::storage::format::check(&layout).map_err(|e| setup(e.to_string()))?;
    layout.create().map_err(|e| setup(e.to_string()))?;
    let node_id = identity::load_or_create(&layout).map_err(|e| setup(e.to_string()))?;
    let db = Db::open(&layout.db()).map_err(|e| setup(e.to_string()))?;
    let secret = load_secret(config)?;
    let metrics = Arc::new(match config.metrics {
        true => crate::metrics::Metrics::new(),
        false => crate::metrics::Metrics::off(),
    });
    let base_key = base_key(&secret, &layout)?;
    let authn = authn(config, &base_key, &db, metrics.clone())?;
    let ui_keys = Arc::new(crate::ui::session::Keys::derive(&base_key));
    let (listener, addr) = bind(config.listen).await?;
    // A node with neither peers nor a secret is standalone: it has no peer
    // port at all, so nothing unauthenticated can reach its consensus.
    let (peer_listener, peer_addr) = if secret.is_set() {
        let (l, a) = bind(config.peer_listen).await?;
        (Some(l), Some(a))
    } else {
        (None, None)
    };
    let cluster_config = ClusterConfig {
        node_id,
        advertise: advertise(config, addr, peer_addr.unwrap_or(config.peer_listen)).await,
        peers: config.peers.clone(),
        bootstrap_expect: config.bootstrap_expect,
        write_timeout: config.write_timeout,
        remove_after: config.remove_after,
        peer_tls: match &config.peer_tls {
            Some(files) => Some(PeerTls::load(files).map_err(ServeError::Tls)?),
            None => None,
        },
    };
    // One store for clients and peers: peers' pushes obey the same cap as
    // clients' uploads, and the sweeper sees the pins of copies peers push.
    let blobs = BlobStore::new(layout.clone(), db.clone())
        .with_max_size(config.max_blob_size)
        .with_read_checks(config.verify_reads);
    let peer_flights = crate::replication::Flights::default();
    let blob_service = tonic::service::interceptor::InterceptedService::new(
        BlobService::new(blobs.clone(), peer_flights.clone(), metrics.clone()),
        secret_check(secret.clone()),
    );
    let late = crate::registry::mirror::service::Late::default();
    let mirror_service = tonic::service::interceptor::InterceptedService::new(
        crate::registry::mirror::service::MirrorService::new(late.clone()),
        secret_check(secret.clone()),
    );
    let mirrors = crate::registry::mirror::Mirrors::new(config.mirrors.clone())
        .map_err(ServeError::Mirror)?;
    let cluster = Cluster::start(
        db.clone(),
        layout.clone(),
        cluster_config,
        peer_listener,
        secret,
        tonic::service::Routes::new(blob_service).add_service(mirror_service),
    )
    .await?;
    let registry = Registry::new(
        layout,
        db.clone(),
        blobs,
        cluster.clone(),
        crate::registry::Settings {
            replication_factor: config.replication_factor,
            max_manifest_size: config.max_manifest_size,
            gc: config.gc,
            mirrors,
            events: crate::events::Settings {
                scheme: match config.tls {
                    Some(_) => "https",
                    None => "http",
                },
                public_host: cluster.addr().api.clone(),
                config_endpoints: config.webhooks.clone(),
                metrics: metrics.clone(),
            },
            metrics: metrics.clone(),
            peer_flights,
        },
    );
    let _ = late.set(Arc::downgrade(&registry));
    let stop = CancellationToken::new();
    let tls = match &config.tls {
        Some(files) => Some(
            crate::tls::node_tls(files, stop.clone())
                .map_err(|e| ServeError::Tls(e.to_string()))?,
        ),
        None => None,
    };
    match &config.tls {
        Some(files) => tracing::info!(
            %addr,
            node_id,
            data_dir = %config.data_dir.display(),
            cert = %files.cert.display(),
            "registry listening (HTTPS; the certificate is reloaded when it changes)"
        ),
        None => tracing::info!(
            %addr,
            node_id,
            data_dir = %config.data_dir.display(),
            "registry listening (plain HTTP, as configured)"
        ),
    }
    let (metrics_addr, metrics_task) = match config.metrics_listen.filter(|_| config.metrics) {
        Some(addr) => {
            let (listener, local) = bind(addr).await?;
            let app = api::metrics::open_router(registry.clone());
            let stopped = stop.clone().cancelled_owned();
            let task = tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            });
            tracing::info!(addr = %local, "metrics listening (plain HTTP, /metrics only, open to anyone)");
            (Some(local), Some(task))
        }
        None => (None, None),
    };
    let purge = tokio::spawn(purge_uploads(
        registry.clone(),
        config.upload_ttl,
        stop.clone(),
    ));
    let repair = tokio::spawn(registry.repair(config.repair, stop.clone()));
    let scrub = tokio::spawn(registry.scrub(config.scrub, stop.clone()));
    let tally = tokio::spawn(registry.tally_local_blobs(stop.clone()));
    let trim = tokio::spawn(crate::memory::return_freed(stop.clone()));
    let collection = tokio::spawn(registry.collection(stop.clone()));
    let delivery = tokio::spawn(registry.deliver(stop.clone()));
    let limits = config.conn;
    let options = api::Options {
        body_limits: config.body,
        metrics_public: config.metrics_public,
        ui_keys,
        https: config.tls.is_some(),
    };
    let task = match tls {
        Some(tls) => {
            let app = api::router(registry.clone(), Forwarder::tls(tls.client), authn, options);
            let listener =
                crate::tls::TlsListener::new(listener, tls.server, &limits, stop.clone());
            conn::serve(listener, app, limits, stop.clone())
        }
        None => {
            let app = api::router(registry.clone(), Forwarder::plain(), authn, options);
            conn::serve(TcpAccept::new(listener, &limits), app, limits, stop.clone())
        }
    };
    Ok(Server {
        addr,
        peer_addr,
        registry,
        cluster,
        db,
        stop,
        task,
        purge,
        repair,
        scrub,
        tally,
        trim,
        collection,
        delivery,
        metrics_addr,
        metrics_task,
        stopping: config.shutdown,
    })
}

/// Lets the background loops end what they are doing, for at most
/// [`LOOPS_GRACE`] in all, then stops the rest where they are: one waiting
/// on a write without a quorum would wait out the write timeout. Each loop
/// survives being stopped anywhere, as it survives a crash.
async fn stop_loops(loops: impl IntoIterator<Item = JoinHandle<()>>) {
    let deadline = tokio::time::Instant::now() + LOOPS_GRACE;
    for mut handle in loops {
        if tokio::time::timeout_at(deadline, &mut handle)
            .await
            .is_err()
        {
            handle.abort();
            let _ = handle.await;
        }
    }
}

/// Serves on for `delay`, and then until no upload session has been used
/// for [`UPLOADS_QUIET`], or until `deadline`.
async fn serve_on(registry: &Registry, delay: Duration, deadline: tokio::time::Instant) {
    if delay.is_zero() {
        return;
    }
    tracing::info!(
        ?delay,
        "stopping: serving on while load balancers turn away"
    );
    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + delay)).await;
    let mut said = false;
    while tokio::time::Instant::now() < deadline {
        let quiet = registry.uploads_quiet_for();
        if quiet.is_none_or(|q| q >= UPLOADS_QUIET) {
            return;
        }
        if !said {
            tracing::info!("stopping: waiting for uploads in progress");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tracing::warn!("uploads still in progress at the shutdown timeout");
}

/// The key every node of the cluster shares (the cluster secret), or a
/// standalone node's own: what API tokens and UI sessions are signed with.
fn base_key(secret: &Secret, layout: &Layout) -> Result<Vec<u8>, ServeError> {
    match secret.as_bytes() {
        Some(secret) => Ok(secret.to_vec()),
        None => identity::token_key(layout).map_err(|e| ServeError::Auth(e.to_string())),
    }
}

/// Who may use the API: users kept in the cluster and in an htpasswd file,
/// and tokens berth issues (signed with a key derived from the cluster
/// secret, or a standalone node's own) or an external issuer signs.
fn authn(
    config: &ServeConfig,
    base_key: &[u8],
    db: &Db,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Authn, ServeError> {
    let auth = ServeError::Auth;
    let htpasswd = match &config.htpasswd {
        Some(path) => {
            let users = crate::auth::Htpasswd::open(path).map_err(|e| auth(e.to_string()))?;
            tracing::info!(file = %path.display(), "htpasswd users may sign in; the file is read again when it changes");
            Some(Arc::new(users))
        }
        None => None,
    };
    let required = config.auth || htpasswd.is_some() || config.token.issuer_key.is_some();
    let service = &config.token.service;
    let tokens = match &config.token.issuer_key {
        Some(key) => {
            tracing::info!(key = %key.display(), realm = ?config.token.realm, "trusting tokens of an external issuer");
            Some(Tokens::external(key, service).map_err(|e| auth(e.to_string()))?)
        }
        None if required => Some(Tokens::internal(base_key, service)),
        None => None,
    };
    let rules = if required {
        tracing::info!(admins = ?config.admins, "sign-in required; anonymous callers may pull public repositories only");
        match &config.signed_in {
            Some(s) => tracing::info!(level = %s.level, repositories = ?s.repositories, "every signed-in user holds this level on these repositories (--signed-in-level)"),
            None => tracing::info!("each user may push to its own namespace and where granted; --signed-in-level write lets every signed-in user push anywhere, as Distribution with htpasswd does"),
        }
        Some(Arc::new(crate::auth::Rules::new(
            crate::meta::StateMachine::new(db.clone()),
            config.admins.clone(),
            config.signed_in.clone(),
        )))
    } else {
        tracing::info!("no authentication: anyone who reaches the port may push and pull");
        None
    };
    Ok(Authn::new(
        htpasswd,
        tokens.map(Arc::new),
        rules,
        config.token.realm.clone(),
        config.tls.is_some(),
        metrics,
    ))
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
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Stops the node, bounded by `--shutdown-timeout`: first readiness
    /// fails and leadership is handed over while the node serves on for
    /// `--shutdown-delay` and until no upload session is in use; then it
    /// stops accepting connections and lets those in flight finish; then
    /// consensus stops. Once it returns the data directory can be opened
    /// again.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + self.stopping.timeout;
        tokio::join!(
            self.cluster.begin_stop(),
            serve_on(&self.registry, self.stopping.delay, deadline)
        );
        self.stop.cancel();
        let loops = [
            self.purge,
            self.repair,
            self.scrub,
            self.tally,
            self.trim,
            self.collection,
            self.delivery,
        ];
        stop_loops(loops.into_iter().chain(self.metrics_task)).await;
        match tokio::time::timeout_at(deadline, self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::error!(error = %e, "server task failed"),
            Err(_) => tracing::warn!(
                timeout = ?self.stopping.timeout,
                "requests still in flight at the shutdown timeout; stopping anyway"
            ),
        }
        self.cluster.shutdown().await;
        let Server {
            registry,
            cluster,
            db,
            ..
        } = self;
        drop((registry, cluster));
        if !db.wait_last_handle(Duration::from_secs(10)).await {
            tracing::warn!("the database is still in use 10s after shutdown");
        }
        tracing::info!("node stopped");
    }
}
