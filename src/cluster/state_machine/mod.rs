//! openraft's state machine over [`meta::StateMachine`]: entries are applied
//! one by one, each command's writes and the new `last_applied` in one
//! RocksDB batch, so a restart resumes exactly after the last applied entry.
//! An entry holding a batch of commands is applied command by command, each
//! write carrying how far the entry has come (`applying`), so a restart
//! resumes after the last command applied; a snapshot is never built from
//! part of an entry.
//!
//! Snapshots live in `snapshots/` as `<id>.snap` (the records) and
//! `<id>.meta` (their Raft metadata). A `.meta` is written last and durably,
//! so it always names a complete snapshot; older snapshots are removed only
//! after it. Anything else there (a snapshot being built or received, or
//! what a crash left) is swept only when the node starts.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::changes::BlobChanges;
use super::compaction::SnapshotDue;
use super::types::{
    Entry, LogId, Snapshot, SnapshotFile, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use super::{log_store, snapshot};
use crate::db::{self, Cf, Db, DbError};
use crate::meta::{self, Applied, Command, Outcome};
use crate::storage::Layout;

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
/// Present while a snapshot is being loaded, naming it; a node that finds
/// it at start holds half a state, and loads that snapshot again.
const INSTALLING: &[u8] = b"installing";
/// Present while a batched entry is part applied: how far it has come.
const APPLYING: &[u8] = b"applying";

/// How far the entry at `index` has been applied: its first `next`
/// commands, which journalled `events` events.
#[derive(Serialize, Deserialize)]
struct Applying {
    index: u64,
    next: usize,
    events: u32,
}

#[derive(Clone)]
pub struct StateMachineStore {
    db: Db,
    sm: meta::StateMachine,
    layout: Layout,
    /// Blobs whose holders the applied entries changed, for repair.
    changes: BlobChanges,
    /// Held while a batched entry is applied, and while a snapshot's view is
    /// taken: a snapshot holds whole entries only.
    whole: Arc<Mutex<()>>,
    /// Commands applied since the last snapshot.
    due: SnapshotDue,
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
            changes: BlobChanges::default(),
            whole: Arc::default(),
            due: SnapshotDue::default(),
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

    /// How many commands were applied since the last snapshot.
    pub fn snapshot_due(&self) -> SnapshotDue {
        self.due.clone()
    }

    /// What repair follows: the blobs whose holders applied entries changed.
    pub fn blob_changes(&self) -> BlobChanges {
        self.changes.clone()
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

    fn apply_one(&self, entry: &Entry) -> Result<Outcome, DbError> {
        let (batch, outcome) = match &entry.payload {
            EntryPayload::Blank => (WriteBatch::default(), vec![]),
            EntryPayload::Normal(Command::Batch(cmds)) => return self.apply_batch(entry, cmds),
            EntryPayload::Normal(cmd) => {
                let (batch, applied, _) = self.stage(entry, cmd, 0)?;
                (batch, vec![applied])
            }
            EntryPayload::Membership(m) => {
                let mut batch = WriteBatch::default();
                let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                batch.put_cf(self.db.cf(Cf::SmMeta), MEMBERSHIP, db::encode(&stored));
                (batch, vec![])
            }
        };
        self.finish_entry(entry, batch)?;
        if let (EntryPayload::Normal(cmd), [Ok(())]) = (&entry.payload, &outcome[..]) {
            self.changes.applied(cmd);
        }
        Ok(outcome)
    }

    /// The writes of `cmd`, in `entry`, with its events numbered from
    /// `first`; its result, and how many events it journalled.
    fn stage(
        &self,
        entry: &Entry,
        cmd: &Command,
        first: u32,
    ) -> Result<(WriteBatch, Applied, u32), DbError> {
        let index = entry.log_id.index;
        let mut staged = meta::Batch::default();
        let applied = self.sm.stage(cmd, &mut staged, index)?;
        let (mut batch, changes) = staged.into_parts();
        // Its events, in the same batch: they exist exactly when the
        // change does.
        let events = match applied {
            Ok(()) => self.sm.journal(&mut batch, index, first, cmd, changes)?,
            Err(_) => 0,
        };
        Ok((batch, applied, events))
    }

    /// Writes an entry's last batch, which marks it applied.
    fn finish_entry(&self, entry: &Entry, mut batch: WriteBatch) -> Result<(), DbError> {
        batch.put_cf(
            self.db.cf(Cf::SmMeta),
            LAST_APPLIED,
            db::encode(&Some(entry.log_id)),
        );
        // Not synced: the Raft log is, and replays anything lost here.
        Ok(self.db.raw().write(batch)?)
    }

    /// Applies a batched entry command by command: each command sees the
    /// ones before it. Each write records how far the entry has come, so an
    /// entry replayed after a crash skips what was applied; those commands
    /// answer `Ok` (nobody waits for a replayed entry's results).
    fn apply_batch(&self, entry: &Entry, cmds: &[Command]) -> Result<Outcome, DbError> {
        let _whole = self.whole.lock().unwrap_or_else(|p| p.into_inner());
        let index = entry.log_id.index;
        let sm_meta = self.db.cf(Cf::SmMeta);
        let (start, mut events) = match self.get::<Applying>(APPLYING)? {
            Some(a) if a.index == index => (a.next, a.events),
            _ => (0, 0),
        };
        let mut outcome = vec![Ok(()); start.min(cmds.len())];
        for (i, cmd) in cmds.iter().enumerate().skip(start) {
            let (mut batch, applied, journalled) = self.stage(entry, cmd, events)?;
            events += journalled;
            if i + 1 < cmds.len() {
                let next = Applying {
                    index,
                    next: i + 1,
                    events,
                };
                batch.put_cf(sm_meta, APPLYING, db::encode(&next));
                self.db.raw().write(batch)?;
            } else {
                batch.delete_cf(sm_meta, APPLYING);
                self.finish_entry(entry, batch)?;
            }
            if applied.is_ok() {
                self.changes.applied(cmd);
            }
            outcome.push(applied);
        }
        if cmds.len() <= start {
            let mut batch = WriteBatch::default();
            batch.delete_cf(sm_meta, APPLYING);
            self.finish_entry(entry, batch)?;
        }
        Ok(outcome)
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
        let view = {
            let _whole = self.whole.lock().unwrap_or_else(|p| p.into_inner());
            self.due.began();
            self.db.raw().snapshot()
        };
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
        self.due.built(records);
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
        // A part-applied entry the snapshot replaces starts afresh.
        done.delete_cf(sm, APPLYING);
        self.db.write_durable(done).map_err(io::Error::other)?;
        self.changes.lose_track();
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        let outcomes: Vec<Outcome> = blocking(move || {
            entries
                .iter()
                .map(|e| {
                    this.apply_one(e)
                        .map_err(|err| StorageIOError::apply(e.log_id, &err).into())
                })
                .collect()
        })
        .await?;
        let commands = outcomes.iter().map(|o| o.len() as u64).sum();
        self.due.applied(commands);
        Ok(outcomes)
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
mod tests;
