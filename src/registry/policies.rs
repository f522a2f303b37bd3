//! Repository policies: immutable tags, retention rules and namespace
//! quotas, changed through the log and read as fresh as a write.

use super::{Error, Registry, Result};
use crate::meta::access::{namespace_of, Resource};
use crate::meta::policy::{Policies, PolicyChange};
use crate::meta::quota::{size_text, NamespaceUsage};
use crate::meta::retention::{RetentionPlan, RetentionRule};
use crate::meta::Command;
use crate::oci::RepoName;
use crate::storage::now_secs;

impl Registry {
    /// Changes a repository policy; returns once this node applies it.
    pub async fn change_policy(&self, change: PolicyChange) -> Result<()> {
        change.check().map_err(Error::RequestInvalid)?;
        let at = now_secs();
        self.write(Command::Policy { change, at }).await
    }

    /// Every immutable-tag and retention rule.
    pub async fn policies(&self) -> Result<Policies> {
        let meta = self.fresh().await?;
        Ok(Policies {
            immutable: meta.immutable_rules()?,
            retention: meta.retention_rules()?,
        })
    }

    /// What `rule` would remove from the repositories in `scope` now, or
    /// without a rule, what the stored rules would.
    pub async fn retention_preview(
        &self,
        scope: Option<&Resource>,
        rule: Option<&RetentionRule>,
    ) -> Result<RetentionPlan> {
        if let Some(rule) = rule {
            rule.check().map_err(Error::RequestInvalid)?;
            if scope.is_none() {
                return Err(Error::RequestInvalid(
                    "a rule to preview needs the scope it would apply to".into(),
                ));
            }
        }
        Ok(self
            .fresh()
            .await?
            .retention_plan_in(scope, rule, now_secs())?)
    }

    /// Every namespace's usage and quota.
    pub async fn usage(&self) -> Result<Vec<NamespaceUsage>> {
        Ok(self.fresh().await?.namespace_usage()?)
    }

    /// Refuses new bytes for a namespace already at its quota. The commit of
    /// a manifest is what enforces the quota; this spares the client an
    /// upload that could not be used.
    pub(super) fn check_room(&self, repo: &RepoName) -> Result<()> {
        let namespace = namespace_of(repo.as_str());
        let Some(limit) = self.meta.quota(namespace)? else {
            return Ok(());
        };
        let usage = self.meta.usage(namespace)?;
        if usage < limit {
            return Ok(());
        }
        Err(Error::Denied(format!(
            "namespace {namespace} uses {} of its quota of {}; delete images and run \
             garbage collection, or ask an administrator for more",
            size_text(usage),
            size_text(limit)
        )))
    }
}
