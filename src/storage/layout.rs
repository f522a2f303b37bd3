//! Where everything lives in the data directory. No other module builds paths.
//!
//! ```text
//! <data-dir>/
//!   node-id                         this node's identity, created once
//!   token-key                       a standalone node's token signing key
//!   db/                             the node's RocksDB (see crate::db::keys)
//!   blobs/<alg>/<2 hex>/<hex>       verified, fsynced blob content
//!   uploads/<id>                    bytes of an upload session in progress
//!   tmp/<random>                    a blob being received before verification
//!   snapshots/<id>.snap             the latest state-machine snapshot
//!   snapshots/<id>.meta             its Raft metadata
//!   quarantine/<alg>-<hex>-<secs>   a copy that failed its digest check
//! ```

use std::path::{Path, PathBuf};

use crate::oci::Digest;

#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// Creates the directories that must exist before the node starts, and
    /// empties `tmp/`: what a crash left there was never acknowledged.
    pub fn create(&self) -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(self.tmp_dir());
        for dir in [
            self.blobs_root(),
            self.uploads_dir(),
            self.tmp_dir(),
            self.snapshots_dir(),
        ] {
            std::fs::create_dir_all(dir)?;
        }
        Ok(())
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data format version (`storage::format`).
    pub fn format_file(&self) -> PathBuf {
        self.root.join("format")
    }

    pub fn token_key(&self) -> PathBuf {
        self.root.join("token-key")
    }

    pub fn node_id(&self) -> PathBuf {
        self.root.join("node-id")
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }

    pub fn blobs_root(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub fn blob(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.blobs_root()
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    pub fn upload(&self, id: &str) -> PathBuf {
        self.uploads_dir().join(id)
    }

    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where copies that failed their digest check are kept (`storage::scrub`).
    pub fn quarantine_dir(&self) -> PathBuf {
        self.root.join("quarantine")
    }

    /// A new name in `quarantine/` for a bad copy of `digest`.
    pub fn quarantined(&self, digest: &Digest) -> PathBuf {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.quarantine_dir().join(format!(
            "{}-{}-{secs}",
            digest.algorithm().name(),
            digest.hex()
        ))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn tmp_file(&self) -> PathBuf {
        self.tmp_dir()
            .join(format!("{:016x}", rand::random::<u64>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_paths_fan_out_by_prefix() {
        let l = Layout::new("/d");
        let d = Digest::sha256(b"");
        assert_eq!(
            l.blob(&d),
            PathBuf::from(
                "/d/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            )
        );
    }
}
