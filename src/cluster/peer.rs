//! gRPC clients to other nodes: one lazily connected channel per address,
//! with timeouts and the cluster secret on every call, over mutual TLS when
//! the cluster has a CA. tonic reconnects a channel by itself after a peer
//! restarts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig,
};

use super::pb::blobs_client::BlobsClient;
use super::pb::cluster_client::ClusterClient;
use super::pb::mirrors_client::MirrorsClient;
use super::pb::raft_client::RaftClient;
use super::types::NodeId;

pub const SECRET_HEADER: &str = "x-berth-cluster-secret";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Timeout of calls that name none of their own.
pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared secret every peer call carries.
#[derive(Clone)]
pub struct Secret(Option<AsciiMetadataValue>);

impl Secret {
    pub fn none() -> Secret {
        Secret(None)
    }

    pub fn new(text: &str) -> Result<Secret, String> {
        let text = text.trim();
        if text.len() < 16 {
            return Err("the cluster secret must be at least 16 characters".into());
        }
        text.parse()
            .map(|v| Secret(Some(v)))
            .map_err(|_| "the cluster secret must be printable ASCII".into())
    }

    /// Whether `presented` is this secret, compared in constant time.
    pub fn admits(&self, presented: Option<&AsciiMetadataValue>) -> bool {
        match (&self.0, presented) {
            (None, _) => true,
            (Some(want), Some(got)) => want.as_bytes().ct_eq(got.as_bytes()).into(),
            (Some(_), None) => false,
        }
    }

    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The secret's bytes, for keys derived from it.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_ref().map(|v| v.as_bytes())
    }
}

/// The files of mutual TLS between peers: the cluster CA that signs every
/// node's certificate, and this node's certificate and key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Mutual TLS between peers. Nodes are reached by address, which their
/// certificates need not name: every peer certificate names
/// [`PeerTls::NAME`] instead, and a peer is one whose certificate the
/// cluster CA signed for that name.
#[derive(Clone, Debug)]
pub struct PeerTls {
    client: ClientTlsConfig,
    pub(super) server: ServerTlsConfig,
}

impl PeerTls {
    /// The DNS name every peer certificate carries.
    pub const NAME: &'static str = "berth-peer";

    pub fn load(files: &PeerTlsFiles) -> Result<PeerTls, String> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let ca = Certificate::from_pem(read(&files.ca)?);
        let identity = Identity::from_pem(read(&files.cert)?, read(&files.key)?);
        Ok(PeerTls {
            client: ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .identity(identity.clone())
                .domain_name(PeerTls::NAME),
            server: ServerTlsConfig::new().identity(identity).client_ca_root(ca),
        })
    }
}

/// A client to one peer address.
#[derive(Clone)]
pub struct PeerClient {
    pub addr: String,
    channel: Channel,
    /// Blob bytes go over a connection of their own: on one connection,
    /// Raft's heartbeats would queue behind megabytes of a blob in flight and
    /// a busy link would look like a dead leader.
    bulk: Channel,
    secret: Secret,
}

impl PeerClient {
    /// Wraps `message` with the secret and a deadline.
    pub fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(timeout);
        if let Some(s) = &self.secret.0 {
            req.metadata_mut().insert(SECRET_HEADER, s.clone());
        }
        req
    }

    pub fn raft(&self) -> RaftClient<Channel> {
        RaftClient::new(self.channel.clone())
            .max_decoding_message_size(super::service::MAX_MESSAGE)
            .max_encoding_message_size(super::service::MAX_MESSAGE)
    }

    pub fn blobs(&self) -> BlobsClient<Channel> {
        BlobsClient::new(self.bulk.clone())
    }

    /// `Blobs` calls that carry no blob bytes (`Offer`), beside Raft's, so
    /// they are not held up by a transfer under way.
    pub fn blob_queries(&self) -> BlobsClient<Channel> {
        BlobsClient::new(self.channel.clone())
    }

    pub fn mirrors(&self) -> MirrorsClient<Channel> {
        MirrorsClient::new(self.bulk.clone())
    }

    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone())
            .max_decoding_message_size(super::service::MAX_MESSAGE)
            .max_encoding_message_size(super::service::MAX_MESSAGE)
    }
}

/// Clients by address, when each member last answered, and which do not
/// answer now.
#[derive(Clone)]
pub struct PeerPool {
    secret: Secret,
    tls: Option<PeerTls>,
    clients: Arc<Mutex<HashMap<String, PeerClient>>>,
    heard: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Members whose last call failed, since when: a member that is down
    /// is logged once when it goes and once when it is back, not per retry.
    silent: Arc<Mutex<HashMap<NodeId, Instant>>>,
}

impl PeerPool {
    pub fn new(secret: Secret) -> PeerPool {
        PeerPool {
            secret,
            tls: None,
            clients: Arc::default(),
            heard: Arc::default(),
            silent: Arc::default(),
        }
    }

    /// A pool whose calls go over mutual TLS.
    pub fn with_tls(secret: Secret, tls: PeerTls) -> PeerPool {
        PeerPool {
            tls: Some(tls),
            ..PeerPool::new(secret)
        }
    }

    pub fn client(&self, addr: &str) -> Result<PeerClient, tonic::transport::Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.client.clone())?;
        }
        let endpoint = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = PeerClient {
            addr: addr.to_owned(),
            channel: endpoint.clone().connect_lazy(),
            bulk: endpoint.connect_lazy(),
            secret: self.secret.clone(),
        };
        clients.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    pub fn heard_from(&self, id: NodeId) {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Instant::now());
        let back = self
            .silent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(since) = back {
            tracing::info!(peer = id, after = ?since.elapsed(), "peer answers again");
        }
    }

    /// Notes that a call to member `id` failed. The first failure of a
    /// member that answered before is a warning; one never heard from yet
    /// is expected while a cluster starts (its DNS name may not exist yet),
    /// so that is said once at info. Further failures are debug lines.
    pub fn call_failed(&self, id: NodeId, addr: &str, reason: &str) {
        let known = self
            .heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&id);
        let first = match self
            .silent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
        {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Instant::now());
                true
            }
        };
        match (first, known) {
            (true, true) => tracing::warn!(
                peer = id,
                addr,
                reason,
                "peer does not answer; retrying, and saying so when it answers again"
            ),
            (true, false) => tracing::info!(
                peer = id,
                addr,
                reason,
                "peer not reachable yet; expected while the cluster starts"
            ),
            (false, _) => tracing::debug!(peer = id, addr, reason, "peer still does not answer"),
        }
    }

    pub fn last_heard(&self, id: NodeId) -> Option<Duration> {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .map(|t| t.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("has\u{7f}control-chars-x").is_err());
        let s = Secret::new("  0123456789abcdef  ").unwrap();
        let good: AsciiMetadataValue = "0123456789abcdef".parse().unwrap();
        let bad: AsciiMetadataValue = "0123456789abcdeX".parse().unwrap();
        assert!(s.admits(Some(&good)));
        assert!(!s.admits(Some(&bad)));
        assert!(!s.admits(None));
        assert!(Secret::none().admits(None));
    }
}
