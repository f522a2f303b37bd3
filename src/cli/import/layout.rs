//! Reading a CNCF Distribution (registry 2.x) filesystem storage root. Only
//! the parts an import needs, read as Distribution writes them:
//!
//! ```text
//! <root>/docker/registry/v2/
//!   blobs/<alg>/<2 hex>/<hex>/data                      every blob and manifest, once
//!   repositories/<name>/                                <name> may have several components
//!     _manifests/revisions/<alg>/<hex>/link             a manifest the repository holds
//!     _manifests/tags/<tag>/current/link                the manifest a tag names
//!     _layers/<alg>/<hex>/link                          a blob linked into the repository
//!     _uploads/                                         uploads in progress (ignored)
//! ```
//!
//! A link file holds a digest (`sha256:…`). Deleting a manifest removes its
//! `revisions` link file (the directory stays) and the tags naming it, so a
//! directory without a link is skipped, not reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::oci::{Digest, RepoName, Tag};

/// The largest manifest read, as the server's default `max-manifest-size`.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// The `docker/registry/v2` directory of a storage root.
#[derive(Clone, Debug)]
pub struct Root {
    v2: PathBuf,
}

/// What one repository of the root holds.
#[derive(Debug, Default, PartialEq)]
pub struct Repository {
    pub name: String,
    pub tags: BTreeMap<String, Digest>,
    pub revisions: BTreeSet<Digest>,
    pub layers: BTreeSet<Digest>,
}

/// What was found wrong while walking: reported, and the walk goes on.
pub type Findings = Vec<String>;

impl Root {
    /// `dir` is the storage root (the `rootdirectory` of Distribution's
    /// filesystem driver), or its `docker/registry/v2` directory itself.
    pub fn open(dir: &Path) -> Result<Root, String> {
        let nested = dir.join("docker/registry/v2");
        for v2 in [nested, dir.to_path_buf()] {
            if v2.join("repositories").is_dir() && v2.join("blobs").is_dir() {
                return Ok(Root { v2 });
            }
        }
        Err(format!(
            "{}: not a Distribution storage root (no docker/registry/v2 with repositories/ and blobs/)",
            dir.display()
        ))
    }

    /// Where a blob's bytes are.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.v2
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Every repository, by name, and what was wrong on the way.
    pub fn repositories(&self) -> Result<(Vec<Repository>, Findings), String> {
        let base = self.v2.join("repositories");
        let mut found = Vec::new();
        let mut findings = Vec::new();
        walk(&base, &base, &mut found, &mut findings)?;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok((found, findings))
    }

    /// A manifest's exact bytes, checked against its digest.
    pub fn read_manifest(&self, digest: &Digest) -> Result<Vec<u8>, String> {
        let path = self.blob_path(digest);
        let at = |e: std::io::Error| format!("{}: {e}", path.display());
        let file = std::fs::File::open(&path).map_err(at)?;
        let mut bytes = Vec::new();
        file.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(at)?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(format!(
                "{}: larger than {} MiB, the largest manifest berth takes",
                path.display(),
                MAX_MANIFEST >> 20
            ));
        }
        let actual = Digest::of(digest.algorithm(), &bytes);
        if actual != *digest {
            return Err(format!(
                "{}: corrupt, its content hashes to {actual}",
                path.display()
            ));
        }
        Ok(bytes)
    }
}

/// Finds repositories under `dir`: a directory with `_manifests` or
/// `_layers` is one, and may hold further repositories beside them.
fn walk(
    base: &Path,
    dir: &Path,
    found: &mut Vec<Repository>,
    findings: &mut Findings,
) -> Result<(), String> {
    let mut children = Vec::new();
    let mut is_repo = false;
    for entry in read_dir(dir)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        // Symbolic links are not followed: Distribution writes none.
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        match name.as_str() {
            "_manifests" | "_layers" => is_repo = true,
            n if n.starts_with('_') => {}
            _ => children.push(entry.path()),
        }
    }
    if is_repo {
        let name = dir
            .strip_prefix(base)
            .map_err(|e| e.to_string())?
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        match name.parse::<RepoName>() {
            Ok(_) => found.push(repository(name, dir, findings)?),
            Err(e) => findings.push(format!("{}: skipped: {e}", dir.display())),
        }
    }
    children.sort();
    for child in children {
        walk(base, &child, found, findings)?;
    }
    Ok(())
}

fn repository(name: String, dir: &Path, findings: &mut Findings) -> Result<Repository, String> {
    let manifests = dir.join("_manifests");
    let mut repo = Repository {
        name,
        revisions: links(&manifests.join("revisions"), findings)?,
        layers: links(&dir.join("_layers"), findings)?,
        ..Default::default()
    };
    let tags = manifests.join("tags");
    if tags.is_dir() {
        for entry in read_dir(&tags)? {
            let tag = entry.file_name().to_string_lossy().into_owned();
            let link = entry.path().join("current/link");
            if !link.exists() {
                continue;
            }
            if let Err(e) = tag.parse::<Tag>() {
                findings.push(format!("{}: tag skipped: {e}", repo.name));
                continue;
            }
            match read_link(&link) {
                Ok(digest) => {
                    repo.tags.insert(tag, digest);
                }
                Err(e) => findings.push(e),
            }
        }
    }
    Ok(repo)
}

/// The digests of `<dir>/<alg>/<hex>/link`; each link must name its own
/// directory's digest.
fn links(dir: &Path, findings: &mut Findings) -> Result<BTreeSet<Digest>, String> {
    let mut out = BTreeSet::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for alg in read_dir(dir)? {
        for entry in read_dir(&alg.path())? {
            let link = entry.path().join("link");
            if !link.exists() {
                continue;
            }
            let named = format!(
                "{}:{}",
                alg.file_name().to_string_lossy(),
                entry.file_name().to_string_lossy()
            );
            match read_link(&link) {
                Ok(digest) if digest.as_str() == named => {
                    out.insert(digest);
                }
                Ok(digest) => findings.push(format!(
                    "{}: names {digest}, not the {named} of its directory; skipped",
                    link.display()
                )),
                Err(e) => findings.push(e),
            }
        }
    }
    Ok(out)
}

fn read_link(path: &Path) -> Result<Digest, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, String> {
    std::fs::read_dir(dir)
        .and_then(|entries| entries.collect())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Builds Distribution's layout in a temporary directory.
    pub struct FakeRoot {
        pub dir: tempfile::TempDir,
    }

    impl FakeRoot {
        pub fn make() -> FakeRoot {
            let dir = tempfile::tempdir().unwrap();
            for sub in ["blobs/sha256", "repositories"] {
                std::fs::create_dir_all(dir.path().join("docker/registry/v2").join(sub)).unwrap();
            }
            FakeRoot { dir }
        }

        fn v2(&self) -> PathBuf {
            self.dir.path().join("docker/registry/v2")
        }

        /// Stores `bytes` as a blob and returns its digest.
        pub fn blob(&self, bytes: &[u8]) -> Digest {
            let digest = Digest::sha256(bytes);
            let root = Root { v2: self.v2() };
            let path = root.blob_path(&digest);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
            digest
        }

        pub fn link(&self, repo: &str, under: &str, digest: &Digest) {
            let dir = self
                .v2()
                .join("repositories")
                .join(repo)
                .join(under)
                .join("sha256")
                .join(digest.hex());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("link"), digest.as_str()).unwrap();
        }

        pub fn tag(&self, repo: &str, tag: &str, digest: &Digest) {
            let dir = self
                .v2()
                .join("repositories")
                .join(repo)
                .join("_manifests/tags")
                .join(tag)
                .join("current");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("link"), digest.as_str()).unwrap();
            self.link(repo, &format!("_manifests/tags/{tag}/index"), digest);
        }
    }

    #[test]
    fn finds_nested_repositories_tags_and_revisions() {
        let fake = FakeRoot::make();
        let m1 = fake.blob(b"manifest one");
        let m2 = fake.blob(b"manifest two");
        let layer = fake.blob(b"layer");
        fake.link("app", "_manifests/revisions", &m1);
        fake.tag("app", "v1", &m1);
        fake.link("app", "_layers", &layer);
        // `team/app/web` nests under `team/app`, which is a repository too.
        fake.link("team/app", "_manifests/revisions", &m2);
        fake.link("team/app/web", "_manifests/revisions", &m1);
        fake.link("team/app/web", "_manifests/revisions", &m2);
        fake.tag("team/app/web", "latest", &m2);
        // A deleted revision keeps its directory, without the link.
        let deleted = Digest::sha256(b"gone");
        fake.link("app", "_manifests/revisions", &deleted);
        std::fs::remove_file(
            fake.v2()
                .join("repositories/app/_manifests/revisions/sha256")
                .join(deleted.hex())
                .join("link"),
        )
        .unwrap();
        std::fs::create_dir_all(fake.v2().join("repositories/app/_uploads/x")).unwrap();

        let root = Root::open(fake.dir.path()).unwrap();
        let (repos, findings) = root.repositories().unwrap();
        assert!(findings.is_empty(), "{findings:?}");
        let names: Vec<_> = repos.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app", "team/app", "team/app/web"]);
        assert_eq!(
            repos[0].tags,
            BTreeMap::from([("v1".to_owned(), m1.clone())])
        );
        assert_eq!(repos[0].revisions, BTreeSet::from([m1.clone()]));
        assert_eq!(repos[0].layers, BTreeSet::from([layer]));
        assert!(repos[1].tags.is_empty());
        assert_eq!(repos[2].revisions.len(), 2);
        assert_eq!(repos[2].tags["latest"], m2);
        // The v2 directory itself is accepted too.
        assert!(Root::open(&fake.v2()).is_ok());
        assert!(Root::open(&fake.v2().join("blobs")).is_err());
    }

    #[test]
    fn bad_links_and_names_are_findings() {
        let fake = FakeRoot::make();
        let m = fake.blob(b"m");
        fake.link("ok", "_manifests/revisions", &m);
        // A link naming another digest than its directory.
        let dir = fake
            .v2()
            .join("repositories/ok/_layers/sha256")
            .join(Digest::sha256(b"other").hex());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("link"), m.as_str()).unwrap();
        fake.link("Upper", "_manifests/revisions", &m);
        let root = Root::open(fake.dir.path()).unwrap();
        let (repos, findings) = root.repositories().unwrap();
        assert_eq!(repos.len(), 1);
        assert!(repos[0].layers.is_empty());
        assert_eq!(findings.len(), 2, "{findings:?}");
        assert!(findings.iter().any(|f| f.contains("Upper")), "{findings:?}");
    }

    #[test]
    fn manifests_are_verified_and_capped() {
        let fake = FakeRoot::make();
        let root = Root::open(fake.dir.path()).unwrap();
        let good = fake.blob(b"{\"schemaVersion\":2}");
        assert_eq!(root.read_manifest(&good).unwrap(), b"{\"schemaVersion\":2}");
        std::fs::write(root.blob_path(&good), b"{\"schemaVersion\":3}").unwrap();
        let e = root.read_manifest(&good).unwrap_err();
        assert!(e.contains("corrupt, its content hashes to sha256:"), "{e}");
        let big = vec![b' '; MAX_MANIFEST as usize + 1];
        let big = fake.blob(&big);
        assert!(root
            .read_manifest(&big)
            .unwrap_err()
            .contains("larger than 4 MiB"));
        let missing = Digest::sha256(b"nothing");
        assert!(root.read_manifest(&missing).is_err());
    }
}
