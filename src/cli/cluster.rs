//! `berth cluster status|remove`: inspect or change the membership through
//! any node's admin API.

use std::path::PathBuf;

use clap::Subcommand;

use super::client::{Client, Connection};
use super::CliResult;
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
    }
    Ok(())
}
