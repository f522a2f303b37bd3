//! Configuration: command-line flags, `BERTH_*` environment variables and a
//! YAML file, merged into one resolved struct. Flags win over the
//! environment, which wins over the file, which wins over defaults.

//!
//! `serve` holds the node's options and their resolution, `file` the YAML
//! keys, `http` the client-connection limits.

mod file;
mod http;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::tls::TlsFiles;
pub use http::HttpArgs;
pub use serve::{ConfigError, ServeArgs, ServeConfig, TokenConfig};

const ABOUT: &str = "berth: a container image registry that runs as a replicated cluster";
const LONG_ABOUT: &str = "\
berth serves the OCI Distribution API (/v2/) to docker, podman, skopeo, containerd,
buildah and oras. `berth serve --plain-http` is a complete single-node registry on
port 5000 with its data in ./data; with --tls-cert and --tls-key it serves HTTPS.";

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log filter, e.g. `info`, `warn`, or `info,berth::access=warn` to drop
    /// the per-request access log. [default: RUST_LOG when set, else
    /// `info,openraft=warn`]
    #[arg(long, env = "BERTH_LOG", global = true)]
    pub log: Option<String>,

    /// Log line format.
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a registry node.
    Serve(Box<ServeArgs>),
    /// Inspect or change the cluster through any node.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    #[command(flatten)]
    Access(crate::access_cli::AccessCommand),
    /// Ask a node whether it is alive (`/healthz`) or, with --ready, whether
    /// it has joined the cluster and caught up (`/readyz`). Exits 0 if so and
    /// 1 if not: a container health check needs no curl in the image.
    Health {
        /// The node to ask (its client API URL). [default: https://127.0.0.1:5000
        /// with --tls-cert, else http://127.0.0.1:5000]
        #[arg(long, env = "BERTH_NODE")]
        node: Option<String>,
        /// An HTTPS node is trusted when it serves exactly this certificate
        /// (its name need not match the address); inside berth's container
        /// the server's own setting applies.
        #[command(flatten)]
        tls: TlsArgs,
        /// Ask whether the node is ready to serve, not only alive.
        #[arg(long)]
        ready: bool,
        /// With --ready, also pass while the node is not a member yet (still
        /// joining), and fail only a member that is behind. For Swarm, which
        /// lists a task in DNS, where its peers find it, only once it passes.
        #[arg(long, requires = "ready")]
        or_joining: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show every member: id, addresses, voter or learner, leader, term, log,
    /// commit and applied indexes, lag and when each was last heard from.
    Status {
        /// The node to ask (its client API URL).
        #[arg(long, env = "BERTH_NODE", default_value = "http://127.0.0.1:5000")]
        node: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove a member from the cluster (its blobs are re-replicated elsewhere).
    Remove {
        /// Id of the node to remove, as `cluster status` shows it.
        node_id: u64,
        /// The node to ask (its client API URL).
        #[arg(long, env = "BERTH_NODE", default_value = "http://127.0.0.1:5000")]
        node: String,
        /// File holding the cluster secret, which authorizes the change.
        #[arg(long, env = "BERTH_CLUSTER_SECRET_FILE", value_name = "FILE")]
        cluster_secret_file: Option<PathBuf>,
    },
}

/// A node's HTTPS certificate: `serve` serves it, `health` trusts it.
#[derive(Debug, Default, Args)]
pub struct TlsArgs {
    /// The node's PEM certificate chain (with --tls-key): `serve` serves HTTPS
    /// with it and reads the files again when they change, so a renewed
    /// certificate needs no restart.
    #[arg(
        long,
        env = "BERTH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(
        long,
        env = "BERTH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The two files, when both are given.
    pub fn files(self) -> Option<TlsFiles> {
        self.tls_cert
            .zip(self.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses_and_documents_every_option() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "berth",
            "serve",
            "--data-dir",
            "/d",
            "--listen",
            "[::1]:5000",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve parses as serve")
        };
        assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
        let cli = Cli::try_parse_from(["berth", "cluster", "remove", "42"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Cluster(ClusterCommand::Remove { node_id: 42, .. })
        ));
    }
}
