//! Which images are built on which: the index behind rebuild triggers.
//!
//! An image counts as built on a base when its annotations name the base's
//! digest (`org.opencontainers.image.base.digest`, as buildah writes it),
//! or when its layers start with all of the base's layers (any builder).
//! Both are kept in the derived `bases` family, maintained by `apply`, so a
//! moved tag finds its dependents with a few seeks instead of a scan:
//!
//! ```text
//! bases  "L" 0x00 <chain of layers 1..k> 0x00 <repo> 0x00 <digest>  for every k
//!        "A" 0x00 <base digest> 0x00 <repo> 0x00 <digest>
//!        "R" 0x00 <repo> 0x00 <digest> -> the keys above it owns
//! ```
//!
//! A chain is a hash over the layer digests in order, so the image with
//! layers `a b c` is found under the chains of `a`, `a b` and `a b c`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::events::{BaseMove, Change};
use super::{Batch, StateMachine};
use crate::db::{self, keys, Cf, DbError};
use crate::oci::{Digest, RepoName, Tag};

pub const BASE_DIGEST_ANNOTATION: &str = "org.opencontainers.image.base.digest";

const LAYERS: &str = "L";
const ANNOTATION: &str = "A";
const OWNED: &str = "R";

/// An image found built on a base: its repository, top-level digest, tags,
/// and how it matched.
type Found = (RepoName, Digest, Vec<Tag>, String);

/// An image built on a base, as `berth image dependents` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Dependent {
    pub repository: String,
    pub digest: String,
    pub tags: Vec<String>,
    /// `annotation` or `layers`.
    pub matched: String,
}

/// The layer digests of an image manifest, in order; `None` for anything
/// that is not an image (an index, an artifact).
pub fn image_layers(body: &[u8]) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Manifest {
        config: Option<Descriptor>,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    #[derive(Deserialize)]
    struct Descriptor {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        digest: String,
    }
    let m: Manifest = serde_json::from_slice(body).ok()?;
    let config = m.config?;
    let image = matches!(
        config.media_type.as_str(),
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    );
    (image && !m.layers.is_empty()).then(|| m.layers.into_iter().map(|l| l.digest).collect())
}

/// The chain of each prefix of `layers`: element k names layers 0..=k.
fn chains(layers: &[String]) -> Vec<String> {
    let mut hasher = Sha256::new();
    layers
        .iter()
        .map(|layer| {
            hasher.update(layer.as_bytes());
            hasher.update(b"\n");
            hex::encode(&hasher.clone().finalize()[..16])
        })
        .collect()
}

impl StateMachine {
    /// Indexes a newly stored manifest as a possible dependent.
    pub(super) fn index_bases(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
        body: &[u8],
        annotations: Option<&BTreeMap<String, String>>,
    ) -> Result<(), DbError> {
        let mut owned: Vec<Vec<u8>> = Vec::new();
        if let Some(layers) = image_layers(body) {
            for chain in chains(&layers) {
                owned.push(keys::join(&[
                    LAYERS,
                    &chain,
                    repo.as_str(),
                    digest.as_str(),
                ]));
            }
        }
        let base = annotations
            .and_then(|a| a.get(BASE_DIGEST_ANNOTATION))
            .and_then(|d| d.parse::<Digest>().ok());
        if let Some(base) = base {
            owned.push(keys::join(&[
                ANNOTATION,
                base.as_str(),
                repo.as_str(),
                digest.as_str(),
            ]));
        }
        if owned.is_empty() {
            return Ok(());
        }
        let cf = self.db.cf(Cf::Bases);
        for key in &owned {
            batch.put_cf(cf, key, []);
        }
        batch.put_cf(
            cf,
            keys::join(&[OWNED, repo.as_str(), digest.as_str()]),
            db::encode(&owned),
        );
        Ok(())
    }

    pub(super) fn unindex_bases(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<(), DbError> {
        let key = keys::join(&[OWNED, repo.as_str(), digest.as_str()]);
        let Some(owned) = self.db.get(Cf::Bases, &key)? else {
            return Ok(());
        };
        let owned: Vec<Vec<u8>> = db::decode("base index", &owned)?;
        let cf = self.db.cf(Cf::Bases);
        for k in owned {
            batch.delete_cf(cf, k);
        }
        batch.delete_cf(cf, key);
        Ok(())
    }

    /// Records a [`Change::BaseUpdated`] for every image built on what
    /// `repo:tag` named (`previous`) before it moved to `current`.
    pub(super) fn base_moved(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        tag: &Tag,
        previous: &Digest,
        current: &Digest,
    ) -> Result<(), DbError> {
        for found in self.built_on(repo, previous, current)? {
            let (dep_repo, image, tags, matched) = found;
            batch.record(Change::BaseUpdated {
                repo: dep_repo,
                image,
                tags,
                base: BaseMove {
                    repository: repo.clone(),
                    tag: tag.clone(),
                    previous: previous.clone(),
                    current: current.clone(),
                    matched,
                },
            });
        }
        Ok(())
    }

    /// The images built on `base` in `repo`: for `berth image dependents`.
    pub fn dependents(&self, repo: &RepoName, base: &Digest) -> Result<Vec<Dependent>, DbError> {
        Ok(self
            .built_on(repo, base, base)?
            .into_iter()
            .map(|(r, d, tags, matched)| Dependent {
                repository: r.to_string(),
                digest: d.to_string(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                matched,
            })
            .collect())
    }

    /// Images (their top-level manifests, with their tags) built on `base`
    /// or, for an index, on any image it lists; never `base` itself or
    /// `except`.
    fn built_on(
        &self,
        repo: &RepoName,
        base: &Digest,
        except: &Digest,
    ) -> Result<Vec<Found>, DbError> {
        let mut bases = vec![base.clone()];
        if let Some(refs) = self.manifest_refs(repo, base)? {
            bases.extend(refs.manifests);
        }
        let mut matched: BTreeMap<(RepoName, Digest), String> = BTreeMap::new();
        for b in &bases {
            let by_annotation = keys::prefix(&[ANNOTATION, b.as_str()]);
            for (r, d) in self.indexed(&by_annotation)? {
                matched.insert((r, d), "annotation".into());
            }
            let layers = self.manifest(repo, b)?.and_then(|m| image_layers(&m.body));
            if let Some(chain) = layers
                .as_deref()
                .map(chains)
                .and_then(|c| c.last().cloned())
            {
                for (r, d) in self.indexed(&keys::prefix(&[LAYERS, &chain]))? {
                    matched.entry((r, d)).or_insert_with(|| "layers".into());
                }
            }
        }
        let skip: BTreeSet<&Digest> = bases.iter().chain([except]).collect();
        let mut found: BTreeMap<(RepoName, Digest), (Vec<Tag>, String)> = BTreeMap::new();
        for ((r, d), how) in matched {
            if skip.contains(&d) {
                continue;
            }
            for (top, tags) in self.tagged_tops(&r, &d)? {
                if !skip.contains(&top) {
                    found.entry((r.clone(), top)).or_insert((tags, how.clone()));
                }
            }
        }
        Ok(found
            .into_iter()
            .map(|((r, d), (tags, how))| (r, d, tags, how))
            .collect())
    }

    /// `(repo, digest)` pairs under `prefix` in `bases`.
    fn indexed(&self, prefix: &[u8]) -> Result<Vec<(RepoName, Digest)>, DbError> {
        let mut found = Vec::new();
        for (k, _) in self.db.scan_prefix(Cf::Bases, prefix, None, usize::MAX)? {
            if let Ok((r, d)) = super::refs::split_repo_digest(&k[prefix.len()..]) {
                found.push((r, d));
            }
        }
        Ok(found)
    }

    /// What a client would pull to get `digest`: itself with its tags if
    /// tagged or listed by no index, else each index that lists it.
    fn tagged_tops(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Vec<(Digest, Vec<Tag>)>, DbError> {
        let tags = self.tags_of(repo, digest)?;
        let parents = self.parents(repo, digest)?;
        if !tags.is_empty() || parents.is_empty() {
            return Ok(vec![(digest.clone(), tags)]);
        }
        let mut tops = Vec::new();
        for parent in parents {
            let tags = self.tags_of(repo, &parent)?;
            tops.push((parent, tags));
        }
        Ok(tops)
    }

    /// The tags of `repo` that name `digest`.
    fn tags_of(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<Tag>, DbError> {
        let prefix = keys::prefix(&[repo.as_str()]);
        let mut tags = Vec::new();
        for (key, value) in self.db.scan_prefix(Cf::Tags, &prefix, None, usize::MAX)? {
            if *value == *digest.as_str().as_bytes() {
                if let Ok(tag) = std::str::from_utf8(keys::last_part(&key))
                    .unwrap_or("")
                    .parse()
                {
                    tags.push(tag);
                }
            }
        }
        Ok(tags)
    }
}
