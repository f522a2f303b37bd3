//! Retention rules: which tags of a repository to keep, by count and by age.
//!
//! A rule governs the tags matching its patterns and keeps the `keep_last`
//! most recently pushed of them and those pushed within `keep_days`; tags
//! it does not govern are left alone. A repository's own rule wins over its
//! namespace's. Garbage collection applies the rules through a [`Retain`]
//! command; `apply` evaluates them again, so a tag pushed or moved since the
//! decision is never removed by it, and an immutable tag never is.

use std::collections::{BTreeMap, BTreeSet};

use super::Batch;
use serde::{Deserialize, Serialize};

use super::access::Resource;
use super::policy::{matching_pattern, scope_text};
use super::quota::UsageTally;
use super::state::{tag_key, StateMachine};
use crate::db::{keys, Cf, DbError};
use crate::oci::{Digest, RepoName, Tag};

const DAY: u64 = 86_400;
/// Repositories read per page while planning.
const REPO_PAGE: usize = 100;

/// Which tags of a repository to keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRule {
    /// The tags the rule governs (`*`, `?`, `!` as for immutable tags).
    #[serde(default = "every_tag")]
    pub tags: Vec<String>,
    /// Keep this many of the most recently pushed governed tags.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the governed tags pushed within this many days.
    #[serde(default)]
    pub keep_days: Option<u32>,
}

fn every_tag() -> Vec<String> {
    vec!["*".to_owned()]
}

impl RetentionRule {
    /// Why the rule cannot be stored, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.keep_last.is_none() && self.keep_days.is_none() {
            return Err("a retention rule needs keep_last, keep_days or both".into());
        }
        if self.tags.iter().all(|p| p.starts_with('!')) {
            return Err("a retention rule needs a tag pattern that is not an exemption".into());
        }
        Ok(())
    }

    pub fn describe(&self) -> String {
        let keep = match (self.keep_last, self.keep_days) {
            (Some(n), Some(d)) => format!("the last {n} and those pushed within {d} days"),
            (Some(n), None) => format!("the last {n}"),
            (None, Some(d)) => format!("those pushed within {d} days"),
            (None, None) => "nothing".to_owned(),
        };
        format!("of tags {}, keep {keep}", self.tags.join(" "))
    }

    /// The tags among `tags` (name, pushed at) the rule does not keep at `now`.
    pub fn outside<'a>(&self, tags: &'a [(Tag, u64)], now: u64) -> Vec<&'a Tag> {
        let mut governed: Vec<&(Tag, u64)> = tags
            .iter()
            .filter(|(t, _)| matching_pattern(&self.tags, t.as_str()).is_some())
            .collect();
        // Newest first; equal times put the greater name first (`v10` was
        // likely pushed after `v09`), so every node picks the same ones.
        governed.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.as_str().cmp(a.0.as_str())));
        let keep_last = self.keep_last.map_or(0, |n| n as usize);
        let cutoff = self
            .keep_days
            .map(|d| now.saturating_sub(u64::from(d) * DAY));
        governed
            .into_iter()
            .enumerate()
            .filter(|(i, (_, pushed))| *i >= keep_last && cutoff.is_none_or(|c| *pushed < c))
            .map(|(_, (tag, _))| tag)
            .collect()
    }
}

/// A retention rule as stored and shown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopedRule {
    pub scope: Resource,
    pub rule: RetentionRule,
}

/// A tag a rule does not keep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetainedTag {
    pub repository: RepoName,
    pub tag: Tag,
    pub digest: Digest,
    /// Unix seconds.
    pub pushed: u64,
}

/// What a rule would do to the tags of some repositories.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionPlan {
    /// Tags it would remove.
    pub remove: Vec<RetainedTag>,
    /// Tags outside the rule that an immutable rule protects, with that rule.
    pub protected: Vec<(RetainedTag, String)>,
}

/// Tags a retention pass found outside their rules at `at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retain {
    pub tags: Vec<(RepoName, Tag, Digest)>,
    pub at: u64,
}

pub(super) const RETENTION: &str = "retention";

pub(super) fn retention_key(scope: &Resource) -> Vec<u8> {
    keys::join(&[RETENTION, &scope_text(scope)])
}

impl StateMachine {
    /// The rule that governs `repo`: its own, else its namespace's.
    pub fn retention_rule(&self, repo: &RepoName) -> Result<Option<RetentionRule>, DbError> {
        let found = self.rules_for::<RetentionRule>(RETENTION, repo)?;
        Ok(found.into_iter().next().map(|(_, rule)| rule))
    }

    /// Every retention rule.
    pub fn retention_rules(&self) -> Result<Vec<ScopedRule>, DbError> {
        Ok(self
            .rules_of(RETENTION)?
            .into_iter()
            .map(|(scope, rule)| ScopedRule { scope, rule })
            .collect())
    }

    /// What `rule` (by default the one that governs `repo`) would do to
    /// `repo`'s tags at `now`.
    pub fn retention_plan(
        &self,
        repo: &RepoName,
        rule: Option<&RetentionRule>,
        now: u64,
    ) -> Result<RetentionPlan, DbError> {
        let stored = match rule {
            Some(_) => None,
            None => self.retention_rule(repo)?,
        };
        let Some(rule) = rule.or(stored.as_ref()) else {
            return Ok(RetentionPlan::default());
        };
        self.plan_tags(repo, rule, &self.tags_pushed(repo)?, now)
    }

    /// What `rule` does at `now` to `tags`, `repo`'s tags with their
    /// digests and push times.
    fn plan_tags(
        &self,
        repo: &RepoName,
        rule: &RetentionRule,
        tags: &[(Tag, Digest, u64)],
        now: u64,
    ) -> Result<RetentionPlan, DbError> {
        let times: Vec<(Tag, u64)> = tags.iter().map(|(t, _, p)| (t.clone(), *p)).collect();
        let outside: BTreeSet<&Tag> = rule.outside(&times, now).into_iter().collect();
        let mut plan = RetentionPlan::default();
        for (tag, digest, pushed) in tags.iter().filter(|(t, _, _)| outside.contains(t)) {
            let found = RetainedTag {
                repository: repo.clone(),
                tag: tag.clone(),
                digest: digest.clone(),
                pushed: *pushed,
            };
            match self.immutable_rule(repo, tag)? {
                Some(protector) => plan.protected.push((found, protector)),
                None => plan.remove.push(found),
            }
        }
        Ok(plan)
    }

    /// What the rules (or `rule`) would do to every repository in `scope`
    /// (by default, every repository) at `now`.
    pub fn retention_plan_in(
        &self,
        scope: Option<&Resource>,
        rule: Option<&RetentionRule>,
        now: u64,
    ) -> Result<RetentionPlan, DbError> {
        let mut plan = RetentionPlan::default();
        if rule.is_none() && self.retention_rules()?.is_empty() {
            return Ok(plan);
        }
        let mut last: Option<String> = None;
        loop {
            let page = self.repositories(last.as_deref(), REPO_PAGE)?;
            for name in &page.items {
                let Ok(repo) = name.parse::<RepoName>() else {
                    continue;
                };
                if scope.is_some_and(|s| !s.covers(repo.as_str())) {
                    continue;
                }
                let found = self.retention_plan(&repo, rule, now)?;
                plan.remove.extend(found.remove);
                plan.protected.extend(found.protected);
            }
            last = page.items.last().cloned();
            if !page.more {
                return Ok(plan);
            }
        }
    }

    /// `repo`'s tags with their digests and push times.
    fn tags_pushed(&self, repo: &RepoName) -> Result<Vec<(Tag, Digest, u64)>, DbError> {
        Ok(self.tags_with_times(repo, None, usize::MAX)?.0)
    }

    /// Removes the listed tags that, at the command's time, still point at
    /// the same manifest and are still outside their repository's rule; and
    /// each manifest left with no tag and no index listing it.
    pub(super) fn stage_retain(&self, batch: &mut Batch, r: &Retain) -> Result<(), DbError> {
        let mut by_repo: BTreeMap<&RepoName, BTreeSet<(&Tag, &Digest)>> = BTreeMap::new();
        for (repo, tag, digest) in &r.tags {
            by_repo.entry(repo).or_default().insert((tag, digest));
        }
        let mut tally = UsageTally::default();
        for (repo, listed) in by_repo {
            let Some(rule) = self.retention_rule(repo)? else {
                continue;
            };
            let tags = self.tags_pushed(repo)?;
            let plan = self.plan_tags(repo, &rule, &tags, r.at)?;
            let doomed: BTreeSet<(&Tag, &Digest)> = plan
                .remove
                .iter()
                .map(|t| (&t.tag, &t.digest))
                .filter(|t| listed.contains(t))
                .collect();
            for (tag, _) in &doomed {
                self.remove_tag(batch, repo, tag)?;
            }
            let still_tagged: BTreeSet<&Digest> = tags
                .iter()
                .filter(|(t, d, _)| !doomed.contains(&(t, d)))
                .map(|(_, d, _)| d)
                .collect();
            let untagged: BTreeSet<&Digest> = doomed
                .iter()
                .map(|(_, d)| *d)
                .filter(|d| !still_tagged.contains(d))
                .collect();
            for digest in untagged {
                if self.parents(repo, digest)?.is_empty() {
                    self.remove_manifest(batch, repo, digest, r.at, &mut tally)?;
                }
            }
        }
        self.settle(batch, tally)
    }

    /// Drops a tag and its push time.
    pub(super) fn remove_tag(
        &self,
        batch: &mut Batch,
        repo: &RepoName,
        tag: &Tag,
    ) -> Result<(), DbError> {
        if let Some(digest) = self.tag(repo, tag)? {
            batch.record(super::events::Change::TagRemoved {
                repo: repo.clone(),
                tag: tag.clone(),
                digest,
            });
        }
        let key = tag_key(repo, tag);
        batch.delete_cf(self.db.cf(Cf::Tags), &key);
        batch.delete_cf(self.db.cf(Cf::TagTimes), key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[(&str, u64)]) -> Vec<(Tag, u64)> {
        list.iter()
            .map(|(t, at)| (t.parse().unwrap(), *at))
            .collect()
    }

    fn names(found: Vec<&Tag>) -> Vec<&str> {
        let mut names: Vec<&str> = found.into_iter().map(Tag::as_str).collect();
        names.sort();
        names
    }

    #[test]
    fn keeps_the_last_n_and_the_recent_of_the_governed_tags() {
        let now = 100 * DAY;
        let list = tags(&[
            ("v1", 10 * DAY),
            ("v2", 20 * DAY),
            ("v3", 95 * DAY),
            ("v4", 99 * DAY),
            ("latest", 1),
        ]);
        let rule = |keep_last, keep_days| RetentionRule {
            tags: vec!["v*".into()],
            keep_last,
            keep_days,
        };
        assert_eq!(names(rule(Some(2), None).outside(&list, now)), ["v1", "v2"]);
        assert_eq!(
            names(rule(None, Some(10)).outside(&list, now)),
            ["v1", "v2"]
        );
        // Either reason keeps a tag.
        assert_eq!(names(rule(Some(3), Some(1)).outside(&list, now)), ["v1"]);
        assert_eq!(
            names(rule(Some(0), None).outside(&list, now)),
            ["v1", "v2", "v3", "v4"]
        );
        // Exemptions are not governed.
        let all_but_v1 = RetentionRule {
            tags: vec!["*".into(), "!v1".into()],
            keep_last: Some(1),
            keep_days: None,
        };
        assert_eq!(
            names(all_but_v1.outside(&list, now)),
            ["latest", "v2", "v3"]
        );
    }

    #[test]
    fn equal_push_times_break_by_name() {
        let list = tags(&[("b", 5), ("a", 5), ("c", 5)]);
        let rule = RetentionRule {
            tags: every_tag(),
            keep_last: Some(1),
            keep_days: None,
        };
        assert_eq!(names(rule.outside(&list, 10)), ["a", "b"]);
    }

    #[test]
    fn a_rule_needs_something_to_keep_by() {
        let mut rule = RetentionRule {
            tags: every_tag(),
            keep_last: None,
            keep_days: None,
        };
        assert!(rule.check().is_err());
        rule.keep_days = Some(3);
        assert!(rule.check().is_ok());
        rule.tags = vec!["!latest".into()];
        assert!(rule.check().is_err());
    }

    mod applied {
        use super::*;
        use crate::meta::policy::PolicyChange;
        use crate::meta::testing::{link, ok, put, state};
        use crate::meta::Command;

        fn set(scope: &str, rule: RetentionRule) -> Command {
            Command::Policy {
                change: PolicyChange::SetRetention {
                    scope: Resource::from_scope(scope),
                    rule: Some(rule),
                },
                at: 1,
            }
        }

        fn retain(plan: &RetentionPlan, at: u64) -> Command {
            Command::Retain(Retain {
                tags: plan
                    .remove
                    .iter()
                    .map(|t| (t.repository.clone(), t.tag.clone(), t.digest.clone()))
                    .collect(),
                at,
            })
        }

        fn tags(sm: &StateMachine, repo: &str) -> Vec<String> {
            let repo: RepoName = repo.parse().unwrap();
            let mut tags: Vec<String> = sm
                .tags_pushed(&repo)
                .unwrap()
                .into_iter()
                .map(|(t, _, _)| t.as_str().to_owned())
                .collect();
            tags.sort();
            tags
        }

        #[test]
        fn applying_removes_what_is_still_outside_and_frees_untagged_manifests() {
            let (_d, sm) = state();
            let layer = link(&sm, "acme/app", &[0; 100], 1);
            for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
                let body = format!("m-{tag}");
                ok(
                    &sm,
                    put("acme/app", &body, Some(tag), &[&layer], 10 * (i as u64 + 1)),
                );
            }
            // v2's manifest also carries `stable`: it outlives its tag.
            ok(&sm, put("acme/app", "m-v2", Some("stable"), &[&layer], 11));
            ok(&sm, put("other/app", "o", Some("v1"), &[], 1));
            let rule = RetentionRule {
                tags: vec!["v*".into()],
                keep_last: Some(1),
                keep_days: None,
            };
            ok(&sm, set("acme/*", rule));
            let repo: RepoName = "acme/app".parse().unwrap();
            let plan = sm.retention_plan_in(None, None, 100).unwrap();
            let doomed: Vec<&str> = plan.remove.iter().map(|t| t.tag.as_str()).collect();
            assert_eq!(doomed, ["v1", "v2"]);
            // v1 moves to a new manifest before the decision is applied: a
            // fresh push, newer than v3, that the rule now keeps.
            ok(&sm, put("acme/app", "m-v1b", Some("v1"), &[&layer], 50));
            ok(&sm, retain(&plan, 100));
            assert_eq!(tags(&sm, "acme/app"), ["stable", "v1", "v3"]);
            // v3 is outside the rule now, but was not when decided.
            assert!(sm
                .manifest_refs(&repo, &Digest::sha256(b"m-v2"))
                .unwrap()
                .is_some());
            assert!(sm
                .manifest_refs(&repo, &Digest::sha256(b"m-v1"))
                .unwrap()
                .is_some());
            let plan = sm.retention_plan_in(None, None, 100).unwrap();
            ok(&sm, retain(&plan, 100));
            assert_eq!(tags(&sm, "acme/app"), ["stable", "v1"]);
            assert!(sm
                .manifest_refs(&repo, &Digest::sha256(b"m-v3"))
                .unwrap()
                .is_none());
            assert_eq!(tags(&sm, "other/app"), ["v1"]);
        }

        #[test]
        fn immutable_tags_are_kept_and_shown_as_protected() {
            let (_d, sm) = state();
            for (i, tag) in ["v1", "v2", "v3"].iter().enumerate() {
                ok(&sm, put("acme/app", tag, Some(tag), &[], i as u64 + 1));
            }
            let immutable = Command::Policy {
                change: PolicyChange::SetImmutable {
                    scope: Resource::from_scope("acme/app"),
                    patterns: vec!["v1".into()],
                },
                at: 1,
            };
            ok(&sm, immutable);
            let rule = RetentionRule {
                tags: every_tag(),
                keep_last: Some(1),
                keep_days: None,
            };
            // A repository's own rule wins over its namespace's.
            ok(
                &sm,
                set(
                    "acme/*",
                    RetentionRule {
                        keep_last: Some(5),
                        ..rule.clone()
                    },
                ),
            );
            ok(&sm, set("acme/app", rule.clone()));
            let plan = sm.retention_plan_in(None, None, 10).unwrap();
            assert_eq!(plan.remove.len(), 1);
            assert_eq!(plan.remove[0].tag.as_str(), "v2");
            assert_eq!(plan.protected[0].0.tag.as_str(), "v1");
            assert_eq!(plan.protected[0].1, "acme/app v1");
            // Even listed, an immutable tag stays.
            let mut all = retain(&plan, 10);
            if let Command::Retain(r) = &mut all {
                let (t, _) = &plan.protected[0];
                r.tags
                    .push((t.repository.clone(), t.tag.clone(), t.digest.clone()));
            }
            ok(&sm, all);
            assert_eq!(tags(&sm, "acme/app"), ["v1", "v3"]);
            // A preview of another rule changes nothing.
            let wider = RetentionRule {
                keep_last: Some(0),
                ..rule
            };
            let scope = Resource::from_scope("acme/*");
            let preview = sm
                .retention_plan_in(Some(&scope), Some(&wider), 10)
                .unwrap();
            assert_eq!(preview.remove.len(), 1);
            assert_eq!(tags(&sm, "acme/app"), ["v1", "v3"]);
        }
    }
}
