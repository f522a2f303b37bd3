//! Client connections: the accept loop, HTTP/1.1 and HTTP/2 on each
//! connection with the limits that keep slow or idle clients from holding
//! resources, and a clean close ([`linger`]).
//!
//! Request-level rules (draining unread bodies, the minimum body rate,
//! framing checks) live in `api::body` and `api::framing`; this module only
//! knows connections.

pub mod idle;
pub mod linger;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::api::ClientAddr;
pub use idle::Idle;
pub use linger::Linger;

/// A client connection's socket: idle-limited, lingering on close.
pub type Socket = Linger<Idle<TcpStream>>;

/// Connection-level limits of the client listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnLimits {
    /// A connection must deliver a whole request head within this long of
    /// opening or of its previous response; this bounds idle keep-alive
    /// connections and clients that send their headers a byte at a time.
    pub header_timeout: Duration,
    /// How long a connection may move no byte either way while the server
    /// waits on it (a client that stopped reading, an idle HTTP/2
    /// connection) before it is closed.
    pub idle_timeout: Duration,
    /// How long a connection the server closes keeps reading what the
    /// client still sends, so the client reads the answer instead of a
    /// reset.
    pub linger: Duration,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            linger: Duration::from_secs(2),
        }
    }
}

/// A source of client connections: plain TCP, or finished TLS handshakes.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

/// Plain TCP connections, each idle-limited and lingering on close.
pub struct TcpAccept {
    listener: TcpListener,
    limits: ConnLimits,
}

impl TcpAccept {
    pub fn new(listener: TcpListener, limits: &ConnLimits) -> TcpAccept {
        TcpAccept {
            listener,
            limits: *limits,
        }
    }
}

impl Accept for TcpAccept {
    type Io = Socket;

    async fn accept(&mut self) -> io::Result<(Socket, SocketAddr)> {
        let (tcp, peer) = self.listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let idle = Idle::new(tcp, self.limits.idle_timeout);
        Ok((Linger::new(idle, self.limits.linger), peer))
    }
}

/// After a failed accept (out of file descriptors, say): log, and pause
/// rather than spin.
pub async fn pause_after(e: &io::Error) {
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves `app` on every connection `acceptor` yields until `stop`, then
/// stops accepting and lets the connections finish what they are doing.
pub fn serve<A: Accept>(
    mut acceptor: A,
    app: Router,
    limits: ConnLimits,
    stop: CancellationToken,
) -> JoinHandle<io::Result<()>> {
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let builder = builder(&limits);
        loop {
            let accepted = tokio::select! {
                a = acceptor.accept() => a,
                _ = stop.cancelled() => break,
            };
            let (io, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    pause_after(&e).await;
                    continue;
                }
            };
            let app = app.clone();
            let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(ClientAddr(peer)));
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
            });
            let conn = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    // Timeouts, resets and malformed requests end here; the
                    // client has been answered where HTTP allows it.
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
        drop(acceptor);
        graceful.shutdown().await;
        Ok(())
    })
}

fn builder(limits: &ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // No HTTP/2 keep-alive pings: their answers would keep an idle
    // connection busy forever; the idle timeout ends dead and idle ones.
    builder.http2().timer(TokioTimer::new());
    builder
}
