//! openraft's type configuration for berth, and the aliases the rest of the
//! cluster module uses.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::meta::{Command, Outcome};

/// How to reach a member: its peer (gRPC) address and its client API address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub peer: String,
    pub api: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {} api {}", self.peer, self.api)
    }
}

/// A snapshot of the state machine: a file on disk, never a buffer.
#[derive(Debug)]
pub struct SnapshotFile {
    pub path: std::path::PathBuf,
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = NodeAddr,
        SnapshotData = SnapshotFile,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeAddr>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeAddr>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
