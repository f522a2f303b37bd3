//! The leader's proposals: commands that arrive while earlier entries are
//! being committed wait, and go together as one entry ([`Command::Batch`]),
//! so concurrent writes share one log append, one replication message and
//! one fsync on each member. Each caller still gets its own command's
//! result, once the entry is applied.
//!
//! A command that arrives while fewer than [`IN_FLIGHT`] entries are being
//! committed goes at once, alone: a lone write waits for nobody.

// openraft's error types are large and its signatures dictate them.
#![allow(clippy::result_large_err)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::types::{NodeAddr, NodeId, Raft};
use crate::meta::{Applied, Command, Rejection};

/// Entries being committed at once; more commands wait and share the next.
const IN_FLIGHT: usize = 2;
/// Most commands in one entry.
const MAX_BATCH: usize = 256;
/// Most bytes of encoded commands in one entry, past the first: manifests
/// can be large, and a replication message carries whole entries.
const MAX_BATCH_BYTES: usize = 1 << 20;
/// Commands waiting for a place in an entry.
const QUEUE: usize = 4096;

pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, NodeAddr>>;
type Reply = oneshot::Sender<Result<(u64, Applied), WriteError>>;

/// Hands commands to the leader's proposal loop.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<(Command, Reply)>,
    counts: Arc<Counts>,
}

/// What this node has proposed since it started.
#[derive(Default)]
struct Counts {
    entries: AtomicU64,
    commands: AtomicU64,
}

impl Proposer {
    /// Starts the loop proposing to `raft`; it ends when every `Proposer`
    /// is dropped.
    pub fn start(raft: Raft) -> Proposer {
        let (queue, waiting) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(raft, waiting, counts.clone()));
        Proposer { queue, counts }
    }

    /// Entries this node has proposed, and the commands they held.
    pub fn proposed(&self) -> (u64, u64) {
        (
            self.counts.entries.load(Ordering::Relaxed),
            self.counts.commands.load(Ordering::Relaxed),
        )
    }

    /// Proposes `cmd` through this node's Raft (which refuses it unless
    /// this node leads). Returns the entry's log index and the command's
    /// result, once the entry is applied here.
    pub async fn propose(&self, cmd: Command) -> Result<(u64, Applied), WriteError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RaftError::Fatal(openraft::error::Fatal::Stopped);
        self.queue.send((cmd, reply)).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut waiting: mpsc::Receiver<(Command, Reply)>, counts: Arc<Counts>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = waiting.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever queued while the slot was busy goes along.
        let mut batch = vec![first];
        let mut bytes = 0;
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match waiting.try_recv() {
                Ok(next) => {
                    bytes += command_size(&next.0);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        counts.entries.fetch_add(1, Ordering::Relaxed);
        counts
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Proposes `batch` as one entry (a lone command as itself) and answers
/// each caller with its own command's result.
async fn commit(raft: &Raft, batch: Vec<(Command, Reply)>) {
    let (mut cmds, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let entry = match cmds.len() {
        1 => cmds.pop().expect("one command"),
        _ => Command::Batch(cmds),
    };
    match raft.client_write(entry).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut results = resp.data.into_iter();
            for reply in replies {
                let applied = results.next().unwrap_or_else(unanswered);
                let _ = reply.send(Ok((index, applied)));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The state machine answers every command of an entry it applies; a
/// command it did not answer is never reported as applied.
fn unanswered() -> Applied {
    Err(Rejection::Malformed(
        "the entry gave no result for this command".into(),
    ))
}

/// A command's encoded size, near enough to bound an entry.
fn command_size(cmd: &Command) -> usize {
    match cmd.inner() {
        Command::PutManifest(put) | Command::CacheManifest(put) => put.body.len() + 256,
        _ => 256,
    }
}
