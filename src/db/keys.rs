//! Column families and key encodings of the node's RocksDB.
//!
//! ```text
//! replicated state machine (identical on every node)
//!   repos       <repo>                          -> RepoRecord
//!   tags        <repo> 0x00 <tag>               -> digest (utf-8)
//!   manifests   <repo> 0x00 <digest>            -> ManifestRecord
//!   referrers   <repo> 0x00 <subject> 0x00 <digest> -> ()
//!   repo_blobs  <repo> 0x00 <digest>            -> size (u64 big-endian)
//!   blobs       <digest>                        -> size (u64 big-endian)
//!   holders     <digest> 0x00 <node id, 16 hex> -> ()   which nodes store the bytes
//!   access      "state"                         -> AccessState (users, teams, grants, robots)
//!               "version"                       -> u64 big-endian, moves with every change
//!   blob_refs   <blob> 0x00 <repo> 0x00 <manifest> -> ()  which manifests reference a blob
//!               0x00 "version"                  -> u64: the derived families are complete
//!   blob_repos  <blob> 0x00 <repo>              -> ()   the repositories a blob is linked into
//!   child_refs  <repo> 0x00 <child> 0x00 <index> -> ()  which indexes list a manifest
//!   manifest_refs <repo> 0x00 <manifest>        -> the blobs and child manifests it names
//!   gc          "run"                           -> the last collection's report
//!               "node" 0x00 <node id, 16 hex>   -> that node's sweep figures
//!   policies    "immutable" 0x00 <repo | ns/*>   -> tag patterns that may not move
//!               "retention" 0x00 <repo | ns/*>   -> RetentionRule
//!               "quota" 0x00 <namespace>         -> byte limit (u64 big-endian)
//!   tag_times   <repo> 0x00 <tag>               -> when the tag was last pushed (u64)
//!   usage       <namespace>                     -> unique blob bytes its manifests reference
//!   pull_times  <repo> 0x00 <digest>            -> when a mirror last served it (u64)
//!   events      <log index u64> <position u32>  -> Event, kept until every webhook had it
//!   webhooks    "ep" | "pos" | "park" | "try" ... -> endpoints and their delivery (meta::webhooks)
//!   bases       "L" | "A" | "R" ...              -> which images are built on which (meta::bases)
//!   sm_meta     "last_applied" | "membership" | "installing" -> openraft state
//! node-local
//!   local_blobs <digest>                        -> LocalBlob
//!   uploads     <upload id>                     -> UploadRecord
//!   sweep       <digest>                        -> ()   collected blobs whose file is still here
//!   raft_log    <index u64 big-endian>          -> log entry
//!   raft_meta   "vote" | "committed" | "last_purged" -> openraft state
//! ```
//! Names, tags and digests never contain 0x00, so `<repo> 0x00` is an exact
//! prefix for one repository, and keys sort by repository, then by tag or
//! digest in byte order (which is lexical order for these ASCII strings).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cf {
    Repos,
    Tags,
    Manifests,
    Referrers,
    RepoBlobs,
    Blobs,
    Holders,
    Access,
    SmMeta,
    LocalBlobs,
    Uploads,
    RaftLog,
    RaftMeta,
    BlobRefs,
    BlobRepos,
    ChildRefs,
    ManifestRefs,
    Gc,
    Sweep,
    Policies,
    TagTimes,
    Usage,
    PullTimes,
    Events,
    Webhooks,
    Bases,
}

impl Cf {
    pub const ALL: [Cf; 26] = [
        Cf::Repos,
        Cf::Tags,
        Cf::Manifests,
        Cf::Referrers,
        Cf::RepoBlobs,
        Cf::Blobs,
        Cf::Holders,
        Cf::Access,
        Cf::SmMeta,
        Cf::LocalBlobs,
        Cf::Uploads,
        Cf::RaftLog,
        Cf::RaftMeta,
        Cf::BlobRefs,
        Cf::BlobRepos,
        Cf::ChildRefs,
        Cf::ManifestRefs,
        Cf::Gc,
        Cf::Sweep,
        Cf::Policies,
        Cf::TagTimes,
        Cf::Usage,
        Cf::PullTimes,
        Cf::Events,
        Cf::Webhooks,
        Cf::Bases,
    ];

    /// The families whose content is the replicated state (what a snapshot
    /// carries), not counting `sm_meta`, which the snapshot's metadata replaces.
    /// New families go last: a snapshot names a family by its position here.
    pub const REPLICATED: [Cf; 20] = [
        Cf::Repos,
        Cf::Tags,
        Cf::Manifests,
        Cf::Referrers,
        Cf::RepoBlobs,
        Cf::Blobs,
        Cf::Holders,
        Cf::Access,
        Cf::BlobRefs,
        Cf::BlobRepos,
        Cf::ChildRefs,
        Cf::ManifestRefs,
        Cf::Gc,
        Cf::Policies,
        Cf::TagTimes,
        Cf::Usage,
        Cf::PullTimes,
        Cf::Events,
        Cf::Webhooks,
        Cf::Bases,
    ];

    /// The replicated families that are indexes of the others: a node
    /// rebuilds them when they are missing (after an upgrade, or from a
    /// snapshot that did not carry them).
    pub const DERIVED: [Cf; 6] = [
        Cf::BlobRefs,
        Cf::BlobRepos,
        Cf::ChildRefs,
        Cf::ManifestRefs,
        Cf::Usage,
        Cf::Bases,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Repos => "repos",
            Cf::Tags => "tags",
            Cf::Manifests => "manifests",
            Cf::Referrers => "referrers",
            Cf::RepoBlobs => "repo_blobs",
            Cf::Blobs => "blobs",
            Cf::Holders => "holders",
            Cf::Access => "access",
            Cf::SmMeta => "sm_meta",
            Cf::LocalBlobs => "local_blobs",
            Cf::Uploads => "uploads",
            Cf::RaftLog => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::BlobRefs => "blob_refs",
            Cf::BlobRepos => "blob_repos",
            Cf::ChildRefs => "child_refs",
            Cf::ManifestRefs => "manifest_refs",
            Cf::Gc => "gc",
            Cf::Sweep => "sweep",
            Cf::Policies => "policies",
            Cf::TagTimes => "tag_times",
            Cf::Usage => "usage",
            Cf::PullTimes => "pull_times",
            Cf::Events => "events",
            Cf::Webhooks => "webhooks",
            Cf::Bases => "bases",
        }
    }
}

const SEP: u8 = 0;

/// `part0 0x00 part1 0x00 …`
pub fn join(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            key.push(SEP);
        }
        key.extend_from_slice(p.as_bytes());
    }
    key
}

/// The prefix of every key under `parts`: the joined parts and a separator.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut key = join(parts);
    key.push(SEP);
    key
}

/// The last component of a joined key.
pub fn last_part(key: &[u8]) -> &[u8] {
    match key.iter().rposition(|&b| b == SEP) {
        Some(i) => &key[i + 1..],
        None => key,
    }
}

/// A node id as it appears inside keys: fixed-width hex, so ids sort.
pub fn node_part(id: u64) -> String {
    format!("{id:016x}")
}

pub fn parse_node_part(part: &[u8]) -> Option<u64> {
    u64::from_str_radix(std::str::from_utf8(part).ok()?, 16).ok()
}

pub fn u64_value(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub fn parse_u64(v: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(v.try_into().ok()?))
}

/// A `blobs` record: the size, and since when (unix seconds) the blob has
/// been without references as far as anyone knows: the later of its last
/// link and the last removal of a manifest that referenced it.
pub fn blob_value(size: u64, since: u64) -> [u8; 16] {
    let mut v = [0; 16];
    v[..8].copy_from_slice(&size.to_be_bytes());
    v[8..].copy_from_slice(&since.to_be_bytes());
    v
}

/// Size and since-time of a `blobs` record. Records written before the
/// time was kept hold the size alone, and count as unreferenced since ever.
pub fn parse_blob_value(v: &[u8]) -> Option<(u64, u64)> {
    match v.len() {
        8 => Some((parse_u64(v)?, 0)),
        16 => Some((parse_u64(&v[..8])?, parse_u64(&v[8..])?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_repo_then_part() {
        let mut keys = [
            join(&["a-b", "x"]),
            join(&["a", "z"]),
            join(&["a", "b"]),
            join(&["a/b", "a"]),
        ];
        keys.sort();
        assert_eq!(keys[0], join(&["a", "b"]));
        assert_eq!(keys[1], join(&["a", "z"]));
        assert!(join(&["a", "z"]).starts_with(&prefix(&["a"])));
        assert!(!join(&["a-b", "x"]).starts_with(&prefix(&["a"])));
        assert_eq!(last_part(&join(&["r", "s", "t"])), b"t");
        assert_eq!(parse_u64(&u64_value(42)), Some(42));
        assert_eq!(parse_blob_value(&blob_value(5, 9)), Some((5, 9)));
        assert_eq!(parse_blob_value(&u64_value(5)), Some((5, 0)));
        assert_eq!(parse_blob_value(b"bad"), None);
    }
}
