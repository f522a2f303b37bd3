//! Storage usage per namespace, and the quotas that cap it.
//!
//! A namespace's usage is the sum of the sizes of the distinct blobs its
//! manifests reference: a layer shared by ten of its images counts once, a
//! layer shared with another namespace counts in both, and blobs uploaded
//! but named by no manifest count in none (garbage collection removes them).
//! `apply` keeps the figure in the derived `usage` family, so a manifest
//! PUT that would pass its namespace's limit is refused at commit, where no
//! two nodes can both let their push through.

use std::collections::{BTreeMap, BTreeSet};

use rocksdb::WriteBatch;

use super::Batch;
use serde::{Deserialize, Serialize};

use super::access::namespace_of;
use super::state::StateMachine;
use crate::db::{keys, Cf, DbError};
use crate::oci::{Digest, RepoName};

/// A namespace's usage and, if it has one, its quota.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamespaceUsage {
    pub namespace: String,
    pub bytes: u64,
    pub limit: Option<u64>,
}

/// Pushing would take a namespace past its quota.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverQuota {
    pub namespace: String,
    /// What the namespace would use.
    pub usage: u64,
    pub limit: u64,
}

pub(super) const QUOTA: &str = "quota";

/// A size as people read it, with the exact figure: `1.5 MiB (1572864 bytes)`.
pub fn size_text(bytes: u64) -> String {
    format!("{} ({bytes} bytes)", bytesize::ByteSize::b(bytes))
}

pub(super) fn quota_key(namespace: &str) -> Vec<u8> {
    keys::join(&[QUOTA, namespace])
}

/// The `blob_refs` references one command removes, settled into `usage`
/// when the command is staged whole: removing several manifests in one
/// batch must not count each other's references as still there.
#[derive(Default)]
pub(super) struct UsageTally {
    removed: BTreeMap<(String, Digest), BTreeSet<Vec<u8>>>,
}

impl UsageTally {
    pub(super) fn removed(&mut self, repo: &RepoName, blob: &Digest, ref_key: Vec<u8>) {
        let namespace = namespace_of(repo.as_str()).to_owned();
        self.removed
            .entry((namespace, blob.clone()))
            .or_default()
            .insert(ref_key);
    }
}

impl StateMachine {
    /// Bytes `blobs`, newly referenced from `repo`, add to its namespace:
    /// the sizes of those no manifest of the namespace references yet.
    fn bytes_added(&self, repo: &RepoName, blobs: &[Digest]) -> Result<u64, DbError> {
        let namespace = namespace_of(repo.as_str());
        let distinct: BTreeSet<&Digest> = blobs.iter().collect();
        let mut added = 0;
        for blob in distinct {
            if self.references_in(namespace, blob, &BTreeSet::new())? == 0 {
                added += self.blob_size(repo, blob)?;
            }
        }
        Ok(added)
    }

    /// Accounts for a manifest of `repo` that references `blobs`, unless
    /// that takes the namespace past its quota.
    pub(super) fn charge(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        blobs: &[Digest],
    ) -> Result<Result<(), OverQuota>, DbError> {
        let added = self.bytes_added(repo, blobs)?;
        if added == 0 {
            return Ok(Ok(()));
        }
        let namespace = namespace_of(repo.as_str());
        let usage = self.usage(namespace)?.saturating_add(added);
        if let Some(limit) = self.quota(namespace)? {
            if usage > limit {
                return Ok(Err(OverQuota {
                    namespace: namespace.to_owned(),
                    usage,
                    limit,
                }));
            }
        }
        batch.put_cf(self.db.cf(Cf::Usage), namespace, keys::u64_value(usage));
        Ok(Ok(()))
    }

    /// Takes off each namespace's usage the blobs the command's removals
    /// left without a reference in it.
    pub(super) fn settle(&self, batch: &mut Batch, tally: UsageTally) -> Result<(), DbError> {
        let mut freed: BTreeMap<String, u64> = BTreeMap::new();
        for ((namespace, blob), gone) in tally.removed {
            if self.references_in(&namespace, &blob, &gone)? == 0 {
                let size = self.blob_record(&blob)?.map_or(0, |(size, _)| size);
                *freed.entry(namespace).or_default() += size;
            }
        }
        for (namespace, bytes) in freed {
            let usage = self.usage(&namespace)?.saturating_sub(bytes);
            match usage {
                0 => batch.delete_cf(self.db.cf(Cf::Usage), &namespace),
                _ => batch.put_cf(self.db.cf(Cf::Usage), &namespace, keys::u64_value(usage)),
            }
        }
        Ok(())
    }

    /// How many references from repositories of `namespace` to `blob` the
    /// database holds, not counting those in `except`; stops counting past
    /// what `except` could hide.
    fn references_in(
        &self,
        namespace: &str,
        blob: &Digest,
        except: &BTreeSet<Vec<u8>>,
    ) -> Result<usize, DbError> {
        // The namespace's own repository (`acme`) and those under it (`acme/…`).
        let own = keys::prefix(&[blob.as_str(), namespace]);
        let mut under = keys::join(&[blob.as_str(), namespace]);
        under.push(b'/');
        let mut count = 0;
        for prefix in [own, under] {
            let rows = self
                .db
                .scan_prefix(Cf::BlobRefs, &prefix, None, except.len() + 1)?;
            count += rows.iter().filter(|(k, _)| !except.contains(&**k)).count();
        }
        Ok(count)
    }

    fn blob_size(&self, repo: &RepoName, blob: &Digest) -> Result<u64, DbError> {
        Ok(match self.blob_record(blob)? {
            Some((size, _)) => size,
            None => self.blob_link(repo, blob)?.unwrap_or(0),
        })
    }

    /// The unique blob bytes `namespace`'s manifests reference.
    pub fn usage(&self, namespace: &str) -> Result<u64, DbError> {
        Ok(self
            .db
            .get(Cf::Usage, namespace.as_bytes())?
            .and_then(|v| keys::parse_u64(&v))
            .unwrap_or(0))
    }

    pub fn quota(&self, namespace: &str) -> Result<Option<u64>, DbError> {
        Ok(self
            .db
            .get(Cf::Policies, &quota_key(namespace))?
            .and_then(|v| keys::parse_u64(&v)))
    }

    /// Usage and limits of every namespace that uses space or has a quota.
    pub fn namespace_usage(&self) -> Result<Vec<NamespaceUsage>, DbError> {
        let mut all: BTreeMap<String, NamespaceUsage> = BTreeMap::new();
        fn row<'a>(
            all: &'a mut BTreeMap<String, NamespaceUsage>,
            key: &[u8],
        ) -> &'a mut NamespaceUsage {
            let namespace = String::from_utf8_lossy(key).into_owned();
            all.entry(namespace.clone()).or_insert(NamespaceUsage {
                namespace,
                bytes: 0,
                limit: None,
            })
        }
        for (k, v) in self.db.scan_prefix(Cf::Usage, b"", None, usize::MAX)? {
            row(&mut all, &k).bytes = keys::parse_u64(&v).unwrap_or(0);
        }
        let prefix = keys::prefix(&[QUOTA]);
        for (k, v) in self
            .db
            .scan_prefix(Cf::Policies, &prefix, None, usize::MAX)?
        {
            row(&mut all, &k[prefix.len()..]).limit = keys::parse_u64(&v);
        }
        Ok(all.into_values().collect())
    }

    /// Recomputes every namespace's usage from `blob_refs` (which must be
    /// complete) and the blob sizes, after the derived families were cleared.
    pub(super) fn rebuild_usage(&self) -> Result<(), DbError> {
        let mut usage: BTreeMap<String, u64> = BTreeMap::new();
        let mut current: Option<(Vec<u8>, BTreeSet<String>)> = None;
        let mut settle = |blob: &[u8], namespaces: BTreeSet<String>| -> Result<(), DbError> {
            let size = std::str::from_utf8(blob)
                .ok()
                .and_then(|d| d.parse::<Digest>().ok())
                .map(|d| self.blob_record(&d))
                .transpose()?
                .flatten()
                .map_or(0, |(size, _)| size);
            for namespace in namespaces {
                *usage.entry(namespace).or_default() += size;
            }
            Ok(())
        };
        for item in self
            .db
            .raw()
            .iterator_cf(self.db.cf(Cf::BlobRefs), rocksdb::IteratorMode::Start)
        {
            let (key, _) = item?;
            // The completeness mark starts with 0x00; references never do.
            let mut parts = key.split(|b| *b == 0);
            let (Some(blob), Some(repo)) = (parts.next(), parts.next()) else {
                continue;
            };
            if blob.is_empty() {
                continue;
            }
            let namespace = namespace_of(&String::from_utf8_lossy(repo)).to_owned();
            match &mut current {
                Some((b, namespaces)) if b.as_slice() == blob => {
                    namespaces.insert(namespace);
                }
                _ => {
                    if let Some((b, namespaces)) = current.take() {
                        settle(&b, namespaces)?;
                    }
                    current = Some((blob.to_vec(), BTreeSet::from([namespace])));
                }
            }
        }
        if let Some((b, namespaces)) = current.take() {
            settle(&b, namespaces)?;
        }
        let mut batch = WriteBatch::default();
        for (namespace, bytes) in usage {
            batch.put_cf(self.db.cf(Cf::Usage), namespace, keys::u64_value(bytes));
        }
        self.db.write_durable(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::policy::PolicyChange;
    use crate::meta::testing::{image_body, link, ok, put, state};
    use crate::meta::{Collect, Command, Rejection};

    fn quota(namespace: &str, bytes: Option<u64>) -> Command {
        Command::Policy {
            change: PolicyChange::SetQuota {
                namespace: namespace.into(),
                bytes,
            },
            at: 1,
        }
    }

    fn untagged_collect(manifests: &[(&str, &Command)]) -> Command {
        Command::Collect(Collect {
            blobs: vec![],
            manifests: manifests
                .iter()
                .map(|(repo, put)| match put {
                    Command::PutManifest(p) => (repo.parse().unwrap(), p.digest.clone()),
                    _ => unreachable!(),
                })
                .collect(),
            grace: 0,
            at: 100,
        })
    }

    #[test]
    fn shared_layers_count_once_per_namespace() {
        let (_d, sm) = state();
        let base = link(&sm, "acme/a", &[0; 1000], 1);
        link(&sm, "acme/b", &[0; 1000], 1);
        link(&sm, "other/c", &[0; 1000], 1);
        let own = link(&sm, "acme/b", &[1; 300], 1);
        ok(&sm, put("acme/a", "a", Some("v1"), &[&base, &base], 2));
        assert_eq!(sm.usage("acme").unwrap(), 1000);
        ok(&sm, put("acme/b", "b", Some("v1"), &[&base, &own], 2));
        assert_eq!(sm.usage("acme").unwrap(), 1300);
        // Another namespace pays for the same layer too.
        ok(&sm, put("other/c", "c", Some("v1"), &[&base], 2));
        assert_eq!(sm.usage("other").unwrap(), 1000);
        // Pushing the same manifest again, or a second tag, adds nothing.
        ok(&sm, put("acme/b", "b", Some("v2"), &[&base, &own], 3));
        assert_eq!(sm.usage("acme").unwrap(), 1300);
        // Deleting one image frees only what no other image names.
        let b = Command::RemoveManifest {
            repo: "acme/b".parse().unwrap(),
            digest: Digest::sha256(b"b"),
            at: 4,
        };
        ok(&sm, b);
        assert_eq!(sm.usage("acme").unwrap(), 1000);
        let shown = sm.namespace_usage().unwrap();
        assert_eq!(shown.len(), 2);
        assert_eq!(
            (shown[0].namespace.as_str(), shown[0].bytes),
            ("acme", 1000)
        );
    }

    #[test]
    fn removing_every_sharer_in_one_command_frees_the_layer() {
        let (_d, sm) = state();
        let base = link(&sm, "acme/a", &[0; 1000], 1);
        let first = put("acme/a", "one", None, &[&base], 2);
        let second = put("acme/a", "two", None, &[&base], 2);
        ok(&sm, first.clone());
        ok(&sm, second.clone());
        assert_eq!(sm.usage("acme").unwrap(), 1000);
        ok(
            &sm,
            untagged_collect(&[("acme/a", &first), ("acme/a", &second)]),
        );
        assert_eq!(sm.usage("acme").unwrap(), 0);
        assert!(sm.namespace_usage().unwrap().is_empty());
    }

    #[test]
    fn a_push_past_the_quota_is_refused_and_a_delete_makes_room() {
        let (_d, sm) = state();
        let big = link(&sm, "acme/a", &[0; 800], 1);
        let more = link(&sm, "acme/a", &[1; 300], 1);
        ok(&sm, quota("acme", Some(1000)));
        ok(&sm, put("acme/a", "big", Some("v1"), &[&big], 2));
        let over = put("acme/a", "more", Some("v2"), &[&big, &more], 3);
        assert_eq!(
            sm.apply(&over).unwrap(),
            Err(Rejection::QuotaExceeded {
                namespace: "acme".into(),
                usage: 1100,
                limit: 1000,
            })
        );
        assert_eq!(sm.usage("acme").unwrap(), 800);
        // What adds no bytes is still accepted at the limit.
        ok(&sm, put("acme/a", "big", Some("v3"), &[&big], 3));
        // Other namespaces are not bounded by it.
        link(&sm, "zeta/a", &[1; 300], 1);
        ok(&sm, put("zeta/a", "more", Some("v2"), &[&more], 3));
        let delete = Command::RemoveManifest {
            repo: "acme/a".parse().unwrap(),
            digest: Digest::sha256(b"big"),
            at: 4,
        };
        ok(&sm, delete);
        assert_eq!(sm.usage("acme").unwrap(), 0);
        ok(&sm, put("acme/a", "more", Some("v2"), &[&more], 5));
        assert_eq!(sm.usage("acme").unwrap(), 300);
        assert_eq!(sm.quota("acme").unwrap(), Some(1000));
        ok(&sm, quota("acme", None));
        assert_eq!(sm.quota("acme").unwrap(), None);
    }

    #[test]
    fn rebuilt_usage_matches_what_apply_kept() {
        let (_d, sm) = state();
        let base = link(&sm, "acme/a", &[0; 1000], 1);
        link(&sm, "acme", &[0; 1000], 1);
        let own = link(&sm, "acme", &[2; 10], 1);
        link(&sm, "acmex/y", &[2; 10], 1);
        // Bodies a rebuild parses: config first, then layers.
        let a = image_body(&[(&base, 1000)]);
        let b = image_body(&[(&own, 10), (&base, 1000)]);
        let c = image_body(&[(&own, 10), (&own, 10)]);
        ok(&sm, put("acme/a", &a, Some("v1"), &[&base], 2));
        ok(&sm, put("acme", &b, Some("v1"), &[&own, &base], 2));
        ok(&sm, put("acmex/y", &c, Some("v1"), &[&own, &own], 2));
        let kept = sm.namespace_usage().unwrap();
        assert_eq!(kept[0].bytes, 1010);
        assert_eq!(kept[1].bytes, 10);
        sm.rebuild_indexes().unwrap();
        assert_eq!(sm.namespace_usage().unwrap(), kept);
    }
}
