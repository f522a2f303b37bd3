//! Blob uploads: sessions, monolithic pushes, cross-repository mounts, and
//! the commit that makes a verified blob part of a repository.

use super::{Error, Registry, Result};
use crate::meta::Command;
use crate::oci::{Digest, RepoName};
use crate::storage::{now_secs, ByteStream, Declared, LocalBlob, Mirror, UploadId};

/// How a client opens an upload (`POST …/blobs/uploads/`).
pub enum StartUpload {
    /// A session for later chunks.
    Session,
    /// The whole blob in this request, with its digest and, if the request
    /// declared it, its length.
    Monolithic {
        digest: Digest,
        body: ByteStream,
        length: Option<u64>,
    },
    /// Link a blob that already exists: from `from`, or from anywhere in the
    /// registry when no source is named. Falls back to a session.
    Mount {
        digest: Digest,
        from: Option<RepoName>,
    },
}

pub enum UploadStarted {
    Session(UploadId),
    Committed(Digest),
}

impl Registry {
    /// `origin` is who asked, for the event a mount causes.
    pub async fn start_upload(
        &self,
        repo: &RepoName,
        how: StartUpload,
        origin: &crate::meta::events::Origin,
    ) -> Result<UploadStarted> {
        self.check_pushable(repo)?;
        self.check_room(repo)?;
        match how {
            StartUpload::Session => Ok(UploadStarted::Session(self.uploads.create(repo)?)),
            StartUpload::Monolithic {
                digest,
                body,
                length,
            } => {
                // Refused before the body is read or copies to peers open.
                self.blobs.check_declared(0, length)?;
                let _hold = self.blobs.hold(&digest);
                let mut mirror = self.replicator.mirror(Some(&digest));
                let blob = self
                    .blobs
                    .ingest(&digest, body, length, mirror.as_mut())
                    .await?;
                self.replicate_and_link(repo, &digest, blob, mirror).await?;
                Ok(UploadStarted::Committed(digest))
            }
            StartUpload::Mount { digest, from } => {
                if let Some(size) = self.mountable(&digest, from.as_ref()).await? {
                    // The bytes are already where they are: only the link is
                    // new. A collection that removed the blob meanwhile
                    // refuses it, and the client uploads instead.
                    let link = link(repo, &digest, size, Vec::new()).by(origin.clone());
                    match self.write(link).await {
                        Ok(()) => return Ok(UploadStarted::Committed(digest)),
                        Err(Error::BlobUnknown) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(UploadStarted::Session(self.uploads.create(repo)?))
            }
        }
    }

    /// The size of the blob a mount may link, if the source holds it and
    /// some node stores its bytes.
    async fn mountable(&self, digest: &Digest, from: Option<&RepoName>) -> Result<Option<u64>> {
        let meta = self.fresh().await?;
        let known = match from {
            Some(from) => meta.blob_link(from, digest)?,
            None => meta.blob_known(digest)?,
        };
        let stored = !meta.holders(digest)?.is_empty() || self.blobs.stat(digest)?.is_some();
        Ok(known.filter(|_| stored))
    }

    /// The client API address of the node that holds an upload session,
    /// when that is not this node.
    pub fn upload_owner(&self, id: UploadId) -> Result<Option<String>> {
        if id.owner() == self.cluster.id() {
            return Ok(None);
        }
        self.cluster
            .members()
            .into_iter()
            .find(|(m, _)| *m == id.owner())
            .map(|(_, addr)| Some(addr.api))
            .ok_or(Error::UploadUnknown)
    }

    pub async fn upload_chunk(
        &self,
        repo: &RepoName,
        id: UploadId,
        declared: Declared,
        body: ByteStream,
    ) -> Result<u64> {
        let mirror = || self.replicator.mirror(None);
        Ok(self
            .uploads
            .append(repo, id, declared, body, mirror)
            .await?)
    }

    pub async fn upload_status(&self, repo: &RepoName, id: UploadId) -> Result<u64> {
        Ok(self.uploads.status(repo, id).await?)
    }

    pub async fn finish_upload(
        &self,
        repo: &RepoName,
        id: UploadId,
        digest: &Digest,
        declared: Declared,
        body: ByteStream,
    ) -> Result<()> {
        let mirror = || self.replicator.mirror(Some(digest));
        let body = Some((declared, body));
        // The file stays safe from sweeps until the link naming it is in.
        let _hold = self.blobs.hold(digest);
        let (blob, mirror) = self.uploads.commit(repo, id, digest, body, mirror).await?;
        self.replicate_and_link(repo, digest, blob, mirror).await
    }

    pub async fn cancel_upload(&self, repo: &RepoName, id: UploadId) -> Result<()> {
        Ok(self.uploads.cancel(repo, id).await?)
    }

    /// Removes upload sessions older than `max_age` seconds: clients that
    /// gave up never come back for them.
    pub fn purge_stale_uploads(&self, max_age: u64) -> Result<usize> {
        let cutoff = now_secs().saturating_sub(max_age);
        Ok(self.uploads.purge_started_before(cutoff)?)
    }

    /// Makes a blob this node stored and verified part of `repo`, once a
    /// write quorum of its replica set holds it.
    async fn replicate_and_link(
        &self,
        repo: &RepoName,
        digest: &Digest,
        blob: LocalBlob,
        mirror: Option<Mirror>,
    ) -> Result<()> {
        let holders = self
            .replicator
            .replicate(digest, blob.size, mirror)
            .await
            .inspect_err(|_| self.metrics.quorum_failed())?;
        self.write(link(repo, digest, blob.size, holders)).await
    }
}

fn link(repo: &RepoName, digest: &Digest, size: u64, holders: Vec<u64>) -> Command {
    Command::LinkBlob {
        repo: repo.clone(),
        digest: digest.clone(),
        size,
        at: now_secs(),
        holders,
    }
}
