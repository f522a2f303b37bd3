//! What one repository's import pushes, worked out from the storage root
//! before anything is sent: every manifest it holds (read, verified and
//! parsed), the blobs they name, and the order that lets the node accept
//! each manifest (blobs, then an index's children, then the index).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::layout::{Repository, Root};
use crate::oci::{manifest, Digest};

/// A manifest ready to push.
#[derive(Debug)]
pub struct Manifest {
    pub bytes: Bytes,
    pub media_type: String,
    pub blobs: Vec<Digest>,
    pub children: Vec<Digest>,
    /// Whether it names a subject: pushed after the others, so the
    /// manifest it refers to is there first.
    pub has_subject: bool,
    /// The tags naming it, sorted; none for an untagged revision or a
    /// child of an index.
    pub tags: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub repo: String,
    pub manifests: BTreeMap<Digest, Manifest>,
    /// Manifests that cannot be pushed, and why (unreadable, corrupt, of a
    /// type berth does not store), with the tags naming them.
    pub unusable: BTreeMap<Digest, (String, Vec<String>)>,
    /// Blobs to import, with their size; `None` when the file is missing.
    pub blobs: BTreeMap<Digest, Option<u64>>,
    /// Blobs linked into the repository that no manifest names, left out.
    pub unreferenced_left_out: u64,
}

impl Plan {
    /// Reads what `repo` holds. Blob contents are not read here: they are
    /// checked while they are uploaded.
    pub fn make(root: &Root, repo: &Repository, include_unreferenced: bool) -> Plan {
        let mut plan = Plan {
            repo: repo.name.clone(),
            ..Default::default()
        };
        let mut tags: BTreeMap<&Digest, Vec<String>> = BTreeMap::new();
        for (tag, digest) in &repo.tags {
            tags.entry(digest).or_default().push(tag.clone());
        }
        let mut queue: Vec<Digest> = repo
            .revisions
            .iter()
            .chain(repo.tags.values())
            .cloned()
            .collect();
        let mut seen = BTreeSet::new();
        while let Some(digest) = queue.pop() {
            if !seen.insert(digest.clone()) {
                continue;
            }
            let tags = tags.get(&digest).cloned().unwrap_or_default();
            let bytes = match root.read_manifest(&digest) {
                Ok(bytes) => bytes,
                Err(e) => {
                    plan.unusable.insert(digest, (e, tags));
                    continue;
                }
            };
            let parsed = match manifest::parse(&bytes, None) {
                Ok(parsed) => parsed,
                Err(e) => {
                    let why = format!("berth does not store it: {e}");
                    plan.unusable.insert(digest, (why, tags));
                    continue;
                }
            };
            // A child not among the revisions is read from the blob
            // store all the same: the index needs it.
            queue.extend(parsed.manifests.iter().cloned());
            plan.manifests.insert(
                digest,
                Manifest {
                    bytes: Bytes::from(bytes),
                    media_type: parsed.media_type,
                    blobs: parsed.blobs,
                    children: parsed.manifests,
                    has_subject: parsed.subject.is_some(),
                    tags,
                },
            );
        }
        let named: BTreeSet<&Digest> = plan.manifests.values().flat_map(|m| &m.blobs).collect();
        let unreferenced: Vec<&Digest> = repo
            .layers
            .iter()
            .filter(|d| !named.contains(d) && !plan.manifests.contains_key(*d))
            .collect();
        let mut wanted: BTreeSet<Digest> = named.into_iter().cloned().collect();
        match include_unreferenced {
            true => wanted.extend(unreferenced.into_iter().cloned()),
            false => plan.unreferenced_left_out = unreferenced.len() as u64,
        }
        plan.blobs = wanted
            .into_iter()
            .map(|d| {
                let size = std::fs::metadata(root.blob_path(&d)).ok().map(|m| m.len());
                (d, size)
            })
            .collect();
        plan
    }

    /// Every manifest, children before the indexes that list them, and
    /// those naming a subject after the rest.
    pub fn order(&self) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut visited = BTreeSet::new();
        let (later, first): (Vec<_>, Vec<_>) =
            self.manifests.iter().partition(|(_, m)| m.has_subject);
        for (digest, _) in first.into_iter().chain(later) {
            self.visit(digest, &mut visited, &mut out);
        }
        out
    }

    fn visit(&self, digest: &Digest, visited: &mut BTreeSet<Digest>, out: &mut Vec<Digest>) {
        // Marked before the children: a cycle (only a forged root has
        // one) ends here instead of looping.
        if !visited.insert(digest.clone()) {
            return;
        }
        let Some(m) = self.manifests.get(digest) else {
            return;
        };
        for child in &m.children {
            self.visit(child, visited, out);
        }
        out.push(digest.clone());
    }

    /// Why a manifest cannot be pushed, given which blobs were imported;
    /// `None` when it can. A manifest pushed before its own check (in
    /// `order`) only depends on those already decided.
    pub fn blocked(
        &self,
        digest: &Digest,
        blob_ok: &dyn Fn(&Digest) -> bool,
        child_ok: &dyn Fn(&Digest) -> bool,
    ) -> Option<String> {
        if let Some((why, _)) = self.unusable.get(digest) {
            return Some(why.clone());
        }
        let m = self.manifests.get(digest)?;
        if let Some(blob) = m.blobs.iter().find(|b| !blob_ok(b)) {
            return Some(format!("its blob {blob} was not imported"));
        }
        if let Some(child) = m.children.iter().find(|c| !child_ok(c)) {
            return Some(format!("its child manifest {child} was not imported"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::layout::tests::FakeRoot;
    use super::*;

    fn image(fake: &FakeRoot, config: &Digest, layers: &[&Digest], extra: &str) -> Digest {
        let layers: Vec<String> = layers
            .iter()
            .map(|d| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":1}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",{extra}"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{}]}}"#,
            layers.join(",")
        );
        fake.blob(body.as_bytes())
    }

    fn index(fake: &FakeRoot, children: &[&Digest]) -> Digest {
        let children: Vec<String> = children
            .iter()
            .map(|d| {
                format!(
                    r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":1}}"#
                )
            })
            .collect();
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{}]}}"#,
            children.join(",")
        );
        fake.blob(body.as_bytes())
    }

    #[test]
    fn plans_children_first_and_reports_what_cannot_go() {
        let fake = FakeRoot::make();
        let config = fake.blob(b"{}");
        let layer = fake.blob(b"layer");
        let stray = fake.blob(b"stray");
        let missing = Digest::sha256(b"not stored");
        let amd = image(&fake, &config, &[&layer], "");
        let arm = image(&fake, &config, &[&missing], "");
        let multi = index(&fake, &[&amd, &arm]);
        let old = image(&fake, &config, &[], "");
        let signature = image(
            &fake,
            &config,
            &[],
            &format!(
                r#""subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{amd}","size":1}},"#
            ),
        );
        let schema1 = fake.blob(br#"{"schemaVersion":1,"name":"x","tag":"y"}"#);
        for d in [&multi, &amd, &arm, &old, &signature, &schema1] {
            fake.link("app", "_manifests/revisions", d);
        }
        fake.tag("app", "latest", &multi);
        fake.tag("app", "v1", &multi);
        fake.tag("app", "legacy", &schema1);
        for d in [&config, &layer, &stray] {
            fake.link("app", "_layers", d);
        }
        let root = Root::open(fake.dir.path()).unwrap();
        let (repos, _) = root.repositories().unwrap();

        let plan = Plan::make(&root, &repos[0], false);
        assert_eq!(plan.manifests.len(), 5);
        assert_eq!(plan.manifests[&multi].tags, ["latest", "v1"]);
        assert!(
            plan.manifests[&old].tags.is_empty(),
            "an untagged revision is kept"
        );
        let (why, tags) = &plan.unusable[&schema1];
        assert!(why.contains("berth does not store it"), "{why}");
        assert_eq!(tags, &["legacy"]);
        assert_eq!(plan.blobs[&config], Some(2));
        assert_eq!(plan.blobs[&missing], None);
        assert!(!plan.blobs.contains_key(&stray));
        assert_eq!(plan.unreferenced_left_out, 1);

        let order = plan.order();
        assert_eq!(order.len(), 5);
        let at = |d: &Digest| order.iter().position(|x| x == d).unwrap();
        assert!(at(&amd) < at(&multi) && at(&arm) < at(&multi));
        assert_eq!(order.last(), Some(&signature));

        let blob_ok = |d: &Digest| *d != missing;
        let child_ok = |d: &Digest| plan.blocked(d, &blob_ok, &|_| true).is_none();
        assert_eq!(plan.blocked(&amd, &blob_ok, &child_ok), None);
        let why = plan.blocked(&arm, &blob_ok, &child_ok).unwrap();
        assert!(why.contains(&format!("blob {missing}")), "{why}");
        let why = plan.blocked(&multi, &blob_ok, &child_ok).unwrap();
        assert!(why.contains(&format!("child manifest {arm}")), "{why}");
        assert!(plan.blocked(&schema1, &blob_ok, &child_ok).is_some());

        let plan = Plan::make(&root, &repos[0], true);
        assert!(plan.blobs.contains_key(&stray));
        assert_eq!(plan.unreferenced_left_out, 0);
    }

    #[test]
    fn a_corrupt_manifest_is_unusable() {
        let fake = FakeRoot::make();
        let config = fake.blob(b"{}");
        let m = image(&fake, &config, &[], "");
        fake.link("app", "_manifests/revisions", &m);
        fake.tag("app", "v1", &m);
        let root = Root::open(fake.dir.path()).unwrap();
        std::fs::write(root.blob_path(&m), b"{\"schemaVersion\":2}").unwrap();
        let (repos, _) = root.repositories().unwrap();
        let plan = Plan::make(&root, &repos[0], false);
        assert!(plan.manifests.is_empty());
        let (why, tags) = &plan.unusable[&m];
        assert!(why.contains("corrupt"), "{why}");
        assert_eq!(tags, &["v1"]);
    }
}
