//! The node's one RocksDB: opening it and the column families it holds.
//! Key encodings live in [`keys`], the only place that knows them.

pub mod keys;

use std::path::Path;
use std::sync::Arc;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, DB};

/// Memtables of all families together; the largest is flushed beyond this.
const MEMTABLES: usize = 48 << 20;
/// One family's memtable.
const FAMILY_MEMTABLE: usize = 8 << 20;
/// Blocks read from disk, shared by every family.
const BLOCK_CACHE: usize = 32 << 20;

pub use keys::Cf;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt {what}: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

/// A key and its value as read from RocksDB.
pub type Row = (Box<[u8]>, Box<[u8]>);

/// A shared handle to the node's database.
#[derive(Clone)]
pub struct Db {
    inner: Arc<DB>,
}

/// A [`Db`] handle that lets RocksDB close when every [`Db`] is dropped.
#[derive(Clone)]
pub struct WeakDb(std::sync::Weak<DB>);

impl WeakDb {
    /// The database, if it is still open.
    pub fn upgrade(&self) -> Option<Db> {
        self.0.upgrade().map(|inner| Db { inner })
    }
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // No compression codecs are compiled in; records are small and blob
        // bytes never enter RocksDB.
        opts.set_compression_type(rocksdb::DBCompressionType::None);
        opts.increase_parallelism(2);
        // Memory is bounded for the whole database, not per family: with
        // RocksDB's defaults each of the families would keep its own 64 MiB
        // memtables and 8 MiB block cache, hundreds of MiB once a registry
        // holds a million tags.
        opts.set_db_write_buffer_size(MEMTABLES);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(BLOCK_CACHE));
        // Table files' index blocks are charged to that cache too: outside
        // it, they grow with every file a registry's write history leaves.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let cfs = Cf::ALL.iter().map(|cf| {
            let mut family = Options::default();
            family.set_compression_type(rocksdb::DBCompressionType::None);
            family.set_write_buffer_size(FAMILY_MEMTABLE);
            family.set_block_based_table_factory(&table);
            ColumnFamilyDescriptor::new(cf.name(), family)
        });
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        Ok(Db {
            inner: Arc::new(db),
        })
    }

    /// A handle that does not keep the database open, for tasks that must
    /// not outlive its owner.
    pub fn downgrade(&self) -> WeakDb {
        WeakDb(Arc::downgrade(&self.inner))
    }

    /// Waits (bounded) until this is the last handle to the database, so
    /// that dropping it closes RocksDB. Tasks that held handles may still be
    /// finishing when a node stops.
    pub async fn wait_last_handle(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while Arc::strong_count(&self.inner) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }

    pub fn raw(&self) -> &DB {
        &self.inner
    }

    pub fn cf(&self, cf: Cf) -> &ColumnFamily {
        self.inner
            .cf_handle(cf.name())
            .expect("every column family is created at open")
    }

    /// RocksDB's estimate of the keys in `cf`: cheap, for metrics.
    pub fn estimate_keys(&self, cf: Cf) -> u64 {
        self.inner
            .property_int_value_cf(self.cf(cf), "rocksdb.estimate-num-keys")
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    pub fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, DbError> {
        Ok(self.inner.get_cf(self.cf(cf), key)?)
    }

    /// Writes a batch without waiting for the disk: a crash may lose it
    /// until the next [`Db::sync_wal`] or durable write.
    pub fn write(&self, batch: rocksdb::WriteBatch) -> Result<(), DbError> {
        Ok(self.inner.write(batch)?)
    }

    /// Brings every write so far to the disk.
    pub fn sync_wal(&self) -> Result<(), DbError> {
        Ok(self.inner.flush_wal(true)?)
    }

    /// Writes a batch, waiting for the WAL to reach the disk.
    pub fn write_durable(&self, batch: rocksdb::WriteBatch) -> Result<(), DbError> {
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        Ok(self.inner.write_opt(batch, &wo)?)
    }

    /// Keys and values under `prefix` in key order, starting strictly after
    /// `after` when given, at most `limit` of them.
    pub fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        let start: Vec<u8> = match after {
            // The smallest key greater than `after` is `after` + 0x00.
            Some(a) => [a, &[0u8][..]].concat(),
            None => prefix.to_vec(),
        };
        let mode = rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward);
        let mut out = Vec::new();
        for item in self.inner.iterator_cf(self.cf(cf), mode) {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k, v));
        }
        Ok(out)
    }
}

/// Decodes a postcard record, naming what it is when it is corrupt.
pub fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, DbError> {
    postcard::from_bytes(bytes).map_err(|e| DbError::Corrupt {
        what,
        reason: e.to_string(),
    })
}

pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("records always serialize")
}
