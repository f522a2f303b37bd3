//! Moving bytes between sockets and files without holding a blob in memory.
//!
//! A write gathers the frames it receives, without copying them, into
//! batches that a hashing thread and a writing thread take in turn, so
//! receiving, hashing and disk I/O overlap. Reads run a blocking read-ahead
//! thread that feeds large chunks to the response.

use std::fs::File;
use std::io::{self, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::hashing::{HashPipe, SideHasher};
use super::mirror::Mirror;
use super::{ByteStream, StorageError};
use crate::oci::{Digest, Hasher};

/// Bytes handed to the writer thread at a time.
const WRITE_BATCH: usize = 1 << 20;
/// Frames in one batch at most: a body of tiny frames still gets bounded
/// batches (and `writev` calls within the kernel's limit of 1,024 slices).
const WRITE_PARTS: usize = 64;
/// Batches in flight between the receiving task and the writer thread.
const WRITE_QUEUE: usize = 4;
/// Written bytes after which the kernel is asked to start writeback, so the
/// final fsync finds little left to do.
pub(super) const WRITEBACK_WINDOW: u64 = 16 << 20;
/// Size of each chunk read ahead when serving a blob.
const READ_CHUNK: usize = 1 << 20;
const READ_AHEAD: usize = 4;

/// Result of streaming a body into a file.
pub struct Written {
    pub file: File,
    pub bytes: u64,
}

/// Appends `body` to `file` (positioned at its end), feeding every byte to
/// `hasher` (on a thread of its own) and every batch to `mirror`. Stops with
/// [`StorageError::TooLarge`] after `limit` bytes. On error the file may hold
/// part of the body (callers truncate) and the mirror is abandoned.
pub async fn write_body(
    file: File,
    hasher: Option<&mut Hasher>,
    mut body: ByteStream,
    limit: Option<u64>,
    mut mirror: Option<&mut Mirror>,
) -> Result<Written, StorageError> {
    let (tx, rx) = mpsc::channel::<Vec<Bytes>>(WRITE_QUEUE);
    let writer = tokio::task::spawn_blocking(move || write_batches(file, rx));
    // Hashing runs on a thread of its own, beside the writer's, so that
    // receiving, hashing and writing overlap.
    let pipe = hasher.as_deref().map(|h| HashPipe::new(h.clone()));
    let mut batch = Batch::default();
    let mut total: u64 = 0;
    let mut failure = None;
    while let Some(frame) = body.next().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                failure = Some(StorageError::Body(e));
                break;
            }
        };
        total += frame.len() as u64;
        if let Some(limit) = limit.filter(|&l| total > l) {
            failure = Some(StorageError::TooLarge { limit });
            break;
        }
        batch.push(frame);
        if batch.is_full() && !hand_on(&tx, pipe.as_ref(), mirror.as_deref_mut(), &mut batch).await
        {
            break; // the writer failed; its error is reported below
        }
    }
    if failure.is_none() && batch.len > 0 {
        hand_on(&tx, pipe.as_ref(), mirror.as_deref_mut(), &mut batch).await;
    }
    drop(tx);
    if let (Some(h), Some(pipe)) = (hasher, pipe) {
        match pipe.into_hasher().await {
            Ok(state) => *h = state,
            Err(e) => {
                failure.get_or_insert(StorageError::from(e));
            }
        }
    }
    let written = writer
        .await
        .map_err(|e| io::Error::other(format!("writer thread: {e}")).into())
        .and_then(|r| r.map_err(StorageError::from))
        .and_then(|file| match failure {
            Some(e) => Err(e),
            None => Ok(Written { file, bytes: total }),
        });
    if let (Err(_), Some(m)) = (&written, mirror) {
        m.abandon();
    }
    written
}

/// Frames received since the last hand-on, as they came: gathering them
/// costs no copy of their bytes.
#[derive(Default)]
struct Batch {
    parts: Vec<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.len += frame.len();
            self.parts.push(frame);
        }
    }

    fn is_full(&self) -> bool {
        self.len >= WRITE_BATCH || self.parts.len() >= WRITE_PARTS
    }
}

/// Sends a batch to the hasher, the mirror and the writer thread. False once
/// the writer or the hasher is gone.
async fn hand_on(
    tx: &mpsc::Sender<Vec<Bytes>>,
    pipe: Option<&HashPipe>,
    mirror: Option<&mut Mirror>,
    batch: &mut Batch,
) -> bool {
    let parts = std::mem::take(&mut batch.parts);
    batch.len = 0;
    if let Some(p) = pipe {
        if p.update_parts(parts.clone()).await.is_err() {
            return false;
        }
    }
    if let Some(m) = mirror {
        // Peers take the batch as one chunk of the push; only a mirrored
        // write pays for joining its frames.
        m.data(&joined(&parts)).await;
    }
    tx.send(parts).await.is_ok()
}

fn joined(parts: &[Bytes]) -> Bytes {
    match parts {
        [one] => one.clone(),
        _ => {
            let mut all = bytes::BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                all.extend_from_slice(part);
            }
            all.freeze()
        }
    }
}

fn write_batches(mut file: File, mut rx: mpsc::Receiver<Vec<Bytes>>) -> io::Result<File> {
    let mut start = file.stream_position()?;
    let mut pos = start;
    while let Some(parts) = rx.blocking_recv() {
        pos += write_parts(&mut file, &parts)?;
        if pos - start >= WRITEBACK_WINDOW {
            start_writeback(&file, start, pos - start);
            start = pos;
        }
    }
    Ok(file)
}

/// Writes every part, in order, with as few `writev` calls as the kernel
/// allows. Returns the bytes written.
fn write_parts(file: &mut File, parts: &[Bytes]) -> io::Result<u64> {
    let mut slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
    let mut left = &mut slices[..];
    let mut written = 0u64;
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                written += n as u64;
                IoSlice::advance_slices(&mut left, n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Reads the next `want` bytes of `file` into a new buffer, without first
/// zeroing it. A file that ends early is an error.
fn read_chunk(file: &mut File, want: usize) -> io::Result<Bytes> {
    let mut buf = Vec::with_capacity(want);
    file.take(want as u64).read_to_end(&mut buf)?;
    if buf.len() < want {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}

/// Asks the kernel to begin writing a range back without waiting for it.
pub(super) fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; the fd is
    // valid for the lifetime of `file`. Failure is harmless: fsync follows.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Hashes a file from the start, for sessions whose running hash was lost
/// (a restart, a rolled-back chunk) or that end with another algorithm.
pub async fn hash_file(path: &Path, mut hasher: Hasher) -> io::Result<Hasher> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut file = File::open(path)?;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(hasher);
            }
            hasher.update(&buf[..n]);
        }
    })
    .await
    .map_err(io::Error::other)?
}

/// Streams `len` bytes of `file` from `offset`. A file that ends early makes
/// the stream fail, so a truncated blob is never served as a whole one.
pub fn read_range(mut file: File, offset: u64, len: u64) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let result = (|| -> io::Result<()> {
            file.seek(SeekFrom::Start(offset))?;
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let buf = read_chunk(&mut file, want)?;
                left -= want as u64;
                if tx.blocking_send(Ok(buf)).is_err() {
                    return Ok(()); // the client went away
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(tokio_stream_from(rx))
}

/// Streams the whole `len`-byte file `file`, hashing it as it goes and
/// holding back its last chunk until the hash is known: if the bytes do not
/// match `digest`, the stream ends in an error instead of that chunk, so
/// the reader never receives the copy whole, and `on_mismatch` runs.
pub fn read_verified(
    mut file: File,
    len: u64,
    digest: Digest,
    on_mismatch: impl FnOnce() + Send + 'static,
) -> ByteStream {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(READ_AHEAD);
    tokio::task::spawn_blocking(move || {
        let mut hasher = SideHasher::new(digest.algorithm(), len);
        let mut held: Option<Bytes> = None;
        let result = (|| -> io::Result<bool> {
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let buf = read_chunk(&mut file, want)?;
                left -= want as u64;
                hasher.update(&buf)?;
                if let Some(previous) = held.replace(buf) {
                    if tx.blocking_send(Ok(previous)).is_err() {
                        return Ok(false); // the client went away
                    }
                }
            }
            Ok(true)
        })();
        let verdict = result.and_then(|whole| match whole {
            false => Ok(None), // the client went away
            true => hasher.finish().map(|d| Some(d == digest)),
        });
        match verdict {
            Ok(None) => {}
            Ok(Some(true)) => {
                if let Some(last) = held {
                    let _ = tx.blocking_send(Ok(last));
                }
            }
            Ok(Some(false)) => {
                on_mismatch();
                let _ = tx.blocking_send(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("this node's copy of {digest} does not match its digest"),
                )));
            }
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    Box::pin(tokio_stream_from(rx))
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Algorithm, Digest};

    fn body(chunks: Vec<io::Result<Bytes>>) -> ByteStream {
        Box::pin(futures_util::stream::iter(chunks))
    }

    async fn collect(mut stream: ByteStream) -> (Vec<u8>, Option<io::Error>) {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_verified_read_never_yields_a_bad_copy_whole() {
        // Small copies are hashed inline, large ones beside the reader.
        for len in [2 * READ_CHUNK + 10, 9 * READ_CHUNK + 10] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("blob");
            // The flipped byte is in the first chunk.
            let mut bytes = vec![5u8; len];
            let digest = Digest::sha256(&bytes);
            std::fs::write(&path, &bytes).unwrap();
            let (out, err) = collect(read_verified(
                File::open(&path).unwrap(),
                bytes.len() as u64,
                digest.clone(),
                || {},
            ))
            .await;
            assert!(err.is_none());
            assert_eq!(out, bytes);

            bytes[7] ^= 0x20;
            std::fs::write(&path, &bytes).unwrap();
            let flagged = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = flagged.clone();
            let (out, err) = collect(read_verified(
                File::open(&path).unwrap(),
                bytes.len() as u64,
                digest,
                move || seen.store(true, std::sync::atomic::Ordering::SeqCst),
            ))
            .await;
            assert_eq!(err.unwrap().kind(), io::ErrorKind::InvalidData);
            assert!(out.len() < bytes.len(), "the bad copy was read whole");
            assert!(flagged.load(std::sync::atomic::Ordering::SeqCst));
        }
    }

    #[tokio::test]
    async fn writes_hashes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        // Frames as a client may send them: large, tiny and empty, so that
        // batches end on their size and on their count of frames.
        let sizes = [70_000, 0, 1, 13, 4096, 300_000, 7, 65_536];
        let (mut chunks, mut at) = (Vec::new(), 0);
        for size in sizes.iter().cycle() {
            let end = (at + size).min(data.len());
            chunks.push(Ok(Bytes::copy_from_slice(&data[at..end])));
            at = end;
            if at == data.len() {
                break;
            }
        }
        let mut h = Algorithm::Sha256.hasher();
        let w = write_body(
            File::create(&path).unwrap(),
            Some(&mut h),
            body(chunks),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(w.bytes, data.len() as u64);
        assert_eq!(h.finish(), Digest::sha256(&data));
        assert_eq!(std::fs::read(&path).unwrap(), data);

        let mut s = read_range(File::open(&path).unwrap(), 10, 2_000_000);
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, &data[10..2_000_010]);
    }

    #[tokio::test]
    async fn short_file_fails_the_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut s = read_range(File::open(&path).unwrap(), 0, 10);
        assert!(s.next().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn limit_and_body_errors_stop_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        let r = write_body(
            f,
            None,
            body(vec![Ok(Bytes::from_static(b"12345"))]),
            Some(4),
            None,
        )
        .await;
        assert!(matches!(r, Err(StorageError::TooLarge { limit: 4 })));
        let f = File::create(dir.path().join("g")).unwrap();
        let r = write_body(
            f,
            None,
            body(vec![Err(io::Error::other("reset"))]),
            None,
            None,
        )
        .await;
        assert!(matches!(r, Err(StorageError::Body(_))));
    }
}
