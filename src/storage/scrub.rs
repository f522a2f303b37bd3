//! Finding copies that no longer match their digest: a disk that flips
//! bits, a file changed behind berth's back. A scrub pass re-reads and
//! re-hashes every blob this node holds, at a capped rate; a whole-blob read
//! for a client hashes as it goes too ([`super::stream::read_verified`]).
//! A copy that fails is quarantined: its index entry goes first, so nothing
//! serves it again, then the file moves to `quarantine/`, kept for a
//! post-mortem. What is quarantined waits in [`Corrupt`] until a good copy
//! is fetched from another holder (`registry::scrub`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rocksdb::WriteBatch;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::blobs::BlobStore;
use super::StorageError;
use crate::db::Cf;
use crate::oci::Digest;

/// Bytes hashed between two looks at the rate cap.
const CHUNK: usize = 1 << 20;
/// Local index entries read at a time.
const PAGE: usize = 500;

/// Quarantined blobs waiting for a good copy, and how many were found.
#[derive(Default)]
pub struct Corrupt {
    waiting: Mutex<BTreeSet<Digest>>,
    found: std::sync::atomic::AtomicU64,
    arrived: Notify,
}

impl Corrupt {
    fn push(&self, digest: Digest) {
        if self.lock().insert(digest) {
            self.found
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.arrived.notify_one();
    }

    /// The digests waiting now.
    pub fn waiting(&self) -> Vec<Digest> {
        self.lock().iter().cloned().collect()
    }

    /// A good copy of `digest` is back.
    pub fn restored(&self, digest: &Digest) {
        self.lock().remove(digest);
    }

    /// Copies quarantined since the node started.
    pub fn found(&self) -> u64 {
        self.found.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns once a digest may be waiting.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Digest>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One pass's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    pub blobs: u64,
    pub bytes: u64,
    /// Copies that failed their digest, and were quarantined.
    pub corrupt: u64,
}

impl BlobStore {
    /// Quarantines this node's copy of `digest`, which failed its digest
    /// check, and queues it for a good copy. Safe to call twice.
    pub fn quarantine(&self, digest: &Digest) -> Result<(), StorageError> {
        let mut pins = self.pins().lock();
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.db().cf(Cf::LocalBlobs), digest.as_str());
        self.db().write_durable(batch)?;
        // A pinned file is being replaced by a verified copy this moment:
        // leave it to that rename; the index entry alone was the bad one's.
        let moved = match pins.pinned(digest) {
            true => Ok(None),
            false => {
                let to = self.layout().quarantined(digest);
                std::fs::create_dir_all(self.layout().quarantine_dir())
                    .and_then(|()| std::fs::rename(self.layout().blob(digest), &to))
                    .map(|()| Some(to))
            }
        };
        drop(pins);
        match moved {
            Ok(file) => tracing::error!(
                %digest,
                file = %file.map(|f| f.display().to_string()).unwrap_or_default(),
                "a blob copy does not match its digest: quarantined, never served again; fetching a good copy"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.corrupt().push(digest.clone());
        Ok(())
    }

    /// Re-reads and re-hashes every blob this node holds, at most
    /// `bandwidth` bytes a second (0: no cap), quarantining copies that do
    /// not match. Stops early, with what it did so far, when `stop` fires.
    pub async fn scrub(
        &self,
        bandwidth: u64,
        stop: &CancellationToken,
    ) -> Result<Pass, StorageError> {
        let mut pass = Pass::default();
        let started = Instant::now();
        let mut after: Option<Digest> = None;
        loop {
            let page = self.local_page(after.as_ref(), PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(pass);
            };
            after = Some(last.clone());
            for (digest, blob) in page {
                if stop.is_cancelled() {
                    return Ok(pass);
                }
                let path = self.layout().blob(&digest);
                let (done, budget) = (pass.bytes, Budget { bandwidth, started });
                let check = tokio::task::spawn_blocking(move || hash_file(&path, budget, done))
                    .await
                    .map_err(io::Error::other)?;
                let actual = match check {
                    Ok(actual) => actual,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Collected and swept meanwhile: nothing to check.
                        // Indexed without its file: as bad as a wrong one.
                        if self.stat(&digest)?.is_none() {
                            continue;
                        }
                        None
                    }
                    Err(e) => return Err(e.into()),
                };
                pass.blobs += 1;
                pass.bytes += blob.size;
                if actual.as_ref() != Some(&digest) {
                    pass.corrupt += 1;
                    self.quarantine(&digest)?;
                }
            }
        }
    }
}

/// The rate cap of one pass.
#[derive(Clone, Copy)]
struct Budget {
    bandwidth: u64,
    started: Instant,
}

impl Budget {
    /// Sleeps until `done` bytes are due at the capped rate.
    fn pace(&self, done: u64) {
        if self.bandwidth == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.bandwidth as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// The digest of a blob file's bytes, in the algorithm its name says, read
/// at the pass's capped rate; `None` for a file whose name is no digest.
fn hash_file(path: &std::path::Path, budget: Budget, mut done: u64) -> io::Result<Option<Digest>> {
    let Some(algorithm) = algorithm_of(path) else {
        return Ok(None);
    };
    let mut file = File::open(path)?;
    let mut hasher = algorithm.hasher();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(Some(hasher.finish()));
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        budget.pace(done);
    }
}

/// A blob file's algorithm, from its directory (`blobs/<alg>/<2 hex>/<hex>`).
fn algorithm_of(path: &std::path::Path) -> Option<crate::oci::Algorithm> {
    let alg = path.parent()?.parent()?.file_name()?.to_str()?;
    let hex = path.file_name()?.to_str()?;
    format!("{alg}:{hex}")
        .parse::<Digest>()
        .ok()
        .map(|d| d.algorithm())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Layout;

    use crate::storage::testing::{put, store};

    #[tokio::test]
    async fn a_pass_quarantines_exactly_the_copies_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let good = put(&s, b"good bytes").await;
        let bad = put(&s, b"bad bytes!").await;
        let path = Layout::new(dir.path()).blob(&bad);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();

        // Copies that just arrived are pinned: see the second test.
        s.pins().lock().expire(&good);
        s.pins().lock().expire(&bad);
        let pass = s.scrub(0, &CancellationToken::new()).await.unwrap();
        assert_eq!(
            pass,
            Pass {
                blobs: 2,
                bytes: 20,
                corrupt: 1
            }
        );
        assert!(s.stat(&good).unwrap().is_some());
        assert!(
            s.stat(&bad).unwrap().is_none(),
            "the bad copy is still indexed"
        );
        assert!(!path.exists(), "the bad copy is still in blobs/");
        assert!(Layout::new(dir.path()).quarantined(&bad).exists());
        assert_eq!(s.corrupt().waiting(), vec![bad.clone()]);
        assert_eq!(s.corrupt().found(), 1);
        s.corrupt().restored(&bad);
        assert!(s.corrupt().waiting().is_empty());
        // The next pass finds nothing wrong.
        let pass = s.scrub(0, &CancellationToken::new()).await.unwrap();
        assert_eq!(pass.corrupt, 0);
        assert_eq!(pass.blobs, 1);
    }

    /// A file that just arrived may be a verified copy renamed over the bad
    /// one this moment: only the index entry goes, and the file is left to
    /// that rename (or to the sweeper, as an unindexed file).
    #[tokio::test]
    async fn a_pinned_bad_copy_loses_its_index_entry_and_keeps_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let bad = put(&s, b"bad bytes!").await;
        let path = Layout::new(dir.path()).blob(&bad);
        std::fs::write(&path, b"bad bytes?").unwrap();
        let pass = s.scrub(0, &CancellationToken::new()).await.unwrap();
        assert_eq!(pass.corrupt, 1);
        assert!(
            s.stat(&bad).unwrap().is_none(),
            "the bad copy is still indexed"
        );
        assert!(path.exists());
        assert_eq!(s.corrupt().waiting(), vec![bad]);
    }

    #[tokio::test]
    async fn the_cap_paces_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        put(&s, &[7u8; 4096]).await;
        let started = Instant::now();
        // 4 KiB at 8 KiB/s: about half a second.
        s.scrub(8192, &CancellationToken::new()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(400));
    }
}
