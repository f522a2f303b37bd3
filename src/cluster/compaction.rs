//! When to snapshot the state machine and compact the log: after a number
//! of commands, however many entries held them, that grows with the state.
//!
//! openraft counts entries (its own policy stays as a backstop), and a
//! batched entry can hold hundreds of commands, so counting entries would
//! let the log grow hundreds of times larger between snapshots under load.
//! A fixed count would make a large registry write its whole state again
//! and again (at a million tags, a 700 MB snapshot every 5000 writes: the
//! load of a registry slowed with its size). So the next snapshot comes
//! after a quarter as many commands as the last one held records, between
//! [`SNAPSHOT_COMMANDS`] and [`MAX_SNAPSHOT_COMMANDS`]: the work of writing
//! snapshots stays a few records per command, and the log stays small
//! beside the state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::types::Raft;

/// Commands applied between snapshots of a small state.
pub const SNAPSHOT_COMMANDS: u64 = 5000;
/// Commands applied between snapshots of a large one: what a joining node
/// may have to apply after the snapshot it is sent.
pub const MAX_SNAPSHOT_COMMANDS: u64 = 100_000;

/// Commands applied since the last snapshot began, shared by the state
/// machine (which counts) and the task that asks openraft for a snapshot.
#[derive(Clone)]
pub struct SnapshotDue {
    since: Arc<AtomicU64>,
    /// Commands after which the next snapshot is due.
    every: Arc<AtomicU64>,
    due: Arc<Notify>,
}

impl Default for SnapshotDue {
    fn default() -> SnapshotDue {
        SnapshotDue {
            since: Arc::default(),
            every: Arc::new(AtomicU64::new(SNAPSHOT_COMMANDS)),
            due: Arc::default(),
        }
    }
}

impl SnapshotDue {
    /// Counts `commands` applied; past the threshold, a snapshot is due.
    pub fn applied(&self, commands: u64) {
        self.since.fetch_add(commands, Ordering::Relaxed);
        if self.is_due() {
            self.due.notify_one();
        }
    }

    /// A snapshot's view is being taken: it holds everything applied.
    pub fn began(&self) {
        self.since.store(0, Ordering::Relaxed);
    }

    /// A snapshot of `records` records was written: the next comes after a
    /// quarter as many commands, within the bounds.
    pub fn built(&self, records: u64) {
        let every = (records / 4).clamp(SNAPSHOT_COMMANDS, MAX_SNAPSHOT_COMMANDS);
        self.every.store(every, Ordering::Relaxed);
    }

    fn is_due(&self) -> bool {
        self.since.load(Ordering::Relaxed) >= self.every.load(Ordering::Relaxed)
    }
}

/// Asks openraft for a snapshot whenever one is due, until `stop`.
pub async fn run(raft: Raft, due: SnapshotDue, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = due.due.notified() => {}
        }
        // A notice left from before the last snapshot began is stale.
        if !due.is_due() {
            continue;
        }
        if let Err(e) = raft.trigger().snapshot().await {
            tracing::debug!(error = %e, "could not ask for a snapshot");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_due_after_enough_commands_in_any_number_of_entries() {
        let due = SnapshotDue::default();
        due.applied(SNAPSHOT_COMMANDS - 1);
        assert!(!due.is_due());
        due.applied(1);
        assert!(due.is_due());
        due.began();
        assert!(!due.is_due());
        for _ in 0..SNAPSHOT_COMMANDS / 250 {
            due.applied(250);
        }
        assert!(due.is_due(), "batched entries count by their commands");
    }

    #[test]
    fn a_larger_state_is_snapshotted_after_more_commands_within_bounds() {
        let due = SnapshotDue::default();
        due.built(4 * 20_000);
        due.began();
        due.applied(19_999);
        assert!(
            !due.is_due(),
            "80,000 records: a snapshot per 20,000 commands"
        );
        due.applied(1);
        assert!(due.is_due());
        due.built(1000);
        due.began();
        due.applied(SNAPSHOT_COMMANDS);
        assert!(due.is_due(), "a small state keeps the least");
        due.built(u64::MAX);
        due.began();
        due.applied(MAX_SNAPSHOT_COMMANDS - 1);
        assert!(!due.is_due());
        due.applied(1);
        assert!(due.is_due(), "a huge state waits no more than the most");
    }
}
