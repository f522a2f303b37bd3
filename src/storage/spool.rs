//! A blob being received that any number of readers follow while its bytes
//! arrive: a pull-through fetch serves every waiting client from one
//! upstream download.
//!
//! The writer appends to a file under `tmp/`, hashing as it goes, and
//! publishes how much is written. Readers read the file at their own pace
//! up to that mark. The last byte reaches a reader only once the writer has
//! verified the whole blob against its digest, so a blob that does not
//! match ends every reader's stream with an error, never with the wrong
//! bytes whole. Once verified, the file is moved into the blob store; open
//! readers keep reading the same file.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;

use super::blobs::verify;
use super::{BlobStore, ByteStream, LocalBlob, StorageError};
use crate::oci::{Digest, Hasher};

/// Largest piece a reader is handed at once.
const READ_CHUNK: u64 = 256 << 10;

/// How far a spooled blob has come.
#[derive(Clone, Debug)]
enum Progress {
    Receiving(u64),
    Verified,
    Failed(Arc<str>),
}

/// The writing side.
pub struct Spool {
    digest: Digest,
    size: u64,
    path: PathBuf,
    file: Arc<File>,
    written: u64,
    hasher: Option<Hasher>,
    progress: watch::Sender<Progress>,
    blobs: BlobStore,
}

/// A handle readers follow the spool through.
#[derive(Clone)]
pub struct Follow {
    size: u64,
    file: Arc<File>,
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
        let follow = Follow {
            size,
            file: file.clone(),
            progress: rx,
        };
        let spool = Spool {
            digest: digest.clone(),
            size,
            path,
            file,
            written: 0,
            hasher: Some(digest.algorithm().hasher()),
            progress,
            blobs: blobs.clone(),
        };
        Ok((spool, follow))
    }

    /// Appends bytes; more than the announced size is refused.
    pub async fn append(&mut self, data: Bytes) -> Result<(), StorageError> {
        let end = self.written + data.len() as u64;
        if end > self.size {
            return Err(StorageError::Body(io::Error::other(format!(
                "more than the {} bytes announced for {}",
                self.size, self.digest
            ))));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&data);
        }
        let file = self.file.clone();
        let at = self.written;
        tokio::task::spawn_blocking(move || file.write_all_at(&data, at))
            .await
            .map_err(io::Error::other)??;
        self.written = end;
        self.progress.send_replace(Progress::Receiving(end));
        Ok(())
    }

    /// Verifies the whole blob, makes it durable and moves it into the
    /// store; then readers get their last byte.
    pub async fn finish(mut self) -> Result<LocalBlob, StorageError> {
        let result = self.seal().await;
        match &result {
            Ok(_) => {
                self.progress.send_replace(Progress::Verified);
            }
            Err(e) => self.fail(&e.to_string()),
        }
        result
    }

    async fn seal(&mut self) -> Result<LocalBlob, StorageError> {
        if self.written != self.size {
            return Err(StorageError::Body(io::Error::other(format!(
                "{} ended after {} of {} bytes",
                self.digest, self.written, self.size
            ))));
        }
        let hasher = self.hasher.take().expect("a spool is sealed once");
        verify(&self.digest, hasher.finish())?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(io::Error::other)??;
        self.blobs.adopt(&self.path, &self.digest, self.size).await
    }

    /// Ends every reader's stream with `why` and drops the file.
    pub fn fail(&self, why: &str) {
        self.progress.send_replace(Progress::Failed(why.into()));
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

impl Follow {
    pub fn size(&self) -> u64 {
        self.size
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
