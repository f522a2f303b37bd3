//! Repository policies kept in the replicated state and enforced in
//! `apply`, so no order of requests across nodes gets past them: immutable
//! tags, retention rules ([`super::retention`]) and namespace quotas
//! ([`super::quota`]). A tag rule names a repository or a whole namespace
//! and a list of tag patterns (`*` any run of characters, `?` one); a
//! pattern starting with `!` exempts the tags it matches (`["*", "!latest"]`:
//! every tag but `latest`).

use super::Batch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::access::{namespace_of, Resource};
use super::quota::quota_key;
use super::retention::{retention_key, RetentionRule, ScopedRule};
use super::state::StateMachine;
use crate::db::{self, keys, Cf, DbError};
use crate::oci::{RepoName, Tag};

/// A change to the policies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyChange {
    /// Makes the tags matching `patterns` in `scope` immutable: once set,
    /// such a tag cannot be moved to another manifest or deleted. No
    /// patterns removes the rule.
    SetImmutable {
        scope: Resource,
        patterns: Vec<String>,
    },
    /// Sets the retention rule of `scope`; `None` removes it.
    SetRetention {
        scope: Resource,
        rule: Option<RetentionRule>,
    },
    /// Caps the unique blob bytes a namespace's manifests may reference;
    /// `None` lifts the cap.
    SetQuota {
        namespace: String,
        bytes: Option<u64>,
    },
}

impl PolicyChange {
    /// The scope the change applies to, for authorization.
    pub fn scope(&self) -> Resource {
        match self {
            PolicyChange::SetImmutable { scope, .. } | PolicyChange::SetRetention { scope, .. } => {
                scope.clone()
            }
            PolicyChange::SetQuota { namespace, .. } => Resource::Namespace(namespace.clone()),
        }
    }

    /// Whether only administrators may make it: a namespace's owners would
    /// otherwise lift the quota meant to bound them.
    pub fn needs_admin(&self) -> bool {
        matches!(self, PolicyChange::SetQuota { .. })
    }

    /// Why the change cannot be made, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match self {
            PolicyChange::SetRetention {
                rule: Some(rule), ..
            } => rule.check(),
            PolicyChange::SetQuota { namespace, .. } if namespace.contains('/') => Err(format!(
                "a quota applies to a namespace (`acme`), not to a repository path ({namespace})"
            )),
            _ => Ok(()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            PolicyChange::SetImmutable { scope, patterns } if patterns.is_empty() => {
                format!("remove the immutable tag rule of {}", scope_text(scope))
            }
            PolicyChange::SetImmutable { scope, patterns } => format!(
                "make tags {} of {} immutable",
                patterns.join(" "),
                scope_text(scope)
            ),
            PolicyChange::SetRetention { scope, rule: None } => {
                format!("remove the retention rule of {}", scope_text(scope))
            }
            PolicyChange::SetRetention {
                scope,
                rule: Some(rule),
            } => format!("in {}, {}", scope_text(scope), rule.describe()),
            PolicyChange::SetQuota {
                namespace,
                bytes: None,
            } => format!("remove the quota of namespace {namespace}"),
            PolicyChange::SetQuota {
                namespace,
                bytes: Some(bytes),
            } => format!(
                "limit namespace {namespace} to {}",
                super::quota::size_text(*bytes)
            ),
        }
    }
}

/// The rules, as shown.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policies {
    #[serde(default)]
    pub immutable: Vec<ImmutableRule>,
    #[serde(default)]
    pub retention: Vec<ScopedRule>,
}

/// An immutable-tag rule as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImmutableRule {
    pub scope: Resource,
    pub patterns: Vec<String>,
}

/// `acme/app` for a repository, `acme/*` for a namespace.
pub fn scope_text(scope: &Resource) -> String {
    match scope {
        Resource::Repository(r) => r.clone(),
        Resource::Namespace(n) => format!("{n}/*"),
    }
}

const IMMUTABLE: &str = "immutable";

fn immutable_key(scope: &Resource) -> Vec<u8> {
    keys::join(&[IMMUTABLE, &scope_text(scope)])
}

/// Whether `tag` falls under `patterns`: some pattern matches it and no
/// `!` pattern does. Returns the pattern that matched.
pub fn matching_pattern<'a>(patterns: &'a [String], tag: &str) -> Option<&'a str> {
    let exempt = patterns
        .iter()
        .filter_map(|p| p.strip_prefix('!'))
        .any(|p| glob(p.as_bytes(), tag.as_bytes()));
    if exempt {
        return None;
    }
    patterns
        .iter()
        .find(|p| !p.starts_with('!') && glob(p.as_bytes(), tag.as_bytes()))
        .map(String::as_str)
}

/// `*` and `?` matching over the whole text.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, _) => text.is_empty(),
        (Some((b'*', rest)), _) => {
            glob(rest, text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some((b'?', rest)), Some((_, tail))) => glob(rest, tail),
        (Some((p, rest)), Some((t, tail))) => p == t && glob(rest, tail),
        (Some(_), None) => false,
    }
}

impl StateMachine {
    pub(super) fn stage_policy(&self, batch: &mut Batch, change: &PolicyChange) {
        match change {
            PolicyChange::SetImmutable { scope, patterns } if patterns.is_empty() => {
                batch.delete_cf(self.db.cf(Cf::Policies), immutable_key(scope));
            }
            PolicyChange::SetImmutable { scope, patterns } => {
                batch.put_cf(
                    self.db.cf(Cf::Policies),
                    immutable_key(scope),
                    db::encode(patterns),
                );
            }
            PolicyChange::SetRetention { scope, rule: None } => {
                batch.delete_cf(self.db.cf(Cf::Policies), retention_key(scope));
            }
            PolicyChange::SetRetention {
                scope,
                rule: Some(rule),
            } => {
                batch.put_cf(
                    self.db.cf(Cf::Policies),
                    retention_key(scope),
                    db::encode(rule),
                );
            }
            PolicyChange::SetQuota {
                namespace,
                bytes: None,
            } => batch.delete_cf(self.db.cf(Cf::Policies), quota_key(namespace)),
            PolicyChange::SetQuota {
                namespace,
                bytes: Some(bytes),
            } => batch.put_cf(
                self.db.cf(Cf::Policies),
                quota_key(namespace),
                keys::u64_value(*bytes),
            ),
        }
    }

    /// The rule, as text, that makes `tag` of `repo` immutable, if any: the
    /// repository's own rule first, then its namespace's.
    pub fn immutable_rule(&self, repo: &RepoName, tag: &Tag) -> Result<Option<String>, DbError> {
        for (scope, patterns) in self.rules_for::<Vec<String>>(IMMUTABLE, repo)? {
            if let Some(pattern) = matching_pattern(&patterns, tag.as_str()) {
                return Ok(Some(format!("{} {pattern}", scope_text(&scope))));
            }
        }
        Ok(None)
    }

    /// Every immutable-tag rule.
    pub fn immutable_rules(&self) -> Result<Vec<ImmutableRule>, DbError> {
        Ok(self
            .rules_of(IMMUTABLE)?
            .into_iter()
            .map(|(scope, patterns)| ImmutableRule { scope, patterns })
            .collect())
    }

    /// The rules of one kind that cover `repo`: its own, then its namespace's.
    pub(super) fn rules_for<T: DeserializeOwned>(
        &self,
        kind: &'static str,
        repo: &RepoName,
    ) -> Result<Vec<(Resource, T)>, DbError> {
        let scopes = [
            Resource::Repository(repo.as_str().to_owned()),
            Resource::Namespace(namespace_of(repo.as_str()).to_owned()),
        ];
        let mut found = Vec::new();
        for scope in scopes {
            let key = keys::join(&[kind, &scope_text(&scope)]);
            if let Some(raw) = self.db.get(Cf::Policies, &key)? {
                found.push((scope, db::decode(kind, &raw)?));
            }
        }
        Ok(found)
    }

    /// Every rule of one kind, with its scope.
    pub(super) fn rules_of<T: DeserializeOwned>(
        &self,
        kind: &'static str,
    ) -> Result<Vec<(Resource, T)>, DbError> {
        let prefix = keys::prefix(&[kind]);
        self.db
            .scan_prefix(Cf::Policies, &prefix, None, usize::MAX)?
            .iter()
            .map(|(k, v)| {
                let scope = Resource::from_scope(&String::from_utf8_lossy(&k[prefix.len()..]));
                Ok((scope, db::decode(kind, v)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_tags_and_exemptions_win() {
        let every_but_latest = vec!["*".to_owned(), "!latest".to_owned()];
        assert_eq!(matching_pattern(&every_but_latest, "v1"), Some("*"));
        assert_eq!(matching_pattern(&every_but_latest, "latest"), None);
        let releases = vec!["v*".to_owned(), "release-?".to_owned()];
        assert_eq!(matching_pattern(&releases, "v1.2"), Some("v*"));
        assert_eq!(matching_pattern(&releases, "release-1"), Some("release-?"));
        assert_eq!(matching_pattern(&releases, "release-12"), None);
        assert_eq!(matching_pattern(&releases, "dev-v1"), None);
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b", b"aXXc"));
        assert!(glob(b"", b""));
    }
}

#[cfg(test)]
mod enforced {
    use super::*;
    use crate::db::Db;
    use crate::meta::{Command, PutManifest, Rejection};
    use crate::oci::Digest;

    fn put(repo: &str, body: &[u8], tag: &str) -> Command {
        Command::PutManifest(PutManifest {
            repo: repo.parse().unwrap(),
            digest: Digest::sha256(body),
            tag: Some(tag.parse().unwrap()),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            body: body.to_vec(),
            blobs: vec![],
            manifests: vec![],
            subject: None,
            artifact_type: None,
            annotations: None,
            at: 1,
        })
    }

    fn rule(scope: &str, patterns: &[&str]) -> Command {
        Command::Policy {
            change: PolicyChange::SetImmutable {
                scope: Resource::from_scope(scope),
                patterns: patterns.iter().map(|p| p.to_string()).collect(),
            },
            at: 1,
        }
    }

    #[test]
    fn immutable_tags_neither_move_nor_go() {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachine::new(Db::open(dir.path()).unwrap());
        let apply = |c: Command| sm.apply(&c).unwrap();
        assert_eq!(apply(put("acme/app", b"a", "v1")), Ok(()));
        assert_eq!(apply(put("acme/app", b"a", "latest")), Ok(()));
        assert_eq!(apply(rule("acme/*", &["*", "!latest"])), Ok(()));
        // The same digest again is fine; another one is refused.
        assert_eq!(apply(put("acme/app", b"a", "v1")), Ok(()));
        let refused = Rejection::TagImmutable {
            tag: "v1".into(),
            rule: "acme/* *".into(),
        };
        assert_eq!(apply(put("acme/app", b"b", "v1")), Err(refused.clone()));
        // A new tag may be set once; `latest` stays movable.
        assert_eq!(apply(put("acme/app", b"b", "v2")), Ok(()));
        assert_eq!(apply(put("acme/app", b"b", "latest")), Ok(()));
        let delete_tag = Command::DeleteTag {
            repo: "acme/app".parse().unwrap(),
            tag: "v1".parse().unwrap(),
        };
        assert_eq!(apply(delete_tag.clone()), Err(refused.clone()));
        let delete_manifest = Command::RemoveManifest {
            repo: "acme/app".parse().unwrap(),
            digest: Digest::sha256(b"a"),
            at: 2,
        };
        assert_eq!(apply(delete_manifest), Err(refused));
        // Other namespaces are not covered; removing the rule frees v1.
        assert_eq!(apply(put("other/app", b"a", "v1")), Ok(()));
        assert_eq!(apply(put("other/app", b"b", "v1")), Ok(()));
        assert_eq!(sm.immutable_rules().unwrap().len(), 1);
        assert_eq!(apply(rule("acme/*", &[])), Ok(()));
        assert_eq!(apply(delete_tag), Ok(()));
        assert!(sm.immutable_rules().unwrap().is_empty());
        // A repository's own rule names itself.
        assert_eq!(apply(rule("acme/app", &["v*"])), Ok(()));
        assert_eq!(
            apply(put("acme/app", b"a", "v2")),
            Err(Rejection::TagImmutable {
                tag: "v2".into(),
                rule: "acme/app v*".into()
            })
        );
    }
}
