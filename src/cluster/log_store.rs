//! The Raft log and vote in the node's RocksDB, in column families of their
//! own. Appends are acknowledged only after the WAL is synced; appends that
//! arrive while a sync runs share the next one (group commit), so many
//! concurrent writes cost one fsync, not one each.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch};
use tokio::sync::mpsc;

use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::db::{self, Cf, Db, WeakDb};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// The highest committed log index openraft has reported, for status.
#[derive(Clone, Default)]
pub struct Committed(Arc<AtomicU64>);

impl Committed {
    const NONE: u64 = u64::MAX;

    pub fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&v| v != Self::NONE)
    }

    fn set(&self, log_id: Option<LogId>) {
        self.0.store(
            log_id.map(|l| l.index).unwrap_or(Self::NONE),
            Ordering::Relaxed,
        );
    }
}

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    committed: Committed,
    /// Appends written but not yet synced, to [`sync_appends`].
    unsynced: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// The log in `db`; starts the task that syncs appends. The task holds
    /// no handle of its own, so the database closes when its owners drop it
    /// even if the task has not run since; the task ends with the store.
    pub fn new(db: Db, committed: Committed) -> LogStore {
        let (unsynced, waiting) = mpsc::unbounded_channel();
        tokio::spawn(sync_appends(db.downgrade(), waiting));
        LogStore {
            db,
            committed,
            unsynced,
        }
    }

    fn meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        read_meta(&self.db, key).map_err(|e| StorageIOError::read(&e).into())
    }

    async fn put_meta<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
    ) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::RaftMeta), key, db::encode(value));
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write(&e).into())
    }

    /// A synced write, off the async runtime.
    async fn write(&self, batch: WriteBatch) -> Result<(), db::DbError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.write_durable(batch))
            .await
            .map_err(|e| db::DbError::Corrupt {
                what: "raft log write task",
                reason: e.to_string(),
            })?
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let mut it = self
            .db
            .raw()
            .iterator_cf(self.db.cf(Cf::RaftLog), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                let entry: Entry =
                    db::decode("raft log entry", &v).map_err(|e| StorageIOError::read_logs(&e))?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

/// Syncs the WAL once for every append waiting, then acknowledges them in
/// the order they were appended. While one sync runs, the next appends
/// queue up for the one after.
async fn sync_appends(db: WeakDb, mut waiting: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = waiting.recv().await {
        let mut acks = vec![first];
        while let Ok(more) = waiting.try_recv() {
            acks.push(more);
        }
        let synced = match db.upgrade() {
            // An append holds the store, and so the database, until it is
            // acknowledged; a closed database means the node stopped.
            None => Err("the raft log's database is closed".to_string()),
            Some(db) => match tokio::task::spawn_blocking(move || db.sync_wal()).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(e) => Err(format!("raft log sync task: {e}")),
            },
        };
        if let Err(e) = &synced {
            tracing::error!(error = %e, "syncing the raft log failed");
        }
        for ack in acks {
            ack.log_io_completed(synced.clone().map_err(std::io::Error::other));
        }
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_meta<T: serde::de::DeserializeOwned>(
    db: &Db,
    key: &[u8],
) -> Result<Option<T>, db::DbError> {
    db.get(Cf::RaftMeta, key)?
        .map(|v| db::decode("raft metadata", &v))
        .transpose()
}

/// Whether the log can bring a state machine that has applied up to
/// `applied` up to date: it must still hold every entry after `applied`.
pub fn reaches(db: &Db, applied: Option<LogId>) -> Result<bool, db::DbError> {
    let purged: Option<LogId> = read_meta(db, LAST_PURGED)?;
    Ok(purged.map(|p| p.index) <= applied.map(|a| a.index))
}

/// Drops the whole log and makes the log claim exactly what the state
/// machine holds (`applied`), for a log that no longer [`reaches`] it: the
/// leader then sends the rest, as a snapshot. The vote is kept, so this node
/// never votes twice in a term.
pub fn restart_from(db: &Db, applied: Option<LogId>) -> Result<(), db::DbError> {
    let mut batch = WriteBatch::default();
    let (log, meta) = (db.cf(Cf::RaftLog), db.cf(Cf::RaftMeta));
    batch.delete_range_cf(log, index_key(0), index_key(u64::MAX));
    batch.delete_cf(log, index_key(u64::MAX));
    match applied {
        Some(a) => batch.put_cf(meta, LAST_PURGED, db::encode(&a)),
        None => batch.delete_cf(meta, LAST_PURGED),
    }
    batch.put_cf(meta, COMMITTED, db::encode(&applied));
    db.write_durable(batch)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mode = IteratorMode::From(&index_key(start), Direction::Forward);
        let mut out = Vec::new();
        for item in self.db.raw().iterator_cf(self.db.cf(Cf::RaftLog), mode) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                StorageIOError::read_logs(&db::DbError::Corrupt {
                    what: "raft log key",
                    reason: format!("{} bytes", k.len()),
                })
            })?);
            if !range.contains(&index) {
                break;
            }
            out.push(db::decode("raft log entry", &v).map_err(|e| StorageIOError::read_logs(&e))?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.meta(LAST_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.committed.set(committed);
        // Called on every commit advance; not synced, because a committed
        // index lost in a crash is only learned again from the leader, while a
        // synced write here would double the fsyncs on the write path.
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::RaftMeta), COMMITTED, db::encode(&committed));
        self.db
            .raw()
            .write(batch)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self.meta::<Option<LogId>>(COMMITTED)?.flatten();
        self.committed.set(committed);
        Ok(committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(Cf::RaftLog);
        for entry in entries {
            batch.put_cf(cf, index_key(entry.log_id.index), db::encode(&entry));
        }
        // Readable once written; acknowledged once synced, by sync_appends.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.write(batch))
            .await
            .map_err(|e| db::DbError::Corrupt {
                what: "raft log write task",
                reason: e.to_string(),
            })
            .and_then(|written| written)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        if let Err(mpsc::error::SendError(callback)) = self.unsynced.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other("the raft log is closed")));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(Cf::RaftLog),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        batch.delete_cf(self.db.cf(Cf::RaftLog), index_key(u64::MAX));
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::RaftMeta), LAST_PURGED, db::encode(&log_id));
        batch.delete_range_cf(
            self.db.cf(Cf::RaftLog),
            index_key(0),
            index_key(log_id.index + 1),
        );
        self.write(batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
