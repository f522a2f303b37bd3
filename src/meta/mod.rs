//! The replicated state machine: repositories, tags, manifests, referrers and
//! which blobs each repository holds.
//!
//! Every change is a [`Command`], serializable and applied deterministically
//! by [`StateMachine::apply`]: the same commands in the same order give the
//! same state on every node, and the checks that decide whether a command is
//! accepted (does this manifest's blob exist?) run inside `apply`, so they
//! cannot race with other writes. Reads go through [`query`], never through
//! commands.

pub mod command;
pub mod query;
pub mod state;

use std::sync::Arc;

pub use command::{Command, PutManifest};
pub use query::Page;
pub use state::{ManifestRecord, StateMachine};

use crate::db::{Db, DbError};
use crate::oci::Digest;

/// Why a command was not applied. Rejections are deterministic: every node
/// that applies the same command rejects it the same way.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest unknown to the repository")]
    ManifestUnknown,
    #[error("blob unknown to the repository")]
    BlobUnknown,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The node's way to change and read metadata. With one node, commands apply
/// directly, one at a time, durably; the state machine stays the same when
/// commands come from a replicated log instead.
#[derive(Clone)]
pub struct Meta {
    sm: StateMachine,
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Meta {
    pub fn new(db: Db) -> Meta {
        Meta {
            sm: StateMachine::new(db),
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Applies a command; returns once it is durable.
    pub async fn write(&self, cmd: Command) -> Result<(), MetaError> {
        let _guard = self.write_lock.lock().await;
        let sm = self.sm.clone();
        tokio::task::spawn_blocking(move || sm.apply(&cmd))
            .await
            .map_err(|e| DbError::Corrupt {
                what: "apply task",
                reason: e.to_string(),
            })?
    }

    pub fn read(&self) -> &StateMachine {
        &self.sm
    }
}
