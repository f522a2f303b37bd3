//! Removing this node's blob files that the metadata no longer names: the
//! files of collected blobs, and orphans that a crash or a copy never
//! recorded left behind. Every removal checks the pins and the metadata
//! under the pins' lock, so a file that is arriving, or named again, stays.

use std::io;
use std::time::SystemTime;

use rocksdb::WriteBatch;

use super::blobs::{BlobStore, LocalBlob};
use super::StorageError;
use crate::db::{self, Cf, DbError};
use crate::oci::Digest;

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub files: u64,
    pub bytes: u64,
}

impl Swept {
    pub fn count(&mut self, removal: Removal) {
        if let Removal::Removed(bytes) = removal {
            self.files += 1;
            self.bytes += bytes;
        }
    }

    pub fn add(&mut self, other: Swept) {
        self.files += other.files;
        self.bytes += other.bytes;
    }
}

/// What became of a file a sweep looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Removed, freeing this many bytes.
    Removed(u64),
    /// The metadata names the blob again: the file stays for good.
    Named,
    /// It arrived moments ago and its link may still be on its way: ask
    /// again later.
    Pinned,
}

/// A file in `blobs/` that the local index does not list.
pub struct Unindexed {
    pub digest: Digest,
    pub size: u64,
    pub modified: SystemTime,
}

impl BlobStore {
    /// Removes this node's copy of `digest` and its index entry, unless the
    /// file is pinned or `named` finds that the metadata names the blob.
    pub fn remove_unless(
        &self,
        digest: &Digest,
        named: impl FnOnce() -> Result<bool, DbError>,
    ) -> Result<Removal, StorageError> {
        let mut pins = self.pins().lock();
        if pins.pinned(digest) {
            return Ok(Removal::Pinned);
        }
        if named()? {
            return Ok(Removal::Named);
        }
        let path = self.layout().blob(digest);
        let bytes = match std::fs::metadata(&path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.db().cf(Cf::LocalBlobs), digest.as_str());
        // Not synced: after a crash the entry may come back without its
        // file, and the next sweep removes it again.
        self.db().raw().write(batch).map_err(DbError::from)?;
        drop(pins);
        Ok(Removal::Removed(bytes))
    }

    /// The blobs this node holds, in digest order after `after`, at most `n`.
    pub fn local_page(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, LocalBlob)>, StorageError> {
        let rows =
            self.db()
                .scan_prefix(Cf::LocalBlobs, b"", after.map(|d| d.as_str().as_bytes()), n)?;
        rows.iter()
            .map(|(k, v)| {
                let digest = std::str::from_utf8(k)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| DbError::Corrupt {
                        what: "local blob key",
                        reason: String::from_utf8_lossy(k).into_owned(),
                    })?;
                Ok((digest, db::decode(Cf::LocalBlobs.name(), v)?))
            })
            .collect()
    }

    /// How many blobs this node holds and their bytes: a walk of the local
    /// index, for the metrics (run now and then, not per scrape).
    pub fn tally(&self) -> Result<(u64, u64), StorageError> {
        let (mut count, mut bytes) = (0, 0);
        let mut after: Option<Digest> = None;
        loop {
            let page = self.local_page(after.as_ref(), 1000)?;
            let Some((last, _)) = page.last() else {
                return Ok((count, bytes));
            };
            after = Some(last.clone());
            count += page.len() as u64;
            bytes += page.iter().map(|(_, b)| b.size).sum::<u64>();
        }
    }

    /// Files in `blobs/` without an index entry: a crash between a file's
    /// rename and its indexing leaves one. Names that are not digests are
    /// left alone.
    pub fn unindexed(&self) -> Result<Vec<Unindexed>, StorageError> {
        let mut out = Vec::new();
        let root = self.layout().blobs_root();
        for alg in read_dir(&root)? {
            for fan in read_dir(&alg.path())? {
                for file in read_dir(&fan.path())? {
                    let name = format!(
                        "{}:{}",
                        alg.file_name().to_string_lossy(),
                        file.file_name().to_string_lossy()
                    );
                    let Ok(digest) = name.parse::<Digest>() else {
                        continue;
                    };
                    if self.stat(&digest)?.is_some() {
                        continue;
                    }
                    let meta = file.metadata()?;
                    out.push(Unindexed {
                        digest,
                        size: meta.len(),
                        modified: meta.modified()?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Indexes a file found without an entry whose blob the metadata names.
    pub fn reindex(&self, found: &Unindexed) -> Result<(), StorageError> {
        let blob = LocalBlob {
            size: found.size,
            first_seen: super::now_secs(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db().cf(Cf::LocalBlobs),
            found.digest.as_str(),
            db::encode(&blob),
        );
        Ok(self.db().write_durable(batch)?)
    }
}

/// Entries of a directory; a missing directory has none.
fn read_dir(dir: &std::path::Path) -> io::Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{files, put, store};

    #[tokio::test]
    async fn the_tally_counts_every_local_blob_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.tally().unwrap(), (0, 0));
        put(&s, b"hello").await;
        put(&s, b"hello").await;
        put(&s, b"a longer blob").await;
        assert_eq!(s.tally().unwrap(), (2, 5 + 13));
    }

    #[tokio::test]
    async fn a_sweep_spares_pinned_and_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = put(&s, b"hello").await;
        // Just arrived: pinned.
        let gone = || Ok(false);
        assert_eq!(s.remove_unless(&d, gone).unwrap(), Removal::Pinned);
        s.pins().lock().expire(&d);
        assert_eq!(s.remove_unless(&d, || Ok(true)).unwrap(), Removal::Named);
        let hold = s.hold(&d);
        assert_eq!(s.remove_unless(&d, gone).unwrap(), Removal::Pinned);
        drop(hold);
        assert_eq!(s.remove_unless(&d, gone).unwrap(), Removal::Removed(5));
        assert!(s.stat(&d).unwrap().is_none());
        assert!(files(dir.path(), "blobs").is_empty());
        // A claim of a copy this node no longer has fails.
        assert!(!s.claim(&d).unwrap());
    }

    #[tokio::test]
    async fn files_without_an_index_entry_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let d = put(&s, b"orphan").await;
        let mut batch = WriteBatch::default();
        batch.delete_cf(s.db().cf(Cf::LocalBlobs), d.as_str());
        s.db().write_durable(batch).unwrap();
        let found = s.unindexed().unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].digest.clone(), found[0].size), (d.clone(), 6));
        s.reindex(&found[0]).unwrap();
        assert!(s.unindexed().unwrap().is_empty());
        assert_eq!(s.local_page(None, 10).unwrap().len(), 1);
    }
}
