//! Pull-through mirrors of upstream registries: which repository a request
//! means upstream, in each of the ways real clients address a mirror.
//!
//! - A path prefix: `/v2/docker.io/library/alpine/…` (docker, podman and
//!   CRI-O `registries.conf` locations with a path).
//! - Docker Engine's `registry-mirrors`: `/v2/library/alpine/…`, no prefix;
//!   names that are not local repositories go to the default mirror.
//! - containerd's `hosts.toml`: `/v2/library/alpine/…?ns=docker.io`, the
//!   upstream named by the `ns` parameter.
//!
//! A mirror's namespace is read-only: pushes into it are refused, and every
//! other repository takes pushes as before.

mod flight;
mod pull;
mod pulls;
pub mod service;
mod status;
mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Error, Registry, Result};
use crate::config::MirrorConfig;
use crate::oci::{Digest, RepoName};
pub use flight::Flights;
pub use status::{MirrorReport, MirrorStats};
pub use upstream::{Upstream, UpstreamError};

/// One upstream registry this node mirrors.
pub struct Mirror {
    pub config: MirrorConfig,
    upstream: Upstream,
    stats: MirrorStats,
}

/// A pull through a mirror: which upstream, the repository's name there,
/// and the local repository its content is cached in
/// (`<mirror>/<remote>`, whichever way the client addressed it).
#[derive(Clone)]
pub struct Pull {
    pub mirror: Arc<Mirror>,
    pub remote: String,
    pub cache: RepoName,
}

/// The node's mirrors, and when each cached tag was last checked upstream
/// by this node.
#[derive(Default)]
pub struct Mirrors {
    list: Vec<Arc<Mirror>>,
    checked: Mutex<HashMap<(RepoName, String), Instant>>,
    /// Manifests pulled since the last report, with when.
    pulled: Mutex<HashMap<(RepoName, Digest), u64>>,
}

impl Mirrors {
    /// The clients of `list`'s upstreams; fails on an unreadable
    /// credentials file or CA.
    pub fn new(list: Vec<MirrorConfig>) -> std::result::Result<Mirrors, String> {
        let list = list
            .into_iter()
            .map(|config| {
                Ok(Arc::new(Mirror {
                    upstream: Upstream::new(&config)?,
                    config,
                    stats: MirrorStats::default(),
                }))
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(Mirrors {
            list,
            checked: Mutex::default(),
            pulled: Mutex::default(),
        })
    }

    /// Each mirror's namespace with its size budget, where it has one.
    pub fn budgets(&self) -> Vec<(String, u64)> {
        self.list
            .iter()
            .filter_map(|m| Some((m.config.name.clone(), m.config.size_budget?)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn has_default(&self) -> bool {
        self.list.iter().any(|m| m.config.default)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Mirror>> {
        self.list.iter().find(|m| m.config.name == name)
    }

    /// The mirror whose namespace `repo` lies in (`docker.io/library/alpine`):
    /// such a repository is read-only.
    pub fn by_prefix(&self, repo: &str) -> Option<Pull> {
        let (first, rest) = repo.split_once('/')?;
        let mirror = self.by_name(first)?;
        pull(mirror, rest)
    }

    /// Where a pull of `repo` goes, if upstream: by its prefix; else by
    /// containerd's `ns`; else, unless `local` (a repository of that name
    /// exists here), by the default mirror.
    pub fn resolve(&self, repo: &str, ns: Option<&str>, local: bool) -> Option<Pull> {
        if let Some(target) = self.by_prefix(repo) {
            return Some(target);
        }
        if local {
            return None;
        }
        let mirror = match ns {
            Some(ns) => self.list.iter().find(|m| names(&m.config, ns))?,
            None => self.list.iter().find(|m| m.config.default)?,
        };
        pull(mirror, repo)
    }
}

/// The pull of `name` from `mirror`; `None` when the cache repository's
/// name would not be a valid one.
fn pull(mirror: &Arc<Mirror>, name: &str) -> Option<Pull> {
    let remote = remote_name(&mirror.config, name);
    let cache = format!("{}/{remote}", mirror.config.name).parse().ok()?;
    Some(Pull {
        mirror: mirror.clone(),
        remote,
        cache,
    })
}

impl Registry {
    /// Refuses to store anything in a mirror's namespace.
    pub(super) fn check_pushable(&self, repo: &RepoName) -> Result<()> {
        match self.mirrors.by_prefix(repo.as_str()) {
            Some(target) => {
                let m = &target.mirror.config;
                Err(Error::Denied(format!(
                    "{repo} is in the pull-through mirror {} of {}, which takes no pushes; \
                     push to a repository outside {}/",
                    m.name, m.url, m.name
                )))
            }
            None => Ok(()),
        }
    }

    /// The pull `repo` names by its mirror prefix, if it has one.
    pub fn mirror_prefix(&self, repo: &RepoName) -> Option<Pull> {
        self.mirrors.by_prefix(repo.as_str())
    }

    /// Where a read of `repo` goes when it is a pull through a mirror:
    /// by prefix, by containerd's `ns`, or by the default mirror for a
    /// name no local repository has.
    pub fn pull_target(&self, repo: &RepoName, ns: Option<&str>) -> Result<Option<Pull>> {
        if let Some(pull) = self.mirrors.by_prefix(repo.as_str()) {
            return Ok(Some(pull));
        }
        if self.mirrors.is_empty() || (ns.is_none() && !self.mirrors.has_default()) {
            return Ok(None);
        }
        let local = self.meta.repo_exists(repo)?;
        Ok(self.mirrors.resolve(repo.as_str(), ns, local))
    }
}

/// Whether containerd's `ns` (the upstream host of the image reference)
/// names `mirror`: its name, or its URL's host and port.
fn names(mirror: &MirrorConfig, ns: &str) -> bool {
    if mirror.name == ns {
        return true;
    }
    let host = mirror.url.host_str().unwrap_or_default();
    match mirror.url.port() {
        Some(port) => ns == format!("{host}:{port}"),
        None => ns == host,
    }
}

/// Docker Hub keeps official images under `library/`: `alpine` there is
/// `library/alpine`.
fn remote_name(mirror: &MirrorConfig, name: &str) -> String {
    let hub = mirror.name == "docker.io"
        || mirror
            .url
            .host_str()
            .is_some_and(|h| h == "docker.io" || h.ends_with(".docker.io"));
    match hub && !name.contains('/') {
        true => format!("library/{name}"),
        false => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn mirror(name: &str, url: &str, default: bool) -> MirrorConfig {
        MirrorConfig {
            name: name.into(),
            url: url.parse().unwrap(),
            default,
            credentials_file: None,
            ca: None,
            tag_ttl: Duration::from_secs(300),
            anonymous: false,
            size_budget: None,
        }
    }

    fn mirrors() -> Mirrors {
        Mirrors::new(vec![
            mirror("docker.io", "https://registry-1.docker.io", true),
            mirror("local-up", "http://127.0.0.1:5001", false),
        ])
        .unwrap()
    }

    fn remote(target: Option<Pull>) -> Option<(String, String)> {
        target.map(|t| {
            assert_eq!(
                t.cache.as_str(),
                format!("{}/{}", t.mirror.config.name, t.remote)
            );
            (t.mirror.config.name.clone(), t.remote)
        })
    }

    fn pair(name: &str, remote: &str) -> Option<(String, String)> {
        Some((name.to_owned(), remote.to_owned()))
    }

    #[test]
    fn every_way_clients_address_a_mirror() {
        let m = mirrors();
        // A path prefix, with Docker Hub's library/ filled in.
        assert_eq!(
            remote(m.resolve("docker.io/alpine", None, false)),
            pair("docker.io", "library/alpine")
        );
        assert_eq!(
            remote(m.resolve("local-up/team/app", None, true)),
            pair("local-up", "team/app")
        );
        // Docker Engine: no prefix, the default mirror, unless local.
        assert_eq!(
            remote(m.resolve("library/alpine", None, false)),
            pair("docker.io", "library/alpine")
        );
        assert_eq!(remote(m.resolve("library/alpine", None, true)), None);
        // containerd: ns by name or by host and port.
        assert_eq!(
            remote(m.resolve("team/app", Some("127.0.0.1:5001"), false)),
            pair("local-up", "team/app")
        );
        assert_eq!(
            remote(m.resolve("team/app", Some("local-up"), false)),
            pair("local-up", "team/app")
        );
        assert_eq!(remote(m.resolve("team/app", Some("quay.io"), false)), None);
        // Only a mirror's own namespace is read-only.
        assert!(m.by_prefix("docker.io/library/alpine").is_some());
        assert!(m.by_prefix("docker.io").is_none());
        assert!(m.by_prefix("acme/app").is_none());
        // Without a default, unprefixed names stay local.
        let no_default = Mirrors::new(vec![mirror("q", "https://quay.io", false)]).unwrap();
        assert_eq!(remote(no_default.resolve("a/b", None, false)), None);
    }
}
