//! Manifest push, resolution and deletion.

use futures_util::StreamExt;

use super::{Error, Registry, Result};
use crate::meta::events::Origin;
use crate::meta::{Command, ManifestRecord, PutManifest};
use crate::oci::{manifest, media, Algorithm, Digest, Reference, RepoName};
use crate::storage::{now_secs, ByteStream};

pub struct ManifestPushed {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

pub struct ResolvedManifest {
    pub digest: Digest,
    pub record: ManifestRecord,
}

impl Registry {
    /// Stores a manifest under a tag or its digest. The digest is always of
    /// the exact bytes received.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        content_type: Option<&str>,
        body: ByteStream,
        origin: Origin,
    ) -> Result<ManifestPushed> {
        self.check_pushable(repo)?;
        let body = self.read_manifest_body(body).await?;
        let (digest, tag) = match reference {
            Reference::Digest(expected) => {
                let actual = Digest::of(expected.algorithm(), &body);
                if &actual != expected {
                    return Err(Error::DigestMismatch {
                        expected: expected.clone(),
                        actual,
                    });
                }
                (actual, None)
            }
            Reference::Tag(tag) => (Digest::of(Algorithm::Sha256, &body), Some(tag.clone())),
        };
        let parsed = manifest::parse(&body, content_type)?;
        let subject = parsed.subject.clone();
        let put = PutManifest::new(repo.clone(), digest.clone(), tag, body, parsed);
        self.write(Command::PutManifest(put).by(origin)).await?;
        Ok(ManifestPushed { digest, subject })
    }

    /// Reads a manifest body, refusing more than the configured limit
    /// without buffering it.
    async fn read_manifest_body(&self, mut body: ByteStream) -> Result<Vec<u8>> {
        let limit = self.max_manifest_size;
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::body)?;
            if out.len() + chunk.len() > limit {
                return Err(Error::ManifestTooLarge { limit });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// The manifest a reference names, if the client's `Accept` admits it.
    pub async fn get_manifest<'a>(
        &self,
        repo: &RepoName,
        reference: &Reference,
        accept: impl IntoIterator<Item = &'a str>,
    ) -> Result<ResolvedManifest> {
        let need = match reference {
            Reference::Digest(_) => super::Freshness::ContentAddressed,
            Reference::Tag(_) => super::Freshness::Required,
        };
        let (digest, record) = self
            .lookup(need, |m| m.resolve(repo, reference))
            .await?
            .ok_or(Error::ManifestUnknown)?;
        if !media::accepts(accept, &record.media_type) {
            return Err(Error::ManifestNotAcceptable {
                media_type: record.media_type,
            });
        }
        Ok(ResolvedManifest { digest, record })
    }

    /// Deletes a manifest (by digest, with every tag on it) or just a tag.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        origin: Origin,
    ) -> Result<()> {
        let cmd = match reference {
            Reference::Digest(digest) => Command::RemoveManifest {
                repo: repo.clone(),
                digest: digest.clone(),
                at: now_secs(),
            },
            Reference::Tag(tag) => Command::DeleteTag {
                repo: repo.clone(),
                tag: tag.clone(),
            },
        };
        self.write(cmd.by(origin)).await
    }
}
