//! The keys a configuration file may hold: the long option names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The keys a configuration file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct FileConfig {
    pub(super) data_dir: Option<PathBuf>,
    pub(super) listen: Option<SocketAddr>,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) plain_http: Option<bool>,
    pub(super) htpasswd: Option<PathBuf>,
    pub(super) auth: Option<bool>,
    pub(super) admins: Option<Vec<String>>,
    pub(super) signed_in_level: Option<crate::meta::access::Level>,
    pub(super) signed_in_repositories: Option<Vec<String>>,
    pub(super) token_realm: Option<String>,
    pub(super) token_service: Option<String>,
    pub(super) token_issuer_key: Option<PathBuf>,
    pub(super) max_manifest_size: Option<usize>,
    pub(super) max_blob_size: Option<u64>,
    pub(super) upload_ttl: Option<u64>,
    pub(super) peer_listen: Option<SocketAddr>,
    pub(super) advertise: Option<String>,
    pub(super) peers: Option<String>,
    pub(super) bootstrap_expect: Option<usize>,
    pub(super) cluster_secret_file: Option<PathBuf>,
    pub(super) peer_tls_ca: Option<PathBuf>,
    pub(super) peer_tls_cert: Option<PathBuf>,
    pub(super) peer_tls_key: Option<PathBuf>,
    pub(super) write_timeout: Option<u64>,
    pub(super) replication_factor: Option<String>,
    pub(super) repair_interval: Option<u64>,
    pub(super) repair_bandwidth: Option<u64>,
    pub(super) scrub_interval: Option<u64>,
    pub(super) scrub_bandwidth: Option<u64>,
    pub(super) verify_reads: Option<bool>,
    pub(super) remove_after: Option<u64>,
    pub(super) gc_interval: Option<u64>,
    pub(super) gc_grace: Option<u64>,
    pub(super) gc_untagged: Option<bool>,
    pub(super) metrics: Option<bool>,
    pub(super) metrics_public: Option<bool>,
    pub(super) metrics_listen: Option<std::net::SocketAddr>,
    pub(super) header_timeout: Option<u64>,
    pub(super) body_timeout: Option<u64>,
    pub(super) min_body_rate: Option<u64>,
    pub(super) drain_limit: Option<u64>,
    pub(super) drain_timeout: Option<u64>,
    pub(super) idle_timeout: Option<u64>,
    pub(super) linger: Option<u64>,
    pub(super) shutdown_delay: Option<u64>,
    pub(super) shutdown_timeout: Option<u64>,
    pub(super) mirrors: Option<Vec<super::mirror::MirrorEntry>>,
    pub(super) notifications: Option<super::notify::Notifications>,
}

/// Reads and parses a configuration file; unknown keys are errors.
pub(super) fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}
