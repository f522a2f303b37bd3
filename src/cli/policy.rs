//! `berth policy immutable|show`: immutable tags, and every repository
//! policy, through the admin API of any node (`/_berth/policies`).

use std::fmt::Write as _;

use clap::Subcommand;

use super::client::{Client, Connection};
use super::retention::change_policy;
use super::CliResult;
use crate::meta::access::Resource;
use crate::meta::policy::{scope_text, Policies, PolicyChange};

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Make tags immutable in a repository (`acme/app`) or a namespace
    /// (`acme/*`): such a tag can be pushed once, then never moved to
    /// another manifest or deleted. Patterns use `*` and `?`; one starting
    /// with `!` exempts tags (`'*' '!latest'`: every tag but latest). No
    /// pattern removes the rule.
    Immutable {
        scope: String,
        patterns: Vec<String>,
    },
    /// Show every immutable-tag and retention rule (`berth quota show` shows
    /// quotas).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: Connection, action: PolicyAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        PolicyAction::Immutable { scope, patterns } => {
            let change = PolicyChange::SetImmutable {
                scope: Resource::from_scope(&scope),
                patterns,
            };
            change_policy(&client, change).await?;
        }
        PolicyAction::Show { json } => {
            let policies: Policies = client.get("/_berth/policies").await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&policies)?),
                false => print!("{}", render(&policies)),
            }
        }
    }
    Ok(())
}

fn render(policies: &Policies) -> String {
    if policies.immutable.is_empty() && policies.retention.is_empty() {
        return "no immutable tag or retention rules\n".to_owned();
    }
    let mut out = String::new();
    for rule in &policies.immutable {
        let patterns = rule.patterns.join(" ");
        let _ = writeln!(
            out,
            "{}: immutable tags {patterns}",
            scope_text(&rule.scope)
        );
    }
    for r in &policies.retention {
        let _ = writeln!(
            out,
            "{}: retention, {}",
            scope_text(&r.scope),
            r.rule.describe()
        );
    }
    out
}
