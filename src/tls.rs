//! HTTPS on the client listener: the certificate and key files, reloaded
//! when they change, and a listener that hands the server finished handshakes.
//!
//! Handshakes run on their own tasks with a deadline, so a client that
//! connects and says nothing delays nobody else.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::conn::{pause_after, Accept, ConnLimits, Socket, TcpAccept};

/// How often the certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(10);
/// Longest a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const ACCEPT_QUEUE: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no PEM private key: {reason}")]
    NoKey { path: PathBuf, reason: String },
    #[error("the key in {path} cannot sign: {reason}")]
    BadKey { path: PathBuf, reason: String },
}

/// The certificate chain and key files of a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn load(&self) -> Result<CertifiedKey, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let cert_pem = read(&self.cert)?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .filter_map(Result::ok)
            .collect();
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: self.cert.clone(),
            });
        }
        let key_pem = read(&self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
            path: self.key.clone(),
            reason: e.to_string(),
        })?;
        let signer =
            rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey {
                path: self.key.clone(),
                reason: e.to_string(),
            })?;
        Ok(CertifiedKey::new(chain, signer))
    }

    /// When either file last changed; `None` if one cannot be read.
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&self.cert)?, m(&self.key)?))
    }
}

/// Serves the current certificate to every handshake; [`watch`] replaces it
/// when the files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// HTTPS settings of a node: what its listener serves, and what it trusts
/// when it forwards a request to another node's listener.
pub struct NodeTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: rustls::ClientConfig,
}

/// Settings for `files`, and the task that reloads them when they change (a
/// renewed certificate needs no restart). A bad new pair is logged and the
/// old one kept.
pub fn node_tls(files: &TlsFiles, stop: CancellationToken) -> Result<NodeTls, TlsError> {
    let current = Arc::new(Current(RwLock::new(Arc::new(files.load()?))));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SameCertificate {
            current: current.clone(),
            provider,
        }))
        .with_no_client_auth();
    tokio::spawn(watch(files.clone(), current, stop));
    Ok(NodeTls {
        server: Arc::new(server),
        client,
    })
}

/// Trusts a node that serves the certificate this node serves. Every node
/// of a cluster serves the same one (the chart and the stack file mount one
/// secret), whose names are the clients' (a load balancer's), not the
/// nodes' addresses, so a name check could not pass; holding its key is
/// what proves a node is one of ours.
#[derive(Debug)]
struct SameCertificate {
    current: Arc<Current>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for SameCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let ours = self
            .current
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if ours.cert.first().map(|c| c.as_ref()) == Some(end_entity.as_ref()) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the node does not serve this cluster's certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn watch(files: TlsFiles, current: Arc<Current>, stop: CancellationToken) {
    let mut seen = files.modified();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_CHECK) => {}
            _ = stop.cancelled() => return,
        }
        let now = files.modified();
        if now.is_none() || now == seen {
            continue;
        }
        match files.load() {
            Ok(key) => {
                *current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
                seen = now;
                tracing::info!(cert = %files.cert.display(), "reloaded the TLS certificate");
            }
            // Possibly caught between writing the two files: tried again at
            // the next check, the old pair serving meanwhile.
            Err(e) => tracing::warn!(error = %e, "kept the previous TLS certificate"),
        }
    }
}

/// A TLS connection over an idle-limited socket that lingers on close.
pub type TlsConn = TlsStream<Socket>;

/// A TCP listener whose connections come out TLS-wrapped.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsConn, SocketAddr)>,
}

impl TlsListener {
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        limits: &ConnLimits,
        stop: CancellationToken,
    ) -> TlsListener {
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let listener = TcpAccept::new(listener, limits);
        tokio::spawn(accept_loop(listener, acceptor, tx, stop));
        TlsListener { rx }
    }
}

async fn accept_loop(
    mut listener: TcpAccept,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsConn, SocketAddr)>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                pause_after(&e).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl Accept for TlsListener {
    type Io = TlsConn;

    async fn accept(&mut self) -> io::Result<(TlsConn, SocketAddr)> {
        match self.rx.recv().await {
            Some(conn) => Ok(conn),
            // The accept loop stopped: so is the server, which stops
            // accepting once its shutdown signal fires.
            None => std::future::pending().await,
        }
    }
}
