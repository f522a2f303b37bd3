//! Resumable upload sessions.
//!
//! A session is a file under `uploads/` plus a record in RocksDB naming its
//! repository, so sessions survive a restart: the file's length is the offset
//! to resume from. While a session is live its running hash is kept in memory;
//! after a restart or a failed chunk it is rebuilt from the file at commit.
//! A session written from its first byte on may also carry a [`Mirror`] that
//! receives its bytes as they arrive; a failed chunk abandons it.

use std::collections::HashMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::blobs::{verify, BlobStore, LocalBlob};
use super::layout::Layout;
use super::mirror::Mirror;
use super::stream::hash_file;
use super::{now_secs, ByteStream, Declared, StorageError};
use crate::db::{self, Cf, Db};
use crate::oci::{Algorithm, Digest, Hasher, RepoName};

/// An upload session id: the owning node's id (16 hex) and a random part
/// (32 hex). The owner is in the id so that any node can forward a request
/// for the session to the node that holds its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UploadId {
    owner: u64,
    nonce: u128,
}

impl UploadId {
    fn random(owner: u64) -> UploadId {
        UploadId {
            owner,
            nonce: rand::random(),
        }
    }

    /// The node that holds the session.
    pub fn owner(&self) -> u64 {
        self.owner
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:032x}", self.owner, self.nonce)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for UploadId {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Self, StorageError> {
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        if s.len() != 48 || !s.bytes().all(hex) {
            return Err(StorageError::UploadUnknown);
        }
        let owner = u64::from_str_radix(&s[..16], 16).map_err(|_| StorageError::UploadUnknown)?;
        let nonce = u128::from_str_radix(&s[16..], 16).map_err(|_| StorageError::UploadUnknown)?;
        Ok(UploadId { owner, nonce })
    }
}

#[derive(Serialize, Deserialize)]
struct UploadRecord {
    repo: RepoName,
    started: u64,
}

struct Session {
    repo: RepoName,
    len: u64,
    /// sha256 of the bytes so far; `None` when it must be rebuilt from disk.
    hasher: Option<Hasher>,
    /// Set once committed or cancelled, for callers that waited on the lock.
    gone: bool,
    /// Receives every byte from the first on; see [`Uploads::append`].
    mirror: Option<Mirror>,
}

type SessionRef = Arc<tokio::sync::Mutex<Session>>;

pub struct Uploads {
    node_id: u64,
    layout: Layout,
    db: Db,
    blobs: BlobStore,
    live: Mutex<HashMap<UploadId, SessionRef>>,
    activity: Activity,
}

/// When sessions were last used, so that a stopping node can keep serving
/// until the uploads in progress are done.
#[derive(Default)]
struct Activity {
    busy: std::sync::atomic::AtomicUsize,
    last: Mutex<Option<std::time::Instant>>,
}

/// Marks a request on a session as running until dropped.
struct Busy<'a>(&'a Activity);

impl Activity {
    fn enter(&self) -> Busy<'_> {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Busy(self)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Uploads {
    pub fn new(node_id: u64, layout: Layout, db: Db, blobs: BlobStore) -> Uploads {
        Uploads {
            node_id,
            layout,
            db,
            blobs,
            live: Mutex::new(HashMap::new()),
            activity: Activity::default(),
        }
    }

    /// How long no request has used an upload session: zero while one
    /// does, and `None` if none has since the node started.
    pub fn quiet_for(&self) -> Option<std::time::Duration> {
        let last = *self.activity.last.lock().unwrap_or_else(|p| p.into_inner());
        if self.activity.busy.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return Some(std::time::Duration::ZERO);
        }
        last.map(|t| t.elapsed())
    }

    pub fn create(&self, repo: &RepoName) -> Result<UploadId, StorageError> {
        let _busy = self.activity.enter();
        let id = UploadId::random(self.node_id);
        File::create(self.path(id))?;
        let record = UploadRecord {
            repo: repo.clone(),
            started: now_secs(),
        };
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.db.cf(Cf::Uploads), id.to_string(), db::encode(&record));
        self.db.write_durable(batch)?;
        let session = Session {
            repo: repo.clone(),
            len: 0,
            hasher: Some(Algorithm::Sha256.hasher()),
            gone: false,
            mirror: None,
        };
        self.live_map()
            .insert(id, Arc::new(tokio::sync::Mutex::new(session)));
        Ok(id)
    }

    /// Bytes received so far.
    pub async fn status(&self, repo: &RepoName, id: UploadId) -> Result<u64, StorageError> {
        let session = self.session(id)?;
        let s = session.lock().await;
        check(&s, repo)?;
        Ok(s.len)
    }

    /// Appends a chunk. On a session's first bytes `mirror` is asked for a
    /// mirror, which then receives every chunk until the commit. What the
    /// request declared is checked before any of the body is read.
    pub async fn append(
        &self,
        repo: &RepoName,
        id: UploadId,
        declared: Declared,
        body: ByteStream,
        mirror: impl FnOnce() -> Option<Mirror>,
    ) -> Result<u64, StorageError> {
        let _busy = self.activity.enter();
        let session = self.session(id)?;
        let mut s = session.lock().await;
        check(&s, repo)?;
        self.append_locked(id, &mut s, declared, body, mirror)
            .await?;
        Ok(s.len)
    }

    async fn append_locked(
        &self,
        id: UploadId,
        s: &mut Session,
        declared: Declared,
        body: ByteStream,
        mirror: impl FnOnce() -> Option<Mirror>,
    ) -> Result<(), StorageError> {
        if let Some((start, _)) = declared.range {
            if start != s.len {
                return Err(StorageError::OutOfOrder {
                    offset: s.len,
                    start,
                });
            }
        }
        self.blobs.check_declared(s.len, declared.bytes())?;
        let mut file = OpenOptions::new().write(true).open(self.path(id))?;
        file.seek(SeekFrom::Start(s.len))?;
        if s.len == 0 && s.mirror.is_none() {
            s.mirror = mirror();
        }
        let before = s.hasher.clone();
        let result = self
            .blobs
            .write_capped(
                file,
                s.len,
                None,
                s.hasher.as_mut(),
                body,
                s.mirror.as_mut(),
            )
            .await;
        let written = match (result, declared.range.and(declared.bytes())) {
            (Ok(w), Some(declared)) if w.bytes != declared => Err(StorageError::ChunkLength {
                declared,
                actual: w.bytes,
            }),
            (result, _) => result.map(|w| w.bytes),
        };
        match written {
            Ok(n) => {
                s.len += n;
                Ok(())
            }
            Err(e) => {
                // Roll the session back to the last whole chunk.
                OpenOptions::new()
                    .write(true)
                    .open(self.path(id))?
                    .set_len(s.len)?;
                s.hasher = before;
                // The mirror got bytes the session no longer has.
                s.mirror = None;
                Err(e)
            }
        }
    }

    /// Appends an optional last chunk, verifies the whole upload against
    /// `digest` and stores it as a blob. Returns the session's mirror, which
    /// has been told the upload ended, for the caller to collect.
    pub async fn commit(
        &self,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        body: Option<(Declared, ByteStream)>,
        mirror: impl FnOnce() -> Option<Mirror>,
    ) -> Result<(LocalBlob, Option<Mirror>), StorageError> {
        let _busy = self.activity.enter();
        let session = self.session(id)?;
        let mut s = session.lock().await;
        check(&s, repo)?;
        if let Some((declared, body)) = body {
            self.append_locked(id, &mut s, declared, body, mirror)
                .await?;
        }
        let path = self.path(id);
        let hasher = match &s.hasher {
            Some(h) if h.algorithm() == digest.algorithm() => h.clone(),
            _ => hash_file(&path, digest.algorithm().hasher()).await?,
        };
        verify(digest, hasher.finish())?;
        let mut mirror = s.mirror.take();
        if let Some(m) = mirror.as_mut() {
            // Replicas fsync while this node does.
            m.end(digest, s.len).await;
        }
        let file = File::open(&path)?;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(io::Error::other)??;
        let blob = self.blobs.adopt(&path, digest, s.len).await?;
        self.forget(id, Some(&mut s))?;
        Ok((blob, mirror))
    }

    pub async fn cancel(&self, repo: &RepoName, id: UploadId) -> Result<(), StorageError> {
        let session = self.session(id)?;
        let mut s = session.lock().await;
        check(&s, repo)?;
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        self.forget(id, Some(&mut s))
    }

    /// Removes sessions started before `cutoff` (unix seconds) that are not
    /// in use right now, with their files. Returns how many were removed. A
    /// file that cannot be removed is logged and its session left for the
    /// next purge, so no file outlives its record.
    pub fn purge_started_before(&self, cutoff: u64) -> Result<usize, StorageError> {
        let mut removed = 0;
        for (key, value) in self.db.scan_prefix(Cf::Uploads, b"", None, usize::MAX)? {
            let record: UploadRecord = db::decode(Cf::Uploads.name(), &value)?;
            let id = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.parse::<UploadId>().ok());
            let Some(id) = id.filter(|_| record.started < cutoff) else {
                continue;
            };
            let session = match self.session(id) {
                Ok(s) => Some(s),
                // Its file is gone: no request can use the session again.
                Err(StorageError::UploadUnknown) => None,
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "could not load an abandoned upload session");
                    continue;
                }
            };
            // A session someone is writing to right now is not abandoned.
            let mut guard = match &session {
                Some(s) => match s.try_lock() {
                    Ok(g) => Some(g),
                    Err(_) => continue,
                },
                None => None,
            };
            let path = self.path(id);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove an abandoned upload's file");
                    continue;
                }
                _ => {}
            }
            self.forget(id, guard.as_deref_mut())?;
            removed += 1;
        }
        Ok(removed)
    }

    fn forget(&self, id: UploadId, s: Option<&mut Session>) -> Result<(), StorageError> {
        if let Some(s) = s {
            s.gone = true;
        }
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(self.db.cf(Cf::Uploads), id.to_string());
        self.db.write_durable(batch)?;
        self.live_map().remove(&id);
        Ok(())
    }

    /// The live session, loading it from the database after a restart.
    fn session(&self, id: UploadId) -> Result<SessionRef, StorageError> {
        if let Some(s) = self.live_map().get(&id) {
            return Ok(s.clone());
        }
        let record = self
            .db
            .get(Cf::Uploads, id.to_string().as_bytes())?
            .ok_or(StorageError::UploadUnknown)?;
        let record: UploadRecord = db::decode(Cf::Uploads.name(), &record)?;
        let len = match std::fs::metadata(self.path(id)) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::UploadUnknown)
            }
            Err(e) => return Err(e.into()),
        };
        let session = Session {
            repo: record.repo,
            len,
            hasher: None,
            gone: false,
            mirror: None,
        };
        // Another request may have loaded it meanwhile; keep the first.
        Ok(self
            .live_map()
            .entry(id)
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(session)))
            .clone())
    }

    fn path(&self, id: UploadId) -> std::path::PathBuf {
        self.layout.upload(&id.to_string())
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, SessionRef>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn check(s: &Session, repo: &RepoName) -> Result<(), StorageError> {
    if s.gone || &s.repo != repo {
        return Err(StorageError::UploadUnknown);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testing::{files, watched};
    use crate::storage::{MirrorSink, Mirrored};
    use bytes::Bytes;
    use tokio::sync::{mpsc, oneshot};

    fn body(data: &[u8]) -> ByteStream {
        let b = Bytes::copy_from_slice(data);
        Box::pin(futures_util::stream::once(async move { Ok(b) }))
    }

    fn range(first: u64, last: u64) -> Declared {
        Declared {
            range: Some((first, last)),
            length: None,
        }
    }

    fn open(dir: &std::path::Path) -> Uploads {
        open_capped(dir, None)
    }

    /// Sessions whose store takes blobs of at most `max` bytes.
    fn open_capped(dir: &std::path::Path, max: Option<u64>) -> Uploads {
        let layout = Layout::new(dir);
        layout.create().unwrap();
        let db = Db::open(&layout.db()).unwrap();
        let store = BlobStore::new(layout.clone(), db.clone());
        let store = match max {
            Some(m) => store.with_max_size(m),
            None => store,
        };
        Uploads::new(9, layout, db, store)
    }

    #[tokio::test]
    async fn chunks_in_order_resume_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let id = {
            let u = open(dir.path());
            let id = u.create(&repo).unwrap();
            assert_eq!(
                u.append(&repo, id, range(0, 2), body(b"abc"), || None)
                    .await
                    .unwrap(),
                3
            );
            let e = u
                .append(&repo, id, range(5, 6), body(b"xy"), || None)
                .await
                .unwrap_err();
            assert!(matches!(
                e,
                StorageError::OutOfOrder {
                    offset: 3,
                    start: 5
                }
            ));
            let e = u
                .append(&repo, id, range(3, 9), body(b"xy"), || None)
                .await
                .unwrap_err();
            assert!(matches!(
                e,
                StorageError::ChunkLength {
                    declared: 7,
                    actual: 2
                }
            ));
            assert_eq!(u.status(&repo, id).await.unwrap(), 3);
            id
        };
        // A new instance over the same directory is a restarted node.
        let u = open(dir.path());
        let other: RepoName = "other".parse().unwrap();
        assert!(matches!(
            u.status(&other, id).await,
            Err(StorageError::UploadUnknown)
        ));
        assert_eq!(u.status(&repo, id).await.unwrap(), 3);
        let d = Digest::sha256(b"abcdef");
        let (blob, _) = u
            .commit(
                &repo,
                id,
                &d,
                Some((Declared::default(), body(b"def"))),
                || None,
            )
            .await
            .unwrap();
        assert_eq!(blob.size, 6);
        assert!(matches!(
            u.status(&repo, id).await,
            Err(StorageError::UploadUnknown)
        ));
    }

    fn sink(id: u64) -> (MirrorSink, mpsc::Receiver<Mirrored>) {
        let (tx, rx) = mpsc::channel(16);
        let (_verdict, kept) = oneshot::channel();
        (MirrorSink::new(id, tx, kept), rx)
    }

    async fn mirrored(rx: &mut mpsc::Receiver<Mirrored>) -> (Vec<u8>, Option<(Digest, u64)>) {
        let (mut data, mut end) = (Vec::new(), None);
        while let Some(item) = rx.recv().await {
            match item {
                Mirrored::Data(b) => data.extend_from_slice(&b),
                Mirrored::End { digest, size } => end = Some((digest, size)),
            }
        }
        (data, end)
    }

    #[tokio::test]
    async fn a_mirror_follows_a_session_from_its_first_byte() {
        let dir = tempfile::tempdir().unwrap();
        let u = open(dir.path());
        let repo: RepoName = "r".parse().unwrap();

        let id = u.create(&repo).unwrap();
        let (s, mut rx) = sink(1);
        u.append(&repo, id, Declared::default(), body(b"ab"), || {
            Some(Mirror::new(vec![s]))
        })
        .await
        .unwrap();
        u.append(&repo, id, Declared::default(), body(b"cd"), || {
            panic!("asked twice")
        })
        .await
        .unwrap();
        let d = Digest::sha256(b"abcd");
        let (_, m) = u.commit(&repo, id, &d, None, || None).await.unwrap();
        assert_eq!(m.unwrap().into_sinks().len(), 1);
        assert_eq!(mirrored(&mut rx).await, (b"abcd".to_vec(), Some((d, 4))));

        // A failed chunk abandons the mirror: its bytes end without an End.
        let id = u.create(&repo).unwrap();
        let (s, mut rx) = sink(2);
        let e = u
            .append(&repo, id, range(0, 9), body(b"xy"), || {
                Some(Mirror::new(vec![s]))
            })
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::ChunkLength { .. }));
        assert_eq!(mirrored(&mut rx).await, (b"xy".to_vec(), None));

        // A session that already holds bytes is never mirrored.
        let id = u.create(&repo).unwrap();
        u.append(&repo, id, Declared::default(), body(b"x"), || None)
            .await
            .unwrap();
        u.append(&repo, id, Declared::default(), body(b"y"), || {
            panic!("mirrored mid-session")
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn wrong_digest_keeps_session_and_sha512_works() {
        let dir = tempfile::tempdir().unwrap();
        let u = open(dir.path());
        let repo: RepoName = "r".parse().unwrap();
        let id = u.create(&repo).unwrap();
        u.append(&repo, id, Declared::default(), body(b"data"), || None)
            .await
            .unwrap();
        let wrong = Digest::sha256(b"nope");
        assert!(matches!(
            u.commit(&repo, id, &wrong, None, || None).await,
            Err(StorageError::DigestMismatch { .. })
        ));
        let d = Digest::of(Algorithm::Sha512, b"data");
        assert_eq!(
            u.commit(&repo, id, &d, None, || None).await.unwrap().0.size,
            4
        );
        assert!("xyz".parse::<UploadId>().is_err());
        assert_eq!(id.owner(), 9);
        assert_eq!(id.to_string().len(), 48);
        assert_eq!(id.to_string().parse::<UploadId>().unwrap(), id);
    }

    #[tokio::test]
    async fn purge_removes_only_old_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let u = open(dir.path());
        let repo: RepoName = "r".parse().unwrap();
        let id = u.create(&repo).unwrap();
        assert_eq!(u.purge_started_before(0).unwrap(), 0);
        assert_eq!(u.status(&repo, id).await.unwrap(), 0);
        assert_eq!(u.purge_started_before(now_secs() + 10).unwrap(), 1);
        assert!(matches!(
            u.status(&repo, id).await,
            Err(StorageError::UploadUnknown)
        ));
        assert!(!u.path(id).exists());
    }

    #[tokio::test]
    async fn a_session_stops_at_the_cap_and_a_declared_excess_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let u = open_capped(dir.path(), Some(10));
        let repo: RepoName = "r".parse().unwrap();
        let id = u.create(&repo).unwrap();
        u.append(&repo, id, range(0, 5), body(b"abcdef"), || None)
            .await
            .unwrap();
        let read = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let too_long = Declared {
            range: None,
            length: Some(5),
        };
        for declared in [range(6, 10), too_long] {
            let e = u
                .append(&repo, id, declared, watched(read.clone()), || None)
                .await
                .unwrap_err();
            assert!(matches!(e, StorageError::TooLarge { limit: 10 }), "{e}");
        }
        let d = Digest::sha256(b"abcdefghijk");
        let e = u
            .commit(
                &repo,
                id,
                &d,
                Some((too_long, watched(read.clone()))),
                || None,
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(e, StorageError::TooLarge { limit: 10 }), "{e}");
        // An out-of-order chunk, too, is refused unread.
        let e = u
            .append(&repo, id, range(9, 9), watched(read.clone()), || None)
            .await
            .unwrap_err();
        assert!(matches!(e, StorageError::OutOfOrder { .. }), "{e}");
        assert!(
            !read.load(std::sync::atomic::Ordering::SeqCst),
            "a body was read"
        );
        // Undeclared, the body is cut off at the cap and the session rolled back.
        let e = u
            .commit(
                &repo,
                id,
                &d,
                Some((Declared::default(), body(b"ghijk"))),
                || None,
            )
            .await
            .err()
            .unwrap();
        assert!(matches!(e, StorageError::TooLarge { limit: 10 }), "{e}");
        assert_eq!(u.status(&repo, id).await.unwrap(), 6);
        assert!(files(dir.path(), "blobs").is_empty());
        assert!(files(dir.path(), "tmp").is_empty());
    }

    #[tokio::test]
    async fn purge_removes_sessions_without_files_and_goes_on_past_failures() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "r".parse().unwrap();
        let (lost, stuck, plain) = {
            let u = open(dir.path());
            let ids = [(); 3].map(|_| u.create(&repo).unwrap());
            (ids[0], ids[1], ids[2])
        };
        // A restarted node: one session lost its file, another's cannot be
        // removed (a directory stands where the file was).
        let u = open(dir.path());
        std::fs::remove_file(u.path(lost)).unwrap();
        std::fs::remove_file(u.path(stuck)).unwrap();
        std::fs::create_dir(u.path(stuck)).unwrap();
        std::fs::write(u.path(stuck).join("x"), b"x").unwrap();

        assert_eq!(u.purge_started_before(now_secs() + 10).unwrap(), 2);
        let record = |id: UploadId| u.db.get(Cf::Uploads, id.to_string().as_bytes()).unwrap();
        assert!(
            record(lost).is_none(),
            "the record of a session without a file stays"
        );
        assert!(record(plain).is_none());
        assert!(!u.path(plain).exists());
        assert!(record(stuck).is_some(), "kept for the next purge");

        std::fs::remove_dir_all(u.path(stuck)).unwrap();
        assert_eq!(u.purge_started_before(now_secs() + 10).unwrap(), 1);
        assert!(record(stuck).is_none());
    }
}
