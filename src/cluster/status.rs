//! What a node reports about the cluster: for `berth cluster status`, the
//! HTTP status endpoint and the peer `Status` call.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::pb;
use super::{Cluster, ClusterError};

/// One node's view of the cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub node_id: u64,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub members: Vec<MemberReport>,
    /// Blob repair as this node last saw it; absent before its first round.
    #[serde(default)]
    pub repair: Option<RepairReport>,
    /// This node's scrubbing; absent on a node that has found nothing to
    /// report and runs no passes.
    #[serde(default)]
    pub scrub: Option<ScrubReport>,
}

/// What scrubbing found on this node since it started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// Passes over every local blob finished.
    pub passes: u64,
    /// When the last pass finished, in Unix seconds.
    pub last_pass_end: Option<u64>,
    /// Blobs and bytes the last pass checked, and its rate in bytes a second.
    pub last_pass_blobs: u64,
    pub last_pass_bytes: u64,
    pub last_pass_rate: f64,
    /// Copies that failed their digest (by a pass or a client's read), each
    /// quarantined.
    pub corrupt: u64,
    /// Good copies fetched from other holders in their place.
    pub restored: u64,
    /// Quarantined blobs still waiting for a good copy.
    pub waiting: u64,
}

/// How far blob content is from its replication factor.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Blobs held by fewer live members than they should be.
    pub under_replicated: u64,
    /// Blobs no live member holds: they come back only with a node that has them.
    #[serde(default)]
    pub unavailable: u64,
    /// Bytes the missing copies add up to.
    pub bytes_to_copy: u64,
    /// Bytes per second this node copied in its last repair round.
    pub copy_rate: f64,
    /// Blobs the last round read: every blob on a full pass, else those
    /// whose holders changed since the round before.
    #[serde(default)]
    pub examined: u64,
    /// Whether the last round was a pass over every blob.
    #[serde(default)]
    pub full_pass: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    pub node_id: u64,
    pub peer_addr: String,
    pub api_addr: String,
    pub voter: bool,
    pub leader: bool,
    /// Highest log index known to be on this member (reported by the leader).
    pub matched_index: Option<u64>,
    /// Entries this member is behind the leader's log (reported by the leader).
    pub lag: Option<u64>,
    /// Milliseconds since the leader last heard from this member.
    pub last_heard_ms: Option<u64>,
}

impl Cluster {
    pub fn status(&self) -> StatusReport {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned())
                    .map(|l| l.map(|l| l.index).unwrap_or(0));
                let matched = if *id == m.id && m.current_leader == Some(m.id) {
                    m.last_log_index
                } else {
                    matched
                };
                MemberReport {
                    node_id: *id,
                    peer_addr: node.peer.clone(),
                    api_addr: node.api.clone(),
                    voter: voters.contains(id),
                    leader: m.current_leader == Some(*id),
                    matched_index: matched,
                    lag: matched
                        .zip(m.last_log_index)
                        .map(|(have, last)| last.saturating_sub(have)),
                    last_heard_ms: if *id == m.id {
                        Some(0)
                    } else {
                        self.pool.last_heard(*id).map(|d| d.as_millis() as u64)
                    },
                }
            })
            .collect();
        StatusReport {
            node_id: m.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: self.committed.get(),
            applied_index: m.last_applied.map(|l| l.index),
            members,
            repair: None,
            scrub: None,
        }
    }

    /// The cluster as its leader sees it (only the leader hears from every
    /// member), or this node's own view when it leads, knows no leader, or
    /// cannot reach it within two seconds.
    pub async fn leader_status(&self) -> StatusReport {
        let own = self.status();
        let Some(leader) = own.leader_id.filter(|l| *l != own.node_id) else {
            return own;
        };
        let Some(peer) = own
            .members
            .iter()
            .find(|m| m.node_id == leader)
            .map(|m| m.peer_addr.clone())
        else {
            return own;
        };
        let Ok(client) = self.pool.client(&peer) else {
            return own;
        };
        let req = client.request(pb::Empty {}, std::time::Duration::from_secs(2));
        match client.cluster().status(req).await {
            Ok(reply) => reply.into_inner().into(),
            Err(e) => {
                tracing::debug!(leader, error = %e, "the leader did not report its view");
                own
            }
        }
    }

    /// Who this node is, for discovery. Fails when this node cannot tell
    /// whether it belongs to a cluster: a peer must never take that for
    /// "not initialized" and form a second cluster.
    pub async fn hello(&self) -> Result<pb::NodeHello, ClusterError> {
        let initialized = self.raft.is_initialized().await.map_err(|e| {
            tracing::error!(error = %e, "cannot tell a peer whether this node belongs to a cluster");
            ClusterError::Raft(format!(
                "cannot tell whether this node belongs to a cluster: {e}"
            ))
        })?;
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader.unwrap_or(0);
        let leader_peer = m
            .current_leader
            .and_then(|id| {
                m.membership_config
                    .membership()
                    .get_node(&id)
                    .map(|n| n.peer.clone())
            })
            .unwrap_or_default();
        Ok(pb::NodeHello {
            node_id: self.id,
            peer_addr: self.addr.peer.clone(),
            api_addr: self.addr.api.clone(),
            initialized,
            leader_id: leader,
            leader_peer_addr: leader_peer,
        })
    }
}

/// A human-readable table of a status report.
pub fn render(report: &StatusReport) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} is {} in term {}; leader {}; log {} committed {} applied {}",
        report.node_id,
        report.state.to_lowercase(),
        report.term,
        opt(report.leader_id),
        opt(report.last_log_index),
        opt(report.committed_index),
        opt(report.applied_index),
    );
    if let Some(r) = &report.repair {
        let _ = writeln!(
            out,
            "blobs: {} under-replicated, {} bytes to copy, copying at {:.1} MB/s, {} with no live copy",
            r.under_replicated,
            r.bytes_to_copy,
            r.copy_rate / 1e6,
            r.unavailable
        );
    }
    if let Some(r) = &report.scrub {
        let _ = writeln!(
            out,
            "scrub: {} bad copies quarantined, {} restored, {} waiting; {} passes, the last over {} blobs at {:.1} MB/s",
            r.corrupt,
            r.restored,
            r.waiting,
            r.passes,
            r.last_pass_blobs,
            r.last_pass_rate / 1e6
        );
    }
    let _ = writeln!(
        out,
        "{:<20} {:<8} {:<6} {:<24} {:<24} {:>8} {:>6} {:>10}",
        "NODE", "ROLE", "LEADER", "PEER", "API", "MATCHED", "LAG", "HEARD"
    );
    for m in &report.members {
        let heard = m
            .last_heard_ms
            .map(|ms| format!("{:.1}s ago", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<20} {:<8} {:<6} {:<24} {:<24} {:>8} {:>6} {:>10}",
            m.node_id,
            if m.voter { "voter" } else { "learner" },
            if m.leader { "*" } else { "" },
            m.peer_addr,
            m.api_addr,
            opt(m.matched_index),
            opt(m.lag),
            heard,
        );
    }
    out
}

impl From<&StatusReport> for pb::ClusterStatus {
    fn from(r: &StatusReport) -> pb::ClusterStatus {
        pb::ClusterStatus {
            node_id: r.node_id,
            term: r.term,
            leader_id: r.leader_id.unwrap_or(0),
            state: r.state.clone(),
            has_last_log: r.last_log_index.is_some(),
            last_log_index: r.last_log_index.unwrap_or(0),
            has_committed: r.committed_index.is_some(),
            committed_index: r.committed_index.unwrap_or(0),
            has_applied: r.applied_index.is_some(),
            applied_index: r.applied_index.unwrap_or(0),
            members: r
                .members
                .iter()
                .map(|m| pb::MemberStatus {
                    node_id: m.node_id,
                    peer_addr: m.peer_addr.clone(),
                    api_addr: m.api_addr.clone(),
                    voter: m.voter,
                    leader: m.leader,
                    has_matched: m.matched_index.is_some(),
                    matched_index: m.matched_index.unwrap_or(0),
                    has_heard: m.last_heard_ms.is_some(),
                    heard_ms_ago: m.last_heard_ms.unwrap_or(0),
                })
                .collect(),
        }
    }
}

impl From<pb::ClusterStatus> for StatusReport {
    fn from(r: pb::ClusterStatus) -> StatusReport {
        let some = |has: bool, v: u64| has.then_some(v);
        let last = some(r.has_last_log, r.last_log_index);
        StatusReport {
            node_id: r.node_id,
            state: r.state,
            term: r.term,
            leader_id: (r.leader_id != 0).then_some(r.leader_id),
            last_log_index: last,
            committed_index: some(r.has_committed, r.committed_index),
            applied_index: some(r.has_applied, r.applied_index),
            members: r
                .members
                .into_iter()
                .map(|m| {
                    let matched = some(m.has_matched, m.matched_index);
                    MemberReport {
                        node_id: m.node_id,
                        peer_addr: m.peer_addr,
                        api_addr: m.api_addr,
                        voter: m.voter,
                        leader: m.leader,
                        matched_index: matched,
                        lag: matched
                            .zip(last)
                            .map(|(have, last)| last.saturating_sub(have)),
                        last_heard_ms: some(m.has_heard, m.heard_ms_ago),
                    }
                })
                .collect(),
            repair: None,
            scrub: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_member() {
        let report = StatusReport {
            node_id: 7,
            state: "Leader".into(),
            term: 3,
            leader_id: Some(7),
            last_log_index: Some(10),
            committed_index: Some(10),
            applied_index: Some(9),
            members: vec![MemberReport {
                node_id: 7,
                peer_addr: "a:5001".into(),
                api_addr: "a:5000".into(),
                voter: true,
                leader: true,
                matched_index: Some(10),
                lag: Some(0),
                last_heard_ms: Some(0),
            }],
            repair: Some(RepairReport {
                under_replicated: 2,
                unavailable: 1,
                bytes_to_copy: 10,
                copy_rate: 0.0,
                ..Default::default()
            }),
            scrub: Some(ScrubReport {
                corrupt: 1,
                restored: 1,
                ..Default::default()
            }),
        };
        let text = render(&report);
        assert!(text.contains("node 7 is leader in term 3"), "{text}");
        assert!(text.contains("a:5001"));
        assert!(text.contains("2 under-replicated"), "{text}");
        assert!(text.contains("1 with no live copy"), "{text}");
        assert!(
            text.contains("scrub: 1 bad copies quarantined, 1 restored"),
            "{text}"
        );
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<StatusReport>(&json).unwrap(), report);
        // The leader's view crosses the peer protocol whole (repair aside,
        // which each node reports for itself).
        let crossed: StatusReport = pb::ClusterStatus::from(&report).into();
        assert_eq!(
            crossed,
            StatusReport {
                repair: None,
                scrub: None,
                ..report
            }
        );
    }

    #[tokio::test]
    async fn a_node_that_cannot_read_its_state_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let layout = crate::storage::Layout::new(dir.path());
        layout.create().unwrap();
        let db = crate::db::Db::open(&layout.db()).unwrap();
        let config = super::super::ClusterConfig {
            node_id: 1,
            advertise: super::super::types::NodeAddr::default(),
            peers: vec![],
            bootstrap_expect: None,
            write_timeout: std::time::Duration::from_secs(5),
            remove_after: None,
            peer_tls: None,
        };
        let secret = super::super::peer::Secret::none();
        let cluster = Cluster::start(db, layout, config, None, secret, Default::default())
            .await
            .unwrap();
        assert!(cluster.hello().await.is_ok());
        // Raft stops on a storage error; from then on its state is unknown.
        cluster.raft().shutdown().await.unwrap();
        let err = cluster.hello().await.unwrap_err();
        assert!(err.to_string().contains("cannot tell"), "{err}");
        cluster.shutdown().await;
    }
}
