//! Reads for browsing (the web UI): tags with their push times and
//! manifests, which nodes hold a blob, and an image's configuration. As
//! fresh as the API's reads of the same things.

use std::collections::BTreeMap;

use super::{Error, Registry, Result};
use crate::events::platforms::Configs;
use crate::meta::ManifestRecord;
use crate::oci::{Digest, Reference, RepoName};

/// A tag as a repository page shows it.
pub struct TagEntry {
    pub tag: String,
    pub digest: Digest,
    /// When the tag was last pushed, in Unix seconds.
    pub pushed: u64,
    /// The manifest it names; `None` only if it went in a race with a delete.
    pub manifest: Option<ManifestRecord>,
}

impl Registry {
    /// A page of `repo`'s tags after `last`, with their manifests, and
    /// whether more follow.
    pub async fn tag_entries(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<TagEntry>, bool)> {
        let meta = self.fresh().await?;
        if !meta.repo_exists(repo)? {
            return Err(Error::NameUnknown);
        }
        let (rows, more) = meta.tags_with_times(repo, last, n)?;
        // Many tags often name one manifest: each is read once.
        let mut manifests: BTreeMap<Digest, Option<ManifestRecord>> = BTreeMap::new();
        let mut out = Vec::with_capacity(rows.len());
        for (tag, digest, pushed) in rows {
            let manifest = match manifests.get(&digest) {
                Some(m) => m.clone(),
                None => {
                    let m = meta.manifest(repo, &digest)?;
                    manifests.insert(digest.clone(), m.clone());
                    m
                }
            };
            out.push(TagEntry {
                tag: tag.as_str().to_owned(),
                digest,
                pushed,
                manifest,
            });
        }
        Ok((out, more))
    }

    /// The manifest `reference` names in `repo`, whatever its media type.
    pub async fn manifest_record(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<(Digest, ManifestRecord)> {
        let found = self.get_manifest(repo, reference, ["*/*"]).await?;
        Ok((found.digest, found.record))
    }

    /// The manifests `digests` name in `repo`, as this node holds them: for
    /// the children of an index just read fresh.
    pub fn child_records(
        &self,
        repo: &RepoName,
        digests: &[Digest],
    ) -> Result<Vec<Option<ManifestRecord>>> {
        digests
            .iter()
            .map(|d| Ok(self.meta.manifest(repo, d)?))
            .collect()
    }

    /// The nodes that hold a blob's bytes, by their API addresses (node ids
    /// for members no longer known).
    pub fn blob_holders(&self, digest: &Digest) -> Result<Vec<String>> {
        let members: BTreeMap<u64, String> = self
            .cluster
            .members()
            .into_iter()
            .map(|(id, addr)| (id, addr.api))
            .collect();
        Ok(self
            .meta
            .holders(digest)?
            .into_iter()
            .map(|id| members.get(&id).cloned().unwrap_or_else(|| id.to_string()))
            .collect())
    }

    /// An image configuration blob's bytes, if small enough to show.
    pub async fn image_config(&self, repo: &RepoName, digest: &Digest) -> Option<Vec<u8>> {
        self.config(repo, digest).await
    }

    /// The platform (`os/arch[/variant]`) of a single image, from its
    /// configuration; remembered, as webhook events use it too.
    pub async fn image_platform(&self, repo: &RepoName, digest: &Digest) -> Option<String> {
        self.delivery
            .platforms
            .platform(&self.meta, repo, digest)
            .await
    }
}
