//! openraft's state machine over [`meta::StateMachine`]: entries are applied
//! one by one, each command's writes and the new `last_applied` in one
//! RocksDB batch, so a restart resumes exactly after the last applied entry.
//!
//! Snapshots live in `snapshots/` as `<id>.snap` (the records) and
//! `<id>.meta` (their Raft metadata). A `.meta` is written last and durably,
//! so it always names a complete snapshot; older snapshots are removed only
//! after it. Anything else there (a snapshot being built or received, or
//! what a crash left) is swept only when the node starts.

use std::io;
use std::path::PathBuf;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::types::{
    Entry, LogId, Snapshot, SnapshotFile, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::{log_store, snapshot};
use crate::db::{self, Cf, Db, DbError};
use crate::meta::{self, Applied};
use crate::storage::Layout;

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
/// Present while a snapshot is being loaded, naming it; a node that finds
/// it at start holds half a state, and loads that snapshot again.
const INSTALLING: &[u8] = b"installing";

#[derive(Clone)]
pub struct StateMachineStore {
    db: Db,
    sm: meta::StateMachine,
    layout: Layout,
}

/// What the sidecar `.meta` file of a snapshot holds.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("cannot tidy the snapshot directory {}: {source}", dir.display())]
    Snapshots { dir: PathBuf, source: io::Error },
}

impl StateMachineStore {
    /// Opens the state machine and turns what a crash left into a state
    /// openraft can start from: after an interrupted install the state
    /// machine is emptied, and a log that can no longer bring the state
    /// machine up to date is dropped, so that the leader sends a snapshot.
    pub fn open(db: Db, layout: Layout) -> Result<StateMachineStore, OpenError> {
        let store = StateMachineStore {
            sm: meta::StateMachine::new(db.clone()),
            db,
            layout,
        };
        let interrupted = match store.db.get(Cf::SmMeta, INSTALLING)? {
            None => false,
            Some(marker) => !store.resume_install(&marker)?,
        };
        let applied = store.last_applied()?;
        let reached = log_store::reaches(&store.db, applied)?;
        // An emptied state machine keeps no snapshot: openraft would take
        // it for the state it holds, and skip a resent one.
        let keep = match reached && !interrupted {
            true => store.current().map_err(|e| store.dir_error(e))?,
            false => None,
        };
        store
            .sweep(keep.map(|s| s.meta.snapshot_id).as_deref())
            .map_err(|e| store.dir_error(e))?;
        if !reached {
            // openraft would replay the entries after `applied` from a log
            // that no longer has them, and fail to start.
            tracing::warn!(
                applied = ?applied.map(|a| a.index),
                "the Raft log starts after the state machine's last entry; dropped it and the local snapshots, the leader will send a fresh snapshot"
            );
            log_store::restart_from(&store.db, applied)?;
        }
        store.complete_indexes()?;
        Ok(store)
    }

    /// Rebuilds the derived families when they are incomplete: data an
    /// older berth wrote, or a snapshot that did not carry them.
    fn complete_indexes(&self) -> Result<(), DbError> {
        if self.sm.indexes_complete()? {
            return Ok(());
        }
        tracing::info!("indexing what manifests reference; once after an upgrade");
        let manifests = self.sm.rebuild_indexes()?;
        tracing::info!(manifests, "indexed what manifests reference");
        Ok(())
    }

    /// Finishes an install a crash interrupted, from its snapshot file
    /// (complete and fsynced before loading began); whether it could. The
    /// log after the snapshot stays: this node may have acknowledged those
    /// entries, and must not forget them. Without a usable file the state
    /// machine is emptied and the leader asked for the snapshot again.
    fn resume_install(&self, marker: &[u8]) -> Result<bool, OpenError> {
        self.clear()?;
        let meta = db::decode::<SnapshotMeta>("snapshot install marker", marker).ok();
        let file = meta.as_ref().map(|m| self.snapshot_paths(&m.snapshot_id).0);
        if let (Some(meta), Some(path)) = (meta, file.filter(|p| p.is_file())) {
            tracing::warn!(snapshot = %meta.snapshot_id, "a snapshot install was interrupted; loading it again from its file");
            match self.install(&meta, &SnapshotFile { path }) {
                Ok(()) => return Ok(true),
                Err(e) => {
                    tracing::error!(error = %e, "the interrupted snapshot cannot be loaded again")
                }
            }
            self.clear()?;
        }
        tracing::warn!(
            "a snapshot install was interrupted; starting from an empty state to receive it again"
        );
        Ok(false)
    }

    fn dir_error(&self, source: io::Error) -> OpenError {
        OpenError::Snapshots {
            dir: self.layout.snapshots_dir(),
            source,
        }
    }

    /// Empties the replicated families and the state machine's metadata.
    fn clear(&self) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        for cf in Cf::REPLICATED.into_iter().chain([Cf::SmMeta]) {
            batch.delete_range_cf(self.db.cf(cf), [0u8].as_slice(), [0xffu8; 4].as_slice());
        }
        self.db.write_durable(batch)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.db
            .get(Cf::SmMeta, key)?
            .map(|v| db::decode("state machine metadata", &v))
            .transpose()
    }

    fn last_applied(&self) -> Result<Option<LogId>, DbError> {
        Ok(self.get::<Option<LogId>>(LAST_APPLIED)?.flatten())
    }

    fn apply_one(&self, entry: &Entry) -> Result<Applied, DbError> {
        let index = entry.log_id.index;
        let (mut batch, applied) = match &entry.payload {
            EntryPayload::Blank => (WriteBatch::default(), Ok(())),
            EntryPayload::Normal(cmd) => {
                let mut staged = meta::Batch::default();
                let applied = self.sm.stage(cmd, &mut staged, index)?;
                let (mut batch, changes) = staged.into_parts();
                if applied.is_ok() {
                    // Its events, in the same batch: they exist exactly
                    // when the change does.
                    self.sm.journal(&mut batch, index, cmd, changes)?;
                }
                (batch, applied)
            }
            EntryPayload::Membership(m) => {
                let mut batch = WriteBatch::default();
                let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                batch.put_cf(self.db.cf(Cf::SmMeta), MEMBERSHIP, db::encode(&stored));
                (batch, Ok(()))
            }
        };
        batch.put_cf(
            self.db.cf(Cf::SmMeta),
            LAST_APPLIED,
            db::encode(&Some(entry.log_id)),
        );
        // Not synced: the Raft log is, and replays anything lost here.
        self.db.raw().write(batch)?;
        Ok(applied)
    }

    fn snapshot_paths(&self, id: &str) -> (PathBuf, PathBuf) {
        let dir = self.layout.snapshots_dir();
        (
            dir.join(format!("{id}.snap")),
            dir.join(format!("{id}.meta")),
        )
    }

    /// Every complete snapshot on disk: a `.meta` that decodes, beside its
    /// `.snap`.
    fn snapshots(&self) -> io::Result<Vec<SnapshotMeta>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(self.layout.snapshots_dir())? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "meta") {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match db::decode::<StoredSnapshot>("snapshot metadata", &bytes) {
                Ok(s) if self.snapshot_paths(&s.meta.snapshot_id).0.exists() => found.push(s.meta),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable snapshot metadata")
                }
            }
        }
        Ok(found)
    }

    /// The newest complete snapshot on disk, if any.
    fn current(&self) -> io::Result<Option<Snapshot>> {
        let newest = self.snapshots()?.into_iter().max_by_key(|m| m.last_log_id);
        Ok(newest.map(|meta| {
            let (path, _) = self.snapshot_paths(&meta.snapshot_id);
            Snapshot {
                meta,
                snapshot: Box::new(SnapshotFile { path }),
            }
        }))
    }

    /// Makes `meta`, whose `.snap` is complete and fsynced, a current
    /// snapshot: its `.meta` goes to disk durably before any older snapshot
    /// is removed, so a crash at any point leaves one to read. Snapshots
    /// still being built or received have no `.meta` yet and are left alone.
    fn publish(&self, meta: &SnapshotMeta) -> io::Result<()> {
        let (_, meta_path) = self.snapshot_paths(&meta.snapshot_id);
        let stored = db::encode(&StoredSnapshot { meta: meta.clone() });
        snapshot::write_durably(&meta_path, &stored)?;
        let older = self
            .snapshots()?
            .into_iter()
            .filter(|m| m.snapshot_id != meta.snapshot_id && m.last_log_id <= meta.last_log_id);
        for old in older {
            let (snap, meta_path) = self.snapshot_paths(&old.snapshot_id);
            // The `.meta` first: a `.snap` alone is swept at start, while a
            // `.meta` alone would name a snapshot that is gone.
            remove_if_present(&meta_path)?;
            remove_if_present(&snap)?;
        }
        Ok(())
    }

    /// At start, when no snapshot is being built or received: removes every
    /// file in `snapshots/` but the snapshot `keep`.
    fn sweep(&self, keep: Option<&str>) -> io::Result<()> {
        let kept = keep.map(|id| self.snapshot_paths(id));
        for entry in std::fs::read_dir(self.layout.snapshots_dir())? {
            let path = entry?.path();
            if kept.as_ref().is_some_and(|(s, m)| path == *s || path == *m) {
                continue;
            }
            tracing::info!(path = %path.display(), "removing a leftover snapshot file");
            remove_if_present(&path)?;
        }
        Ok(())
    }

    fn build(&self) -> io::Result<Snapshot> {
        let view = self.db.raw().snapshot();
        let read = |key: &[u8]| -> io::Result<Option<Vec<u8>>> {
            view.get_cf(self.db.cf(Cf::SmMeta), key)
                .map_err(io::Error::other)
        };
        let decode_err = |e: DbError| io::Error::other(e.to_string());
        let last_applied: Option<LogId> = match read(LAST_APPLIED)? {
            Some(v) => db::decode("last applied", &v).map_err(decode_err)?,
            None => None,
        };
        let membership: StoredMembership = match read(MEMBERSHIP)? {
            Some(v) => db::decode("membership", &v).map_err(decode_err)?,
            None => StoredMembership::default(),
        };
        let id = match last_applied {
            Some(l) => format!(
                "{}-{}-{:08x}",
                l.leader_id.term,
                l.index,
                rand::random::<u32>()
            ),
            None => format!("0-0-{:08x}", rand::random::<u32>()),
        };
        let (path, _) = self.snapshot_paths(&id);
        let records = snapshot::write(&self.db, &view, &path)?;
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id: id,
        };
        self.publish(&meta)?;
        tracing::info!(snapshot = %meta.snapshot_id, records, "built a state-machine snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path }),
        })
    }

    fn install(&self, meta: &SnapshotMeta, file: &SnapshotFile) -> io::Result<()> {
        // The file goes to its own name first, and the marker names it, so
        // a crash while loading can load it again (`resume_install`).
        let (snap, _) = self.snapshot_paths(&meta.snapshot_id);
        if file.path != snap {
            std::fs::rename(&file.path, &snap)?;
            snapshot::sync_dir(&self.layout.snapshots_dir())?;
        }
        let mut mark = WriteBatch::default();
        mark.put_cf(self.db.cf(Cf::SmMeta), INSTALLING, db::encode(meta));
        self.db.write_durable(mark).map_err(io::Error::other)?;
        tracing::info!(snapshot = %meta.snapshot_id, "loading a snapshot from the leader");
        let records = snapshot::load(&self.db, &snap)?;
        self.complete_indexes().map_err(io::Error::other)?;
        // Published while still marked: a crash before the mark goes starts
        // over from empty, and one after it leaves this snapshot to serve.
        self.publish(meta)?;
        let mut done = WriteBatch::default();
        let sm = self.db.cf(Cf::SmMeta);
        done.put_cf(sm, LAST_APPLIED, db::encode(&meta.last_log_id));
        done.put_cf(sm, MEMBERSHIP, db::encode(&meta.last_membership));
        done.delete_cf(sm, INSTALLING);
        self.db.write_durable(done).map_err(io::Error::other)?;
        tracing::info!(snapshot = %meta.snapshot_id, records, "installed a snapshot from the leader");
        Ok(())
    }
}

fn remove_if_present(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

/// Runs blocking storage work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f).await.map_err(sm_err)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        blocking(move || this.build().map_err(snap_err)).await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last = self.last_applied().map_err(sm_err)?;
        let membership = self.get(MEMBERSHIP).map_err(sm_err)?.unwrap_or_default();
        Ok((last, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        blocking(move || {
            entries
                .iter()
                .map(|e| {
                    this.apply_one(e)
                        .map_err(|err| StorageIOError::apply(e.log_id, &err).into())
                })
                .collect()
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let path = snapshot::incoming_path(&self.layout.snapshots_dir());
        Ok(Box::new(SnapshotFile { path }))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let (this, meta) = (self.clone(), meta.clone());
        blocking(move || this.install(&meta, &snapshot).map_err(snap_err)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let this = self.clone();
        blocking(move || this.current().map_err(snap_err)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use openraft::storage::RaftLogStorage;
    use openraft::CommittedLeaderId;

    use super::*;
    use crate::cluster::log_store::LogStore;
    use crate::cluster::network::Network;
    use crate::cluster::peer::{PeerPool, Secret};
    use crate::cluster::types::{Raft, Vote};

    struct Node {
        db: Db,
        layout: Layout,
        _dir: tempfile::TempDir,
    }

    fn node() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.create().unwrap();
        let db = Db::open(&layout.db()).unwrap();
        Node {
            db,
            layout,
            _dir: dir,
        }
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn store(n: &Node) -> StateMachineStore {
        StateMachineStore {
            sm: meta::StateMachine::new(n.db.clone()),
            db: n.db.clone(),
            layout: n.layout.clone(),
        }
    }

    /// Starts openraft on the node's storage, as a restarted node does.
    async fn start(n: &Node) -> Result<Raft, String> {
        let sm =
            StateMachineStore::open(n.db.clone(), n.layout.clone()).map_err(|e| e.to_string())?;
        let config = Arc::new(openraft::Config::default().validate().unwrap());
        let network = Network::new(PeerPool::new(Secret::none()));
        let log = LogStore::new(n.db.clone(), Default::default());
        Raft::new(1, config, network, log, sm)
            .await
            .map_err(|e| e.to_string())
    }

    /// A complete snapshot at `last`, as a build or an install leaves it.
    fn snapshot_at(n: &Node, id: &str, last: LogId) -> SnapshotMeta {
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: StoredMembership::default(),
            snapshot_id: id.into(),
        };
        let (snap, meta_path) = store(n).snapshot_paths(id);
        std::fs::write(snap, b"records").unwrap();
        std::fs::write(
            meta_path,
            db::encode(&StoredSnapshot { meta: meta.clone() }),
        )
        .unwrap();
        meta
    }

    fn files(n: &Node) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(n.layout.snapshots_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_node_killed_while_installing_starts_empty_and_waits_for_a_snapshot() {
        let n = node();
        let vote = Vote::new(3, 2);
        let mut log = LogStore::new(n.db.clone(), Default::default());
        log.save_vote(&vote).await.unwrap();
        // openraft purges the log up to the snapshot while it is loaded.
        log_store::restart_from(&n.db, Some(log_id(2, 6000))).unwrap();
        let mut half = WriteBatch::default();
        half.put_cf(n.db.cf(Cf::SmMeta), INSTALLING, [1u8]);
        half.put_cf(n.db.cf(Cf::Repos), b"half", b"loaded");
        n.db.write_durable(half).unwrap();
        snapshot_at(&n, "1-5000-old", log_id(1, 5000));
        std::fs::write(n.layout.snapshots_dir().join("2-6000-x.snap"), b"rec").unwrap();

        let raft = start(&n).await.expect("the node starts");
        raft.shutdown().await.unwrap();

        let sm = store(&n);
        assert_eq!(sm.last_applied().unwrap(), None);
        assert_eq!(n.db.get(Cf::Repos, b"half").unwrap(), None);
        assert!(log_store::reaches(&n.db, None).unwrap());
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), None);
        assert!(files(&n).is_empty(), "{:?}", files(&n));
    }

    #[tokio::test]
    async fn an_install_killed_midway_loads_its_file_again_and_keeps_the_log() {
        let n = node();
        let at = log_id(2, 6000);
        let mut state = WriteBatch::default();
        state.put_cf(n.db.cf(Cf::Repos), b"kept", b"1");
        state.put_cf(n.db.cf(Cf::SmMeta), LAST_APPLIED, db::encode(&Some(at)));
        n.db.write_durable(state).unwrap();
        let built = store(&n).build().unwrap();
        // Killed while loading it: half a state, the marker naming it, and
        // the log purged up to it, with entries after it acknowledged.
        let mut half = WriteBatch::default();
        half.delete_cf(n.db.cf(Cf::Repos), b"kept");
        half.put_cf(n.db.cf(Cf::Repos), b"half", b"loaded");
        half.put_cf(n.db.cf(Cf::SmMeta), INSTALLING, db::encode(&built.meta));
        half.delete_cf(n.db.cf(Cf::SmMeta), LAST_APPLIED);
        n.db.write_durable(half).unwrap();
        log_store::restart_from(&n.db, Some(at)).unwrap();

        let sm = StateMachineStore::open(n.db.clone(), n.layout.clone()).unwrap();
        assert_eq!(sm.last_applied().unwrap(), Some(at));
        assert_eq!(
            n.db.get(Cf::Repos, b"kept").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        assert_eq!(n.db.get(Cf::Repos, b"half").unwrap(), None);
        assert_eq!(n.db.get(Cf::SmMeta, INSTALLING).unwrap(), None);
        let mut log = LogStore::new(n.db.clone(), Default::default());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(at), "the log was kept");
        let current = sm.current().unwrap().expect("the snapshot is served");
        assert_eq!(current.meta.snapshot_id, built.meta.snapshot_id);
    }

    #[tokio::test]
    async fn a_log_purged_past_the_state_machine_restarts_from_it() {
        // Killed after openraft purged the log for an install, before the
        // install began: the state machine is whole but behind the log.
        let n = node();
        let applied = log_id(1, 40);
        let mut batch = WriteBatch::default();
        batch.put_cf(
            n.db.cf(Cf::SmMeta),
            LAST_APPLIED,
            db::encode(&Some(applied)),
        );
        n.db.write_durable(batch).unwrap();
        log_store::restart_from(&n.db, Some(log_id(2, 6000))).unwrap();

        let raft = start(&n).await.expect("the node starts");
        raft.shutdown().await.unwrap();

        assert_eq!(store(&n).last_applied().unwrap(), Some(applied));
        let mut log = LogStore::new(n.db.clone(), Default::default());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(applied));
        assert_eq!(state.last_log_id, Some(applied));
        // openraft rebuilt a snapshot of what the node holds, to serve.
        let current = store(&n).current().unwrap().expect("a snapshot");
        assert_eq!(current.meta.last_log_id, Some(applied));
    }

    #[test]
    fn a_new_snapshot_leaves_a_part_being_received() {
        let n = node();
        let sm = store(&n);
        let part = snapshot::incoming_path(&n.layout.snapshots_dir());
        std::fs::write(&part, b"half received").unwrap();
        let first = sm.build().unwrap();
        let second = sm.build().unwrap();
        assert!(part.exists(), "a part being received was removed");
        let id = &second.meta.snapshot_id;
        let mut want = vec![format!("{id}.meta"), format!("{id}.snap")];
        want.push(part.file_name().unwrap().to_string_lossy().into_owned());
        want.sort();
        assert_eq!(
            files(&n),
            want,
            "{} was not removed",
            first.meta.snapshot_id
        );
    }

    #[test]
    fn a_crash_before_old_snapshots_go_leaves_the_newest_readable() {
        let n = node();
        let sm = store(&n);
        let old = snapshot_at(&n, "1-5000-a", log_id(1, 5000));
        let new = snapshot_at(&n, "2-10000-b", log_id(2, 10000));
        // The old `.meta` looks newer on disk (copied, or the clock moved).
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let (_, old_meta) = sm.snapshot_paths(&old.snapshot_id);
        std::fs::File::options()
            .write(true)
            .open(&old_meta)
            .unwrap()
            .set_modified(later)
            .unwrap();
        // A newer `.meta` whose `.snap` is gone names nothing to send.
        let gone = snapshot_at(&n, "2-15000-c", log_id(2, 15000));
        std::fs::remove_file(sm.snapshot_paths(&gone.snapshot_id).0).unwrap();
        let current = sm.current().unwrap().expect("a snapshot");
        assert_eq!(current.meta.snapshot_id, new.snapshot_id);

        // At start, everything but the newest complete snapshot goes.
        std::fs::write(n.layout.snapshots_dir().join("2-20000-d.tmp"), b"m").unwrap();
        drop(StateMachineStore::open(n.db.clone(), n.layout.clone()).unwrap());
        let id = &new.snapshot_id;
        assert_eq!(files(&n), vec![format!("{id}.meta"), format!("{id}.snap")]);
    }
}
