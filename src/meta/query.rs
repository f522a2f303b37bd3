//! Read-only queries over the metadata.

use super::access::AccessState;
use super::state::{
    manifest_key, tag_key, ManifestRecord, StateMachine, ACCESS_STATE, ACCESS_VERSION,
};
use crate::db::{self, keys, Cf, DbError};
use crate::oci::{Digest, Reference, RepoName, Tag};

/// One page of a sorted listing, and whether more follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// A tag, the manifest it names, and when it was pushed (Unix seconds).
pub type TagPushed = (Tag, Digest, u64);

impl StateMachine {
    pub fn repo_exists(&self, repo: &RepoName) -> Result<bool, DbError> {
        Ok(self.db.get(Cf::Repos, repo.as_str().as_bytes())?.is_some())
    }

    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, DbError> {
        let Some(raw) = self.db.get(Cf::Tags, &tag_key(repo, tag))? else {
            return Ok(None);
        };
        let text = String::from_utf8(raw).map_err(|e| corrupt("tag target", e))?;
        Ok(Some(text.parse().map_err(|e| corrupt("tag target", e))?))
    }

    pub fn manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRecord>, DbError> {
        let raw = self.db.get(Cf::Manifests, &manifest_key(repo, digest))?;
        raw.map(|v| db::decode(Cf::Manifests.name(), &v))
            .transpose()
    }

    /// The manifest a tag or digest names in `repo`.
    pub fn resolve(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> Result<Option<(Digest, ManifestRecord)>, DbError> {
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => match self.tag(repo, t)? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        Ok(self.manifest(repo, &digest)?.map(|m| (digest, m)))
    }

    /// The size of a blob if `repo` holds it.
    pub fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<Option<u64>, DbError> {
        let raw = self.db.get(
            Cf::RepoBlobs,
            &keys::join(&[repo.as_str(), digest.as_str()]),
        )?;
        raw.map(|v| keys::parse_u64(&v).ok_or_else(|| corrupt("blob link", "bad size")))
            .transpose()
    }

    /// The repositories under `namespace/`, the distinct blobs they link
    /// and those blobs' bytes. A full scan of the namespace: for status
    /// reports, not for requests.
    pub fn namespace_content(&self, namespace: &str) -> Result<NamespaceContent, DbError> {
        let prefix = format!("{namespace}/");
        let mut sizes = std::collections::BTreeMap::new();
        for (key, value) in
            self.db
                .scan_prefix(Cf::RepoBlobs, prefix.as_bytes(), None, usize::MAX)?
        {
            let size = keys::parse_u64(&value).ok_or_else(|| corrupt("blob link", "bad size"))?;
            sizes.insert(keys::last_part(&key).to_vec(), size);
        }
        let repositories = self
            .db
            .scan_prefix(Cf::Repos, prefix.as_bytes(), None, usize::MAX)?
            .len() as u64;
        Ok(NamespaceContent {
            repositories,
            blobs: sizes.len() as u64,
            bytes: sizes.values().sum(),
        })
    }

    /// The size of a blob if any repository holds it.
    pub fn blob_known(&self, digest: &Digest) -> Result<Option<u64>, DbError> {
        Ok(self.blob_record(digest)?.map(|(size, _)| size))
    }

    /// A blob's size and the time since which it has been unreferenced
    /// (meaningful only while nothing references it).
    pub fn blob_record(&self, digest: &Digest) -> Result<Option<(u64, u64)>, DbError> {
        let raw = self.db.get(Cf::Blobs, digest.as_str().as_bytes())?;
        raw.map(|v| keys::parse_blob_value(&v).ok_or_else(|| corrupt("blob record", "bad size")))
            .transpose()
    }

    /// Blobs any repository holds, in digest order, after `after`, at most `n`.
    pub fn blobs_page(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64)>, DbError> {
        Ok(self
            .blob_records_page(after, n)?
            .into_iter()
            .map(|(digest, size, _)| (digest, size))
            .collect())
    }

    /// Like [`Self::blobs_page`], with each blob's unreferenced-since time.
    pub fn blob_records_page(
        &self,
        after: Option<&Digest>,
        n: usize,
    ) -> Result<Vec<(Digest, u64, u64)>, DbError> {
        let rows = self
            .db
            .scan_prefix(Cf::Blobs, b"", after.map(|d| d.as_str().as_bytes()), n)?;
        rows.iter()
            .map(|(k, v)| {
                let digest = std::str::from_utf8(k)
                    .map_err(|e| corrupt("blob key", e))?
                    .parse()
                    .map_err(|e| corrupt("blob key", e))?;
                let (size, since) =
                    keys::parse_blob_value(v).ok_or_else(|| corrupt("blob record", "bad size"))?;
                Ok((digest, size, since))
            })
            .collect()
    }

    /// The nodes that store a blob's bytes, in id order.
    pub fn holders(&self, digest: &Digest) -> Result<Vec<u64>, DbError> {
        let prefix = keys::prefix(&[digest.as_str()]);
        self.db
            .scan_prefix(Cf::Holders, &prefix, None, usize::MAX)?
            .iter()
            .map(|(k, _)| {
                keys::parse_node_part(keys::last_part(k))
                    .ok_or_else(|| corrupt("holder key", "bad node id"))
            })
            .collect()
    }

    /// Tags of `repo` in lexical order, after `last`, at most `n`.
    pub fn tags(&self, repo: &RepoName, last: Option<&str>, n: usize) -> Result<Page, DbError> {
        let prefix = keys::prefix(&[repo.as_str()]);
        let after = last.map(|l| keys::join(&[repo.as_str(), l]));
        self.page(Cf::Tags, &prefix, after.as_deref(), n, |k| {
            keys::last_part(k)
        })
    }

    /// Tags of `repo` after `last`, at most `n`, with their digests and
    /// push times, and whether more follow. Tags pushed before berth kept
    /// the time take their manifest's.
    pub fn tags_with_times(
        &self,
        repo: &RepoName,
        last: Option<&str>,
        n: usize,
    ) -> Result<(Vec<TagPushed>, bool), DbError> {
        let prefix = keys::prefix(&[repo.as_str()]);
        let after = last.map(|l| keys::join(&[repo.as_str(), l]));
        let mut rows =
            self.db
                .scan_prefix(Cf::Tags, &prefix, after.as_deref(), n.saturating_add(1))?;
        let more = rows.len() > n;
        rows.truncate(n);
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            let tag: Tag = super::refs::parse_part("tag key", keys::last_part(&key))?;
            let digest: Digest = super::refs::parse_part("tag value", &value)?;
            let pushed = match self.db.get(Cf::TagTimes, &key)? {
                Some(v) => keys::parse_u64(&v).unwrap_or(0),
                None => self
                    .manifest_refs(repo, &digest)?
                    .map_or(0, |refs| refs.created),
            };
            out.push((tag, digest, pushed));
        }
        Ok((out, more))
    }

    /// Repository names in lexical order, after `last`, at most `n`.
    pub fn repositories(&self, last: Option<&str>, n: usize) -> Result<Page, DbError> {
        self.page(Cf::Repos, b"", last.map(str::as_bytes), n, |k| k)
    }

    /// Like [`Self::repositories`], counting only names `keep` admits. The
    /// scan goes on past hidden names, in pages, until `n` are found.
    pub fn repositories_where(
        &self,
        last: Option<&str>,
        n: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Page, DbError> {
        let batch = n.clamp(100, 1000);
        let mut after = last.map(str::to_owned);
        let mut items = Vec::new();
        // One more than asked, to know whether another page follows.
        while items.len() <= n {
            let page = self.repositories(after.as_deref(), batch)?;
            after = page.items.last().cloned();
            items.extend(page.items.into_iter().filter(|name| keep(name)));
            if !page.more {
                break;
            }
        }
        let more = items.len() > n;
        items.truncate(n);
        Ok(Page { items, more })
    }

    /// Users, teams, grants and robots.
    pub fn access(&self) -> Result<AccessState, DbError> {
        self.db
            .get(Cf::Access, ACCESS_STATE)?
            .map(|v| db::decode("access state", &v))
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// The access state's version: a point read, for noticing a change.
    pub fn access_version(&self) -> Result<u64, DbError> {
        Ok(self
            .db
            .get(Cf::Access, ACCESS_VERSION)?
            .and_then(|v| keys::parse_u64(&v))
            .unwrap_or(0))
    }

    fn page(
        &self,
        cf: Cf,
        prefix: &[u8],
        after: Option<&[u8]>,
        n: usize,
        item: impl Fn(&[u8]) -> &[u8],
    ) -> Result<Page, DbError> {
        let mut rows = self
            .db
            .scan_prefix(cf, prefix, after, n.saturating_add(1))?;
        let more = rows.len() > n;
        rows.truncate(n);
        let items = rows
            .iter()
            .map(|(k, _)| {
                String::from_utf8(item(k).to_vec()).map_err(|e| corrupt("listing key", e))
            })
            .collect::<Result<_, _>>()?;
        Ok(Page { items, more })
    }

    /// Manifests in `repo` whose subject is `subject`, with their records.
    pub fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> Result<Vec<(Digest, ManifestRecord)>, DbError> {
        let prefix = keys::prefix(&[repo.as_str(), subject.as_str()]);
        let mut out = Vec::new();
        for (key, _) in self
            .db
            .scan_prefix(Cf::Referrers, &prefix, None, usize::MAX)?
        {
            let digest: Digest = std::str::from_utf8(keys::last_part(&key))
                .map_err(|e| corrupt("referrer key", e))?
                .parse()
                .map_err(|e| corrupt("referrer key", e))?;
            if let Some(record) = self.manifest(repo, &digest)? {
                out.push((digest, record));
            }
        }
        Ok(out)
    }
}

fn corrupt(what: &'static str, e: impl ToString) -> DbError {
    DbError::Corrupt {
        what,
        reason: e.to_string(),
    }
}

/// What a namespace holds, as [`StateMachine::namespace_content`] counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NamespaceContent {
    pub repositories: u64,
    pub blobs: u64,
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Command, PutManifest, Rejection};

    use crate::meta::testing::state as sm;

    fn ok(sm: &StateMachine, cmd: Command) {
        assert_eq!(sm.apply(&cmd).unwrap(), Ok(()));
    }

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn put(
        r: &str,
        body: &[u8],
        tag: Option<&str>,
        blobs: Vec<Digest>,
        subject: Option<Digest>,
    ) -> Command {
        Command::PutManifest(PutManifest {
            repo: repo(r),
            digest: Digest::sha256(body),
            tag: tag.map(|t| t.parse().unwrap()),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            body: body.to_vec(),
            blobs,
            manifests: vec![],
            subject,
            artifact_type: None,
            annotations: None,
            at: 7,
        })
    }

    #[test]
    fn manifests_need_their_blobs_in_the_same_repo() {
        let (_d, sm) = sm();
        let blob = Digest::sha256(b"layer");
        let link = |r: &str| Command::LinkBlob {
            repo: repo(r),
            digest: blob.clone(),
            size: 5,
            at: 1,
            holders: vec![7, 3],
        };
        ok(&sm, link("other"));
        let cmd = put("a", b"m1", Some("v1"), vec![blob.clone()], None);
        assert_eq!(
            sm.apply(&cmd).unwrap(),
            Err(Rejection::ManifestBlobUnknown(blob.clone()))
        );
        assert!(!sm.repo_exists(&repo("a")).unwrap());
        ok(&sm, link("a"));
        ok(&sm, cmd);
        let (d, m) = sm
            .resolve(&repo("a"), &"v1".parse().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(d, Digest::sha256(b"m1"));
        assert_eq!(m.body, b"m1");
        assert_eq!(sm.blob_known(&blob).unwrap(), Some(5));
        assert_eq!(sm.holders(&blob).unwrap(), vec![3, 7]);
        ok(
            &sm,
            Command::AddHolders {
                digest: blob.clone(),
                nodes: vec![u64::MAX, 7],
            },
        );
        assert_eq!(sm.holders(&blob).unwrap(), vec![3, 7, u64::MAX]);
    }

    #[test]
    fn listings_sort_and_page() {
        let (_d, sm) = sm();
        for t in ["b", "a", "c", "B"] {
            ok(&sm, put("r", t.as_bytes(), Some(t), vec![], None));
        }
        let page = sm.tags(&repo("r"), None, 2).unwrap();
        assert_eq!(
            page,
            Page {
                items: vec!["B".into(), "a".into()],
                more: true
            }
        );
        let page = sm.tags(&repo("r"), Some("a"), 5).unwrap();
        assert_eq!(
            page,
            Page {
                items: vec!["b".into(), "c".into()],
                more: false
            }
        );
        ok(&sm, put("r-x", b"z", Some("z"), vec![], None));
        ok(&sm, put("q", b"z", Some("z"), vec![], None));
        assert_eq!(sm.repositories(None, 10).unwrap().items, ["q", "r", "r-x"]);
        assert_eq!(
            sm.repositories(Some("q"), 1).unwrap(),
            Page {
                items: vec!["r".into()],
                more: true
            }
        );
        assert_eq!(sm.tags(&repo("r-x"), None, 10).unwrap().items, ["z"]);
    }

    #[test]
    fn deleting_a_manifest_drops_its_tags_and_referrer_entry() {
        let (_d, sm) = sm();
        let subject = Digest::sha256(b"subject");
        ok(&sm, put("r", b"base", Some("t1"), vec![], None));
        ok(&sm, put("r", b"base", Some("t2"), vec![], None));
        ok(&sm, put("r", b"sig", None, vec![], Some(subject.clone())));
        assert_eq!(sm.referrers(&repo("r"), &subject).unwrap().len(), 1);
        let base = Digest::sha256(b"base");
        ok(
            &sm,
            Command::DeleteManifest {
                repo: repo("r"),
                digest: base.clone(),
            },
        );
        assert!(sm.tags(&repo("r"), None, 10).unwrap().items.is_empty());
        let again = Command::DeleteManifest {
            repo: repo("r"),
            digest: base,
        };
        assert_eq!(sm.apply(&again).unwrap(), Err(Rejection::ManifestUnknown));
        ok(
            &sm,
            Command::DeleteManifest {
                repo: repo("r"),
                digest: Digest::sha256(b"sig"),
            },
        );
        assert!(sm.referrers(&repo("r"), &subject).unwrap().is_empty());
    }

    #[test]
    fn commands_round_trip_through_bytes() {
        let cmd = put(
            "a/b",
            b"{}",
            Some("x"),
            vec![Digest::sha256(b"q")],
            Some(Digest::sha256(b"s")),
        );
        assert_eq!(Command::decode(&cmd.encode()).unwrap(), cmd);
        assert!(Command::decode(b"\xff\xff").is_err());
    }
}
