//! `berth gc run|status`: garbage collection through the admin API of any
//! node (`/_berth/gc`). Only administrators, or the cluster secret, may.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Subcommand;

use super::client::{Client, Connection};
use super::CliResult;
use crate::gc::{Outcome, RunRequest};
use crate::meta::gc::{GcState, RunReport};

/// A collection reads every blob record; on a large registry that takes
/// minutes, not seconds.
const RUN_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, Subcommand)]
pub enum GcAction {
    /// Collect now: remove blobs no manifest references (and, with
    /// --untagged, untagged manifests nothing keeps) from every node.
    Run {
        /// List what would be removed, and why, without removing it.
        #[arg(long)]
        dry_run: bool,
        /// Seconds a blob must have gone unreferenced. [default: the
        /// node's --gc-grace]
        #[arg(long, value_name = "SECONDS")]
        grace: Option<u64>,
        /// Also collect untagged manifests. [default: the node's
        /// --gc-untagged]
        #[arg(long)]
        untagged: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show the last collection and what each node removed from its disk.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: Connection, action: GcAction) -> CliResult<()> {
    let client = Client::with_timeout(&conn, RUN_TIMEOUT)?;
    match action {
        GcAction::Run {
            dry_run,
            grace,
            untagged,
            json,
        } => {
            let req = RunRequest {
                dry_run,
                grace,
                untagged: untagged.then_some(true),
            };
            let outcome: Outcome = client.post("/_berth/gc", &req).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&outcome)?),
                false => print!("{}", render_outcome(&outcome)),
            }
        }
        GcAction::Status { json } => {
            let state: GcState = client.get("/_berth/gc").await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&state)?),
                false => print!("{}", render_state(&state)),
            }
        }
    }
    Ok(())
}

fn render_outcome(outcome: &Outcome) -> String {
    let mut out = String::new();
    match outcome {
        Outcome::Collected(run) => out.push_str(&render_run(run)),
        Outcome::Preview(p) => {
            let _ = writeln!(
                out,
                "would remove {} tags by retention, {} blobs ({} bytes) and {} manifests (grace {} s, untagged manifests {})",
                p.retention.len(),
                p.blobs.len(),
                p.bytes,
                p.manifests.len(),
                p.grace,
                if p.untagged { "included" } else { "kept" }
            );
            for t in &p.retention {
                let _ = writeln!(
                    out,
                    "tag {}:{} ({}): outside its retention rule, pushed {}",
                    t.repository,
                    t.tag,
                    t.digest,
                    when(t.pushed)
                );
            }
            for plan in &p.evictions {
                let _ = writeln!(
                    out,
                    "mirror {}: {} bytes cached, over its {} byte budget; {} left after evicting:",
                    plan.namespace, plan.bytes, plan.budget, plan.bytes_after
                );
                for e in &plan.evict {
                    let _ = writeln!(
                        out,
                        "manifest {}@{}: least recently pulled, {}",
                        e.repository,
                        e.digest,
                        when(e.last_pulled)
                    );
                }
            }
            for m in &p.manifests {
                let _ = writeln!(
                    out,
                    "manifest {}@{}: untagged, and no kept index, referrer or subject leads to it",
                    m.repository, m.digest
                );
            }
            for b in &p.blobs {
                let _ = writeln!(
                    out,
                    "blob {} ({} bytes): no manifest references it, since {}",
                    b.digest,
                    b.size,
                    when(b.unreferenced_since)
                );
            }
        }
    }
    out
}

fn render_run(run: &RunReport) -> String {
    let state = match (&run.finished, &run.error) {
        (None, _) => "running".to_owned(),
        (Some(_), Some(e)) => format!("stopped early: {e}"),
        (Some(at), None) => format!("finished {}", when(*at)),
    };
    format!(
        "run {} on node {:016x}, started {}, {state}: {} blobs ({} bytes) and {} manifests removed (grace {} s)\n",
        run.id,
        run.node,
        when(run.started),
        run.blobs,
        run.bytes,
        run.manifests,
        run.grace
    )
}

/// Unix seconds as a date a person reads; 0 (a record from before times
/// were kept) as "ever".
pub(super) fn when(secs: u64) -> String {
    match secs {
        0 => "ever".to_owned(),
        s => httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(s)),
    }
}

fn render_state(state: &GcState) -> String {
    let mut out = match &state.last_run {
        Some(run) => render_run(run),
        None => "no collection has run yet\n".to_owned(),
    };
    for n in &state.nodes {
        let _ = writeln!(
            out,
            "node {:016x}: swept {} files ({} bytes) after run {}, {} waiting",
            n.node, n.files, n.bytes, n.run, n.pending
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::gc::SweepReport;

    #[test]
    fn status_reads_as_dates_and_one_line_per_node() {
        let state = GcState {
            last_run: Some(RunReport {
                id: 1,
                node: 10,
                started: 1_796_000_000,
                finished: Some(1_796_000_060),
                grace: 3600,
                blobs: 2,
                bytes: 300,
                ..RunReport::default()
            }),
            nodes: vec![SweepReport {
                node: 10,
                run: 1,
                files: 2,
                bytes: 300,
                pending: 0,
                at: 1_796_000_061,
            }],
        };
        let text = render_state(&state);
        assert!(
            text.contains("started Mon, 30 Nov 2026 00:53:20 GMT"),
            "{text}"
        );
        assert!(text.contains("2 blobs (300 bytes)"), "{text}");
        assert!(
            text.contains("node 000000000000000a: swept 2 files (300 bytes)"),
            "{text}"
        );
        assert_eq!(
            render_state(&GcState::default()),
            "no collection has run yet\n"
        );
        assert_eq!(when(0), "ever");
    }
}
