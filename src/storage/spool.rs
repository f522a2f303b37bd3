//! A blob being received that any number of readers follow while its bytes
//! arrive: one download from an upstream or a peer serves every waiting
//! reader.
//!
//! The bytes go to a file under `tmp/`, written on a thread of its own, and
//! hashed on another ([`HashPipe`]), so receiving, writing and hashing
//! overlap. The most recent bytes also stay in memory ([`Head`]): readers
//! that keep up take them from there as they arrive, without waiting for
//! the write or reading them back; a reader that falls behind reads the
//! file, which holds everything the head has let go. The last byte reaches
//! a reader only once the whole blob is verified against its digest, so a
//! blob that does not match ends every reader's stream with an error, never
//! with the wrong bytes whole. Once verified, the file is made durable and
//! moved into the blob store; open readers keep reading the same file.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::blobs::verify;
use super::hashing::HashPipe;
use super::stream::{start_writeback, WRITEBACK_WINDOW};
use super::{BlobStore, ByteStream, LocalBlob, StorageError};
use crate::oci::Digest;

/// Largest piece a reader is handed at once.
const READ_CHUNK: u64 = 256 << 10;
/// Pieces queued for the writer; the receiver waits beyond this.
const WRITE_QUEUE: usize = 4;
/// Written bytes the head keeps for readers close behind the receiver.
const HEAD_BYTES: usize = 16 << 20;

/// How far a spooled blob has come.
#[derive(Clone, Debug)]
enum Progress {
    /// Bytes received so far: in the head, the file, or both.
    Receiving(u64),
    Verified,
    Failed(Arc<str>),
}

/// The latest pieces received, at their offsets. A piece leaves only once
/// it is written and the head holds more than [`HEAD_BYTES`], so every byte
/// received is in the head or in the file, and the memory a spool holds is
/// bounded by that and the writer's queue.
#[derive(Default)]
struct Head {
    pieces: Mutex<VecDeque<(u64, Bytes)>>,
    /// Bytes the writer has written, from the start.
    written: AtomicU64,
}

impl Head {
    fn push(&self, at: u64, data: Bytes) {
        let written = self.written.load(Ordering::Acquire);
        let mut pieces = self.pieces.lock().unwrap_or_else(|p| p.into_inner());
        pieces.push_back((at, data));
        let mut held: usize = pieces.iter().map(|(_, d)| d.len()).sum();
        while let Some((first, data)) = pieces.front() {
            if held <= HEAD_BYTES || first + data.len() as u64 > written {
                break;
            }
            held -= data.len();
            pieces.pop_front();
        }
    }

    /// The bytes at `pos`, up to `end`, if the head still holds them.
    fn get(&self, pos: u64, end: u64) -> Option<Bytes> {
        let pieces = self.pieces.lock().unwrap_or_else(|p| p.into_inner());
        let i = pieces.partition_point(|(at, d)| at + d.len() as u64 <= pos);
        let (at, data) = pieces.get(i).filter(|(at, _)| *at <= pos)?;
        let from = (pos - at) as usize;
        let to = data.len().min((end - at) as usize);
        Some(data.slice(from..to))
    }

    /// Lets every piece go: the file holds the whole blob now, or nothing.
    fn clear(&self) {
        self.pieces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The writer thread's queue of pieces (offset, bytes), and the thread.
type Writer = (mpsc::Sender<(u64, Bytes)>, JoinHandle<io::Result<()>>);

/// The writing side.
pub struct Spool {
    digest: Digest,
    size: u64,
    path: PathBuf,
    /// Bytes handed to the writer so far.
    taken: u64,
    writer: Option<Writer>,
    file: Arc<File>,
    head: Arc<Head>,
    hasher: Option<HashPipe>,
    progress: Arc<watch::Sender<Progress>>,
    blobs: BlobStore,
}

/// A handle readers follow the spool through.
#[derive(Clone)]
pub struct Follow {
    size: u64,
    file: Arc<File>,
    head: Arc<Head>,
    progress: watch::Receiver<Progress>,
}

impl Spool {
    /// A spool for `digest`, whose upstream announced `size` bytes; refused
    /// past the store's size cap.
    pub fn create(
        blobs: &BlobStore,
        digest: &Digest,
        size: u64,
    ) -> Result<(Spool, Follow), StorageError> {
        blobs.check_declared(0, Some(size))?;
        let path = blobs.layout().tmp_file();
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)?;
        let file = Arc::new(file);
        let (progress, rx) = watch::channel(Progress::Receiving(0));
        let progress = Arc::new(progress);
        let head = Arc::new(Head::default());
        let follow = Follow {
            size,
            file: file.clone(),
            head: head.clone(),
            progress: rx,
        };
        let (pieces, queue) = mpsc::channel(WRITE_QUEUE);
        let writing = {
            let (file, head) = (file.clone(), head.clone());
            tokio::task::spawn_blocking(move || write_pieces(&file, queue, &head))
        };
        let spool = Spool {
            digest: digest.clone(),
            size,
            path,
            taken: 0,
            writer: Some((pieces, writing)),
            file,
            head,
            hasher: Some(HashPipe::new(digest.algorithm().hasher())),
            progress,
            blobs: blobs.clone(),
        };
        Ok((spool, follow))
    }

    /// Appends bytes; more than the announced size is refused. Readers get
    /// them at once, from the head.
    pub async fn append(&mut self, data: Bytes) -> Result<(), StorageError> {
        let end = self.taken + data.len() as u64;
        if end > self.size {
            return Err(StorageError::Body(io::Error::other(format!(
                "more than the {} bytes announced for {}",
                self.size, self.digest
            ))));
        }
        if let Some(h) = &self.hasher {
            h.update(data.clone()).await?;
        }
        let (pieces, _) = self
            .writer
            .as_ref()
            .expect("a spool takes bytes until it is sealed");
        if pieces.send((self.taken, data.clone())).await.is_err() {
            return Err(self.writer_error().await);
        }
        self.head.push(self.taken, data);
        self.taken = end;
        self.progress.send_if_modified(|p| match p {
            Progress::Receiving(_) => {
                *p = Progress::Receiving(end);
                true
            }
            _ => false,
        });
        Ok(())
    }

    /// Why the writer stopped.
    async fn writer_error(&mut self) -> StorageError {
        let Some((_, writing)) = self.writer.take() else {
            return io::Error::other("the spool was sealed").into();
        };
        match writing.await {
            Ok(Err(e)) => e.into(),
            Ok(Ok(())) => io::Error::other("the spool's writer stopped").into(),
            Err(e) => io::Error::other(e).into(),
        }
    }

    /// Verifies the whole blob, whereupon readers get their last byte, then
    /// makes it durable and moves it into the store. Verified bytes are
    /// right for the readers; the fsync is for this node's copy, so they do
    /// not wait for it.
    pub async fn finish(mut self) -> Result<LocalBlob, StorageError> {
        if let Err(e) = self.verify().await {
            self.fail(&e.to_string());
            return Err(e);
        }
        // Every byte is in the file now.
        self.head.clear();
        self.progress.send_replace(Progress::Verified);
        let kept = self.keep().await;
        if let Err(e) = &kept {
            tracing::warn!(digest = %self.digest, error = %e, "a verified spool could not be kept");
            self.remove_file();
        }
        kept
    }

    /// Every byte written, and their digest the one announced.
    async fn verify(&mut self) -> Result<(), StorageError> {
        if self.taken != self.size {
            return Err(StorageError::Body(io::Error::other(format!(
                "{} ended after {} of {} bytes",
                self.digest, self.taken, self.size
            ))));
        }
        let (pieces, writing) = self.writer.take().expect("a spool is sealed once");
        drop(pieces);
        writing.await.map_err(io::Error::other)??;
        let hasher = self.hasher.take().expect("a spool is sealed once");
        verify(&self.digest, hasher.finish().await?)
    }

    async fn keep(&self) -> Result<LocalBlob, StorageError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(io::Error::other)??;
        self.blobs.adopt(&self.path, &self.digest, self.size).await
    }

    /// Ends every reader's stream with `why` and drops the file.
    pub fn fail(&self, why: &str) {
        self.progress.send_replace(Progress::Failed(why.into()));
        self.head.clear();
        self.remove_file();
    }

    /// Removes the file; readers that have it open read on.
    fn remove_file(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a failed spool");
            }
        }
    }
}

impl Drop for Spool {
    /// A writer that stops without finishing (its task was cancelled) fails
    /// its readers rather than leave them waiting.
    fn drop(&mut self) {
        if matches!(*self.progress.borrow(), Progress::Receiving(_)) {
            self.fail("the fetch stopped before the blob was whole");
        }
    }
}

/// The writer thread: each piece at its offset, writeback started as they
/// come (so the fsync before keeping has little left), and the written
/// mark moved on, so the head may let the piece go.
fn write_pieces(
    file: &File,
    mut pieces: mpsc::Receiver<(u64, Bytes)>,
    head: &Head,
) -> io::Result<()> {
    let mut unflushed = 0;
    while let Some((at, data)) = pieces.blocking_recv() {
        file.write_all_at(&data, at)?;
        let end = at + data.len() as u64;
        if end - unflushed >= WRITEBACK_WINDOW {
            start_writeback(file, unflushed, end - unflushed);
            unflushed = end;
        }
        head.written.store(end, Ordering::Release);
    }
    Ok(())
}

impl Follow {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `other` follows the same spool.
    pub fn same_spool(&self, other: &Follow) -> bool {
        Arc::ptr_eq(&self.file, &other.file)
    }

    /// Whether the spool failed: its readers all get an error.
    pub fn failed(&self) -> bool {
        matches!(*self.progress.borrow(), Progress::Failed(_))
    }

    /// Bytes `offset..end` as they arrive; the blob's last byte only once
    /// it is verified.
    pub fn read(&self, offset: u64, end: u64) -> ByteStream {
        let state = (self.clone(), offset.min(end), end.min(self.size));
        Box::pin(futures_util::stream::unfold(
            state,
            |(mut me, pos, end)| async move {
                if pos >= end {
                    return None;
                }
                let ready = loop {
                    let progress = me.progress.borrow_and_update().clone();
                    let available = match progress {
                        Progress::Verified => end,
                        // The last byte waits for the verdict.
                        Progress::Receiving(n) => n.min(me.size.saturating_sub(1)).min(end),
                        Progress::Failed(why) => {
                            let e = io::Error::other(why.to_string());
                            return Some((Err(e), (me, end, end)));
                        }
                    };
                    if available > pos {
                        break available;
                    }
                    if me.progress.changed().await.is_err() {
                        // The writer is gone without a verdict.
                        let e = io::Error::other("the fetch stopped before the blob was whole");
                        return Some((Err(e), (me, end, end)));
                    }
                };
                if let Some(data) = me.head.get(pos, ready) {
                    let next = pos + data.len() as u64;
                    return Some((Ok(data), (me, next, end)));
                }
                // Behind the head: the writer has written these bytes.
                let len = (ready - pos).min(READ_CHUNK);
                let file = me.file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = vec![0u8; len as usize];
                    file.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                })
                .await
                .map_err(io::Error::other)
                .and_then(|r| r);
                match read {
                    Ok(data) => Some((Ok(data), (me, pos + len, end))),
                    Err(e) => Some((Err(e), (me, end, end))),
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    use crate::storage::testing::store;

    async fn collect(mut s: ByteStream) -> Result<Vec<u8>, io::Error> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn readers_follow_the_writer_and_get_the_last_byte_once_verified() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let data = b"hello, spool".to_vec();
        let digest = Digest::sha256(&data);
        let (mut spool, follow) = Spool::create(&blobs, &digest, data.len() as u64).unwrap();
        let early = tokio::spawn(collect(follow.read(0, follow.size())));
        let tail = tokio::spawn(collect(follow.read(7, follow.size())));
        spool
            .append(Bytes::copy_from_slice(&data[..5]))
            .await
            .unwrap();
        spool
            .append(Bytes::copy_from_slice(&data[5..]))
            .await
            .unwrap();
        // Everything written, nothing verified: the last byte is held back.
        let mut partial = follow.read(0, follow.size());
        let mut got = Vec::new();
        while got.len() < data.len() - 1 {
            got.extend_from_slice(&partial.next().await.unwrap().unwrap());
        }
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), partial.next());
        assert!(
            waiting.await.is_err(),
            "the last byte came before the verdict"
        );
        spool.finish().await.unwrap();
        assert_eq!(early.await.unwrap().unwrap(), data);
        assert_eq!(tail.await.unwrap().unwrap(), &data[7..]);
        assert_eq!(
            blobs.stat(&digest).unwrap().unwrap().size,
            data.len() as u64
        );
        // A reader that starts after the move still reads the same file.
        assert_eq!(collect(follow.read(0, 5)).await.unwrap(), &data[..5]);
    }

    #[tokio::test]
    async fn a_reader_behind_the_head_reads_the_file_and_the_head_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let piece = 1 << 20;
        let data = random_bytes(3 * HEAD_BYTES + 12345);
        let digest = Digest::sha256(&data);
        let (mut spool, follow) = Spool::create(&blobs, &digest, data.len() as u64).unwrap();
        let close = tokio::spawn(collect(follow.read(0, follow.size())));
        for chunk in data.chunks(piece) {
            spool.append(Bytes::copy_from_slice(chunk)).await.unwrap();
            let held: usize = spool
                .head
                .pieces
                .lock()
                .unwrap()
                .iter()
                .map(|(_, d)| d.len())
                .sum();
            assert!(
                held <= HEAD_BYTES + (WRITE_QUEUE + 2) * piece,
                "the head holds {held} bytes"
            );
        }
        // Started once the head has let the first bytes go.
        let late = tokio::spawn(collect(follow.read(0, follow.size())));
        spool.finish().await.unwrap();
        assert!(close.await.unwrap().unwrap() == data);
        assert!(late.await.unwrap().unwrap() == data);
    }

    fn random_bytes(n: usize) -> Vec<u8> {
        use rand::Rng;
        let mut bytes = vec![0; n];
        rand::rng().fill(&mut bytes[..]);
        bytes
    }

    #[tokio::test]
    async fn bytes_that_do_not_match_fail_every_reader_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = store(dir.path());
        let digest = Digest::sha256(b"the real thing");
        let (mut spool, follow) = Spool::create(&blobs, &digest, 14).unwrap();
        let reader = tokio::spawn(collect(follow.read(0, 14)));
        spool
            .append(Bytes::from_static(b"a forged thing"))
            .await
            .unwrap();
        assert!(matches!(
            spool.finish().await,
            Err(StorageError::DigestMismatch { .. })
        ));
        assert!(reader.await.unwrap().is_err());
        assert!(blobs.stat(&digest).unwrap().is_none());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        // More than announced, or a writer dropped midway, fails too.
        let (mut spool, follow) = Spool::create(&blobs, &digest, 3).unwrap();
        assert!(spool.append(Bytes::from_static(b"four")).await.is_err());
        drop(spool);
        assert!(collect(follow.read(0, 3)).await.is_err());
    }
}
