//! What `berth cluster recover` tells its operator: the node's Raft state,
//! what recovery does, and the blobs no copy here holds.

use std::fmt::Write as _;
use std::path::Path;

use super::Plan;
use crate::cluster::types::{LogId, NodeAddr, NodeId};
use crate::oci::Digest;

/// Blobs manifests reference that this node does not hold.
#[derive(Clone, Debug, Default)]
pub struct BlobReport {
    /// Blobs the metadata knows.
    pub known: u64,
    /// Of those, held here.
    pub held: u64,
    /// Referenced by manifests and not held here.
    pub lost_count: u64,
    pub lost_bytes: u64,
    /// The first of those, in digest order.
    pub lost: Vec<LostBlob>,
    /// Not held here, but no manifest references them (garbage waiting for
    /// collection, or uploads whose manifest never came).
    pub unreferenced_missing: u64,
    /// The reference indexes were complete (an older berth's data is
    /// indexed at the node's next start).
    pub indexed: bool,
}

#[derive(Clone, Debug)]
pub struct LostBlob {
    pub digest: Digest,
    pub size: u64,
    /// `repo@manifest`, the first few.
    pub refs: Vec<String>,
    pub more_refs: usize,
    /// The nodes the metadata says hold it.
    pub holders: Vec<NodeId>,
}

fn log_id(l: &Option<LogId>) -> String {
    match l {
        Some(l) => format!("index {} (term {})", l.index, l.leader_id.term),
        None => "none".into(),
    }
}

fn member(id: NodeId, addr: &NodeAddr) -> String {
    format!("{id} (peer {}, api {})", addr.peer, addr.api)
}

/// What was found and what recovery does (or did, with `done`), for people.
pub fn render(dir: &Path, plan: &Plan, blobs: &BlobReport, done: bool) -> String {
    let s = &plan.state;
    let m = s.membership.membership();
    let mut out = String::new();
    let _ = writeln!(out, "data directory   {}", dir.display());
    let _ = writeln!(out, "this node        {}", member(plan.node_id, &plan.addr));
    let _ = writeln!(
        out,
        "membership       at log {}",
        log_id(s.membership.log_id())
    );
    for (id, addr) in m.nodes() {
        let role = if m.voter_ids().any(|v| v == *id) {
            "voter"
        } else {
            "learner"
        };
        let me = if *id == plan.node_id {
            "  <- this node"
        } else {
            ""
        };
        let _ = writeln!(out, "  {role:<8} {}{me}", member(*id, addr));
    }
    let vote = match s.vote {
        Some(v) => format!(
            "term {}, for node {}{}",
            v.leader_id.term,
            v.leader_id
                .voted_for()
                .map_or("none".into(), |n| n.to_string()),
            if v.committed {
                " (granted by a quorum)"
            } else {
                ""
            }
        ),
        None => "none".into(),
    };
    let _ = writeln!(out, "vote             {vote}");
    let _ = writeln!(out, "last log entry   {}", log_id(&s.last_log));
    let _ = writeln!(out, "committed        {}", log_id(&s.committed));
    let _ = writeln!(out, "applied          {}", log_id(&s.applied));
    if s.last_purged.is_some() {
        let _ = writeln!(
            out,
            "log starts after {} (the rest is in the snapshot)",
            log_id(&s.last_purged)
        );
    }
    out.push('\n');
    if s.needs_tidy() {
        let why = if s.installing {
            "a snapshot install was interrupted"
        } else {
            "the log starts after the state machine's last entry"
        };
        let _ = writeln!(
            out,
            "note: {why}; recovery first tidies this as a start would, and the figures above \
             may change with it (recovery prints them again)."
        );
    }
    if plan.already_alone {
        let _ = writeln!(
            out,
            "node {} is already the only member: nothing to do.",
            plan.node_id
        );
        return out;
    }
    if !plan.was_voter {
        let _ = writeln!(
            out,
            "warning: this node was a learner: it may lack entries the voters committed. \
             Prefer a surviving voter if there is one."
        );
    }
    let verb = |future: &str, past: &str| {
        if done {
            past.to_owned()
        } else {
            future.to_owned()
        }
    };
    let _ = writeln!(out, "recovery {}:", verb("will", "did"));
    let _ = writeln!(
        out,
        "- {} a membership entry at log index {}, term {}: node {} the only voter, at its \
         current addresses",
        verb("append", "appended"),
        plan.entry.index,
        plan.entry.leader_id.term,
        plan.node_id
    );
    let _ = writeln!(
        out,
        "- {} this node's vote for itself in term {}: started, it elects itself and commits \
         the log",
        verb("record", "recorded"),
        plan.vote.leader_id.term
    );
    let uncommitted = match (s.last_log, s.committed) {
        (Some(l), c) if Some(l.index) > c.map(|c| c.index) => {
            let from = c.map_or(0, |c| c.index + 1);
            format!(
                " (entries {from}..={} were not known to be committed; the new leader commits them)",
                l.index
            )
        }
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "- keep every log entry{uncommitted}, the state machine, the snapshots and the local blobs"
    );
    for (id, addr, voter) in &plan.dropped {
        let role = if *voter { "voter" } else { "learner" };
        let _ = writeln!(
            out,
            "- {} {role} {} from the membership",
            verb("drop", "dropped"),
            member(*id, addr)
        );
    }
    if !plan.dropped.is_empty() {
        let _ = writeln!(
            out,
            "  Never start those nodes again with their old data: wipe their data directories; \
             they join this node as new ones."
        );
    }
    out.push('\n');
    render_blobs(&mut out, blobs);
    out
}

pub(super) fn render_blobs(out: &mut String, b: &BlobReport) {
    let _ = writeln!(
        out,
        "blobs            {} known, {} held by this node",
        b.known, b.held
    );
    if !b.indexed {
        let _ = writeln!(
            out,
            "note: this data predates the reference indexes; lost blobs are counted once the \
             node has indexed it (at its next start)."
        );
    }
    if b.lost_count == 0 {
        let _ = writeln!(
            out,
            "every blob a manifest references is held by this node."
        );
    } else {
        let _ = writeln!(
            out,
            "{} blob(s), {} bytes, referenced by manifests but NOT held by this node: lost \
             unless another surviving node holds them",
            b.lost_count, b.lost_bytes
        );
        for lost in &b.lost {
            let more = match lost.more_refs {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            let _ = writeln!(
                out,
                "  {} ({} bytes) held by {:?}; referenced by {}{more}",
                lost.digest,
                lost.size,
                lost.holders,
                lost.refs.join(", ")
            );
        }
        if b.lost_count > b.lost.len() as u64 {
            let _ = writeln!(out, "  … and {} more", b.lost_count - b.lost.len() as u64);
        }
    }
    if b.unreferenced_missing > 0 {
        let _ = writeln!(
            out,
            "{} blob(s) no manifest references are not held here either (garbage or unfinished \
             pushes; nothing needs them).",
            b.unreferenced_missing
        );
    }
}
