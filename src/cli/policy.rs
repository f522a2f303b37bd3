//! `berth policy immutable|show`: repository policies through the admin API
//! of any node (`/_berth/policies`).

use clap::Subcommand;

use super::client::{Client, Connection};
use super::CliResult;
use crate::meta::access::Resource;
use crate::meta::policy::{scope_text, ImmutableRule, PolicyChange};

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
    /// Show every rule.
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Policies {
    immutable: Vec<ImmutableRule>,
}

pub async fn run(conn: Connection, action: PolicyAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        PolicyAction::Immutable { scope, patterns } => {
            let change = PolicyChange::SetImmutable {
                scope: Resource::from_scope(&scope),
                patterns,
            };
            let describe = change.describe();
            let () = client.post("/_berth/policies", &change).await?;
            println!("{describe}: done");
        }
        PolicyAction::Show { json } => {
            let policies: Policies = client.get("/_berth/policies").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&policies)?);
            } else if policies.immutable.is_empty() {
                println!("no immutable tag rules");
            } else {
                for rule in &policies.immutable {
                    let patterns = rule.patterns.join(" ");
                    println!("{}: immutable tags {patterns}", scope_text(&rule.scope));
                }
            }
        }
    }
    Ok(())
}
