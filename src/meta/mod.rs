//! The replicated state machine: repositories, tags, manifests, referrers and
//! which blobs each repository holds.
//!
//! Every change is a [`Command`], serializable and applied deterministically
//! by [`StateMachine::stage`]: the same commands in the same order give the
//! same state on every node, and the checks that decide whether a command is
//! accepted (does this manifest's blob exist?) run inside `stage`, so they
//! cannot race with other writes. Reads go through [`query`], never through
//! commands.

pub mod access;
pub mod bases;
mod batch;
pub mod command;
pub mod events;
pub mod evict;
pub mod gc;
pub mod policy;
pub mod query;
pub mod quota;
pub mod refs;
pub mod retention;
pub mod state;
#[cfg(test)]
pub(crate) mod testing;
pub mod webhooks;

pub use batch::Batch;
pub use command::{Attributed, Collect, Command, GcReport, PutManifest};
pub use query::Page;
pub use state::{ManifestRecord, StateMachine};

use serde::{Deserialize, Serialize};

use crate::oci::Digest;

/// Why a command was not applied. Rejections are deterministic: every node
/// that applies the same command rejects it the same way, so they travel
/// back to the proposer as the command's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest unknown to the repository")]
    ManifestUnknown,
    #[error("blob unknown to the repository")]
    BlobUnknown,
    #[error("{0}")]
    AccessInvalid(String),
    #[error("{0}")]
    AccessUnknown(String),
    /// A tag an immutable rule covers would move or go.
    #[error("tag {tag} is immutable (rule {rule}); push under a new tag instead")]
    TagImmutable { tag: String, rule: String },
    /// The manifest would take its namespace past its quota.
    #[error("pushing this manifest would raise the storage used by namespace {namespace} to {}, over its quota of {}; delete images and run garbage collection, or ask an administrator for more", quota::size_text(*.usage), quota::size_text(*.limit))]
    QuotaExceeded {
        namespace: String,
        usage: u64,
        limit: u64,
    },
    #[error("no webhook endpoint {0:?}")]
    WebhookUnknown(String),
    /// A command no node proposes.
    #[error("malformed command: {0}")]
    Malformed(String),
}

/// The result of applying one command.
pub type Applied = Result<(), Rejection>;

/// The results of applying one log entry: one per command it holds (none
/// for a blank or membership entry).
pub type Outcome = Vec<Applied>;
