//! `berth cluster status|remove`: inspect or change the membership through
//! any node's admin API; `berth cluster recover`: make a stopped survivor of
//! a lost majority a one-node cluster, offline.

use std::path::PathBuf;

use clap::Subcommand;

use super::client::{Client, Connection};
use super::CliResult;
use crate::cluster::recover::{self, Offline, LOST_SHOWN};
use crate::cluster::status::{render, StatusReport};

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
    /// After a majority of the voters is lost for good: make this stopped
    /// node the only voter of its cluster, keeping all its data, so that
    /// started it serves again and new nodes can join it. Without --yes it
    /// shows what it found and what it would do, and changes nothing.
    Recover {
        /// The stopped node's data directory.
        #[arg(long, env = "BERTH_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// Make the change. Every other member must be stopped for good
        /// first, and wiped before it is started again.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(cmd: ClusterCommand) -> CliResult<()> {
    match cmd {
        ClusterCommand::Status { node, json } => {
            let client = Client::new(&Connection::to(node))?;
            let report: StatusReport = client.get("/_berth/cluster/status").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", render(&report));
            }
        }
        ClusterCommand::Remove {
            node_id,
            node,
            cluster_secret_file,
        } => {
            let conn = Connection {
                cluster_secret_file,
                ..Connection::to(node)
            };
            let path = format!("/_berth/cluster/members/{node_id}");
            let () = Client::new(&conn)?.delete(&path).await?;
            println!("node {node_id} removed");
        }
        ClusterCommand::Recover { data_dir, yes } => return run_recover(&data_dir, yes).await,
    }
    Ok(())
}

async fn run_recover(data_dir: &std::path::Path, yes: bool) -> CliResult<()> {
    let off = Offline::open(data_dir)?;
    if !yes {
        let plan = off.plan().await?;
        let blobs = off.lost_blobs(LOST_SHOWN)?;
        print!("{}", recover::render(data_dir, &plan, &blobs, false));
        if plan.already_alone {
            return Ok(());
        }
        return Err("nothing was changed: run again with --yes to recover this node".into());
    }
    let plan = off.recover().await?;
    let blobs = off.lost_blobs(LOST_SHOWN)?;
    print!("{}", recover::render(data_dir, &plan, &blobs, true));
    if !plan.already_alone {
        println!(
            "\nnode {} is now a one-node cluster. Start it, check `berth cluster status`, then \
             start new empty nodes that join it (--peers {}).",
            plan.node_id, plan.addr.peer
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn recover_needs_a_data_dir_and_changes_only_with_yes() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        let cli = parse(&["berth", "cluster", "recover", "--data-dir", "/d"]).unwrap();
        assert!(matches!(
            cli,
            Command::Cluster(ClusterCommand::Recover { yes: false, ref data_dir }) if data_dir == std::path::Path::new("/d")
        ));
        let cli = parse(&["berth", "cluster", "recover", "--data-dir", "/d", "--yes"]).unwrap();
        assert!(matches!(
            cli,
            Command::Cluster(ClusterCommand::Recover { yes: true, .. })
        ));
    }
}
