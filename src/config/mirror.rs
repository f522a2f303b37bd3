//! The upstream registries a node mirrors (the `mirrors` list of the
//! configuration file): each is a namespace of pull-through repositories.
//!
//! ```yaml
//! mirrors:
//!   - name: docker.io                    # /v2/docker.io/library/alpine/...
//!     url: https://registry-1.docker.io
//!     default: true                      # Docker's registry-mirrors: /v2/library/alpine/...
//!     credentials-file: /run/secrets/hub # "user:password"
//!     tag-ttl: 300                       # seconds before a tag is checked upstream again
//!     anonymous: true                    # callers without sign-in may pull through it
//!     size-budget: 200GiB                # least recently pulled images go past it
//!   - name: ghcr.io
//!     url: https://ghcr.io
//!     ca: /etc/berth/upstream-ca.pem
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// A tag is checked upstream again after this long, by default.
const DEFAULT_TAG_TTL: u64 = 300;

/// One upstream registry as the file gives it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MirrorEntry {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub default: bool,
    pub credentials_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub tag_ttl: Option<u64>,
    #[serde(default)]
    pub anonymous: bool,
    /// Bytes, or a size such as `200GiB`.
    pub size_budget: Option<serde_yaml_ng::Value>,
}

/// One upstream registry, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorConfig {
    /// The first component of the repositories that mirror it, and what
    /// containerd's `ns` parameter names.
    pub name: String,
    /// Its API root, without `/v2/`.
    pub url: reqwest::Url,
    /// Whether names without a mirror prefix that are not local
    /// repositories come from it (Docker Engine's `registry-mirrors`).
    pub default: bool,
    /// `user:password` for its sign-in, read at start.
    pub credentials_file: Option<PathBuf>,
    /// A PEM CA to trust for it besides the system's.
    pub ca: Option<PathBuf>,
    pub tag_ttl: Duration,
    /// Whether callers without sign-in may pull through it.
    pub anonymous: bool,
    /// Bytes of cached content past which the least recently pulled images
    /// are evicted (by garbage collection); `None`, no limit.
    pub size_budget: Option<u64>,
}

/// Checks the file's entries: names usable as a repository's first
/// component and distinct, URLs http(s), at most one default.
pub fn resolve(entries: Vec<MirrorEntry>) -> Result<Vec<MirrorConfig>, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for e in entries {
        let name_ok = !e.name.is_empty()
            && e.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && e.name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !name_ok {
            return invalid(format!(
                "mirror name {:?} must be lowercase letters, digits, '.', '_' or '-', \
                 starting with a letter or digit (it is the first part of the mirrored \
                 repositories' names)",
                e.name
            ));
        }
        if !names.insert(e.name.clone()) {
            return invalid(format!("mirror {} is listed twice", e.name));
        }
        let url = match reqwest::Url::parse(&e.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
            _ => {
                return invalid(format!(
                    "mirror {}: url {:?} must be an http:// or https:// URL",
                    e.name, e.url
                ))
            }
        };
        let size_budget = match &e.size_budget {
            None => None,
            Some(v) => match size_of(v) {
                Some(n) => Some(n),
                None => {
                    return invalid(format!(
                        "mirror {}: size-budget {v:?} must be bytes or a size such as 200GiB",
                        e.name
                    ))
                }
            },
        };
        out.push(MirrorConfig {
            size_budget,
            name: e.name,
            url,
            default: e.default,
            credentials_file: e.credentials_file,
            ca: e.ca,
            tag_ttl: Duration::from_secs(e.tag_ttl.unwrap_or(DEFAULT_TAG_TTL)),
            anonymous: e.anonymous,
        });
    }
    if out.iter().filter(|m| m.default).count() > 1 {
        return invalid("only one mirror may be the default".into());
    }
    Ok(out)
}

/// A size given as a number of bytes or as text (`200GiB`, `1.5 TB`).
fn size_of(v: &serde_yaml_ng::Value) -> Option<u64> {
    match v {
        serde_yaml_ng::Value::Number(n) => n.as_u64(),
        serde_yaml_ng::Value::String(s) => s.parse::<bytesize::ByteSize>().ok().map(|b| b.as_u64()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, url: &str, default: bool) -> MirrorEntry {
        MirrorEntry {
            name: name.into(),
            url: url.into(),
            default,
            credentials_file: None,
            ca: None,
            tag_ttl: None,
            anonymous: false,
            size_budget: None,
        }
    }

    #[test]
    fn entries_are_checked_and_take_defaults() {
        let ok = resolve(vec![
            entry("docker.io", "https://registry-1.docker.io", true),
            entry("ghcr.io", "http://127.0.0.1:5001", false),
        ])
        .unwrap();
        assert_eq!(ok[0].tag_ttl, Duration::from_secs(300));
        assert_eq!(ok[1].url.as_str(), "http://127.0.0.1:5001/");
        let refused = [
            vec![entry("Docker.io", "https://x", false)],
            vec![entry("-x", "https://x", false)],
            vec![entry("a", "ftp://x", false)],
            vec![
                entry("a", "https://x", false),
                entry("a", "https://y", false),
            ],
            vec![entry("a", "https://x", true), entry("b", "https://y", true)],
        ];
        for entries in refused {
            assert!(resolve(entries.clone()).is_err(), "{entries:?}");
        }
    }

    #[test]
    fn the_file_form_parses() {
        let yaml = "- name: docker.io\n  url: https://registry-1.docker.io\n  default: true\n  tag-ttl: 60\n  anonymous: true\n";
        let entries: Vec<MirrorEntry> = serde_yaml_ng::from_str(yaml).unwrap();
        let mirrors = resolve(entries).unwrap();
        assert!(mirrors[0].default && mirrors[0].anonymous);
        assert_eq!(mirrors[0].tag_ttl, Duration::from_secs(60));
        let sizes = "- name: a\n  url: https://x\n  size-budget: 2GiB\n- name: b\n  url: https://y\n  size-budget: 1000\n";
        let mirrors = resolve(serde_yaml_ng::from_str(sizes).unwrap()).unwrap();
        assert_eq!(mirrors[0].size_budget, Some(2 << 30));
        assert_eq!(mirrors[1].size_budget, Some(1000));
        let bad = "- name: a\n  url: https://x\n  size-budget: lots\n";
        assert!(resolve(serde_yaml_ng::from_str(bad).unwrap()).is_err());
        let unknown = "- name: a\n  url: https://x\n  colour: blue\n";
        assert!(serde_yaml_ng::from_str::<Vec<MirrorEntry>>(unknown).is_err());
    }
}
