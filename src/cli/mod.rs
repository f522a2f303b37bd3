//! The `berth` command line: the parser and one module per command group.
//! Every command that talks to a running node's admin API goes through the
//! one [`client::Client`].

pub mod access;
pub mod backup;
pub mod client;
pub mod cluster;
pub mod gc;
pub mod health;
pub mod import;
pub mod mirror;
pub mod policy;
pub mod quota;
pub mod retention;
pub mod serve;
pub mod webhook;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::ServeArgs;

/// What a command ends with; `main` logs the error and exits 1.
pub type CliResult<T> = Result<T, Box<dyn std::error::Error>>;

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
    Cluster(cluster::ClusterCommand),
    #[command(flatten)]
    Access(access::AccessCommand),
    /// Ask a node whether it is alive (`/healthz`) or, with --ready, whether
    /// it has joined the cluster and caught up (`/readyz`). Exits 0 if so and
    /// 1 if not: a container health check needs no curl in the image.
    Health(health::HealthArgs),
    /// Garbage collection: run one now, preview it, or see the last run.
    Gc {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: gc::GcAction,
    },
    /// Repository policies: immutable tags; show every rule.
    Policy {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: policy::PolicyAction,
    },
    /// Retention rules: which tags to keep, by count and age.
    Retention {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: retention::RetentionAction,
    },
    /// Storage quotas per namespace, and each namespace's usage.
    Quota {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: quota::QuotaAction,
    },
    /// Pull-through mirrors of upstream registries: what each has cached,
    /// its hits and misses, and its last upstream error.
    Mirror {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: mirror::MirrorAction,
    },
    /// Webhooks: endpoints that get the registry's events (pushes, tag
    /// moves, deletions, rebuild triggers), signed and delivered at least
    /// once in commit order.
    Webhook {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: webhook::WebhookAction,
    },
    /// Import a CNCF Distribution (registry 2.x) storage root into a node.
    ///
    /// Reads the filesystem storage of a Distribution registry (the directory
    /// holding docker/registry/v2) and pushes every repository, tag and manifest
    /// into a running node through its registry API (/v2/), as a client would.
    /// Untagged manifests Distribution still keeps (what a moved tag left behind)
    /// are pushed by digest, tags by tag, an index's children before the index.
    ///
    /// Each blob is streamed from its file and verified against its digest while
    /// it is read; a corrupt or missing blob is not imported, and neither is any
    /// manifest naming it. What the node already has is skipped, so running the
    /// import again finishes an interrupted one.
    ///
    /// Sign in with --login USER (who may push there) and the password in
    /// BERTH_PASSWORD; a node that hands out tokens gets its token flow. The
    /// summary lists every problem; the exit status is 1 if there was any.
    Import(import::ImportArgs),
    /// Back up the registry: a snapshot of the replicated metadata and
    /// every blob it names, into a directory.
    ///
    /// Runs while the cluster serves: the snapshot includes every write
    /// completed before the backup started, and blobs are fetched from the
    /// node asked (which relays any it does not hold). A second backup into
    /// the same directory fetches only new blobs; an interrupted one is
    /// finished by running it again. Each blob fetched is checked against its
    /// digest. Needs an administrator (--login) or --cluster-secret-file.
    Backup(backup::BackupArgs),
    /// Make a new one-node cluster from a backup, in a new data directory.
    ///
    /// Loads the backup's snapshot, makes the new node its cluster's only
    /// voter, and copies in every blob, checking each against its digest: a
    /// corrupt or missing one is named, the rest are restored, and the exit
    /// status is 1. Start the node, then let other empty nodes join it. A
    /// data directory that is not empty is refused unless --force is given.
    Restore(backup::RestoreArgs),
    /// Images: which images are built on a base.
    Image {
        #[command(flatten)]
        conn: client::Connection,
        #[command(subcommand)]
        action: webhook::ImageAction,
    },
}

/// Runs the command given; logging is already set up.
pub async fn run(command: Command) -> CliResult<()> {
    match command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Cluster(cmd) => cluster::run(cmd).await,
        Command::Access(cmd) => access::run(cmd).await,
        Command::Health(args) => health::run(args).await,
        Command::Gc { conn, action } => gc::run(conn, action).await,
        Command::Policy { conn, action } => policy::run(conn, action).await,
        Command::Retention { conn, action } => retention::run(conn, action).await,
        Command::Quota { conn, action } => quota::run(conn, action).await,
        Command::Mirror { conn, action } => mirror::run(conn, action).await,
        Command::Webhook { conn, action } => webhook::run(conn, action).await,
        Command::Image { conn, action } => webhook::run_image(conn, action).await,
        Command::Import(args) => import::run(args).await,
        Command::Backup(args) => backup::run_backup(args).await,
        Command::Restore(args) => backup::run_restore(args).await,
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

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
            Command::Cluster(cluster::ClusterCommand::Remove { node_id: 42, .. })
        ));
    }
}
