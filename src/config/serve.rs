//! `berth serve`: the node's options and how flags, environment and file
//! resolve into one [`ServeConfig`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::Args;

use super::file::{load_file, FileConfig};
use super::{HttpArgs, Shutdown, ShutdownArgs, TlsArgs};
use crate::api::body::BodyLimits;
use crate::cluster::discovery::parse_peers;
use crate::cluster::peer::PeerTlsFiles;
use crate::cluster::PeerSpec;
use crate::conn::ConnLimits;
use crate::gc::GcConfig;
use crate::registry::ScrubConfig;
use crate::registry::DEFAULT_MAX_MANIFEST_SIZE;
use crate::replication::repair::RepairConfig;
use crate::replication::ReplicationFactor;
use crate::tls::TlsFiles;

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// YAML configuration file. Its keys are the long option names
    /// (`data-dir`, `listen`, `peers`, …); options given as flags
    /// or environment variables override it.
    #[arg(long, env = "BERTH_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding this node's identity, database, blobs and uploads.
    /// Created if missing. [default: ./data]
    #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address and port the registry API listens on. [default: 0.0.0.0:5000]
    #[arg(long, env = "BERTH_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub http: HttpArgs,

    #[command(flatten)]
    pub shutdown: ShutdownArgs,

    /// Serve plain HTTP. Without TLS this must be said: registry passwords
    /// and tokens would cross the network in clear text. Clients trust plain
    /// HTTP on 127.0.0.1 by themselves; elsewhere they need an
    /// insecure-registry setting.
    #[arg(long, env = "BERTH_PLAIN_HTTP", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub plain_http: Option<bool>,

    /// Require HTTP basic authentication, checked against this htpasswd file
    /// (bcrypt entries only, as `htpasswd -B` writes them). The file is read
    /// again when it changes.
    #[arg(long, env = "BERTH_HTPASSWD", value_name = "FILE")]
    pub htpasswd: Option<PathBuf>,

    /// Require sign-in, with users, organizations, teams and robots kept in
    /// the cluster (`berth user`, `berth org`, …). --htpasswd turns this on
    /// by itself and adds that file's users.
    #[arg(long, env = "BERTH_AUTH", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub auth: Option<bool>,

    /// Users who administer the whole registry, comma-separated: they may
    /// do anything, the admin API included. Name an htpasswd user here to
    /// create the first users; `berth user add --admin` makes more.
    #[arg(
        long,
        env = "BERTH_ADMINS",
        value_name = "USER,USER",
        value_delimiter = ','
    )]
    pub admins: Vec<String>,

    /// Gives every signed-in user this level (read, write or admin) on every
    /// repository that --signed-in-repositories matches, beside berth's
    /// per-namespace rules. `write` is what Distribution with an htpasswd
    /// file does: any user may push anywhere.
    #[arg(long, env = "BERTH_SIGNED_IN_LEVEL", value_name = "LEVEL")]
    pub signed_in_level: Option<crate::meta::access::Level>,

    /// The repositories --signed-in-level covers, as patterns (`*` any run,
    /// `?` one character, `!` exempts), comma-separated. [default: *]
    #[arg(
        long,
        env = "BERTH_SIGNED_IN_REPOSITORIES",
        value_name = "PATTERN,PATTERN",
        value_delimiter = ','
    )]
    pub signed_in_repositories: Vec<String>,

    /// Where clients get tokens, as the `Bearer` challenge names it.
    /// [default: this node's own /auth/token, at the host the client used]
    #[arg(long, env = "BERTH_TOKEN_REALM", value_name = "URL")]
    pub token_realm: Option<String>,

    /// The service name tokens are issued for; tokens for another are
    /// refused. [default: berth]
    #[arg(long, env = "BERTH_TOKEN_SERVICE", value_name = "NAME")]
    pub token_service: Option<String>,

    /// Trust tokens signed by an external token service with this public
    /// key (PEM, EC P-256 or RSA) instead of issuing them; needs
    /// --token-realm, the service's address.
    #[arg(
        long,
        env = "BERTH_TOKEN_ISSUER_KEY",
        value_name = "FILE",
        requires = "token_realm"
    )]
    pub token_issuer_key: Option<PathBuf>,

    /// Largest manifest accepted, in bytes; larger pushes get 413.
    /// [default: 4194304]
    #[arg(long, env = "BERTH_MAX_MANIFEST_SIZE", value_name = "BYTES")]
    pub max_manifest_size: Option<usize>,

    /// Largest blob an upload may grow to, in bytes; larger uploads get
    /// 413 and keep what came before the chunk that crossed it.
    /// [default: 68719476736, 64 GiB]
    #[arg(long, env = "BERTH_MAX_BLOB_SIZE", value_name = "BYTES")]
    pub max_blob_size: Option<u64>,

    /// Upload sessions older than this many seconds are removed (checked
    /// hourly). [default: 86400]
    #[arg(long, env = "BERTH_UPLOAD_TTL", value_name = "SECONDS")]
    pub upload_ttl: Option<u64>,

    /// Address and port the peer (gRPC) listener binds. [default: 0.0.0.0:5001]
    #[arg(long, env = "BERTH_PEER_LISTEN", value_name = "ADDR:PORT")]
    pub peer_listen: Option<SocketAddr>,

    /// Host and peer port other members use to reach this node. The client
    /// API is advertised on the same host. [default: the --peer-listen
    /// address when it names one; else the local address that routes to the
    /// peers; else the first non-loopback address this host's name resolves
    /// to; else the host name; with the peer port]
    #[arg(long, env = "BERTH_ADVERTISE", value_name = "HOST:PEERPORT")]
    pub advertise: Option<String>,

    /// Other members to find: `host:port,host:port` or `dns:NAME:PORT`, a name
    /// resolved again every few seconds (Swarm `tasks.<service>`, a Kubernetes
    /// headless Service). Without peers the node is a one-node cluster.
    #[arg(long, env = "BERTH_PEERS", value_name = "LIST")]
    pub peers: Option<String>,

    /// Form a new cluster once this many nodes (this one included) see each
    /// other; the one with the lowest node id initializes it. Without it a
    /// node only joins a cluster that already exists.
    #[arg(long, env = "BERTH_BOOTSTRAP_EXPECT", value_name = "N")]
    pub bootstrap_expect: Option<usize>,

    /// File holding the shared secret every peer call must carry (at least
    /// 16 characters). Required with --peers.
    #[arg(long, env = "BERTH_CLUSTER_SECRET_FILE", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,

    /// PEM certificate of the CA that signs every node's peer certificate.
    /// With --peer-tls-cert and --peer-tls-key, peers talk over mutual TLS:
    /// a client without a certificate this CA signed gets no answer from the
    /// peer port. A node's certificate must name `berth-peer` (a DNS name),
    /// not its address: the node that connects checks that name; the
    /// connecting side's certificate needs only this CA's signature.
    #[arg(
        long,
        env = "BERTH_PEER_TLS_CA",
        value_name = "FILE",
        requires_all = ["peer_tls_cert", "peer_tls_key"]
    )]
    pub peer_tls_ca: Option<PathBuf>,

    /// This node's PEM peer certificate, signed by --peer-tls-ca.
    #[arg(
        long,
        env = "BERTH_PEER_TLS_CERT",
        value_name = "FILE",
        requires = "peer_tls_ca"
    )]
    pub peer_tls_cert: Option<PathBuf>,

    /// The PEM private key of --peer-tls-cert.
    #[arg(
        long,
        env = "BERTH_PEER_TLS_KEY",
        value_name = "FILE",
        requires = "peer_tls_ca"
    )]
    pub peer_tls_key: Option<PathBuf>,

    /// Seconds a write may wait for the cluster to commit it before the
    /// client gets 503. [default: 10]
    #[arg(long, env = "BERTH_WRITE_TIMEOUT", value_name = "SECONDS")]
    pub write_timeout: Option<u64>,

    /// Copies of each blob to keep, or `all` for every node. An upload is
    /// acknowledged once a majority of its copies are stored. With fewer
    /// nodes than this, every node holds a copy. [default: 3]
    #[arg(long, env = "BERTH_REPLICATION_FACTOR", value_name = "N|all")]
    pub replication_factor: Option<ReplicationFactor>,

    /// Seconds between blob repair rounds, which copy blobs that lost
    /// copies (a node died or was removed) to the nodes that should hold
    /// them. [default: 10]
    #[arg(long, env = "BERTH_REPAIR_INTERVAL", value_name = "SECONDS")]
    pub repair_interval: Option<u64>,

    /// Most bytes per second this node copies while repairing; 0 for no
    /// cap. [default: 0]
    #[arg(long, env = "BERTH_REPAIR_BANDWIDTH", value_name = "BYTES")]
    pub repair_bandwidth: Option<u64>,

    /// Re-read and re-hash every local blob this many seconds after the
    /// last pass ended; a copy that fails its digest is quarantined and a
    /// good one fetched from another node. Whole-blob reads for clients are
    /// checked either way. [default: off]
    #[arg(long, env = "BERTH_SCRUB_INTERVAL", value_name = "SECONDS")]
    pub scrub_interval: Option<u64>,

    /// Most bytes per second a scrub pass reads; 0 for no cap.
    /// [default: 52428800, 50 MiB/s]
    #[arg(long, env = "BERTH_SCRUB_BANDWIDTH", value_name = "BYTES")]
    pub scrub_bandwidth: Option<u64>,

    /// Hash every whole-blob read as it is served, so that a copy that no
    /// longer matches its digest never reaches a client whole and is
    /// replaced at once. Hashing bounds one connection's download to what
    /// one core hashes (about 1 GB/s with SHA extensions); `false` leaves
    /// bad copies to scrub passes and to clients' own checks.
    /// [default: true]
    #[arg(long, env = "BERTH_VERIFY_READS", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub verify_reads: Option<bool>,

    /// Seconds a member may go unheard before the leader removes it from
    /// the cluster, so a node that was scaled down or drained stops counting
    /// against the quorum; its blobs are copied elsewhere. A removed node
    /// that comes back joins again. 0 never removes. [default: 0]
    #[arg(long, env = "BERTH_REMOVE_AFTER", value_name = "SECONDS")]
    pub remove_after: Option<u64>,

    /// Seconds between garbage collections, which the leader runs: blobs
    /// no manifest references are removed from every node's disk. 0 runs
    /// them only on demand (`berth gc run`). [default: 3600]
    #[arg(long, env = "BERTH_GC_INTERVAL", value_name = "SECONDS")]
    pub gc_interval: Option<u64>,

    /// Seconds a blob must have gone unreferenced (and a manifest have been
    /// stored) before a collection removes it: the time a client may take
    /// between uploading layers and pushing the manifest that names them.
    /// [default: 3600]
    #[arg(long, env = "BERTH_GC_GRACE", value_name = "SECONDS")]
    pub gc_grace: Option<u64>,

    /// Let scheduled collections also remove untagged manifests that no
    /// tagged index, referrer or subject keeps. Off, an image pushed by
    /// digest stays until it is deleted.
    #[arg(long, env = "BERTH_GC_UNTAGGED")]
    pub gc_untagged: bool,

    /// Keep Prometheus metrics and serve `/metrics`. `--metrics false`
    /// records nothing and serves no `/metrics`. [default: true]
    #[arg(long, env = "BERTH_METRICS", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub metrics: Option<bool>,

    /// Serve `/metrics` (Prometheus) to anyone. Without it, with sign-in on,
    /// only administrators (or the cluster secret) may read it.
    #[arg(long, env = "BERTH_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// Also serve `/metrics`, and nothing else, on this address, to anyone
    /// who can reach it (plain HTTP): for a scraper on a private network.
    #[arg(long, env = "BERTH_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

/// How tokens are issued and checked.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub realm: Option<String>,
    pub service: String,
    pub issuer_key: Option<PathBuf>,
}

impl Default for TokenConfig {
    fn default() -> TokenConfig {
        TokenConfig {
            realm: None,
            service: "berth".into(),
            issuer_key: None,
        }
    }
}

/// Fully resolved settings of a node.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// HTTPS on the client listener; `None` is plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Basic authentication against this htpasswd file.
    pub htpasswd: Option<PathBuf>,
    /// Sign-in required (also implied by `htpasswd` and an external issuer).
    pub auth: bool,
    /// Administrators by name.
    pub admins: std::collections::BTreeSet<String>,
    /// What every signed-in user may do beside the replicated rules.
    pub signed_in: Option<crate::auth::policy::SignedIn>,
    /// Tokens: where clients get them, for which service, and whose.
    pub token: TokenConfig,
    pub max_manifest_size: usize,
    pub max_blob_size: u64,
    pub upload_ttl: u64,
    pub peer_listen: SocketAddr,
    pub advertise: Option<String>,
    pub peers: Vec<PeerSpec>,
    pub bootstrap_expect: Option<usize>,
    pub cluster_secret_file: Option<PathBuf>,
    /// Mutual TLS on the peer port.
    pub peer_tls: Option<PeerTlsFiles>,
    pub write_timeout: Duration,
    pub replication_factor: ReplicationFactor,
    pub repair: RepairConfig,
    /// Scrub passes and their rate cap.
    pub scrub: ScrubConfig,
    /// Whether whole-blob reads are hashed as they are served.
    pub verify_reads: bool,
    /// Members silent this long are removed; `None` never.
    pub remove_after: Option<Duration>,
    /// Garbage collection: schedule, grace, untagged manifests.
    pub gc: GcConfig,
    /// Upstream registries mirrored (pull-through), from the file.
    pub mirrors: Vec<super::MirrorConfig>,
    /// Webhook endpoints from the file's `notifications` section.
    pub webhooks: Vec<crate::meta::webhooks::Endpoint>,
    /// Whether metrics are kept and served.
    pub metrics: bool,
    /// Whether `/metrics` is open to anyone.
    pub metrics_public: bool,
    /// A listener serving only `/metrics`, openly.
    pub metrics_listen: Option<SocketAddr>,
    /// Client connections: header and idle timeouts, lingering close.
    pub conn: ConnLimits,
    /// Request bodies: least rate, and how much is drained after an early
    /// answer.
    pub body: BodyLimits,
    /// Stopping on SIGTERM: serving on while balancers turn away, and the
    /// wait for uploads in progress.
    pub shutdown: Shutdown,
}

const DEFAULT_UPLOAD_TTL: u64 = 24 * 3600;
const DEFAULT_MAX_BLOB_SIZE: u64 = 64 << 30;
const DEFAULT_WRITE_TIMEOUT: u64 = 10;
const DEFAULT_SCRUB_BANDWIDTH: u64 = 50 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml_ng::Error,
    },
    #[error("max-manifest-size must be at least 1 byte")]
    ManifestSize,
    #[error("{0}")]
    Invalid(String),
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let (conn, body) = self.http.resolve(&file);
        let config = ServeConfig {
            conn,
            body,
            shutdown: self.shutdown.resolve(&file),
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5000))),
            tls: match (
                self.tls.tls_cert.or(file.tls_cert),
                self.tls.tls_key.or(file.tls_key),
            ) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                (None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "--tls-cert and --tls-key go together".into(),
                    ))
                }
            },
            auth: self.auth.or(file.auth).unwrap_or(false),
            admins: if self.admins.is_empty() {
                file.admins.unwrap_or_default()
            } else {
                self.admins
            }
            .into_iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect(),
            signed_in: crate::auth::policy::SignedIn::from_settings(
                self.signed_in_level.or(file.signed_in_level),
                if self.signed_in_repositories.is_empty() {
                    file.signed_in_repositories.unwrap_or_default()
                } else {
                    self.signed_in_repositories
                },
            )
            .map_err(ConfigError::Invalid)?,
            htpasswd: self.htpasswd.or(file.htpasswd),
            token: TokenConfig {
                realm: self.token_realm.or(file.token_realm),
                service: self
                    .token_service
                    .or(file.token_service)
                    .unwrap_or_else(|| "berth".into()),
                issuer_key: self.token_issuer_key.or(file.token_issuer_key),
            },
            max_manifest_size: self
                .max_manifest_size
                .or(file.max_manifest_size)
                .unwrap_or(DEFAULT_MAX_MANIFEST_SIZE),
            max_blob_size: self
                .max_blob_size
                .or(file.max_blob_size)
                .unwrap_or(DEFAULT_MAX_BLOB_SIZE),
            upload_ttl: self
                .upload_ttl
                .or(file.upload_ttl)
                .unwrap_or(DEFAULT_UPLOAD_TTL),
            peer_listen: self
                .peer_listen
                .or(file.peer_listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 5001))),
            advertise: self.advertise.or(file.advertise),
            peers: match self.peers.or(file.peers) {
                Some(list) => parse_peers(&list).map_err(ConfigError::Invalid)?,
                None => Vec::new(),
            },
            bootstrap_expect: self.bootstrap_expect.or(file.bootstrap_expect),
            cluster_secret_file: self.cluster_secret_file.or(file.cluster_secret_file),
            peer_tls: match (
                self.peer_tls_ca.or(file.peer_tls_ca),
                self.peer_tls_cert.or(file.peer_tls_cert),
                self.peer_tls_key.or(file.peer_tls_key),
            ) {
                (Some(ca), Some(cert), Some(key)) => Some(PeerTlsFiles { ca, cert, key }),
                (None, None, None) => None,
                _ => {
                    return Err(ConfigError::Invalid(
                        "--peer-tls-ca, --peer-tls-cert and --peer-tls-key go together".into(),
                    ))
                }
            },
            write_timeout: Duration::from_secs(
                self.write_timeout
                    .or(file.write_timeout)
                    .unwrap_or(DEFAULT_WRITE_TIMEOUT)
                    .max(1),
            ),
            replication_factor: match (self.replication_factor, file.replication_factor) {
                (Some(f), _) => f,
                (None, Some(text)) => text.parse().map_err(ConfigError::Invalid)?,
                (None, None) => ReplicationFactor::Copies(3),
            },
            repair: RepairConfig {
                interval: Duration::from_secs(
                    self.repair_interval
                        .or(file.repair_interval)
                        .unwrap_or(10)
                        .max(1),
                ),
                bandwidth: self.repair_bandwidth.or(file.repair_bandwidth).unwrap_or(0),
            },
            verify_reads: self.verify_reads.or(file.verify_reads).unwrap_or(true),
            scrub: ScrubConfig {
                interval: self
                    .scrub_interval
                    .or(file.scrub_interval)
                    .filter(|s| *s > 0)
                    .map(Duration::from_secs),
                bandwidth: self
                    .scrub_bandwidth
                    .or(file.scrub_bandwidth)
                    .unwrap_or(DEFAULT_SCRUB_BANDWIDTH),
            },
            gc: GcConfig {
                interval: Some(self.gc_interval.or(file.gc_interval).unwrap_or(3600))
                    .filter(|&s| s > 0)
                    .map(Duration::from_secs),
                grace: self.gc_grace.or(file.gc_grace).unwrap_or(3600),
                untagged: self.gc_untagged || file.gc_untagged.unwrap_or(false),
            },
            mirrors: super::mirror::resolve(file.mirrors.unwrap_or_default())?,
            webhooks: super::notify::resolve(file.notifications)?,
            metrics: self.metrics.or(file.metrics).unwrap_or(true),
            metrics_public: self.metrics_public || file.metrics_public.unwrap_or(false),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            remove_after: self
                .remove_after
                .or(file.remove_after)
                .filter(|&s| s > 0)
                .map(Duration::from_secs),
        };
        let plain_http = self.plain_http.or(file.plain_http).unwrap_or(false);
        match (&config.tls, plain_http) {
            (None, false) => {
                return Err(ConfigError::Invalid(
                    "say how to serve: --tls-cert and --tls-key for HTTPS, or --plain-http".into(),
                ))
            }
            (Some(_), true) => {
                return Err(ConfigError::Invalid(
                    "--plain-http and --tls-cert exclude each other".into(),
                ))
            }
            _ => {}
        }
        if config.token.issuer_key.is_some() && config.token.realm.is_none() {
            return Err(ConfigError::Invalid(
                "--token-issuer-key needs --token-realm, the token service's address".into(),
            ));
        }
        if config.max_manifest_size == 0 {
            return Err(ConfigError::ManifestSize);
        }
        if !config.peers.is_empty() && config.cluster_secret_file.is_none() {
            return Err(ConfigError::Invalid(
                "--peers needs --cluster-secret-file: peers authenticate each other with it".into(),
            ));
        }
        if config.bootstrap_expect == Some(0) {
            return Err(ConfigError::Invalid(
                "--bootstrap-expect must be at least 1".into(),
            ));
        }
        Ok(config)
    }
}

impl ServeConfig {
    /// A node on an ephemeral loopback port, for tests.
    pub fn for_test(data_dir: &Path) -> ServeConfig {
        ServeConfig {
            data_dir: data_dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: None,
            htpasswd: None,
            auth: false,
            admins: Default::default(),
            signed_in: None,
            token: TokenConfig::default(),
            max_manifest_size: DEFAULT_MAX_MANIFEST_SIZE,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            upload_ttl: DEFAULT_UPLOAD_TTL,
            peer_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            peers: Vec::new(),
            bootstrap_expect: None,
            cluster_secret_file: None,
            peer_tls: None,
            write_timeout: Duration::from_secs(DEFAULT_WRITE_TIMEOUT),
            replication_factor: ReplicationFactor::Copies(3),
            repair: RepairConfig {
                interval: Duration::from_secs(1),
                bandwidth: 0,
            },
            scrub: ScrubConfig {
                interval: None,
                bandwidth: 0,
            },
            verify_reads: true,
            remove_after: None,
            gc: GcConfig::default(),
            mirrors: Vec::new(),
            webhooks: Vec::new(),
            metrics: true,
            metrics_public: false,
            metrics_listen: None,
            conn: ConnLimits::default(),
            body: BodyLimits::default(),
            shutdown: Shutdown {
                delay: Duration::ZERO,
                timeout: Duration::from_secs(30),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments that say plain HTTP, as every valid command line must say
    /// it or name a certificate.
    fn plain() -> ServeArgs {
        ServeArgs {
            plain_http: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn plain_http_must_be_chosen_and_tls_needs_both_files() {
        let e = ServeArgs::default().resolve().unwrap_err().to_string();
        assert!(e.contains("--plain-http"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yml");
        std::fs::write(&file, "tls-cert: /c.pem\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        std::fs::write(&file, "tls-cert: /c.pem\ntls-key: /k.pem\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let tls = args.resolve().unwrap().tls.unwrap();
        assert_eq!(tls.key, PathBuf::from("/k.pem"));
        let args = ServeArgs {
            config: Some(file),
            ..plain()
        };
        assert!(args.resolve().is_err(), "TLS and plain HTTP at once");
    }

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yml");
        std::fs::write(&file, "data-dir: /from/file\nlisten: 127.0.0.1:7000\n").unwrap();
        let args = ServeArgs {
            config: Some(file.clone()),
            listen: Some("127.0.0.1:8000".parse().unwrap()),
            ..plain()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.listen.port(), 8000);
        assert_eq!(c.max_manifest_size, DEFAULT_MAX_MANIFEST_SIZE);

        let c = plain().resolve().unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert_eq!(c.listen.port(), 5000);
    }

    #[test]
    fn peers_need_a_secret() {
        let args = ServeArgs {
            peers: Some("a:5001,dns:tasks.berth:5001".into()),
            ..plain()
        };
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("--cluster-secret-file"), "{e}");
        let args = ServeArgs {
            peers: Some("a:5001,dns:tasks.berth:5001".into()),
            cluster_secret_file: Some("/s".into()),
            ..plain()
        };
        assert_eq!(args.resolve().unwrap().peers.len(), 2);
        let args = ServeArgs {
            peers: Some("nonsense".into()),
            cluster_secret_file: Some("/s".into()),
            ..plain()
        };
        assert!(args.resolve().is_err());
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yml");
        std::fs::write(&file, "data_dir: typo\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            ..plain()
        };
        let e = args.resolve().unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        let args = ServeArgs {
            config: Some(dir.path().join("missing.yml")),
            ..plain()
        };
        assert!(matches!(args.resolve(), Err(ConfigError::Read { .. })));
    }
}
