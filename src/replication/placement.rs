//! Which nodes should hold a blob: rendezvous hashing over the members, so
//! every node computes the same set and a membership change moves only the
//! blobs it must.

use sha2::{Digest as _, Sha256};

use crate::oci::Digest;

/// How many copies of each blob to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicationFactor {
    Copies(usize),
    All,
}

impl std::str::FromStr for ReplicationFactor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(ReplicationFactor::All),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(ReplicationFactor::Copies(n)),
                _ => Err(format!(
                    "replication factor {s:?} must be a number of at least 1, or 'all'"
                )),
            },
        }
    }
}

fn score(digest: &Digest, node: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(digest.as_str().as_bytes());
    h.update(node.to_be_bytes());
    h.finalize().into()
}

/// Every member, best-ranked first for `digest`.
pub fn ranked(digest: &Digest, members: &[u64]) -> Vec<u64> {
    let mut all = members.to_vec();
    all.sort_by_key(|&m| std::cmp::Reverse(score(digest, m)));
    all
}

/// The nodes that should hold `digest`, `first` (the node that received the
/// upload) leading. With fewer members than the factor, every member.
pub fn replica_set(
    digest: &Digest,
    members: &[u64],
    first: u64,
    factor: ReplicationFactor,
) -> Vec<u64> {
    let want = copies(factor, members.len().max(1));
    let others = ranked(digest, members).into_iter().filter(|&m| m != first);
    std::iter::once(first).chain(others).take(want).collect()
}

/// How many copies of each blob a cluster of `members` keeps.
pub fn copies(factor: ReplicationFactor, members: usize) -> usize {
    match factor {
        ReplicationFactor::All => members,
        ReplicationFactor::Copies(n) => n.min(members),
    }
}

/// Copies that must be stored before an upload is acknowledged: a majority
/// of the replica set.
pub fn write_quorum(replicas: usize) -> usize {
    replicas / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_stable_and_bounded() {
        let d = Digest::sha256(b"blob");
        let members = [1, 2, 3, 4, 5];
        let set = replica_set(&d, &members, 4, ReplicationFactor::Copies(3));
        assert_eq!(set.len(), 3);
        assert_eq!(set[0], 4);
        assert_eq!(
            set,
            replica_set(&d, &[5, 4, 3, 2, 1], 4, ReplicationFactor::Copies(3))
        );
        assert_eq!(
            replica_set(&d, &[1], 1, ReplicationFactor::Copies(3)),
            vec![1]
        );
        assert_eq!(
            replica_set(&d, &members, 1, ReplicationFactor::All).len(),
            5
        );
        assert_eq!(write_quorum(1), 1);
        assert_eq!(write_quorum(3), 2);
        assert_eq!(write_quorum(5), 3);
        assert_eq!("all".parse(), Ok(ReplicationFactor::All));
        assert_eq!("2".parse(), Ok(ReplicationFactor::Copies(2)));
        assert!("0".parse::<ReplicationFactor>().is_err());
    }
}
