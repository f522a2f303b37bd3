//! A blob file read as a stream of chunks, hashed as it is read. The last
//! chunk is held back until the whole file matched its digest, so a corrupt
//! file never reaches the node complete: the request fails instead.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio_util::io::ReaderStream;

use crate::oci::{Digest, Hasher};

/// Bytes read per chunk.
const CHUNK: usize = 1 << 20;

/// What reading found wrong with the file, if anything: its content is
/// not what its digest says, or it could not be read. Either is the file's
/// fault, not the node's, so the upload is not tried again.
#[derive(Clone, Default)]
pub struct Verdict(Arc<Mutex<Option<String>>>);

impl Verdict {
    pub fn failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, why: String) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
    }
}

struct State<R> {
    reader: ReaderStream<R>,
    hasher: Option<Hasher>,
    held: Option<Bytes>,
    expected: Digest,
    verdict: Verdict,
    read: Arc<AtomicU64>,
}

/// `reader`'s bytes, checked against `expected`; every byte read is added
/// to `read`. A mismatch or a read error ends the stream with an error and
/// is kept in `verdict`.
pub fn verified<R>(
    reader: R,
    expected: Digest,
    verdict: Verdict,
    read: Arc<AtomicU64>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
{
    let state = State {
        reader: ReaderStream::with_capacity(reader, CHUNK),
        hasher: Some(expected.algorithm().hasher()),
        held: None,
        expected,
        verdict,
        read,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        use futures_util::StreamExt as _;
        let hasher = s.hasher.as_mut()?;
        loop {
            match s.reader.next().await {
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    s.read.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    if let Some(previous) = s.held.replace(chunk) {
                        return Some((Ok(previous), s));
                    }
                }
                Some(Err(e)) => {
                    s.hasher = None;
                    s.verdict.set(format!("reading failed: {e}"));
                    return Some((Err(e), s));
                }
                None => {
                    let actual = s.hasher.take()?.finish();
                    if actual != s.expected {
                        let why = format!("corrupt: its content hashes to {actual}");
                        s.verdict.set(why.clone());
                        return Some((Err(io::Error::new(io::ErrorKind::InvalidData, why)), s));
                    }
                    let last = s.held.take()?;
                    return Some((Ok(last), s));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt as _;

    use super::*;

    async fn collect(bytes: Vec<u8>, expected: Digest) -> (Vec<io::Result<Bytes>>, Verdict, u64) {
        let verdict = Verdict::default();
        let read = Arc::new(AtomicU64::new(0));
        let items = verified(
            std::io::Cursor::new(bytes),
            expected,
            verdict.clone(),
            read.clone(),
        )
        .collect()
        .await;
        (items, verdict, read.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn matching_content_passes_whole() {
        let bytes: Vec<u8> = (0..CHUNK * 2 + 5).map(|i| (i % 251) as u8).collect();
        let (items, verdict, read) = collect(bytes.clone(), Digest::sha256(&bytes)).await;
        let joined: Vec<u8> = items
            .into_iter()
            .flat_map(|c| c.unwrap().to_vec())
            .collect();
        assert_eq!(joined, bytes);
        assert_eq!(read, bytes.len() as u64);
        assert!(verdict.failure().is_none());
        let (items, verdict, _) = collect(Vec::new(), Digest::sha256(b"")).await;
        assert!(items.is_empty() && verdict.failure().is_none());
    }

    #[tokio::test]
    async fn a_flipped_byte_withholds_the_last_chunk() {
        let bytes: Vec<u8> = vec![7; CHUNK + 10];
        let expected = Digest::sha256(&bytes);
        let mut corrupt = bytes.clone();
        corrupt[CHUNK + 3] ^= 1;
        let (items, verdict, _) = collect(corrupt.clone(), expected).await;
        assert_eq!(items.len(), 2, "the first chunk, then the error");
        assert!(items[0].is_ok());
        let e = items[1].as_ref().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            verdict.failure(),
            Some(format!(
                "corrupt: its content hashes to {}",
                Digest::sha256(&corrupt)
            ))
        );
        // A short file is caught the same way.
        let (items, verdict, _) = collect(bytes[..5].to_vec(), Digest::sha256(&bytes)).await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err() && verdict.failure().is_some());
    }
}
