//! Garbage in the replicated metadata: what a collection would remove
//! (marking, a read), and the re-check and removal when its decision is
//! applied (a [`Collect`] command).
//!
//! - A blob is garbage when no manifest in any repository references it and
//!   it has been unreferenced for the grace period: since its last link, or
//!   the last removal of a manifest that referenced it, whichever is later.
//! - A manifest is garbage (only when a collection asks for untagged
//!   manifests) when nothing keeps it. Kept are tagged manifests and those
//!   stored within the grace period, and, from any kept manifest, the child
//!   manifests it lists, the manifests whose subject it is (signatures,
//!   SBOMs) and its own subject.
//!
//! Applying re-checks each item against the state at that point of the log,
//! so a manifest committed before the decision always wins over it.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use rocksdb::WriteBatch;

use super::Batch;
use serde::{Deserialize, Serialize};

use super::command::Collect;
use super::quota::UsageTally;
use super::refs::{parse_part, split_repo_digest};
use super::state::StateMachine;
use crate::db::{self, keys, Cf, DbError};
use crate::oci::{Digest, RepoName};

/// One collection, as the node that ran it reports it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// Start time in unix milliseconds; names the run.
    pub id: u64,
    /// The node that ran it.
    pub node: u64,
    pub started: u64,
    /// Unix seconds; `None` while it runs.
    pub finished: Option<u64>,
    pub grace: u64,
    pub untagged: bool,
    pub blobs: u64,
    pub manifests: u64,
    /// The collected blobs' sizes added up (each counted once, however many
    /// nodes held it).
    pub bytes: u64,
    /// Why it stopped early, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// What one node removed from its own disk for the latest run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepReport {
    pub node: u64,
    /// The run this sweep followed.
    pub run: u64,
    pub files: u64,
    pub bytes: u64,
    /// Files of collected blobs still waiting to be removed.
    pub pending: u64,
    /// Unix seconds.
    pub at: u64,
}

/// The latest run and every node's sweep.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GcState {
    pub last_run: Option<RunReport>,
    pub nodes: Vec<SweepReport>,
}

/// A blob a collection would remove, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GarbageBlob {
    pub digest: Digest,
    pub size: u64,
    /// Unix seconds since which no manifest has referenced it.
    pub unreferenced_since: u64,
}

/// A manifest a collection would remove.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GarbageManifest {
    pub repository: RepoName,
    pub digest: Digest,
    pub created: u64,
}

const RUN_KEY: &[u8] = b"run";
const NODE_PART: &str = "node";

impl StateMachine {
    /// Blobs after `after` in digest order, among the next `scan` records,
    /// that are garbage at `now` with `grace`; and the last digest scanned,
    /// `None` at the end. Reads records only, never blob contents.
    pub fn garbage_blobs(
        &self,
        after: Option<&Digest>,
        scan: usize,
        now: u64,
        grace: u64,
    ) -> Result<(Vec<GarbageBlob>, Option<Digest>), DbError> {
        let page = self.blob_records_page(after, scan)?;
        let last = page.last().map(|(d, _, _)| d.clone());
        let mut out = Vec::new();
        for (digest, size, since) in page {
            if since.saturating_add(grace) <= now && !self.blob_referenced(&digest)? {
                out.push(GarbageBlob {
                    digest,
                    size,
                    unreferenced_since: since,
                });
            }
        }
        Ok((out, last))
    }

    /// The manifests of `repo` nothing keeps at `now` with `grace`.
    pub fn garbage_manifests(
        &self,
        repo: &RepoName,
        now: u64,
        grace: u64,
    ) -> Result<Vec<GarbageManifest>, DbError> {
        let prefix = keys::prefix(&[repo.as_str()]);
        let mut all = BTreeMap::new();
        for (key, value) in self
            .db
            .scan_prefix(Cf::ManifestRefs, &prefix, None, usize::MAX)?
        {
            let (_, digest) = split_repo_digest(&key)?;
            let refs: super::refs::Refs = db::decode(Cf::ManifestRefs.name(), &value)?;
            all.insert(digest, refs);
        }
        let tagged = self.tagged(repo)?;
        let mut kept: HashSet<Digest> = HashSet::new();
        let mut todo: Vec<Digest> = all
            .iter()
            .filter(|(d, r)| tagged.contains(*d) || r.created.saturating_add(grace) > now)
            .map(|(d, _)| d.clone())
            .collect();
        while let Some(digest) = todo.pop() {
            if !kept.insert(digest.clone()) {
                continue;
            }
            let Some(refs) = all.get(&digest) else {
                continue;
            };
            todo.extend(refs.manifests.iter().cloned());
            todo.extend(refs.subject.iter().cloned());
            todo.extend(self.referrer_digests(repo, &digest)?);
        }
        Ok(all
            .into_iter()
            .filter(|(d, _)| !kept.contains(d))
            .map(|(digest, refs)| GarbageManifest {
                repository: repo.clone(),
                digest,
                created: refs.created,
            })
            .collect())
    }

    /// The digests tags of `repo` point at.
    fn tagged(&self, repo: &RepoName) -> Result<HashSet<Digest>, DbError> {
        let prefix = keys::prefix(&[repo.as_str()]);
        self.db
            .scan_prefix(Cf::Tags, &prefix, None, usize::MAX)?
            .iter()
            .map(|(_, v)| parse_part("tag target", v))
            .collect()
    }

    /// Applies a collection: removes each manifest and blob that is still
    /// garbage at this point of the log, and queues the files of removed
    /// blobs for this node's sweeper.
    pub(super) fn stage_collect(&self, batch: &mut Batch, c: &Collect) -> Result<(), DbError> {
        let mut by_repo: BTreeMap<&RepoName, BTreeSet<Digest>> = BTreeMap::new();
        for (repo, digest) in &c.manifests {
            by_repo.entry(repo).or_default().insert(digest.clone());
        }
        let mut tally = UsageTally::default();
        for (repo, mut doomed) in by_repo {
            self.still_garbage(repo, &mut doomed, c.at, c.grace)?;
            for digest in doomed {
                self.remove_manifest(batch, repo, &digest, c.at, &mut tally)?;
            }
        }
        self.settle(batch, tally)?;
        for digest in &c.blobs {
            let Some((_, since)) = self.blob_record(digest)? else {
                continue;
            };
            if since.saturating_add(c.grace) > c.at || self.blob_referenced(digest)? {
                continue;
            }
            batch.delete_cf(self.db.cf(Cf::Blobs), digest.as_str());
            for node in self.holders(digest)? {
                batch.delete_cf(
                    self.db.cf(Cf::Holders),
                    super::state::holder_key(digest, node),
                );
            }
            for repo in self.blob_repos(digest)? {
                self.unlink_repo(batch, &repo, digest);
            }
            batch.put_cf(self.db.cf(Cf::Sweep), digest.as_str(), []);
        }
        Ok(())
    }

    /// Narrows `doomed` to the manifests nothing outside it keeps. Outside
    /// the set holds every root (a tag, or a manifest within its grace), so
    /// once no kept manifest leads into the set, none of it is reachable.
    fn still_garbage(
        &self,
        repo: &RepoName,
        doomed: &mut BTreeSet<Digest>,
        at: u64,
        grace: u64,
    ) -> Result<(), DbError> {
        let tagged = self.tagged(repo)?;
        loop {
            let mut kept = Vec::new();
            for digest in doomed.iter() {
                let Some(refs) = self.manifest_refs(repo, digest)? else {
                    kept.push(digest.clone());
                    continue;
                };
                let outside = |d: &Digest| !doomed.contains(d);
                let keeps = tagged.contains(digest)
                    || refs.created.saturating_add(grace) > at
                    || self.parents(repo, digest)?.iter().any(outside)
                    || self.referrer_digests(repo, digest)?.iter().any(outside)
                    || match &refs.subject {
                        Some(s) => outside(s) && self.manifest_refs(repo, s)?.is_some(),
                        None => false,
                    };
                if keeps {
                    kept.push(digest.clone());
                }
            }
            if kept.is_empty() {
                return Ok(());
            }
            for digest in kept {
                doomed.remove(&digest);
            }
        }
    }

    pub(super) fn stage_gc_report(&self, batch: &mut Batch, report: &super::GcReport) {
        match report {
            super::GcReport::Run(run) => {
                batch.put_cf(self.db.cf(Cf::Gc), RUN_KEY, db::encode(run));
            }
            super::GcReport::Swept(sweep) => {
                batch.put_cf(
                    self.db.cf(Cf::Gc),
                    keys::join(&[NODE_PART, &keys::node_part(sweep.node)]),
                    db::encode(sweep),
                );
            }
        }
    }

    /// The latest run and the nodes' sweeps.
    pub fn gc_state(&self) -> Result<GcState, DbError> {
        let last_run = self
            .db
            .get(Cf::Gc, RUN_KEY)?
            .map(|v| db::decode("collection report", &v))
            .transpose()?;
        let nodes = self
            .db
            .scan_prefix(Cf::Gc, &keys::prefix(&[NODE_PART]), None, usize::MAX)?
            .iter()
            .map(|(_, v)| db::decode("sweep report", v))
            .collect::<Result<_, _>>()?;
        Ok(GcState { last_run, nodes })
    }

    /// Collected blobs whose file this node has not removed yet, after
    /// `after`, at most `n`.
    pub fn sweep_queue(&self, after: Option<&Digest>, n: usize) -> Result<Vec<Digest>, DbError> {
        self.db
            .scan_prefix(Cf::Sweep, b"", after.map(|d| d.as_str().as_bytes()), n)?
            .iter()
            .map(|(k, _)| parse_part("sweep entry", k))
            .collect()
    }

    /// Forgets queued sweeps once their files are gone.
    pub fn unqueue_sweeps(&self, done: &[Digest]) -> Result<(), DbError> {
        let mut batch = WriteBatch::default();
        for digest in done {
            batch.delete_cf(self.db.cf(Cf::Sweep), digest.as_str());
        }
        Ok(self.db.raw().write(batch)?)
    }

    /// How many collected blobs' files wait to be removed here.
    pub fn sweep_pending(&self) -> Result<u64, DbError> {
        Ok(self.sweep_queue(None, usize::MAX)?.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Command, PutManifest, Rejection};

    use crate::meta::testing::state as sm;

    fn repo() -> RepoName {
        "acme/app".parse().unwrap()
    }

    fn apply(sm: &StateMachine, cmd: Command) -> Result<(), Rejection> {
        sm.apply(&cmd).unwrap()
    }

    fn link(sm: &StateMachine, data: &[u8], at: u64) -> Digest {
        let digest = Digest::sha256(data);
        let cmd = Command::LinkBlob {
            repo: repo(),
            digest: digest.clone(),
            size: data.len() as u64,
            at,
            holders: vec![1, 2],
        };
        apply(sm, cmd).unwrap();
        digest
    }

    /// A manifest `name` naming `blobs`, `children` and `subject`.
    fn put(
        name: &str,
        tag: Option<&str>,
        blobs: &[&Digest],
        children: &[&Digest],
        subject: Option<&Digest>,
        at: u64,
    ) -> (Digest, Command) {
        let digest = Digest::sha256(name.as_bytes());
        let cmd = Command::PutManifest(PutManifest {
            repo: repo(),
            digest: digest.clone(),
            tag: tag.map(|t| t.parse().unwrap()),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            body: name.as_bytes().to_vec(),
            blobs: blobs.iter().map(|d| (*d).clone()).collect(),
            manifests: children.iter().map(|d| (*d).clone()).collect(),
            subject: subject.cloned(),
            artifact_type: None,
            annotations: None,
            at,
        });
        (digest, cmd)
    }

    fn collect(blobs: &[&Digest], manifests: &[&Digest], grace: u64, at: u64) -> Command {
        Command::Collect(Collect {
            blobs: blobs.iter().map(|d| (*d).clone()).collect(),
            manifests: manifests.iter().map(|d| (repo(), (*d).clone())).collect(),
            grace,
            at,
        })
    }

    fn garbage_blobs(sm: &StateMachine, now: u64, grace: u64) -> Vec<Digest> {
        let (found, _) = sm.garbage_blobs(None, 1000, now, grace).unwrap();
        found.into_iter().map(|g| g.digest).collect()
    }

    #[test]
    fn a_manifest_committed_before_the_decision_keeps_its_blob() {
        let (_d, sm) = sm();
        let layer = link(&sm, b"layer", 10);
        let loose = link(&sm, b"loose", 10);
        assert_eq!(garbage_blobs(&sm, 100, 50), {
            let mut v = vec![layer.clone(), loose.clone()];
            v.sort();
            v
        });
        // Marked as garbage, then a manifest naming `layer` lands first.
        let (_, m) = put("m", Some("v1"), &[&layer], &[], None, 20);
        apply(&sm, m).unwrap();
        apply(&sm, collect(&[&layer, &loose], &[], 50, 100)).unwrap();
        assert_eq!(sm.blob_known(&layer).unwrap(), Some(5));
        assert_eq!(sm.blob_known(&loose).unwrap(), None);
        assert!(sm.holders(&loose).unwrap().is_empty());
        assert_eq!(sm.blob_link(&repo(), &loose).unwrap(), None);
        assert_eq!(sm.sweep_queue(None, 10).unwrap(), vec![loose.clone()]);
        // Nothing brings the collected blob back without bytes.
        let (_, late) = put("late", Some("v2"), &[&loose], &[], None, 101);
        assert_eq!(
            apply(&sm, late),
            Err(Rejection::ManifestBlobUnknown(loose.clone()))
        );
        let mount = Command::LinkBlob {
            repo: repo(),
            digest: loose.clone(),
            size: 5,
            at: 102,
            holders: vec![],
        };
        assert_eq!(apply(&sm, mount), Err(Rejection::BlobUnknown));
        let holders = Command::AddHolders {
            digest: loose.clone(),
            nodes: vec![3],
        };
        apply(&sm, holders).unwrap();
        assert!(sm.holders(&loose).unwrap().is_empty());
        sm.unqueue_sweeps(&[loose]).unwrap();
        assert!(sm.sweep_queue(None, 10).unwrap().is_empty());
    }

    #[test]
    fn grace_counts_from_the_last_link_or_the_last_reference_removed() {
        let (_d, sm) = sm();
        let layer = link(&sm, b"layer", 10);
        let (m, put_m) = put("m", Some("v1"), &[&layer], &[], None, 10);
        apply(&sm, put_m).unwrap();
        assert!(garbage_blobs(&sm, 1000, 0).is_empty());
        let delete = Command::RemoveManifest {
            repo: repo(),
            digest: m,
            at: 500,
        };
        apply(&sm, delete).unwrap();
        assert!(garbage_blobs(&sm, 549, 50).is_empty());
        assert_eq!(garbage_blobs(&sm, 550, 50), vec![layer.clone()]);
        // Within its grace the decision is refused when applied.
        apply(&sm, collect(&[&layer], &[], 50, 549)).unwrap();
        assert_eq!(sm.blob_known(&layer).unwrap(), Some(5));
        // A new link starts the grace again.
        link(&sm, b"layer", 600);
        apply(&sm, collect(&[&layer], &[], 50, 620)).unwrap();
        assert_eq!(sm.blob_known(&layer).unwrap(), Some(5));
        apply(&sm, collect(&[&layer], &[], 50, 650)).unwrap();
        assert_eq!(sm.blob_known(&layer).unwrap(), None);
    }

    #[test]
    fn untagged_manifests_go_but_what_kept_ones_lead_to_stays() {
        let (_d, sm) = sm();
        let layer = link(&sm, b"layer", 1);
        let (child_a, c) = put("child-a", None, &[&layer], &[], None, 1);
        apply(&sm, c).unwrap();
        let (child_b, c) = put("child-b", None, &[&layer], &[], None, 1);
        apply(&sm, c).unwrap();
        let (index, c) = put("index", Some("v1"), &[], &[&child_a], None, 1);
        apply(&sm, c).unwrap();
        let (sig, c) = put("signature", None, &[], &[], Some(&index), 1);
        apply(&sm, c).unwrap();
        let (old, c) = put("old", None, &[&layer], &[], None, 1);
        apply(&sm, c).unwrap();
        let (old_sig, c) = put("old-signature", None, &[], &[], Some(&old), 1);
        apply(&sm, c).unwrap();
        let (orphan_index, c) = put("orphan-index", None, &[], &[&child_b], None, 1);
        apply(&sm, c).unwrap();
        let garbage: BTreeSet<Digest> = sm
            .garbage_manifests(&repo(), 100, 10)
            .unwrap()
            .into_iter()
            .map(|g| g.digest)
            .collect();
        let expected: BTreeSet<Digest> = [&old, &old_sig, &orphan_index, &child_b]
            .into_iter()
            .cloned()
            .collect();
        assert_eq!(garbage, expected);
        // Within the grace nothing is garbage.
        assert!(sm.garbage_manifests(&repo(), 5, 10).unwrap().is_empty());
        // `old` is tagged after the decision: it and its signature stay.
        let (_, retag) = put("old", Some("again"), &[&layer], &[], None, 50);
        apply(&sm, retag).unwrap();
        let doomed: Vec<&Digest> = expected.iter().collect();
        apply(&sm, collect(&[], &doomed, 10, 100)).unwrap();
        for kept in [&index, &child_a, &sig, &old, &old_sig] {
            assert!(sm.manifest(&repo(), kept).unwrap().is_some());
        }
        for gone in [&orphan_index, &child_b] {
            assert!(sm.manifest(&repo(), gone).unwrap().is_none());
            assert!(sm.manifest_refs(&repo(), gone).unwrap().is_none());
        }
        // The removed child no longer holds its layer; the kept ones do.
        assert!(sm.blob_referenced(&layer).unwrap());
        assert!(sm.parents(&repo(), &child_b).unwrap().is_empty());
    }

    #[test]
    fn rebuilt_indexes_match_the_ones_apply_keeps() {
        let (_d, sm) = sm();
        let config = Digest::sha256(b"config");
        let layer = link(&sm, b"layer", 1);
        link(&sm, b"config", 1);
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":6}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#,
            crate::oci::media::OCI_MANIFEST
        );
        let parsed = crate::oci::manifest::parse(body.as_bytes(), None).unwrap();
        let cmd = Command::PutManifest(PutManifest {
            repo: repo(),
            digest: Digest::sha256(body.as_bytes()),
            tag: Some("v1".parse().unwrap()),
            media_type: parsed.media_type,
            body: body.into_bytes(),
            blobs: parsed.blobs,
            manifests: parsed.manifests,
            subject: None,
            artifact_type: None,
            annotations: None,
            at: 1,
        });
        apply(&sm, cmd).unwrap();
        let dump = |sm: &StateMachine| -> Vec<Vec<crate::db::Row>> {
            Cf::DERIVED
                .iter()
                .map(|cf| sm.db.scan_prefix(*cf, b"", None, usize::MAX).unwrap())
                .collect()
        };
        let before = dump(&sm);
        assert!(!sm.indexes_complete().unwrap());
        assert_eq!(sm.rebuild_indexes().unwrap(), 1);
        assert!(sm.indexes_complete().unwrap());
        let mut after = dump(&sm);
        // The completeness mark is the one record apply does not write.
        after[0].retain(|(k, _)| !k.starts_with(b"\0"));
        assert_eq!(before, after);
        assert!(sm.blob_referenced(&layer).unwrap());
        assert!(sm.blob_referenced(&config).unwrap());
    }
}
