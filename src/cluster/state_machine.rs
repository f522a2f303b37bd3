//! openraft's state machine over [`meta::StateMachine`]: entries are applied
//! one by one, each command's writes and the new `last_applied` in one
//! RocksDB batch, so a restart resumes exactly after the last applied entry.

use std::path::PathBuf;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::snapshot;
use super::types::{
    Entry, LogId, Snapshot, SnapshotFile, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::db::{self, Cf, Db, DbError};
use crate::meta::{self, Applied};
use crate::storage::Layout;

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
/// Present while a snapshot is being loaded; a node that finds it at start
/// holds half a state and must start over from an empty one.
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

impl StateMachineStore {
    pub fn open(db: Db, layout: Layout) -> Result<StateMachineStore, DbError> {
        let store = StateMachineStore {
            sm: meta::StateMachine::new(db.clone()),
            db,
            layout,
        };
        if store.db.get(Cf::SmMeta, INSTALLING)?.is_some() {
            tracing::warn!("a snapshot install was interrupted; starting from an empty state to receive it again");
            let mut batch = WriteBatch::default();
            for cf in Cf::REPLICATED.into_iter().chain([Cf::SmMeta]) {
                batch.delete_range_cf(store.db.cf(cf), [0u8].as_slice(), [0xffu8; 4].as_slice());
            }
            store.db.write_durable(batch)?;
        }
        Ok(store)
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, DbError> {
        self.db
            .get(Cf::SmMeta, key)?
            .map(|v| db::decode("state machine metadata", &v))
            .transpose()
    }

    fn apply_one(&self, entry: &Entry) -> Result<Applied, DbError> {
        let mut batch = WriteBatch::default();
        let applied = match &entry.payload {
            EntryPayload::Blank => Ok(()),
            EntryPayload::Normal(cmd) => self.sm.stage(cmd, &mut batch)?,
            EntryPayload::Membership(m) => {
                let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                batch.put_cf(self.db.cf(Cf::SmMeta), MEMBERSHIP, db::encode(&stored));
                Ok(())
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

    /// The newest snapshot on disk, if any.
    fn current(&self) -> Result<Option<Snapshot>, std::io::Error> {
        let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
        for entry in std::fs::read_dir(self.layout.snapshots_dir())? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "meta") {
                let modified = std::fs::metadata(&path)?.modified()?;
                if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
                    newest = Some((modified, path));
                }
            }
        }
        let Some((_, meta_path)) = newest else {
            return Ok(None);
        };
        let stored: StoredSnapshot = db::decode("snapshot metadata", &std::fs::read(&meta_path)?)
            .map_err(std::io::Error::other)?;
        let (snap, _) = self.snapshot_paths(&stored.meta.snapshot_id);
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(SnapshotFile { path: snap }),
        }))
    }

    /// Records `meta` as the current snapshot and drops older ones.
    fn keep_only(&self, meta: &SnapshotMeta) -> std::io::Result<()> {
        let (snap, meta_path) = self.snapshot_paths(&meta.snapshot_id);
        let tmp = meta_path.with_extension("meta.tmp");
        std::fs::write(&tmp, db::encode(&StoredSnapshot { meta: meta.clone() }))?;
        std::fs::rename(&tmp, &meta_path)?;
        for entry in std::fs::read_dir(self.layout.snapshots_dir())? {
            let path = entry?.path();
            if path != snap && path != meta_path {
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(())
    }

    fn build(&self) -> Result<Snapshot, std::io::Error> {
        let view = self.db.raw().snapshot();
        let read = |key: &[u8]| -> std::io::Result<Option<Vec<u8>>> {
            view.get_cf(self.db.cf(Cf::SmMeta), key)
                .map_err(std::io::Error::other)
        };
        let decode_err = |e: DbError| std::io::Error::other(e.to_string());
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
        self.keep_only(&meta)?;
        tracing::info!(snapshot = %meta.snapshot_id, records, "built a state-machine snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path }),
        })
    }

    fn install(&self, meta: &SnapshotMeta, file: &SnapshotFile) -> Result<(), std::io::Error> {
        let mut mark = WriteBatch::default();
        mark.put_cf(self.db.cf(Cf::SmMeta), INSTALLING, [1u8]);
        self.db.write_durable(mark).map_err(std::io::Error::other)?;
        let records = snapshot::load(&self.db, &file.path)?;
        let (snap, _) = self.snapshot_paths(&meta.snapshot_id);
        if file.path != snap {
            std::fs::rename(&file.path, &snap)?;
        }
        let mut done = WriteBatch::default();
        let sm = self.db.cf(Cf::SmMeta);
        done.put_cf(sm, LAST_APPLIED, db::encode(&meta.last_log_id));
        done.put_cf(sm, MEMBERSHIP, db::encode(&meta.last_membership));
        done.delete_cf(sm, INSTALLING);
        self.db.write_durable(done).map_err(std::io::Error::other)?;
        self.keep_only(meta)?;
        tracing::info!(snapshot = %meta.snapshot_id, records, "installed a snapshot from the leader");
        Ok(())
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
        let last: Option<Option<LogId>> = self.get(LAST_APPLIED).map_err(sm_err)?;
        let membership = self.get(MEMBERSHIP).map_err(sm_err)?.unwrap_or_default();
        Ok((last.flatten(), membership))
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
        let path = self
            .layout
            .snapshots_dir()
            .join(format!("incoming-{:016x}.part", rand::random::<u64>()));
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
