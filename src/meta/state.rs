//! Deterministic application of commands to the metadata column families.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Command, PutManifest};
use super::events::Change;
use super::quota::UsageTally;
use super::refs::Refs;
use super::{Applied, Batch, Rejection};
use crate::db::{self, keys, Cf, Db, DbError};
use crate::oci::{Digest, RepoName, Tag};

/// A manifest as stored: the exact bytes pushed and what the APIs report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub media_type: String,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub subject: Option<Digest>,
    pub artifact_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub created: u64,
}

#[derive(Serialize, Deserialize)]
struct RepoRecord {
    created: u64,
}

#[derive(Clone)]
pub struct StateMachine {
    pub(super) db: Db,
}

impl StateMachine {
    pub fn new(db: Db) -> StateMachine {
        StateMachine { db }
    }

    /// Applies one command atomically and durably, outside Raft: for tests
    /// of the state machine alone. Rejections leave the state untouched.
    /// As if at the next log index of a process-wide counter.
    #[cfg(test)]
    pub(crate) fn apply(&self, cmd: &Command) -> Result<Applied, DbError> {
        static INDEX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let index = INDEX.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut batch = Batch::default();
        let applied = self.stage(cmd, &mut batch, index)?;
        if applied.is_ok() {
            let (mut writes, changes) = batch.into_parts();
            self.journal(&mut writes, index, 0, cmd, changes)?;
            self.db.write_durable(writes)?;
        }
        Ok(applied)
    }

    /// Checks a command (log entry `index`) against the current state and
    /// adds its writes and changes to `batch`. A rejected command adds
    /// nothing. The outcome depends only on the state, the command and its
    /// index, never on the node or the clock.
    pub fn stage(&self, cmd: &Command, batch: &mut Batch, index: u64) -> Result<Applied, DbError> {
        match self.stage_inner(cmd, batch, index) {
            Ok(()) => Ok(Ok(())),
            Err(Staged::Rejected(r)) => Ok(Err(r)),
            Err(Staged::Db(e)) => Err(e),
        }
    }

    fn stage_inner(&self, cmd: &Command, batch: &mut Batch, index: u64) -> Result<(), Staged> {
        match cmd {
            Command::Attributed(a) => self.stage_inner(&a.command, batch, index)?,
            // The state machine store applies a batch command by command.
            Command::Batch(_) => {
                return Err(Rejection::Malformed("a batch inside a batch".into()).into())
            }
            Command::Webhook(change) => self.stage_webhook(batch, change, index)?,
            Command::Delivered(progress) => self.stage_progress(batch, progress, index)?,
            Command::LinkBlob {
                repo,
                digest,
                size,
                at,
                holders,
            } => {
                // A mount names no holders: it links bytes that must still
                // exist, and a collection may have removed them meanwhile.
                if holders.is_empty() && self.blob_record(digest)?.is_none() {
                    return Err(Rejection::BlobUnknown.into());
                }
                self.ensure_repo(batch, repo, *at)?;
                self.add_holders(batch, digest, holders);
                batch.put_cf(
                    self.db.cf(Cf::RepoBlobs),
                    keys::join(&[repo.as_str(), digest.as_str()]),
                    keys::u64_value(*size),
                );
                self.link_repo(batch, repo, digest);
                self.touch_blob(batch, digest, Some(*size), *at)?;
                if holders.is_empty() {
                    batch.record(Change::Mounted {
                        repo: repo.clone(),
                        digest: digest.clone(),
                        size: *size,
                    });
                }
            }
            Command::AddHolders { digest, nodes } => {
                // A collected blob gets no holders back: a copy that arrives
                // after its collection is swept as an orphan.
                if self.blob_record(digest)?.is_some() {
                    self.add_holders(batch, digest, nodes)
                }
            }
            Command::UnlinkBlob { repo, digest } => {
                if self.blob_link(repo, digest)?.is_none() {
                    return Err(Rejection::BlobUnknown.into());
                }
                self.unlink_repo(batch, repo, digest);
            }
            Command::PutManifest(put) => self.put_manifest(batch, put, Origin::Push)?,
            Command::CacheManifest(put) => self.put_manifest(batch, put, Origin::Upstream)?,
            Command::Pulled(pulled) => self.stage_pulled(batch, pulled)?,
            Command::DeleteManifest { repo, digest } => {
                self.delete_manifest(batch, repo, digest, 0)?
            }
            Command::RemoveManifest { repo, digest, at } => {
                self.delete_manifest(batch, repo, digest, *at)?
            }
            Command::Collect(c) => self.stage_collect(batch, c)?,
            Command::GcReport(report) => self.stage_gc_report(batch, report),
            Command::Policy { change, .. } => self.stage_policy(batch, change),
            Command::Retain(r) => self.stage_retain(batch, r)?,
            Command::DeleteTag { repo, tag } => {
                if self.tag(repo, tag)?.is_none() {
                    return Err(Rejection::ManifestUnknown.into());
                }
                self.check_mutable(repo, tag)?;
                self.remove_tag(batch, repo, tag)?;
            }
            Command::Access { change, at } => {
                let mut access = self.access()?;
                access.apply(change, *at)?;
                batch.put_cf(self.db.cf(Cf::Access), ACCESS_STATE, db::encode(&access));
                batch.put_cf(
                    self.db.cf(Cf::Access),
                    ACCESS_VERSION,
                    keys::u64_value(access.version),
                );
            }
        }
        Ok(())
    }

    fn add_holders(&self, batch: &mut Batch, digest: &Digest, nodes: &[u64]) {
        for node in nodes {
            batch.put_cf(self.db.cf(Cf::Holders), holder_key(digest, *node), []);
        }
    }

    fn ensure_repo(&self, batch: &mut Batch, repo: &RepoName, at: u64) -> Result<(), Staged> {
        if !self.repo_exists(repo)? {
            batch.put_cf(
                self.db.cf(Cf::Repos),
                repo.as_str(),
                db::encode(&RepoRecord { created: at }),
            );
        }
        Ok(())
    }

    fn put_manifest(
        &self,
        batch: &mut Batch,
        put: &PutManifest,
        origin: Origin,
    ) -> Result<(), Staged> {
        let repo = &put.repo;
        if origin == Origin::Push {
            self.check_push(batch, put)?;
        }
        self.ensure_repo(batch, repo, put.at)?;
        self.store_manifest(batch, put, origin)
    }

    /// A pushed manifest's checks: every blob and child in the repository,
    /// no immutable tag moved, the namespace's quota kept (charged here).
    fn check_push(&self, batch: &mut Batch, put: &PutManifest) -> Result<(), Staged> {
        let repo = &put.repo;
        for blob in &put.blobs {
            if self.blob_link(repo, blob)?.is_none() {
                return Err(Rejection::ManifestBlobUnknown(blob.clone()).into());
            }
        }
        for child in &put.manifests {
            if self.manifest(repo, child)?.is_none() {
                return Err(Rejection::ManifestBlobUnknown(child.clone()).into());
            }
        }
        if let Some(tag) = &put.tag {
            // Setting a tag, or pushing the digest it already names, is fine.
            if self.tag(repo, tag)?.is_some_and(|d| d != put.digest) {
                self.check_mutable(repo, tag)?;
            }
        }
        if let Err(over) = self.charge(batch, repo, &put.blobs)? {
            return Err(Rejection::QuotaExceeded {
                namespace: over.namespace,
                usage: over.usage,
                limit: over.limit,
            }
            .into());
        }
        Ok(())
    }

    /// Stores a manifest's record, tag, referrer entry and references.
    fn store_manifest(
        &self,
        batch: &mut Batch,
        put: &PutManifest,
        origin: Origin,
    ) -> Result<(), Staged> {
        let repo = &put.repo;
        let existing = self.manifest(repo, &put.digest)?;
        let created = match &existing {
            Some(existing) => existing.created,
            None => put.at,
        };
        let previous = match &put.tag {
            Some(tag) => self.tag(repo, tag)?.filter(|d| *d != put.digest),
            None => None,
        };
        batch.record(Change::Stored {
            repo: repo.clone(),
            digest: put.digest.clone(),
            tag: put.tag.clone(),
            previous: previous.clone(),
            media_type: put.media_type.clone(),
            size: put.body.len() as u64,
            platforms: super::events::index_platforms(&put.body),
            upstream: origin == Origin::Upstream,
        });
        if let (Some(tag), Some(previous)) = (&put.tag, &previous) {
            self.base_moved(batch, repo, tag, previous, &put.digest)?;
        }
        let record = ManifestRecord {
            media_type: put.media_type.clone(),
            body: put.body.clone(),
            subject: put.subject.clone(),
            artifact_type: put.artifact_type.clone(),
            annotations: put.annotations.clone(),
            created,
        };
        batch.put_cf(
            self.db.cf(Cf::Manifests),
            manifest_key(repo, &put.digest),
            db::encode(&record),
        );
        if let Some(tag) = &put.tag {
            let key = tag_key(repo, tag);
            batch.put_cf(self.db.cf(Cf::Tags), &key, put.digest.as_str());
            batch.put_cf(self.db.cf(Cf::TagTimes), key, keys::u64_value(put.at));
        }
        if let Some(subject) = &put.subject {
            batch.put_cf(
                self.db.cf(Cf::Referrers),
                referrer_key(repo, subject, &put.digest),
                [],
            );
        }
        let refs = Refs {
            blobs: put.blobs.clone(),
            manifests: put.manifests.clone(),
            subject: put.subject.clone(),
            created,
        };
        self.add_manifest_refs(batch, repo, &put.digest, &refs);
        if existing.is_none() {
            self.index_bases(
                batch,
                repo,
                &put.digest,
                &put.body,
                put.annotations.as_ref(),
            )?;
        }
        Ok(())
    }

    /// A client's delete: the manifest and every tag on it.
    fn delete_manifest(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
        at: u64,
    ) -> Result<(), Staged> {
        if self.manifest_refs(repo, digest)?.is_none() {
            return Err(Rejection::ManifestUnknown.into());
        }
        let prefix = keys::prefix(&[repo.as_str()]);
        for (key, value) in self.db.scan_prefix(Cf::Tags, &prefix, None, usize::MAX)? {
            if *value == *digest.as_str().as_bytes() {
                let tag = std::str::from_utf8(keys::last_part(&key))
                    .ok()
                    .and_then(|t| t.parse::<Tag>().ok());
                if let Some(tag) = tag {
                    self.check_mutable(repo, &tag)?;
                    batch.record(Change::TagRemoved {
                        repo: repo.clone(),
                        tag,
                        digest: digest.clone(),
                    });
                }
                batch.delete_cf(self.db.cf(Cf::Tags), &key);
                batch.delete_cf(self.db.cf(Cf::TagTimes), key);
            }
        }
        let mut tally = UsageTally::default();
        self.remove_manifest(batch, repo, digest, at, &mut tally)?;
        Ok(self.settle(batch, tally)?)
    }

    /// Refuses a change that would move or remove an immutable tag.
    fn check_mutable(&self, repo: &RepoName, tag: &Tag) -> Result<(), Staged> {
        match self.immutable_rule(repo, tag)? {
            Some(rule) => Err(Rejection::TagImmutable {
                tag: tag.as_str().to_owned(),
                rule,
            }
            .into()),
            None => Ok(()),
        }
    }

    /// Removes a manifest, its referrer entry and what it references; the
    /// caller has dealt with tags, and settles `tally` once staged whole.
    pub(super) fn remove_manifest(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
        at: u64,
        tally: &mut UsageTally,
    ) -> Result<(), DbError> {
        // What it names is indexed beside it: no need to read its body.
        let Some(refs) = self.manifest_refs(repo, digest)? else {
            return Ok(());
        };
        if let Some(record) = self.manifest(repo, digest)? {
            batch.record(Change::ManifestRemoved {
                repo: repo.clone(),
                digest: digest.clone(),
                media_type: record.media_type,
                size: record.body.len() as u64,
            });
        }
        self.unindex_bases(batch, repo, digest)?;
        batch.delete_cf(self.db.cf(Cf::Manifests), manifest_key(repo, digest));
        batch.delete_cf(self.db.cf(Cf::PullTimes), manifest_key(repo, digest));
        if let Some(subject) = &refs.subject {
            batch.delete_cf(
                self.db.cf(Cf::Referrers),
                referrer_key(repo, subject, digest),
            );
        }
        self.remove_manifest_refs(batch, repo, digest, &refs, at, tally)
    }
}

/// Where a manifest comes from: a client's push is checked; an upstream's,
/// fetched by a mirror, is stored as the upstream holds it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Push,
    Upstream,
}

/// Why staging stopped: a deterministic rejection or a database fault.
pub(super) enum Staged {
    Rejected(Rejection),
    Db(DbError),
}

impl From<Rejection> for Staged {
    fn from(r: Rejection) -> Staged {
        Staged::Rejected(r)
    }
}

impl From<DbError> for Staged {
    fn from(e: DbError) -> Staged {
        Staged::Db(e)
    }
}

pub(super) const ACCESS_STATE: &[u8] = b"state";
pub(super) const ACCESS_VERSION: &[u8] = b"version";

pub(super) fn holder_key(digest: &Digest, node: u64) -> Vec<u8> {
    keys::join(&[digest.as_str(), &keys::node_part(node)])
}

pub(super) fn tag_key(repo: &RepoName, tag: &Tag) -> Vec<u8> {
    keys::join(&[repo.as_str(), tag.as_str()])
}

pub(super) fn manifest_key(repo: &RepoName, digest: &Digest) -> Vec<u8> {
    keys::join(&[repo.as_str(), digest.as_str()])
}

fn referrer_key(repo: &RepoName, subject: &Digest, digest: &Digest) -> Vec<u8> {
    keys::join(&[repo.as_str(), subject.as_str(), digest.as_str()])
}
