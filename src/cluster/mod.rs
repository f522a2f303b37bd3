//! Consensus: openraft over gRPC, with RocksDB for the log and the state
//! machine.
//!
//! - [`types`]: openraft's type configuration.
//! - [`log_store`] and [`state_machine`] (with [`snapshot`]): storage.
//! - [`network`] (client) and [`service`] (server): the peer protocol in
//!   `proto/peer.proto`; [`peer`] holds the connections and the secret.
//! - [`discovery`]: finding peers, bootstrapping and joining.
//! - [`reads`]: linearizable reads, batched.
//!
//! [`Cluster`] is what the registry uses: [`Cluster::write`] from any node
//! (followers forward to the leader) and [`Cluster::linearize`] before reads.

// openraft's error types are large and its trait signatures dictate them.
#![allow(clippy::result_large_err)]

pub mod changes;
mod codec;
mod compaction;
pub mod discovery;
mod eviction;
mod handoff;
mod log_store;
mod membership;
mod network;
pub mod pb;
pub mod peer;
mod proposer;
mod reads;
pub mod recover;
pub mod service;
mod snapshot;
mod state_machine;
pub mod status;
pub mod types;

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::meta::{Applied, Command};
use crate::storage::Layout;
pub use discovery::PeerSpec;
use peer::{PeerPool, Secret, DEFAULT_RPC_TIMEOUT};
use types::{NodeAddr, NodeId, Raft};

/// How many times a write may be forwarded while leadership moves.
const MAX_HOPS: u32 = 3;
/// Longest a readiness check waits for this node's metadata to catch up.
const READY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest pause before retrying a write or read that reached no leader;
/// a retry goes at once when this node hears of another leader.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
// Failover timing. openraft 0.9 lets a follower that has heard from a
// leader stand for election only after the leader lease (the longest
// election timeout) plus its own random election timeout, with no word
// from the leader: 800 + 400..800 ms here, 1.2-1.6 s. Add a vote round and
// the new leader's first entry, and a write waits about 1.5 s after a
// leader's kill -9 (etcd's defaults, 100 ms heartbeats and a 1 s election
// timeout, give about 2 s). A busy 2-core machine stalls a node for tens of
// milliseconds, not the 1.2 s of heartbeats (12 of them) a needless election
// takes. See docs/architecture.md, "Failover".
/// Heartbeats go out this often (ms).
const HEARTBEAT_MS: u64 = 100;
/// A follower's random election timeout is at least this (ms) ...
const ELECTION_MIN_MS: u64 = 400;
/// ... and below this; also the leader lease: how long a voter that has
/// heard from a leader refuses other candidates.
const ELECTION_MAX_MS: u64 = 800;
/// A leader whose last quorum acknowledgement is younger than this (as its
/// metrics, republished at least every heartbeat, report it) reads without
/// a round: the real age is then under two heartbeats, a quarter of the
/// leader lease, so no other leader can have been elected meanwhile; the
/// rest is margin for clock drift and a busy node.
const LEASE_MS: u64 = HEARTBEAT_MS;

/// Settings of this node's membership in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: NodeId,
    /// How other members reach this node.
    pub advertise: NodeAddr,
    /// Where to look for other members; empty for a single-node cluster.
    pub peers: Vec<PeerSpec>,
    /// Form a new cluster once this many nodes (this one included) see each other.
    pub bootstrap_expect: Option<usize>,
    /// Longest a write waits to be committed before the client gets 503.
    pub write_timeout: Duration,
    /// Members silent this long are removed by the leader; `None` never.
    pub remove_after: Option<Duration>,
    /// Mutual TLS between peers; `None` is plain gRPC (with the secret).
    pub peer_tls: Option<peer::PeerTls>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no leader is known right now ({0}); retry shortly")]
    NoLeader(String),
    #[error("the write was not committed within {0:?}: a quorum of nodes is not reachable")]
    NoQuorum(Duration),
    #[error("leader {leader} at {addr} could not be reached: {reason}")]
    LeaderUnreachable {
        leader: NodeId,
        addr: String,
        reason: String,
        /// Whether the request may have reached the leader.
        sent: bool,
    },
    #[error("consensus error: {0}")]
    Raft(String),
    #[error("cannot start the cluster: {0}")]
    Start(String),
    #[error("node {0} is not a member of the cluster")]
    NotMember(NodeId),
}

/// Why a node cannot serve yet.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// Not a voting member: still looking for the cluster, or catching up
    /// as a learner.
    #[error("not a voting member of the cluster yet")]
    Joining,
    /// A member that cannot confirm it is up to date.
    #[error("{0}")]
    Behind(String),
    /// Stopping: load balancers should send requests elsewhere.
    #[error("the node is stopping")]
    Stopping,
}

/// This node's view of and access to the cluster.
pub struct Cluster {
    id: NodeId,
    addr: NodeAddr,
    raft: Raft,
    pool: PeerPool,
    committed: log_store::Committed,
    reads: reads::ReadBarrier,
    config: ClusterConfig,
    secret: Secret,
    stop: CancellationToken,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Set while leadership is handed over: see [`handoff`].
    handing_off: std::sync::atomic::AtomicBool,
    /// Set once the node has begun to stop: it is no longer ready.
    stopping: std::sync::atomic::AtomicBool,
    /// When this node last became leader, while it leads.
    leader_since: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Blobs whose holders the applied log changed, for repair.
    blob_changes: changes::BlobChanges,
    /// Batches the commands this node proposes while it leads.
    proposer: proposer::Proposer,
}

impl Cluster {
    /// Starts Raft on `db`, the peer listener and the discovery loop.
    pub async fn start(
        db: Db,
        layout: Layout,
        config: ClusterConfig,
        listener: Option<tokio::net::TcpListener>,
        secret: Secret,
        extra: tonic::service::Routes,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let raft_config = openraft::Config {
            cluster_name: "berth".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_MIN_MS,
            election_timeout_max: ELECTION_MAX_MS,
            install_snapshot_timeout: 60_000,
            // A backstop: `compaction` asks for snapshots by commands,
            // which are at least as many as entries.
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
                compaction::MAX_SNAPSHOT_COMMANDS,
            ),
            max_in_snapshot_log_to_keep: 1000,
            // Bounds a replication message: entries can hold manifests.
            max_payload_entries: 32,
            ..Default::default()
        }
        .validate()
        .map_err(|e| ClusterError::Start(e.to_string()))?;
        let pool = match &config.peer_tls {
            Some(tls) => PeerPool::with_tls(secret.clone(), tls.clone()),
            None => PeerPool::new(secret.clone()),
        };
        let committed = log_store::Committed::default();
        let sm = state_machine::StateMachineStore::open(db.clone(), layout.clone())
            .map_err(|e| ClusterError::Start(e.to_string()))?;
        let blob_changes = sm.blob_changes();
        let snapshot_due = sm.snapshot_due();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network::Network::new(pool.clone()),
            log_store::LogStore::new(db, committed.clone()),
            sm,
        )
        .await
        .map_err(|e| ClusterError::Start(e.to_string()))?;
        let stop = CancellationToken::new();
        let proposer = proposer::Proposer::start(raft.clone());
        let cluster = Arc::new(Cluster {
            id: config.node_id,
            addr: config.advertise.clone(),
            reads: reads::ReadBarrier::new(),
            raft,
            pool,
            committed,
            config,
            secret: secret.clone(),
            stop: stop.clone(),
            tasks: Default::default(),
            handing_off: Default::default(),
            stopping: Default::default(),
            leader_since: Default::default(),
            blob_changes,
            proposer,
        });
        let mut tasks = vec![
            tokio::spawn(reads::run(cluster.clone(), stop.clone())),
            tokio::spawn(discovery::run(cluster.clone(), stop.clone())),
            tokio::spawn(handoff::watch_tenure(cluster.clone(), stop.clone())),
            tokio::spawn(compaction::run(
                cluster.raft.clone(),
                snapshot_due,
                stop.clone(),
            )),
        ];
        if let Some(after) = cluster.config.remove_after {
            tasks.push(tokio::spawn(eviction::run(
                cluster.clone(),
                after,
                stop.clone(),
            )));
        }
        match listener {
            Some(listener) => {
                let mode = if cluster.config.peer_tls.is_some() {
                    "mutual TLS with the cluster CA, and the cluster secret"
                } else {
                    "plain gRPC; the cluster secret required"
                };
                tracing::info!(
                    node_id = cluster.id,
                    peer_addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                    advertise = %cluster.addr,
                    mode,
                    "peer listener up"
                );
                let serve = service::serve(
                    cluster.clone(),
                    listener,
                    secret,
                    cluster.config.peer_tls.clone(),
                    layout,
                    extra,
                    stop.clone(),
                );
                tasks.push(tokio::spawn(serve));
            }
            None => tracing::info!(
                node_id = cluster.id,
                "standalone node: no peers, no peer listener"
            ),
        }
        *cluster.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(cluster)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The addresses this node advertises.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn pool(&self) -> &PeerPool {
        &self.pool
    }

    /// Entries this node has proposed as leader, and the commands they held.
    pub fn proposed(&self) -> (u64, u64) {
        self.proposer.proposed()
    }

    /// The blobs whose holders changed in entries this node applied.
    pub fn blob_changes(&self) -> &changes::BlobChanges {
        &self.blob_changes
    }

    /// Voters of the cluster with their addresses, in id order.
    pub fn members(&self) -> Vec<(NodeId, NodeAddr)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .filter(|(id, _)| voters.contains(id))
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    /// Whether `presented` is the cluster secret (administrative calls on
    /// the client port carry it).
    pub fn admits_secret(&self, presented: Option<&str>) -> bool {
        let value = presented.and_then(|p| p.parse().ok());
        self.secret.admits(value.as_ref())
    }

    /// Whether `presented` is the cluster secret of a cluster that has one.
    pub fn is_secret(&self, presented: Option<&str>) -> bool {
        self.secret.is_set() && presented.is_some() && self.admits_secret(presented)
    }

    /// Applies a command through the leader. Returns once it is committed
    /// and applied on this node, so reads here see it.
    pub async fn write(&self, cmd: Command) -> Result<Applied, ClusterError> {
        let (index, applied) = self.write_forwarding(cmd, 0).await?;
        self.wait_applied(index).await?;
        Ok(applied)
    }

    /// Applies `cmd` here if this node leads, else on the leader. Returns the
    /// entry's log index and the command's result.
    pub(crate) async fn write_forwarding(
        &self,
        cmd: Command,
        hops: u32,
    ) -> Result<(u64, Applied), ClusterError> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout;
        loop {
            let before = self.known_leader();
            match self.write_once(cmd.clone(), hops).await {
                // Not applied anywhere (no leader yet, or the leader could
                // not be reached), or applying it again changes nothing:
                // try again while the election settles.
                Err(e)
                    if (e.retryable() || (e.maybe_sent() && cmd.inner().is_idempotent()))
                        && tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "write not delivered yet; retrying");
                    self.pause_for_leader(before).await;
                }
                result => return result,
            }
        }
    }

    async fn write_once(&self, cmd: Command, hops: u32) -> Result<(u64, Applied), ClusterError> {
        let leader = self.leader().await?;
        if leader.0 == self.id && self.handing_off() {
            return Err(ClusterError::NoLeader(
                "leadership is being handed over".into(),
            ));
        }
        if leader.0 == self.id {
            let write = self.proposer.propose(cmd);
            return match tokio::time::timeout(self.config.write_timeout, write).await {
                Err(_) => Err(ClusterError::NoQuorum(self.config.write_timeout)),
                Ok(Ok(done)) => Ok(done),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(
                    ClusterError::NoLeader("leadership moved during the write".into()),
                ),
                Ok(Err(e)) => Err(ClusterError::Raft(e.to_string())),
            };
        }
        if hops >= MAX_HOPS {
            return Err(ClusterError::NoLeader("forwarded too many times".into()));
        }
        let (leader, node) = leader;
        let client = self
            .pool
            .client(&node.peer)
            .map_err(|e| unreachable_leader(leader, &node, e))?;
        let req = client.request(
            service::forward_request(&cmd, hops + 1),
            self.config.write_timeout + DEFAULT_RPC_TIMEOUT,
        );
        let reply = client
            .cluster()
            .forward(req)
            .await
            .map_err(|s| service::status_to_error(s, leader, &node))?;
        service::decode_forward_reply(&reply.into_inner())
    }

    /// The leader this node knows of, if any.
    fn known_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// Waits [`RETRY_PAUSE`], or less if this node hears of a leader other
    /// than `before` meanwhile: after a leader dies, the retry then goes
    /// to its successor as soon as it is known.
    async fn pause_for_leader(&self, before: Option<NodeId>) {
        let mut metrics = self.raft.metrics();
        let changed =
            metrics.wait_for(|m| m.current_leader.is_some() && m.current_leader != before);
        let _ = tokio::time::timeout(RETRY_PAUSE, changed).await;
    }

    /// The current leader, waiting a little for an election to finish.
    async fn leader(&self) -> Result<(NodeId, NodeAddr), ClusterError> {
        let wait = self.raft.wait(Some(self.config.write_timeout));
        let metrics = wait
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|_| {
                ClusterError::NoLeader(format!(
                    "no leader elected within {:?}",
                    self.config.write_timeout
                ))
            })?;
        let id = metrics.current_leader.expect("waited for a leader");
        let node = metrics
            .membership_config
            .membership()
            .get_node(&id)
            .cloned()
            .ok_or_else(|| {
                ClusterError::NoLeader(format!("leader {id} is not in the membership"))
            })?;
        Ok((id, node))
    }

    /// Waits until this node has applied the log up to `index`.
    async fn wait_applied(&self, index: u64) -> Result<(), ClusterError> {
        self.raft
            .wait(Some(self.config.write_timeout))
            .applied_index_at_least(Some(index), "apply")
            .await
            .map(|_| ())
            .map_err(|e| ClusterError::Raft(format!("not applied locally: {e}")))
    }

    /// Returns once every write that completed before the call is visible
    /// on this node (a Raft read index, confirmed by the leader's quorum).
    pub async fn linearize(&self) -> Result<(), ClusterError> {
        self.reads.wait().await
    }

    /// [`Cluster::linearize`] for reads that may fall back to this node's
    /// own state: fails at once, instead of waiting out an election or the
    /// write timeout, when this node knows no leader or its read index
    /// attempts keep failing for want of a quorum (see [`reads`]); and stops
    /// waiting as soon as either becomes true. Errors of that kind answer
    /// true to [`ClusterError::quorum_unreachable`].
    pub async fn linearize_unless_cut_off(&self) -> Result<(), ClusterError> {
        let mut metrics = self.raft.metrics();
        let no_leader = |m: &openraft::RaftMetrics<NodeId, NodeAddr>| m.current_leader.is_none();
        if no_leader(&metrics.borrow()) {
            return Err(ClusterError::NoLeader("this node has none".into()));
        }
        if let Some(why) = self.reads.cut_off() {
            return Err(ClusterError::NoLeader(why));
        }
        tokio::select! {
            done = self.linearize() => done,
            why = self.reads.until_cut_off() => Err(ClusterError::NoLeader(why)),
            _ = metrics.wait_for(no_leader) => {
                Err(ClusterError::NoLeader("this node lost it".into()))
            }
        }
    }

    /// A read index for a follower's read (the peer service). The leader
    /// answers from its own batched rounds, so that under load the cluster
    /// confirms its leadership once per batch, not once per follower's
    /// request: any index it has applied after a round that began after the
    /// request arrived will do.
    pub(crate) async fn read_index(&self) -> Result<Option<u64>, ClusterError> {
        let leads = self.raft.metrics().borrow().current_leader == Some(self.id);
        if !leads {
            return self.read_index_now().await;
        }
        self.linearize().await?;
        Ok(self.raft.metrics().borrow().last_applied.map(|l| l.index))
    }

    /// The read index from the leader, for [`reads`], retried while no
    /// leader can be reached (reads have no side effects).
    pub(crate) async fn read_index_now(&self) -> Result<Option<u64>, ClusterError> {
        let deadline = tokio::time::Instant::now() + self.config.write_timeout;
        loop {
            let before = self.known_leader();
            let attempt = self.read_index_once().await;
            self.reads.note(&attempt);
            match attempt {
                // Reads have no side effects: any failure may be retried.
                Err(e)
                    if (e.retryable() || e.maybe_sent())
                        && tokio::time::Instant::now() < deadline =>
                {
                    self.pause_for_leader(before).await;
                }
                result => return result,
            }
        }
    }

    async fn read_index_once(&self) -> Result<Option<u64>, ClusterError> {
        let (leader, node) = self.leader().await?;
        if leader == self.id {
            if let Some(index) = self.leased_read_index() {
                self.wait_applied(index).await?;
                return Ok(Some(index));
            }
            let fut = self.raft.ensure_linearizable();
            return match tokio::time::timeout(self.config.write_timeout, fut).await {
                Err(_) => Err(ClusterError::NoQuorum(self.config.write_timeout)),
                Ok(Ok(log_id)) => Ok(log_id.map(|l| l.index)),
                Ok(Err(e)) => Err(ClusterError::NoLeader(e.to_string())),
            };
        }
        let client = self
            .pool
            .client(&node.peer)
            .map_err(|e| unreachable_leader(leader, &node, e))?;
        let req = client.request(pb::Empty {}, self.config.write_timeout);
        let reply = client
            .cluster()
            .read_index(req)
            .await
            .map_err(|s| service::status_to_error(s, leader, &node))?
            .into_inner();
        let index = reply.has_index.then_some(reply.index);
        if let Some(i) = index {
            self.wait_applied(i).await?;
        }
        Ok(index)
    }

    /// This leader's read index without a round, while its lease holds
    /// ([`LEASE_MS`]): its last log entry, which follows every entry
    /// committed before, its predecessors' included.
    fn leased_read_index(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leads = m.state == openraft::ServerState::Leader && m.current_leader == Some(self.id);
        let acked = m.millis_since_quorum_ack.is_some_and(|ms| ms < LEASE_MS);
        // A leader handing over may be deposed sooner than the lease assumes.
        (leads && acked && !self.handing_off())
            .then_some(m.last_log_index)
            .flatten()
    }

    /// Whether this node can serve: it is a voter, a leader is known, and
    /// it has applied everything committed before the call.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        if self.is_stopping() {
            return Err(NotReady::Stopping);
        }
        {
            let metrics = self.raft.metrics();
            let m = metrics.borrow();
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == self.id)
            {
                return Err(NotReady::Joining);
            }
            if m.current_leader.is_none() {
                return Err(NotReady::Behind("no leader is known".into()));
            }
        }
        match tokio::time::timeout(READY_TIMEOUT, self.linearize()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(NotReady::Behind(format!("metadata is not caught up: {e}"))),
            Err(_) => Err(NotReady::Behind(format!(
                "metadata did not catch up within {READY_TIMEOUT:?}"
            ))),
        }
    }

    /// Begins to stop: readiness fails from now on, so that load balancers
    /// turn away, and if this node leads it hands leadership over.
    pub async fn begin_stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.hand_off_leadership().await;
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Stops Raft, the peer listener and the background loops.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

fn unreachable_leader(leader: NodeId, node: &NodeAddr, e: impl ToString) -> ClusterError {
    ClusterError::LeaderUnreachable {
        leader,
        addr: node.peer.clone(),
        reason: e.to_string(),
        sent: false,
    }
}

impl ClusterError {
    /// Whether the operation certainly did not take effect and may be tried
    /// again as it is.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ClusterError::NoLeader(_) | ClusterError::LeaderUnreachable { sent: false, .. }
        )
    }

    /// Whether the leader went away after the request may have reached it:
    /// it may or may not have been applied.
    pub fn maybe_sent(&self) -> bool {
        matches!(self, ClusterError::LeaderUnreachable { sent: true, .. })
    }

    /// Whether the operation failed because this node cannot reach a
    /// leader backed by a quorum (as opposed to, say, being slow to apply).
    pub fn quorum_unreachable(&self) -> bool {
        matches!(
            self,
            ClusterError::NoLeader(_)
                | ClusterError::NoQuorum(_)
                | ClusterError::LeaderUnreachable { .. }
        )
    }
}
