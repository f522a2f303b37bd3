//! Handing leadership over before a leader stops, so that a rolling restart
//! does not leave the cluster without a leader for an election timeout.
//!
//! openraft 0.9 has no leadership transfer, but its rules allow one: a voter
//! refuses a candidate while it has heard from a leader within the election
//! timeout (the leader lease), yet the leader itself last renewed its own vote
//! when it was elected. So once it has led longer than the timeout, it grants
//! its vote to a candidate whose log is at least as long as its own, and that
//! vote plus the candidate's own make a majority of three. The leader:
//!
//! 1. stops appending: writes here wait, then go to the next leader;
//! 2. waits (bounded) until the most caught-up voter holds its whole log;
//! 3. asks that voter to stand for election (`Cluster.Campaign`);
//! 4. steps down when it grants the vote.
//!
//! If any step fails the node stops anyway and the others elect a leader
//! after the timeout, as after a crash.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::peer::DEFAULT_RPC_TIMEOUT;
use super::types::{NodeAddr, NodeId};
use super::{pb, Cluster, ClusterError, ELECTION_MAX_MS};

/// A member whose last answer is older than this counts as down. Wider than
/// the heartbeat: on a loaded machine answers come late, and a member that
/// answers late can still take over.
const ANSWERED_WITHIN: Duration = Duration::from_secs(2);

/// Longest wait for a voter to catch up before it is asked to campaign.
const CATCH_UP: Duration = Duration::from_secs(2);
/// Longest wait for the new leader after the request.
const ELECTED: Duration = Duration::from_secs(3);

/// Why leadership stayed here; the node stops regardless.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    #[error("no other voter answers")]
    NoVoter,
    #[error("node {0} did not catch up within {CATCH_UP:?}")]
    Behind(NodeId),
    #[error("node {id} could not be asked to campaign: {reason}")]
    Unreachable { id: NodeId, reason: String },
    #[error("no new leader within {ELECTED:?}")]
    NotElected,
}

impl Cluster {
    /// If this node leads, hands leadership to the most caught-up voter and
    /// returns whom it went to; `Ok(None)` when this node does not lead.
    /// Writes that reach this node meanwhile wait and go to the new leader.
    pub async fn hand_off_leadership(&self) -> Result<Option<NodeId>, HandoffError> {
        if !self.leads() {
            return Ok(None);
        }
        // Without this node the others must still make a majority, or a
        // successor could never commit: it would only stand in the way of
        // the reads a node cut off from its quorum still serves.
        let voters = self.members();
        let others = voters
            .iter()
            .filter(|(id, _)| *id != self.id() && self.answers(*id))
            .count();
        if others < voters.len() / 2 + 1 {
            tracing::info!(
                others,
                voters = voters.len(),
                "no leadership handover: the members that answer make no majority without this node"
            );
            return Ok(None);
        }
        // A leader grants votes only once its own lease has run out, an
        // election timeout after it was elected: a newer one cannot hand
        // over, and waiting would only delay the stop.
        let since = *self.leader_since.lock().unwrap_or_else(|p| p.into_inner());
        if since.is_none_or(|t| t.elapsed() < Duration::from_millis(ELECTION_MAX_MS + 100)) {
            tracing::info!(
                "no leadership handover: this node has led for less than an election timeout"
            );
            return Ok(None);
        }
        let started = Instant::now();
        self.handing_off.store(true, Ordering::SeqCst);
        let result = self.hand_off().await;
        self.handing_off.store(false, Ordering::SeqCst);
        match &result {
            Ok(to) => tracing::info!(
                to,
                millis = started.elapsed().as_millis() as u64,
                "handed leadership over before stopping"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "could not hand leadership over; the others elect a leader after the election timeout"
            ),
        }
        result.map(Some)
    }

    async fn hand_off(&self) -> Result<NodeId, HandoffError> {
        let (target, addr) = self.wait_caught_up_voter().await?;
        let client = self
            .pool()
            .client(&addr.peer)
            .map_err(|e| HandoffError::Unreachable {
                id: target,
                reason: e.to_string(),
            })?;
        let req = client.request(pb::Empty {}, DEFAULT_RPC_TIMEOUT);
        client
            .cluster()
            .campaign(req)
            .await
            .map_err(|s| HandoffError::Unreachable {
                id: target,
                reason: s.message().to_string(),
            })?;
        let mut metrics = self.raft().metrics();
        let me = self.id();
        let moved = async move {
            let m = metrics
                .wait_for(|m| m.current_leader.is_some_and(|l| l != me))
                .await
                .ok()?;
            m.current_leader
        };
        match tokio::time::timeout(ELECTED, moved).await {
            Ok(Some(leader)) => Ok(leader),
            _ => Err(HandoffError::NotElected),
        }
    }

    /// The voter whose replicated log is longest, once it matches this
    /// leader's whole log.
    async fn wait_caught_up_voter(&self) -> Result<(NodeId, NodeAddr), HandoffError> {
        let deadline = Instant::now() + CATCH_UP;
        let mut metrics = self.raft().metrics();
        loop {
            let best = {
                let m = metrics.borrow_and_update();
                let membership = m.membership_config.membership();
                let matched = |id: &NodeId| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map(|l| l.index)
                };
                membership
                    .voter_ids()
                    .filter(|id| *id != self.id() && self.answers(*id))
                    .filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone())))
                    .max_by_key(|(id, _)| matched(id))
                    .map(|(id, addr)| (id, addr, matched(&id) >= m.last_log_index))
            };
            match best {
                None => return Err(HandoffError::NoVoter),
                Some((id, addr, true)) => return Ok((id, addr)),
                Some((id, _, false)) => {
                    let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
                    if !matches!(changed, Ok(Ok(()))) {
                        return Err(HandoffError::Behind(id));
                    }
                }
            }
        }
    }
}

/// Notes when this node became leader, for [`Cluster::hand_off_leadership`].
pub(super) async fn watch_tenure(cluster: std::sync::Arc<Cluster>, stop: CancellationToken) {
    let mut metrics = cluster.raft().metrics();
    let mut term = None;
    loop {
        let leads = {
            let m = metrics.borrow_and_update();
            (m.current_leader == Some(cluster.id())).then_some(m.current_term)
        };
        if leads != term {
            term = leads;
            *cluster
                .leader_since
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = leads.map(|_| Instant::now());
        }
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}

impl Cluster {
    /// Stands for election now: the leader asks this before it stops.
    /// A node that is stopping itself declines.
    pub(crate) async fn campaign(&self) -> Result<(), ClusterError> {
        if self.is_stopping() {
            return Err(ClusterError::NoLeader("this node is stopping too".into()));
        }
        self.raft()
            .trigger()
            .elect()
            .await
            .map_err(|e| ClusterError::Raft(e.to_string()))
    }

    /// Whether writes must not be appended here: leadership is being handed
    /// over, and an entry the next leader lacks would cost it the vote.
    pub(crate) fn handing_off(&self) -> bool {
        self.handing_off.load(Ordering::SeqCst)
    }

    /// Whether member `id` answered lately: one that did not may be down
    /// too.
    fn answers(&self, id: NodeId) -> bool {
        self.pool()
            .last_heard(id)
            .is_some_and(|d| d < ANSWERED_WITHIN)
    }

    fn leads(&self) -> bool {
        self.raft().metrics().borrow().current_leader == Some(self.id())
    }
}
