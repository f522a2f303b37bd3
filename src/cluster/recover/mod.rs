//! Recovery of a cluster that lost a majority of its voters for good
//! (`berth cluster recover`), offline, on one stopped survivor.
//!
//! Raft cannot commit anything without a majority, so no online change can
//! shrink such a cluster. This rewrites the survivor's own storage instead:
//! after its last log entry it appends a membership entry naming itself as
//! the only voter, in a term above every term it has seen, and records its
//! vote for itself in that term. openraft takes the last membership entry in
//! the log as the effective one, so the started node is the one voter; a
//! single voter elects itself on its first tick, and its first entry as
//! leader commits everything before it. Nothing else is dropped: the log,
//! the state machine, the snapshots and the local blobs stay as they are.
//!
//! A restore from a backup (`berth restore`, [`Offline::restore`]) ends
//! the same way: a new node gets the backup's snapshot and is made the only
//! voter of the cluster it describes by the same rule.
//!
//! The vanished members need no clean-up of their own: repair counts only
//! holders that are members, so their holder records stop counting, and the
//! blobs they held are copied again once new nodes join.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader};
use rocksdb::WriteBatch;

use super::log_store::{self, Committed, LogStore};
use super::snapshot;
pub use super::snapshot::{write_durably, Records};
use super::state_machine::StateMachineStore;
use super::types::{
    Entry, LogId, NodeAddr, NodeId, SnapshotFile, SnapshotMeta, StoredMembership, Vote,
};
use crate::db::{self, keys, Cf, Db, DbError};
use crate::meta::StateMachine;
use crate::oci::Digest;
use crate::storage::{format, identity, BlobStore, Layout};

mod report;
#[cfg(test)]
use report::render_blobs;
pub use report::{render, BlobReport, LostBlob};

/// The state machine's records in `sm_meta` (see `db::keys`), read here
/// without opening the state machine, which would tidy the directory.
const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
const INSTALLING: &[u8] = b"installing";

/// Where a restored node is listed until it starts: then it leads, and a
/// leader listed at an address it does not have corrects its own entry.
const RESTORED_ADDR: &str = "restored.invalid:0";

/// Lost blobs listed one by one; the rest are counted.
pub const LOST_SHOWN: usize = 20;
/// References shown per lost blob.
const REFS_SHOWN: usize = 3;
/// Blobs read per metadata page.
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{}: not a berth data directory ({why})", dir.display())]
    NotDataDir { dir: PathBuf, why: String },
    #[error(
        "{}: the node appears to be running (its database is locked: {detail}). Stop it \
         first (and make sure nothing else has the directory open), then run this again",
        dir.display()
    )]
    Running { dir: PathBuf, detail: String },
    #[error("{}: {source}", dir.display())]
    Format {
        dir: PathBuf,
        source: format::FormatError,
    },
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Storage(String),
    #[error("{0}")]
    Refused(String),
}

fn storage_err(e: impl std::fmt::Display) -> RecoverError {
    RecoverError::Storage(e.to_string())
}

/// A stopped node's data directory, its database open (and locked, so the
/// node cannot start meanwhile).
pub struct Offline {
    layout: Layout,
    db: Db,
    node_id: NodeId,
}

impl Offline {
    /// Opens the data directory of a stopped node. Refuses a directory with
    /// no node in it, and one whose database another process holds.
    pub fn open(dir: &Path) -> Result<Offline, RecoverError> {
        let layout = Layout::new(dir);
        let not = |why: &str| RecoverError::NotDataDir {
            dir: dir.to_owned(),
            why: why.to_owned(),
        };
        if !layout.node_id().is_file() {
            return Err(not("no node-id file"));
        }
        // RocksDB would create a missing database; there must be one.
        if !layout.db().join("CURRENT").is_file() {
            return Err(not("no database in db/"));
        }
        format::check(&layout).map_err(|source| RecoverError::Format {
            dir: dir.to_owned(),
            source,
        })?;
        let node_id = identity::load_or_create(&layout).map_err(storage_err)?;
        let db = Db::open(&layout.db()).map_err(|e| match e {
            DbError::Rocks(ref r) if r.to_string().to_ascii_lowercase().contains("lock") => {
                RecoverError::Running {
                    dir: dir.to_owned(),
                    detail: r.to_string(),
                }
            }
            e => e.into(),
        })?;
        Ok(Offline {
            layout,
            db,
            node_id,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    fn log(&self) -> LogStore {
        LogStore::new(self.db.clone(), Committed::default())
    }

    fn sm_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.db
            .get(Cf::SmMeta, key)?
            .map(|v| db::decode("state machine metadata", &v))
            .transpose()
    }

    /// What the node's Raft storage holds, read without changing it.
    pub async fn raft_state(&self) -> Result<RaftState, RecoverError> {
        let mut log = self.log();
        let vote = log.read_vote().await.map_err(storage_err)?;
        let committed = log.read_committed().await.map_err(storage_err)?;
        let state = log.get_log_state().await.map_err(storage_err)?;
        let applied = self.sm_meta::<Option<LogId>>(LAST_APPLIED)?.flatten();
        let applied_membership: StoredMembership = self.sm_meta(MEMBERSHIP)?.unwrap_or_default();
        // As openraft does at start: the last membership entry in the log
        // after the state machine's, else the state machine's own.
        let after = applied.map_or(0, |a| a.index + 1);
        let start = after.max(state.last_purged_log_id.map_or(0, |p| p.index + 1));
        let entries = log
            .try_get_log_entries(start..)
            .await
            .map_err(storage_err)?;
        let membership = entries
            .iter()
            .rev()
            .find_map(|e| match &e.payload {
                EntryPayload::Membership(m) => {
                    Some(StoredMembership::new(Some(e.log_id), m.clone()))
                }
                _ => None,
            })
            .unwrap_or(applied_membership);
        Ok(RaftState {
            vote,
            last_log: state.last_log_id,
            last_purged: state.last_purged_log_id,
            committed,
            applied,
            membership,
            installing: self.db.get(Cf::SmMeta, INSTALLING)?.is_some(),
            log_reaches: log_store::reaches(&self.db, applied)?,
        })
    }

    /// What recovery would do to this node.
    pub async fn plan(&self) -> Result<Plan, RecoverError> {
        let state = self.raft_state().await?;
        let m = state.membership.membership();
        let Some(addr) = m.get_node(&self.node_id).cloned() else {
            return Err(RecoverError::Refused(format!(
                "node {} is not in the membership it last knew (voters {:?}): it never joined the \
                 cluster, so it holds none of its data. Recover a node that was a member",
                self.node_id,
                m.voter_ids().collect::<Vec<_>>()
            )));
        };
        let voters: Vec<NodeId> = m.voter_ids().collect();
        let others: Vec<(NodeId, NodeAddr, bool)> = m
            .nodes()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, n)| (*id, n.clone(), voters.contains(id)))
            .collect();
        let (entry, vote) = sole_voter(self.node_id, addr.clone(), &state);
        Ok(Plan {
            node_id: self.node_id,
            addr,
            was_voter: voters.contains(&self.node_id),
            already_alone: others.is_empty() && voters == [self.node_id],
            dropped: others,
            entry: entry.log_id,
            vote,
            state,
        })
    }

    /// Makes this node a one-node cluster: first tidies what an interrupted
    /// start or install left, as a start would (so that the start does not
    /// drop the new entry with a log it cannot use), then plans again and
    /// writes the plan. Returns what it did.
    pub async fn recover(&self) -> Result<Plan, RecoverError> {
        drop(StateMachineStore::open(self.db.clone(), self.layout.clone()).map_err(storage_err)?);
        let plan = self.plan().await?;
        if plan.already_alone {
            return Ok(plan);
        }
        self.become_sole_voter(plan.addr.clone()).await?;
        Ok(plan)
    }

    /// Makes this node, listed at `addr`, the only voter of the cluster its
    /// storage describes ([`sole_voter`]), durably: what recovery and a
    /// restore from a backup both end with.
    async fn become_sole_voter(&self, addr: NodeAddr) -> Result<(), RecoverError> {
        let state = self.raft_state().await?;
        let (entry, vote) = sole_voter(self.node_id, addr, &state);
        write_sole_voter(&self.db, &entry, &vote).await
    }

    /// Makes a new node in `dir` (missing or empty) from a backup: the
    /// snapshot `snap` is installed as one from a leader would be (and kept,
    /// for nodes that join later), the log starts after it, and this node is
    /// the only voter. Blobs are the caller's: once they are in place, the
    /// started node records itself as their holder (repair's
    /// unrecorded-copy rule).
    pub async fn restore(
        dir: &Path,
        snap: &Path,
        meta: &SnapshotMeta,
    ) -> Result<Offline, RecoverError> {
        let layout = Layout::new(dir);
        format::check(&layout).map_err(|source| RecoverError::Format {
            dir: dir.to_owned(),
            source,
        })?;
        layout.create().map_err(storage_err)?;
        identity::load_or_create(&layout).map_err(storage_err)?;
        {
            let db = Db::open(&layout.db())?;
            let mut sm =
                StateMachineStore::open(db.clone(), layout.clone()).map_err(storage_err)?;
            let incoming = snapshot::incoming_path(&layout.snapshots_dir());
            std::fs::copy(snap, &incoming).map_err(storage_err)?;
            std::fs::File::open(&incoming)
                .and_then(|f| f.sync_all())
                .map_err(storage_err)?;
            sm.install_snapshot(meta, Box::new(SnapshotFile { path: incoming }))
                .await
                .map_err(storage_err)?;
            log_store::restart_from(&db, meta.last_log_id)?;
        }
        let off = Offline::open(dir)?;
        off.become_sole_voter(NodeAddr {
            peer: RESTORED_ADDR.into(),
            api: RESTORED_ADDR.into(),
        })
        .await?;
        Ok(off)
    }

    /// The blobs manifests reference that this node does not hold: unless
    /// another surviving node has them, they are lost. Lists at most
    /// `shown`, counts all.
    pub fn lost_blobs(&self, shown: usize) -> Result<BlobReport, RecoverError> {
        let sm = StateMachine::new(self.db.clone());
        let store = BlobStore::new(self.layout.clone(), self.db.clone());
        let mut report = BlobReport {
            indexed: sm.indexes_complete()?,
            ..BlobReport::default()
        };
        let mut after: Option<Digest> = None;
        loop {
            let page = sm.blobs_page(after.as_ref(), PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (digest, size) in page {
                report.known += 1;
                let indexed = store.stat(&digest).map_err(storage_err)?.is_some();
                if indexed && self.layout.blob(&digest).is_file() {
                    report.held += 1;
                    continue;
                }
                let refs = self.references(&digest)?;
                if refs.is_empty() {
                    report.unreferenced_missing += 1;
                    continue;
                }
                report.lost_count += 1;
                report.lost_bytes += size;
                if report.lost.len() < shown {
                    report.lost.push(LostBlob {
                        holders: sm.holders(&digest)?,
                        digest,
                        size,
                        more_refs: refs.len().saturating_sub(REFS_SHOWN),
                        refs: refs.into_iter().take(REFS_SHOWN).collect(),
                    });
                }
            }
        }
        Ok(report)
    }

    /// `repo@manifest` for every manifest that references `digest`.
    fn references(&self, digest: &Digest) -> Result<Vec<String>, RecoverError> {
        let prefix = keys::prefix(&[digest.as_str()]);
        let rows = self
            .db
            .scan_prefix(Cf::BlobRefs, &prefix, None, usize::MAX)?;
        Ok(rows
            .iter()
            .map(|(k, _)| {
                let rest = String::from_utf8_lossy(&k[prefix.len()..]);
                match rest.rsplit_once('\0') {
                    Some((repo, manifest)) => format!("{repo}@{manifest}"),
                    None => rest.into_owned(),
                }
            })
            .collect())
    }
}

/// A node's Raft storage as found.
#[derive(Clone, Debug)]
pub struct RaftState {
    pub vote: Option<Vote>,
    pub last_log: Option<LogId>,
    pub last_purged: Option<LogId>,
    pub committed: Option<LogId>,
    pub applied: Option<LogId>,
    /// The effective membership: the last one in the log, else the state
    /// machine's.
    pub membership: StoredMembership,
    /// A snapshot install was interrupted.
    pub installing: bool,
    /// The log still holds every entry after the state machine's last.
    pub log_reaches: bool,
}

impl RaftState {
    /// The highest term this node has seen, in its vote or its log.
    fn term(&self) -> u64 {
        [
            self.vote.map(|v| v.leader_id.term),
            self.last_log.map(|l| l.leader_id.term),
            self.applied.map(|l| l.leader_id.term),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// Whether the next start tidies something first (and the figures here
    /// may change with it).
    fn needs_tidy(&self) -> bool {
        self.installing || !self.log_reaches
    }
}

/// What recovery does to a node.
#[derive(Clone, Debug)]
pub struct Plan {
    pub node_id: NodeId,
    /// This node's address, as the membership lists it, kept.
    pub addr: NodeAddr,
    pub was_voter: bool,
    /// This node is already the one member: nothing to do.
    pub already_alone: bool,
    /// The other members, with whether each was a voter: they leave.
    pub dropped: Vec<(NodeId, NodeAddr, bool)>,
    /// Where the membership entry goes.
    pub entry: LogId,
    /// The vote recorded with it.
    pub vote: Vote,
    pub state: RaftState,
}

/// The one rule that makes a node the only voter of the cluster its storage
/// describes: a membership entry of it alone right after its last log entry,
/// in a term above every term it has seen, and its own vote in that term.
fn sole_voter(node: NodeId, addr: NodeAddr, state: &RaftState) -> (Entry, Vote) {
    let term = state.term() + 1;
    let index = state.last_log.map_or(0, |l| l.index + 1);
    let membership = Membership::new(
        vec![[node].into_iter().collect()],
        BTreeMap::from([(node, addr)]),
    );
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node), index),
        payload: EntryPayload::Membership(membership),
    };
    (entry, Vote::new(term, node))
}

/// Writes what [`sole_voter`] decided, durably: the vote first, so that a
/// crash in between leaves a node that merely voted for itself (recovery can
/// run again), never an entry from a term its vote has not reached.
async fn write_sole_voter(db: &Db, entry: &Entry, vote: &Vote) -> Result<(), RecoverError> {
    let mut log = LogStore::new(db.clone(), Committed::default());
    log.save_vote(vote).await.map_err(storage_err)?;
    // openraft's append needs a callback only openraft can make; the record
    // is the log's own: the entry under its index, big-endian.
    let mut batch = WriteBatch::default();
    batch.put_cf(
        db.cf(Cf::RaftLog),
        entry.log_id.index.to_be_bytes(),
        db::encode(entry),
    );
    db.write_durable(batch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::storage::RaftStateMachine;
    use openraft::RaftSnapshotBuilder;

    use super::*;
    use crate::cluster::network::Network;
    use crate::cluster::peer::{PeerPool, Secret};
    use crate::cluster::types::Raft;
    use crate::meta::{testing, Command};

    struct Dir {
        dir: tempfile::TempDir,
        layout: Layout,
    }

    /// A data directory of node 1, as a start creates it.
    fn data_dir() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        format::check(&layout).unwrap();
        layout.create().unwrap();
        std::fs::write(layout.node_id(), "1\n").unwrap();
        drop(Db::open(&layout.db()).unwrap());
        Dir { dir, layout }
    }

    fn addr(id: NodeId) -> NodeAddr {
        NodeAddr {
            peer: format!("n{id}:5001"),
            api: format!("n{id}:5000"),
        }
    }

    fn id(term: u64, leader: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, leader), index)
    }

    fn three_voters() -> Membership<NodeId, NodeAddr> {
        Membership::new(
            vec![[1, 2, 3].into_iter().collect()],
            (1..=3).map(|n| (n, addr(n))).collect::<BTreeMap<_, _>>(),
        )
    }

    fn put_entry(db: &Db, entry: &Entry) {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            db.cf(Cf::RaftLog),
            entry.log_id.index.to_be_bytes(),
            db::encode(entry),
        );
        db.write_durable(batch).unwrap();
    }

    /// The log of a three-voter cluster as node 1 keeps it: the membership
    /// at 0 (term 1, led by node 2), entries to 3 applied, and entries 4 and
    /// 5 of term 2 (led by node 3) not known to be committed.
    async fn three_node_log(d: &Dir) {
        let db = Db::open(&d.layout.db()).unwrap();
        let mut entries = vec![Entry {
            log_id: id(1, 2, 0),
            payload: EntryPayload::Membership(three_voters()),
        }];
        for i in 1..=3 {
            entries.push(Entry {
                log_id: id(1, 2, i),
                payload: EntryPayload::Blank,
            });
        }
        for i in 4..=5 {
            entries.push(Entry {
                log_id: id(2, 3, i),
                payload: EntryPayload::Blank,
            });
        }
        for e in &entries {
            put_entry(&db, e);
        }
        let mut log = LogStore::new(db.clone(), Committed::default());
        log.save_vote(&Vote::new_committed(2, 3)).await.unwrap();
        log.save_committed(Some(id(1, 2, 3))).await.unwrap();
        let mut sm = StateMachineStore::open(db.clone(), d.layout.clone()).unwrap();
        sm.apply(entries[..4].to_vec()).await.unwrap();
    }

    /// Every record of the Raft families, to tell whether anything changed.
    fn raft_records(d: &Dir) -> Vec<db::Row> {
        let db = Db::open(&d.layout.db()).unwrap();
        [Cf::RaftLog, Cf::RaftMeta, Cf::SmMeta]
            .into_iter()
            .flat_map(|cf| db.scan_prefix(cf, b"", None, usize::MAX).unwrap())
            .collect()
    }

    async fn start(d: &Dir) -> Raft {
        let id = identity::load_or_create(&d.layout).unwrap();
        let db = Db::open(&d.layout.db()).unwrap();
        let sm = StateMachineStore::open(db.clone(), d.layout.clone()).unwrap();
        let config = Arc::new(openraft::Config::default().validate().unwrap());
        let network = Network::new(PeerPool::new(Secret::none()));
        let log = LogStore::new(db, Committed::default());
        Raft::new(id, config, network, log, sm).await.unwrap()
    }

    #[tokio::test]
    async fn a_three_voter_node_becomes_a_one_node_cluster_that_commits() {
        let d = data_dir();
        three_node_log(&d).await;
        let before = raft_records(&d);

        let off = Offline::open(d.dir.path()).unwrap();
        let plan = off.plan().await.unwrap();
        assert_eq!(plan.node_id, 1);
        assert_eq!(plan.addr, addr(1));
        assert!(plan.was_voter && !plan.already_alone);
        let dropped: Vec<NodeId> = plan.dropped.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(dropped, [2, 3]);
        assert_eq!(plan.state.last_log, Some(id(2, 3, 5)));
        assert_eq!(plan.state.applied, Some(id(1, 2, 3)));
        assert_eq!(plan.entry, id(3, 1, 6));
        assert_eq!(plan.vote, Vote::new(3, 1));
        let text = render(d.dir.path(), &plan, &off.lost_blobs(5).unwrap(), false);
        assert!(text.contains("entries 4..=5"), "{text}");
        drop(off);
        assert_eq!(raft_records(&d), before, "planning changed the storage");

        let off = Offline::open(d.dir.path()).unwrap();
        off.recover().await.unwrap();
        let again = off.plan().await.unwrap();
        let voters: Vec<NodeId> = again.state.membership.membership().voter_ids().collect();
        assert_eq!(voters, [1]);
        assert!(again.already_alone);
        drop(off);

        let raft = start(&d).await;
        let m = raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.current_leader == Some(1) && m.last_applied.is_some_and(|l| l.index >= 7),
                "node 1 leads and applies its first entry",
            )
            .await
            .expect("the recovered node elects itself and commits");
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        assert_eq!(voters, [1]);
        assert_eq!(
            m.membership_config.membership().get_node(&1),
            Some(&addr(1))
        );
        // Entries 4 and 5, which nobody knew to be committed, were applied
        // with the new leader's first entry (7), after the membership (6).
        assert!(m.current_term > 3);
        raft.client_write(Command::AddHolders {
            digest: Digest::sha256(b"x"),
            nodes: vec![1],
        })
        .await
        .expect("the one-node cluster takes writes");
        raft.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_node_whose_log_was_compacted_into_a_snapshot_recovers() {
        let d = data_dir();
        three_node_log(&d).await;
        {
            let db = Db::open(&d.layout.db()).unwrap();
            let mut sm = StateMachineStore::open(db.clone(), d.layout.clone()).unwrap();
            let snapshot = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            assert_eq!(snapshot.meta.last_log_id, Some(id(1, 2, 3)));
            let mut log = LogStore::new(db, Committed::default());
            log.purge(id(1, 2, 3)).await.unwrap();
        }
        let off = Offline::open(d.dir.path()).unwrap();
        let plan = off.recover().await.unwrap();
        assert_eq!(plan.state.last_purged, Some(id(1, 2, 3)));
        // The membership came from the state machine: the log no longer has it.
        assert_eq!(plan.state.membership.log_id(), &Some(id(1, 2, 0)));
        assert_eq!(plan.entry, id(3, 1, 6));
        drop(off);

        let raft = start(&d).await;
        raft.wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.current_leader == Some(1) && m.last_applied.is_some_and(|l| l.index >= 7),
                "node 1 leads and applies its first entry",
            )
            .await
            .expect("the recovered node elects itself and commits");
        raft.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_restored_snapshot_makes_a_new_node_the_one_voter() {
        // A backup: node 1's snapshot of a three-voter cluster with a blob.
        let d = data_dir();
        three_node_log(&d).await;
        let backup = tempfile::tempdir().unwrap();
        let (meta, snap, layer) = {
            let db = Db::open(&d.layout.db()).unwrap();
            let layer = testing::link(&StateMachine::new(db.clone()), "acme/app", b"layer", 1);
            let mut sm = StateMachineStore::open(db, d.layout.clone()).unwrap();
            let built = sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            let snap = backup.path().join("backup.snap");
            std::fs::copy(&built.snapshot.path, &snap).unwrap();
            (built.meta, snap, layer)
        };

        let target = tempfile::tempdir().unwrap();
        let dir = target.path().join("new");
        let off = Offline::restore(&dir, &snap, &meta).await.unwrap();
        let me = off.node_id();
        assert_ne!(me, 1, "a restored node is a new node");
        let state = off.raft_state().await.unwrap();
        let voters: Vec<NodeId> = state.membership.membership().voter_ids().collect();
        assert_eq!(voters, [me]);
        assert_eq!(state.applied, Some(id(1, 2, 3)));
        assert_eq!(state.last_log, Some(id(2, me, 4)));
        drop(off);

        let r = Dir {
            layout: Layout::new(&dir),
            dir: target,
        };
        let raft = start(&r).await;
        let m = raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.current_leader == Some(me) && m.last_applied.is_some_and(|l| l.index >= 5),
                "the restored node leads and applies its first entry",
            )
            .await
            .expect("the restored node elects itself and commits");
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        assert_eq!(voters, [me]);
        raft.client_write(Command::AddHolders {
            digest: layer.clone(),
            nodes: vec![me],
        })
        .await
        .expect("the restored cluster takes writes");
        // The backup's snapshot stays, for nodes that join later.
        assert!(raft.get_snapshot().await.unwrap().is_some());
        raft.shutdown().await.unwrap();
        let db = Db::open(&r.layout.db()).unwrap();
        let sm = StateMachine::new(db);
        assert_eq!(sm.blob_known(&layer).unwrap(), Some(5));
        assert!(sm.holders(&layer).unwrap().contains(&me));
    }

    #[tokio::test]
    async fn a_running_node_is_refused() {
        let d = data_dir();
        let held = Db::open(&d.layout.db()).unwrap();
        match Offline::open(d.dir.path()) {
            Err(RecoverError::Running { .. }) => {}
            other => panic!("expected a refusal, got {:?}", other.map(|o| o.node_id())),
        }
        drop(held);
        assert!(Offline::open(d.dir.path()).is_ok());
    }

    #[tokio::test]
    async fn a_directory_without_a_node_or_membership_is_refused() {
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Offline::open(empty.path()),
            Err(RecoverError::NotDataDir { .. })
        ));
        assert!(
            !Layout::new(empty.path()).db().exists(),
            "a database was created"
        );
        let d = data_dir();
        let off = Offline::open(d.dir.path()).unwrap();
        assert!(matches!(off.plan().await, Err(RecoverError::Refused(_))));
    }

    #[tokio::test]
    async fn lost_blobs_are_those_manifests_reference_and_this_node_lacks() {
        let d = data_dir();
        let db = Db::open(&d.layout.db()).unwrap();
        let sm = StateMachine::new(db.clone());
        let (config, layer) = (b"config".as_slice(), b"layer bytes".as_slice());
        let config_d = testing::link(&sm, "acme/app", config, 1);
        let layer_d = testing::link(&sm, "acme/app", layer, 1);
        testing::link(&sm, "acme/app", b"never referenced", 1);
        let body = testing::image_body(&[(&config_d, 6), (&layer_d, 11)]);
        testing::ok(
            &sm,
            testing::put("acme/app", &body, Some("v1"), &[&config_d, &layer_d], 2),
        );
        // This node holds the config only.
        let store = BlobStore::new(d.layout.clone(), db.clone());
        let tmp = d.layout.tmp_file();
        std::fs::write(&tmp, config).unwrap();
        store.adopt(&tmp, &config_d, 6).await.unwrap();
        drop((store, sm, db));

        let off = Offline::open(d.dir.path()).unwrap();
        let report = off.lost_blobs(10).unwrap();
        assert_eq!((report.known, report.held), (3, 1));
        assert_eq!((report.lost_count, report.lost_bytes), (1, 11));
        assert_eq!(report.unreferenced_missing, 1);
        let lost = &report.lost[0];
        assert_eq!(lost.digest, layer_d);
        assert_eq!(lost.holders, [1, 2]);
        let manifest = Digest::sha256(body.as_bytes());
        assert_eq!(lost.refs, [format!("acme/app@{manifest}")]);
        let mut out = String::new();
        render_blobs(&mut out, &report);
        assert!(out.contains(layer_d.as_str()), "{out}");

        // An indexed blob whose file is gone is not held either.
        std::fs::remove_file(d.layout.blob(&config_d)).unwrap();
        let report = off.lost_blobs(0).unwrap();
        assert_eq!((report.lost_count, report.lost.len()), (2, 0));
    }
}
