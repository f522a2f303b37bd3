//! The derived families: what each manifest names, which manifests reference
//! each blob, which indexes list each manifest, and which repositories each
//! blob is linked into. They answer "is this still referenced?" with one
//! seek, which is what lets a collection be exact while pushes go on.
//! `apply` keeps them in step with the base families; a node that finds
//! them incomplete (data written by an older berth, or a snapshot from one)
//! rebuilds them from the base families before it serves.

use rocksdb::WriteBatch;

use super::Batch;
use serde::{Deserialize, Serialize};

use super::quota::UsageTally;
use super::state::{ManifestRecord, StateMachine};
use crate::db::{self, keys, Cf, DbError};
use crate::oci::{manifest, Digest, RepoName};

/// What one manifest names, kept beside it so that removing it, and
/// marking what is kept, never parse a body.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Refs {
    pub blobs: Vec<Digest>,
    pub manifests: Vec<Digest>,
    pub subject: Option<Digest>,
    /// When the manifest was first stored (unix seconds).
    pub created: u64,
}

/// Marks the derived families complete; it sits in `blob_refs` under a key
/// no digest can take, so a snapshot carries it with the family.
const VERSION_KEY: &[u8] = b"\0version";
/// Moves when a derived family is added or changes its form: a node
/// holding an older version rebuilds them all.
const VERSION: u64 = 3;

/// Records per write batch while rebuilding.
const REBUILD_BATCH: usize = 10_000;

impl StateMachine {
    pub(super) fn add_manifest_refs(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
        refs: &Refs,
    ) {
        for blob in &refs.blobs {
            batch.put_cf(
                self.db.cf(Cf::BlobRefs),
                keys::join(&[blob.as_str(), repo.as_str(), digest.as_str()]),
                [],
            );
        }
        for child in &refs.manifests {
            batch.put_cf(
                self.db.cf(Cf::ChildRefs),
                keys::join(&[repo.as_str(), child.as_str(), digest.as_str()]),
                [],
            );
        }
        batch.put_cf(
            self.db.cf(Cf::ManifestRefs),
            keys::join(&[repo.as_str(), digest.as_str()]),
            db::encode(refs),
        );
    }

    /// Drops what a removed manifest referenced; each blob it named starts
    /// its grace period at `at`.
    pub(super) fn remove_manifest_refs(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
        refs: &Refs,
        at: u64,
        tally: &mut UsageTally,
    ) -> Result<(), DbError> {
        for blob in &refs.blobs {
            let key = keys::join(&[blob.as_str(), repo.as_str(), digest.as_str()]);
            batch.delete_cf(self.db.cf(Cf::BlobRefs), &key);
            tally.removed(repo, blob, key);
            self.touch_blob(batch, blob, None, at)?;
        }
        for child in &refs.manifests {
            batch.delete_cf(
                self.db.cf(Cf::ChildRefs),
                keys::join(&[repo.as_str(), child.as_str(), digest.as_str()]),
            );
        }
        batch.delete_cf(
            self.db.cf(Cf::ManifestRefs),
            keys::join(&[repo.as_str(), digest.as_str()]),
        );
        Ok(())
    }

    /// Writes a blob's record with its since-time moved forward to `at`
    /// (never back: nodes' clocks differ), and its size when given. A blob
    /// without a record and without a size stays without one.
    pub(super) fn touch_blob(
        &self,
        batch: &mut Batch,
        digest: &Digest,
        size: Option<u64>,
        at: u64,
    ) -> Result<(), DbError> {
        let known = self.blob_record(digest)?;
        let (size, since) = match (known, size) {
            (Some((_, since)), Some(size)) => (size, since.max(at)),
            (Some((size, since)), None) => (size, since.max(at)),
            (None, Some(size)) => (size, at),
            (None, None) => return Ok(()),
        };
        batch.put_cf(
            self.db.cf(Cf::Blobs),
            digest.as_str(),
            keys::blob_value(size, since),
        );
        Ok(())
    }

    pub(super) fn link_repo(&self, batch: &mut Batch, repo: &RepoName, digest: &Digest) {
        batch.put_cf(
            self.db.cf(Cf::BlobRepos),
            keys::join(&[digest.as_str(), repo.as_str()]),
            [],
        );
    }

    pub(super) fn unlink_repo(&self, batch: &mut Batch, repo: &RepoName, digest: &Digest) {
        batch.delete_cf(
            self.db.cf(Cf::RepoBlobs),
            keys::join(&[repo.as_str(), digest.as_str()]),
        );
        batch.delete_cf(
            self.db.cf(Cf::BlobRepos),
            keys::join(&[digest.as_str(), repo.as_str()]),
        );
    }

    /// What a manifest names, if it is stored.
    pub fn manifest_refs(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Refs>, DbError> {
        self.db
            .get(
                Cf::ManifestRefs,
                &keys::join(&[repo.as_str(), digest.as_str()]),
            )?
            .map(|v| db::decode(Cf::ManifestRefs.name(), &v))
            .transpose()
    }

    /// Whether any manifest in any repository references the blob.
    pub fn blob_referenced(&self, digest: &Digest) -> Result<bool, DbError> {
        let prefix = keys::prefix(&[digest.as_str()]);
        Ok(!self
            .db
            .scan_prefix(Cf::BlobRefs, &prefix, None, 1)?
            .is_empty())
    }

    /// The repositories a blob is linked into.
    pub(super) fn blob_repos(&self, digest: &Digest) -> Result<Vec<RepoName>, DbError> {
        let prefix = keys::prefix(&[digest.as_str()]);
        self.db
            .scan_prefix(Cf::BlobRepos, &prefix, None, usize::MAX)?
            .iter()
            .map(|(k, _)| parse_part("blob link", &k[prefix.len()..]))
            .collect()
    }

    /// The indexes in `repo` that list `child`.
    pub(super) fn parents(&self, repo: &RepoName, child: &Digest) -> Result<Vec<Digest>, DbError> {
        let prefix = keys::prefix(&[repo.as_str(), child.as_str()]);
        self.digests_under(Cf::ChildRefs, &prefix)
    }

    /// The manifests in `repo` whose subject is `subject`.
    pub(super) fn referrer_digests(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<Digest>, DbError> {
        let prefix = keys::prefix(&[repo.as_str(), subject.as_str()]);
        self.digests_under(Cf::Referrers, &prefix)
    }

    fn digests_under(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<Digest>, DbError> {
        self.db
            .scan_prefix(cf, prefix, None, usize::MAX)?
            .iter()
            .map(|(k, _)| parse_part("index key", &k[prefix.len()..]))
            .collect()
    }

    /// Whether the derived families are complete.
    pub fn indexes_complete(&self) -> Result<bool, DbError> {
        Ok(self
            .db
            .get(Cf::BlobRefs, VERSION_KEY)?
            .and_then(|v| keys::parse_u64(&v))
            == Some(VERSION))
    }

    /// Rebuilds the derived families from the manifests and blob links, in
    /// bounded batches. Returns how many manifests it read.
    pub fn rebuild_indexes(&self) -> Result<u64, DbError> {
        let mut clear = WriteBatch::default();
        for cf in Cf::DERIVED {
            clear.delete_range_cf(self.db.cf(cf), [0u8].as_slice(), [0xffu8; 4].as_slice());
        }
        self.db.write_durable(clear)?;
        let mut batch = Batch::default();
        let mut manifests = 0u64;
        for item in self
            .db
            .raw()
            .iterator_cf(self.db.cf(Cf::Manifests), rocksdb::IteratorMode::Start)
        {
            let (key, value) = item?;
            let (repo, digest) = split_repo_digest(&key)?;
            let record: ManifestRecord = db::decode(Cf::Manifests.name(), &value)?;
            self.add_manifest_refs(&mut batch, &repo, &digest, &refs_of(&record));
            let annotations = record.annotations.as_ref();
            self.index_bases(&mut batch, &repo, &digest, &record.body, annotations)?;
            manifests += 1;
            self.flush_if_full(&mut batch)?;
        }
        for item in self
            .db
            .raw()
            .iterator_cf(self.db.cf(Cf::RepoBlobs), rocksdb::IteratorMode::Start)
        {
            let (key, _) = item?;
            let (repo, digest) = split_repo_digest(&key)?;
            self.link_repo(&mut batch, &repo, &digest);
            self.flush_if_full(&mut batch)?;
        }
        self.db
            .write_durable(std::mem::take(&mut batch).into_writes())?;
        self.rebuild_usage()?;
        batch.put_cf(
            self.db.cf(Cf::BlobRefs),
            VERSION_KEY,
            keys::u64_value(VERSION),
        );
        self.db.write_durable(batch.into_writes())?;
        Ok(manifests)
    }

    fn flush_if_full(&self, batch: &mut Batch) -> Result<(), DbError> {
        if batch.len() >= REBUILD_BATCH {
            self.db.write_durable(std::mem::take(batch).into_writes())?;
        }
        Ok(())
    }
}

/// What a stored manifest names, from its body. Only rebuilding parses:
/// `apply` takes the lists the proposer parsed.
fn refs_of(record: &ManifestRecord) -> Refs {
    let parsed = manifest::parse(&record.body, Some(&record.media_type));
    let (blobs, manifests) = match parsed {
        Ok(m) => (m.blobs, m.manifests),
        Err(e) => {
            tracing::warn!(error = %e, "a stored manifest does not parse; indexing it without references");
            (Vec::new(), Vec::new())
        }
    };
    Refs {
        blobs,
        manifests,
        subject: record.subject.clone(),
        created: record.created,
    }
}

/// `<repo> 0x00 <digest>` back into its parts.
pub(super) fn split_repo_digest(key: &[u8]) -> Result<(RepoName, Digest), DbError> {
    let digest = keys::last_part(key);
    let repo = &key[..key.len().saturating_sub(digest.len() + 1)];
    Ok((
        parse_part("repository key", repo)?,
        parse_part("digest key", digest)?,
    ))
}

pub(super) fn parse_part<T: std::str::FromStr>(
    what: &'static str,
    part: &[u8],
) -> Result<T, DbError>
where
    T::Err: std::fmt::Display,
{
    std::str::from_utf8(part)
        .map_err(|e| e.to_string())
        .and_then(|s| s.parse().map_err(|e: T::Err| e.to_string()))
        .map_err(|reason| DbError::Corrupt { what, reason })
}
