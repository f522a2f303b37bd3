//! Hashing off the path that moves the bytes: a [`HashPipe`] feeds a hasher
//! on a blocking thread of its own, so that receiving, writing and hashing a
//! blob overlap instead of taking turns on one task.

use std::io;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::oci::{Algorithm, Digest, Hasher};

/// Chunks queued for the hasher; a sender waits once the hasher is this far
/// behind, which bounds the memory held to a few chunks.
const QUEUE: usize = 4;

pub struct HashPipe {
    chunks: mpsc::Sender<Vec<Bytes>>,
    state: JoinHandle<Hasher>,
}

impl HashPipe {
    pub fn new(hasher: Hasher) -> HashPipe {
        let (chunks, mut rx) = mpsc::channel::<Vec<Bytes>>(QUEUE);
        let state = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(parts) = rx.blocking_recv() {
                for part in parts {
                    hasher.update(&part);
                }
            }
            hasher
        });
        HashPipe { chunks, state }
    }

    /// Queues `data` (a cheap clone of the caller's bytes) for hashing.
    pub async fn update(&self, data: Bytes) -> io::Result<()> {
        self.update_parts(vec![data]).await
    }

    /// Queues consecutive pieces, hashed in order, as one item.
    pub async fn update_parts(&self, parts: Vec<Bytes>) -> io::Result<()> {
        self.chunks.send(parts).await.map_err(|_| stopped())
    }

    /// The hasher, once it has taken everything queued: its state carries
    /// on, as an upload session's does from one chunk to the next.
    pub async fn into_hasher(self) -> io::Result<Hasher> {
        drop(self.chunks);
        self.state.await.map_err(io::Error::other)
    }

    /// The digest of everything queued.
    pub async fn finish(self) -> io::Result<Digest> {
        Ok(self.into_hasher().await?.finish())
    }

    /// As [`HashPipe::update`], from a blocking thread.
    pub fn update_blocking(&self, data: Bytes) -> io::Result<()> {
        self.chunks.blocking_send(vec![data]).map_err(|_| stopped())
    }

    /// As [`HashPipe::finish`], from a blocking thread.
    pub fn finish_blocking(self) -> io::Result<Digest> {
        drop(self.chunks);
        let hasher = tokio::runtime::Handle::current().block_on(self.state);
        Ok(hasher.map_err(io::Error::other)?.finish())
    }
}

fn stopped() -> io::Error {
    io::Error::other("the hashing thread stopped")
}

/// Inputs at least this long are hashed beside their reader.
const BESIDE_FROM: u64 = 8 << 20;

/// Hashing for a blocking thread that reads a file: inline for a small
/// file, through a [`HashPipe`] for a large one, so that reading and
/// sending the bytes do not wait for their hash.
pub enum SideHasher {
    Inline(Box<Hasher>),
    Beside(HashPipe),
}

impl SideHasher {
    /// A hasher for `len` bytes; call it from a blocking thread.
    pub fn new(algorithm: Algorithm, len: u64) -> SideHasher {
        match len < BESIDE_FROM {
            true => SideHasher::Inline(Box::new(algorithm.hasher())),
            false => SideHasher::Beside(HashPipe::new(algorithm.hasher())),
        }
    }

    pub fn update(&mut self, data: &Bytes) -> io::Result<()> {
        match self {
            SideHasher::Inline(h) => {
                h.update(data);
                Ok(())
            }
            SideHasher::Beside(pipe) => pipe.update_blocking(data.clone()),
        }
    }

    /// The digest of every byte given.
    pub fn finish(self) -> io::Result<Digest> {
        match self {
            SideHasher::Inline(h) => Ok(h.finish()),
            SideHasher::Beside(pipe) => pipe.finish_blocking(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_digest_is_that_of_every_chunk_in_order() {
        let pipe = HashPipe::new(Algorithm::Sha256.hasher());
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for piece in data.chunks(4096) {
            pipe.update(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        assert_eq!(pipe.finish().await.unwrap(), Digest::sha256(&data));
        let empty = HashPipe::new(Algorithm::Sha256.hasher());
        assert_eq!(empty.finish().await.unwrap(), Digest::sha256(b""));
    }

    #[tokio::test]
    async fn a_side_hasher_hashes_alike_inline_and_beside() {
        let data: Vec<u8> = (0..(9u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
        let whole = data.len();
        for len in [1000, whole] {
            let input = data[..len].to_vec();
            let (beside, digest) = tokio::task::spawn_blocking(move || {
                let mut side = SideHasher::new(Algorithm::Sha256, len as u64);
                let beside = matches!(side, SideHasher::Beside(_));
                for piece in input.chunks(1 << 20) {
                    side.update(&Bytes::copy_from_slice(piece)).unwrap();
                }
                (beside, side.finish().unwrap())
            })
            .await
            .unwrap();
            assert_eq!(beside, len == whole);
            assert_eq!(digest, Digest::sha256(&data[..len]));
        }
    }
}
