//! Copies of a blob's bytes handed to other consumers while the blob is
//! written, so replicas can receive it at the same time as the local disk.
//!
//! A [`Mirror`] gets every byte in order and, once the local copy verified
//! against its digest, an [`Mirrored::End`] naming it. A mirror that stops
//! without an `End` (a failed or abandoned upload) tells its consumers to
//! discard what they got. A sink that closes or stalls is dropped and the
//! write goes on without it.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::oci::Digest;

/// Longest a write waits for a sink to take a batch before dropping it.
const STALL: Duration = Duration::from_secs(10);

pub enum Mirrored {
    Data(Bytes),
    /// The bytes sent so far are the whole blob, verified locally.
    End {
        digest: Digest,
        size: u64,
    },
}

/// One consumer: its channel and the report of whether it kept its copy.
pub struct MirrorSink {
    /// The caller's name for the consumer.
    pub id: u64,
    tx: mpsc::Sender<Mirrored>,
    kept: oneshot::Receiver<Result<(), String>>,
}

impl MirrorSink {
    pub fn new(
        id: u64,
        tx: mpsc::Sender<Mirrored>,
        kept: oneshot::Receiver<Result<(), String>>,
    ) -> MirrorSink {
        MirrorSink { id, tx, kept }
    }

    /// Waits for the consumer's verdict on the copy.
    pub async fn kept(self) -> Result<(), String> {
        drop(self.tx);
        self.kept
            .await
            .unwrap_or_else(|_| Err("the copy stopped without a result".into()))
    }
}

#[derive(Default)]
pub struct Mirror {
    sinks: Vec<MirrorSink>,
}

impl Mirror {
    pub fn new(sinks: Vec<MirrorSink>) -> Mirror {
        Mirror { sinks }
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// The sinks still attached, for the caller to collect their verdicts.
    pub fn into_sinks(self) -> Vec<MirrorSink> {
        self.sinks
    }

    pub(super) async fn data(&mut self, bytes: &Bytes) {
        self.send(|| Mirrored::Data(bytes.clone())).await
    }

    pub(super) async fn end(&mut self, digest: &Digest, size: u64) {
        self.send(|| Mirrored::End {
            digest: digest.clone(),
            size,
        })
        .await
    }

    /// Drops every sink: consumers see the stream stop without an `End`.
    pub(super) fn abandon(&mut self) {
        self.sinks.clear();
    }

    async fn send(&mut self, item: impl Fn() -> Mirrored) {
        let mut kept = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks.drain(..) {
            match tokio::time::timeout(STALL, sink.tx.send(item())).await {
                Ok(Ok(())) => kept.push(sink),
                Ok(Err(_)) => {
                    tracing::debug!(sink = sink.id, "a blob copy stopped taking bytes")
                }
                Err(_) => {
                    tracing::warn!(
                        sink = sink.id,
                        "a blob copy stalled; it continues after the upload"
                    )
                }
            }
        }
        self.sinks = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(id: u64, cap: usize) -> (MirrorSink, mpsc::Receiver<Mirrored>) {
        let (tx, rx) = mpsc::channel(cap);
        let (_done, kept) = oneshot::channel();
        (MirrorSink::new(id, tx, kept), rx)
    }

    #[tokio::test]
    async fn closed_sinks_are_dropped_and_the_rest_get_everything() {
        let (a, mut ra) = sink(1, 8);
        let (b, rb) = sink(2, 8);
        let mut m = Mirror::new(vec![a, b]);
        drop(rb);
        m.data(&Bytes::from_static(b"ab")).await;
        m.end(&Digest::sha256(b"ab"), 2).await;
        assert_eq!(m.sinks.len(), 1);
        assert!(matches!(ra.recv().await, Some(Mirrored::Data(d)) if d == "ab"));
        assert!(matches!(
            ra.recv().await,
            Some(Mirrored::End { size: 2, .. })
        ));
        m.abandon();
        assert!(m.is_empty());
        assert!(ra.recv().await.is_none());
    }
}
