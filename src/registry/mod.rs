//! The operations a client asks for, written once and used by the HTTP layer:
//! uploads and their commit, blob reads, manifest push and resolution,
//! deletes, listings and referrers. Nothing here knows about HTTP framing.

mod error;
mod manifests;
mod uploads;

use std::path::PathBuf;

pub use error::Error;
pub use manifests::{ManifestPushed, ResolvedManifest};
pub use uploads::{StartUpload, UploadStarted};

use crate::db::Db;
use crate::meta::{Command, Meta, Page};
use crate::oci::{Descriptor, Digest, RepoName};
use crate::storage::{identity, BlobStore, ByteStream, Layout, Uploads};

pub type Result<T> = std::result::Result<T, Error>;

/// What the registry needs to open.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub data_dir: PathBuf,
    pub max_manifest_size: usize,
}

pub const DEFAULT_MAX_MANIFEST_SIZE: usize = 4 << 20;

pub struct Registry {
    node_id: u64,
    blobs: BlobStore,
    uploads: Uploads,
    meta: Meta,
    max_manifest_size: usize,
}

/// A byte range of a blob as the client asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// `first-last`, inclusive.
    FromTo(u64, u64),
    /// `first-`
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// First and last byte (inclusive) within a blob of `size`, or `None` if
    /// the range is not satisfiable.
    pub fn resolve(self, size: u64) -> Option<(u64, u64)> {
        let (first, last) = match self {
            ByteRange::FromTo(f, l) if f <= l => (f, l.min(size.checked_sub(1)?)),
            ByteRange::FromTo(..) => return None,
            ByteRange::From(f) => (f, size.checked_sub(1)?),
            ByteRange::Suffix(0) => return None,
            ByteRange::Suffix(n) => (size.saturating_sub(n), size.checked_sub(1)?),
        };
        (first < size).then_some((first, last))
    }
}

/// A blob being served: its full size, the byte range sent, and the bytes.
pub struct BlobRead {
    pub size: u64,
    pub range: Option<(u64, u64)>,
    pub body: ByteStream,
}

impl Registry {
    pub fn open(config: &RegistryConfig) -> Result<Registry> {
        let layout = Layout::new(&config.data_dir);
        let setup = |e: std::io::Error| {
            Error::Internal(format!("cannot set up {}: {e}", config.data_dir.display()))
        };
        layout.create().map_err(setup)?;
        let node_id = identity::load_or_create(&layout).map_err(setup)?;
        let db = Db::open(&layout.db()).map_err(|e| Error::Internal(e.to_string()))?;
        let blobs = BlobStore::new(layout.clone(), db.clone());
        Ok(Registry {
            node_id,
            uploads: Uploads::new(layout, db.clone(), blobs.clone()),
            blobs,
            meta: Meta::new(db),
            max_manifest_size: config.max_manifest_size,
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// The size of a blob the repository holds.
    pub fn stat_blob(&self, repo: &RepoName, digest: &Digest) -> Result<u64> {
        self.meta
            .read()
            .blob_link(repo, digest)?
            .ok_or(Error::BlobUnknown)?;
        let local = self.blobs.stat(digest)?.ok_or(Error::BlobUnknown)?;
        Ok(local.size)
    }

    pub fn read_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<ByteRange>,
    ) -> Result<BlobRead> {
        let size = self.stat_blob(repo, digest)?;
        let range = range
            .map(|r| r.resolve(size).ok_or(Error::RangeNotSatisfiable { size }))
            .transpose()?;
        let (offset, len) = match range {
            Some((first, last)) => (first, last - first + 1),
            None => (0, size),
        };
        let body = self.blobs.read(digest, offset, len)?;
        Ok(BlobRead { size, range, body })
    }

    pub async fn delete_blob(&self, repo: &RepoName, digest: &Digest) -> Result<()> {
        let cmd = Command::UnlinkBlob {
            repo: repo.clone(),
            digest: digest.clone(),
        };
        Ok(self.meta.write(cmd).await?)
    }

    pub fn tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Page> {
        let meta = self.meta.read();
        if !meta.repo_exists(repo)? {
            return Err(Error::NameUnknown);
        }
        Ok(meta.tags(repo, last, n)?)
    }

    pub fn catalog(&self, last: Option<&str>, n: usize) -> Result<Page> {
        Ok(self.meta.read().repositories(last, n)?)
    }

    /// Descriptors of the manifests whose subject is `subject`, optionally
    /// only those of one artifact type.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>> {
        let found = self.meta.read().referrers(repo, subject)?;
        Ok(found
            .into_iter()
            .filter(|(_, m)| artifact_type.is_none() || m.artifact_type.as_deref() == artifact_type)
            .map(|(digest, m)| Descriptor {
                size: m.body.len() as u64,
                media_type: m.media_type,
                digest,
                artifact_type: m.artifact_type,
                annotations: m.annotations,
                urls: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::ByteRange::*;

    #[test]
    fn ranges_resolve_against_size() {
        assert_eq!(FromTo(0, 9).resolve(10), Some((0, 9)));
        assert_eq!(FromTo(5, 100).resolve(10), Some((5, 9)));
        assert_eq!(FromTo(10, 12).resolve(10), None);
        assert_eq!(FromTo(3, 2).resolve(10), None);
        assert_eq!(From(9).resolve(10), Some((9, 9)));
        assert_eq!(From(10).resolve(10), None);
        assert_eq!(Suffix(3).resolve(10), Some((7, 9)));
        assert_eq!(Suffix(30).resolve(10), Some((0, 9)));
        assert_eq!(Suffix(0).resolve(10), None);
        assert_eq!(From(0).resolve(0), None);
    }
}
