//! Changing who is in the cluster: joining (learner first, voter once caught
//! up) and removal. Both run on the leader; other nodes forward.

use std::collections::{BTreeMap, BTreeSet};

use openraft::ChangeMembers;

use super::peer::DEFAULT_RPC_TIMEOUT;
use super::types::{NodeAddr, NodeId};
use super::{pb, service, Cluster, ClusterError, MAX_HOPS};

/// How long a joining node may take to catch up before it is made a voter.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

impl Cluster {
    /// Adds `id` at `addr`: as a learner, then, once it holds the log, as a
    /// voter. Safe to repeat.
    pub async fn join(&self, id: NodeId, addr: NodeAddr, hops: u32) -> Result<(), ClusterError> {
        let (leader, node) = self.leader().await?;
        if leader != self.id {
            return self
                .forward_admin(
                    hops,
                    leader,
                    &node,
                    |c, req| async move { c.cluster().join(req).await.map(|_| ()) },
                    |h| pb::JoinRequest {
                        node_id: id,
                        peer_addr: addr.peer.clone(),
                        api_addr: addr.api.clone(),
                        hops: h,
                    },
                )
                .await;
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let m = membership.membership();
        let is_voter = m.voter_ids().any(|v| v == id);
        let known = m.get_node(&id).cloned();
        if is_voter && known.as_ref() == Some(&addr) {
            return Ok(());
        }
        if let Some(old) = known.as_ref().filter(|old| **old != addr) {
            // The same node (same id, same data) came back elsewhere, e.g. a
            // container restarted with a new address.
            tracing::info!(node_id = id, from = %old, to = %addr, "a member's address changed");
            let update = ChangeMembers::SetNodes(BTreeMap::from([(id, addr.clone())]));
            self.raft
                .change_membership(update, true)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        } else if known.is_none() {
            tracing::info!(node_id = id, %addr, "adding a node as learner");
            let add = self.raft.add_learner(id, addr.clone(), true);
            tokio::time::timeout(CATCH_UP_TIMEOUT, add)
                .await
                .map_err(|_| {
                    ClusterError::Raft(format!(
                        "node {id} did not catch up within {CATCH_UP_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        if !is_voter {
            tracing::info!(node_id = id, "promoting a caught-up learner to voter");
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// Removes `id` from the voters and from the membership.
    pub async fn remove(&self, id: NodeId, hops: u32) -> Result<(), ClusterError> {
        let (leader, node) = self.leader().await?;
        if leader != self.id {
            return self
                .forward_admin(
                    hops,
                    leader,
                    &node,
                    |c, req| async move { c.cluster().remove(req).await.map(|_| ()) },
                    |h| pb::RemoveRequest {
                        node_id: id,
                        hops: h,
                    },
                )
                .await;
        }
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let m = membership.membership();
        if m.get_node(&id).is_none() {
            return Err(ClusterError::NotMember(id));
        }
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ClusterError::Raft("cannot remove the last voter".into()));
            }
            tracing::info!(node_id = id, "removing a voter");
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        } else {
            tracing::info!(node_id = id, "removing a learner");
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| ClusterError::Raft(e.to_string()))?;
        }
        Ok(())
    }

    /// Sends an administrative call to the leader, one hop further.
    async fn forward_admin<Req, F, Fut>(
        &self,
        hops: u32,
        leader: NodeId,
        node: &NodeAddr,
        call: F,
        make: impl FnOnce(u32) -> Req,
    ) -> Result<(), ClusterError>
    where
        F: FnOnce(super::peer::PeerClient, tonic::Request<Req>) -> Fut,
        Fut: std::future::Future<Output = Result<(), tonic::Status>>,
    {
        if hops >= MAX_HOPS {
            return Err(ClusterError::NoLeader("forwarded too many times".into()));
        }
        let client = self
            .pool
            .client(&node.peer)
            .map_err(|e| super::unreachable_leader(leader, node, e))?;
        let req = client.request(make(hops + 1), CATCH_UP_TIMEOUT + DEFAULT_RPC_TIMEOUT);
        call(client, req)
            .await
            .map_err(|s| service::status_to_error(s, leader, node))
    }
}
