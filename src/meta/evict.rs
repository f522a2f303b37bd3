//! Size budgets of pull-through mirrors: when a mirror's cached content
//! passes its budget, the images pulled least recently go first, never by
//! age alone. Eviction only removes cached manifests (with their tags and
//! the index children no kept image lists); the blobs that frees are then
//! garbage like any other, and the collection removes them after the grace.
//! So there is one deleter: the collector.
//!
//! When each image was last pulled is replicated: nodes report their pulls
//! in batches ([`Command::Pulled`]), so the leader that plans sees every
//! node's pulls.
//!
//! [`Command::Pulled`]: super::Command::Pulled

use std::collections::{BTreeMap, BTreeSet};

use super::Batch;
use serde::{Deserialize, Serialize};

use super::refs::Refs;
use super::state::manifest_key;
use super::StateMachine;
use crate::db::{keys, Cf, DbError};
use crate::oci::{Digest, RepoName};

/// Manifests pulled through a mirror, and when (unix seconds, on the node
/// that served each pull).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Pulled {
    pub pulls: Vec<(RepoName, Digest, u64)>,
}

/// A manifest eviction would remove.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Eviction {
    pub repository: RepoName,
    pub digest: Digest,
    /// Unix seconds of its last pull (or of its caching, if never pulled
    /// since).
    pub last_pulled: u64,
}

/// What eviction would do in one mirror's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvictionPlan {
    pub namespace: String,
    pub budget: u64,
    /// Bytes its manifests reference now, and once the evictions are done.
    pub bytes: u64,
    pub bytes_after: u64,
    pub evict: Vec<Eviction>,
}

/// An image of the cache: a top manifest and the children only it lists.
struct Image {
    repo: RepoName,
    manifests: Vec<Digest>,
    blobs: BTreeSet<Digest>,
    last_pulled: u64,
}

impl StateMachine {
    /// Records pull times, keeping the latest; a manifest removed meanwhile
    /// gets none.
    pub(super) fn stage_pulled(&self, batch: &mut Batch, pulled: &Pulled) -> Result<(), DbError> {
        for (repo, digest, at) in &pulled.pulls {
            if self.manifest_refs(repo, digest)?.is_none() {
                continue;
            }
            let key = manifest_key(repo, digest);
            let known = self
                .db
                .get(Cf::PullTimes, &key)?
                .and_then(|v| keys::parse_u64(&v));
            if known.is_none_or(|k| k < *at) {
                batch.put_cf(self.db.cf(Cf::PullTimes), key, keys::u64_value(*at));
            }
        }
        Ok(())
    }

    /// Which images of `namespace` to evict to bring it within `budget`
    /// bytes, least recently pulled first.
    pub fn eviction_plan(&self, namespace: &str, budget: u64) -> Result<EvictionPlan, DbError> {
        let images = self.cached_images(namespace)?;
        let sizes = self.cached_blob_sizes(namespace)?;
        let total = |kept: &[&Image]| -> u64 {
            let blobs: BTreeSet<&Digest> = kept.iter().flat_map(|i| &i.blobs).collect();
            blobs.iter().filter_map(|d| sizes.get(*d)).sum()
        };
        let mut order: Vec<&Image> = images.iter().collect();
        // Least recently pulled first; equal times by name, so every node
        // plans alike.
        order.sort_by(|a, b| {
            (a.last_pulled, &a.repo, &a.manifests[0]).cmp(&(
                b.last_pulled,
                &b.repo,
                &b.manifests[0],
            ))
        });
        let bytes = total(&order);
        let mut plan = EvictionPlan {
            namespace: namespace.to_owned(),
            budget,
            bytes,
            bytes_after: bytes,
            evict: Vec::new(),
        };
        let mut kept = order;
        while plan.bytes_after > budget && !kept.is_empty() {
            let image = kept.remove(0);
            plan.evict.extend(image.manifests.iter().map(|d| Eviction {
                repository: image.repo.clone(),
                digest: d.clone(),
                last_pulled: image.last_pulled,
            }));
            plan.bytes_after = total(&kept);
        }
        Ok(plan)
    }

    /// The images cached under `namespace/`: each manifest no other
    /// manifest of its repository lists, with the children only it lists.
    fn cached_images(&self, namespace: &str) -> Result<Vec<Image>, DbError> {
        let prefix = format!("{namespace}/");
        let mut by_repo: BTreeMap<RepoName, BTreeMap<Digest, Refs>> = BTreeMap::new();
        for (key, _) in
            self.db
                .scan_prefix(Cf::ManifestRefs, prefix.as_bytes(), None, usize::MAX)?
        {
            let Some((repo, digest)) = split_key(&key) else {
                continue;
            };
            if let Some(refs) = self.manifest_refs(&repo, &digest)? {
                by_repo.entry(repo).or_default().insert(digest, refs);
            }
        }
        let mut images = Vec::new();
        for (repo, manifests) in by_repo {
            let children: BTreeSet<&Digest> =
                manifests.values().flat_map(|r| &r.manifests).collect();
            for (digest, refs) in manifests.iter().filter(|(d, _)| !children.contains(d)) {
                let mut image = Image {
                    repo: repo.clone(),
                    manifests: vec![digest.clone()],
                    blobs: refs.blobs.iter().cloned().collect(),
                    last_pulled: self.last_pulled(&repo, digest, refs)?,
                };
                for child in &refs.manifests {
                    // A child another top manifest lists too stays with it.
                    let shared = manifests
                        .iter()
                        .any(|(d, r)| d != digest && r.manifests.contains(child));
                    if let (false, Some(c)) = (shared, manifests.get(child)) {
                        image.manifests.push(child.clone());
                        image.blobs.extend(c.blobs.iter().cloned());
                        let pulled = self.last_pulled(&repo, child, c)?;
                        image.last_pulled = image.last_pulled.max(pulled);
                    }
                }
                images.push(image);
            }
        }
        Ok(images)
    }

    fn last_pulled(&self, repo: &RepoName, digest: &Digest, refs: &Refs) -> Result<u64, DbError> {
        let key = manifest_key(repo, digest);
        Ok(self
            .db
            .get(Cf::PullTimes, &key)?
            .and_then(|v| keys::parse_u64(&v))
            .unwrap_or(refs.created))
    }

    /// The sizes of the blobs linked in repositories under `namespace/`.
    fn cached_blob_sizes(&self, namespace: &str) -> Result<BTreeMap<Digest, u64>, DbError> {
        let prefix = format!("{namespace}/");
        let mut sizes = BTreeMap::new();
        for (key, value) in
            self.db
                .scan_prefix(Cf::RepoBlobs, prefix.as_bytes(), None, usize::MAX)?
        {
            let digest = std::str::from_utf8(keys::last_part(&key))
                .ok()
                .and_then(|d| d.parse().ok());
            if let (Some(digest), Some(size)) = (digest, keys::parse_u64(&value)) {
                sizes.insert(digest, size);
            }
        }
        Ok(sizes)
    }
}

/// The repository and digest of a `repo 0x00 digest` key.
fn split_key(key: &[u8]) -> Option<(RepoName, Digest)> {
    let at = key.iter().rposition(|&b| b == 0)?;
    let repo = std::str::from_utf8(&key[..at]).ok()?.parse().ok()?;
    let digest = std::str::from_utf8(&key[at + 1..]).ok()?.parse().ok()?;
    Some((repo, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testing::{image_body, link, ok, put, state};
    use crate::meta::Command;

    #[test]
    fn the_least_recently_pulled_images_go_first_until_the_budget_holds() {
        let (_dir, sm) = state();
        // Three images of 100 bytes each sharing nothing, and a pushed
        // repository outside the namespace.
        let mut digests: Vec<(RepoName, Digest)> = Vec::new();
        for (i, r) in [(0u8, "up/app"), (1, "up/app"), (2, "up/tool")] {
            let blob = link(&sm, r, &[i; 100], 1);
            let body = image_body(&[(&blob, 100)]);
            ok(
                &sm,
                put(r, &body, Some(&format!("t{i}")), &[&blob], 10 + i as u64),
            );
            digests.push((r.parse().unwrap(), Digest::sha256(body.as_bytes())));
        }
        link(&sm, "acme/app", &[9; 1000], 1);

        let plan = sm.eviction_plan("up", 1000).unwrap();
        assert_eq!((plan.bytes, plan.bytes_after), (300, 300));
        assert!(plan.evict.is_empty());

        // The oldest image was pulled last: the second goes first, then
        // the third.
        let pulled = Pulled {
            pulls: vec![(digests[0].0.clone(), digests[0].1.clone(), 50)],
        };
        ok(&sm, Command::Pulled(pulled));
        let plan = sm.eviction_plan("up", 150).unwrap();
        let evicted: Vec<_> = plan.evict.iter().map(|e| e.digest.clone()).collect();
        assert_eq!(evicted, vec![digests[1].1.clone(), digests[2].1.clone()]);
        assert_eq!(plan.bytes_after, 100);
        // An older pull time never replaces a newer one.
        let stale = Pulled {
            pulls: vec![(digests[0].0.clone(), digests[0].1.clone(), 1)],
        };
        ok(&sm, Command::Pulled(stale));
        assert_eq!(sm.eviction_plan("up", 150).unwrap().evict.len(), 2);
        // Nothing outside the namespace is ever planned.
        let plan = sm.eviction_plan("up", 0).unwrap();
        assert_eq!(plan.evict.len(), 3);
        assert!(plan
            .evict
            .iter()
            .all(|e| e.repository.as_str().starts_with("up/")));
    }
}
