//! `berth retention set|remove|preview`: retention rules through the admin
//! API of any node (`/_berth/policies`, `/_berth/retention/preview`).

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use serde_json::json;

use super::client::{Client, Connection};
use super::gc::when;
use super::CliResult;
use crate::meta::access::Resource;
use crate::meta::policy::PolicyChange;
use crate::meta::retention::{RetentionPlan, RetentionRule};

#[derive(Debug, Subcommand)]
pub enum RetentionAction {
    /// Set the retention rule of a repository (`acme/app`) or a namespace
    /// (`acme/*`, applied to each of its repositories). Each garbage
    /// collection then removes the governed tags the rule does not keep, and
    /// the manifests that leaves untagged; immutable tags always stay.
    Set {
        /// A repository (`acme/app`) or a namespace (`acme/*`).
        scope: String,
        #[command(flatten)]
        rule: RuleArgs,
    },
    /// Remove the rule of a repository or namespace.
    Remove {
        /// A repository (`acme/app`) or a namespace (`acme/*`).
        scope: String,
    },
    /// Show what would be removed now, changing nothing: by the rule given
    /// (before setting it), or without --keep-*, by the rules already set.
    Preview {
        /// A repository or `namespace/*`. [default: every repository, with
        /// the rules already set]
        scope: Option<String>,
        #[command(flatten)]
        rule: RuleArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Keep this many of the most recently pushed governed tags.
    #[arg(long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the governed tags pushed within this many days.
    #[arg(long, value_name = "DAYS")]
    keep_days: Option<u32>,
    /// The tags the rule governs (`*`, `?`; `!` exempts); repeat for more.
    /// Tags it does not govern are never removed. [default: every tag]
    #[arg(long = "tags", value_name = "PATTERN")]
    tags: Vec<String>,
}

impl RuleArgs {
    /// The rule, if any keep option was given.
    fn rule(self) -> Option<RetentionRule> {
        if self.keep_last.is_none() && self.keep_days.is_none() {
            return None;
        }
        Some(RetentionRule {
            tags: match self.tags.is_empty() {
                true => vec!["*".to_owned()],
                false => self.tags,
            },
            keep_last: self.keep_last,
            keep_days: self.keep_days,
        })
    }
}

pub async fn run(conn: Connection, action: RetentionAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        RetentionAction::Set { scope, rule } => {
            let Some(rule) = rule.rule() else {
                return Err("give --keep-last, --keep-days or both".into());
            };
            let change = PolicyChange::SetRetention {
                scope: Resource::from_scope(&scope),
                rule: Some(rule),
            };
            change_policy(&client, change).await?;
        }
        RetentionAction::Remove { scope } => {
            let change = PolicyChange::SetRetention {
                scope: Resource::from_scope(&scope),
                rule: None,
            };
            change_policy(&client, change).await?;
        }
        RetentionAction::Preview { scope, rule, json } => {
            let req = json!({ "scope": scope, "rule": rule.rule() });
            let plan: RetentionPlan = client.post("/_berth/retention/preview", &req).await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&plan)?),
                false => print!("{}", render_plan(&plan)),
            }
        }
    }
    Ok(())
}

/// Makes one policy change and says so.
pub(super) async fn change_policy(client: &Client, change: PolicyChange) -> CliResult<()> {
    let describe = change.describe();
    let () = client.post("/_berth/policies", &change).await?;
    println!("{describe}: done");
    Ok(())
}

fn render_plan(plan: &RetentionPlan) -> String {
    let mut out = format!(
        "would remove {} tags; {} more are outside the rule but immutable\n",
        plan.remove.len(),
        plan.protected.len()
    );
    for t in &plan.remove {
        let _ = writeln!(
            out,
            "remove {}:{} ({}), pushed {}",
            t.repository,
            t.tag,
            t.digest,
            when(t.pushed)
        );
    }
    for (t, rule) in &plan.protected {
        let _ = writeln!(
            out,
            "keep {}:{}: immutable by rule {rule}",
            t.repository, t.tag
        );
    }
    out
}
