//! Encoding of openraft messages carried in `Payload.data`: postcard over
//! openraft's serde types. A payload that does not decode is an error the
//! caller reports, never a value silently dropped.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("raft messages always serialize")
}

#[derive(Debug, thiserror::Error)]
#[error("undecodable {what} from peer: {source}")]
pub struct DecodeError {
    what: &'static str,
    source: postcard::Error,
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|source| DecodeError { what, source })
}

impl From<DecodeError> for tonic::Status {
    fn from(e: DecodeError) -> tonic::Status {
        tonic::Status::invalid_argument(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::types::{Entry, NodeAddr, TypeConfig};
    use crate::meta::Command;
    use crate::oci::Digest;
    use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse};
    use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn raft_messages_round_trip() {
        let log_id = LogId::new(CommittedLeaderId::new(3, 7), 42);
        let cmd = Command::LinkBlob {
            repo: "a/b".parse().unwrap(),
            digest: Digest::sha256(b"x"),
            size: 1,
            at: 2,
            holders: vec![7],
        };
        let mut nodes = BTreeMap::new();
        nodes.insert(
            7u64,
            NodeAddr {
                peer: "p:1".into(),
                api: "a:2".into(),
            },
        );
        let membership = Membership::new(vec![BTreeSet::from([7u64])], nodes);
        let req = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(3, 7),
            prev_log_id: Some(log_id),
            entries: vec![
                Entry {
                    log_id,
                    payload: EntryPayload::Normal(cmd),
                },
                Entry {
                    log_id,
                    payload: EntryPayload::Membership(membership),
                },
                Entry {
                    log_id,
                    payload: EntryPayload::Blank,
                },
            ],
            leader_commit: Some(log_id),
        };
        let back: AppendEntriesRequest<TypeConfig> = decode("append", &encode(&req)).unwrap();
        assert_eq!(format!("{back:?}"), format!("{req:?}"));
        let resp: AppendEntriesResponse<u64> = AppendEntriesResponse::HigherVote(Vote::new(4, 1));
        assert_eq!(
            decode::<AppendEntriesResponse<u64>>("resp", &encode(&resp)).unwrap(),
            resp
        );
        assert!(decode::<AppendEntriesRequest<TypeConfig>>("append", b"\x01\x02").is_err());
    }
}
