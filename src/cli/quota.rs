//! `berth quota set|remove|show`: namespace storage quotas through the
//! admin API of any node (`/_berth/policies`, `/_berth/quotas`).

use std::fmt::Write as _;

use bytesize::ByteSize;
use clap::Subcommand;

use super::client::{Client, Connection};
use super::retention::change_policy;
use super::CliResult;
use crate::meta::policy::PolicyChange;
use crate::meta::quota::NamespaceUsage;

#[derive(Debug, Subcommand)]
pub enum QuotaAction {
    /// Cap the storage of a namespace (a user's or an organization's): the
    /// distinct blob bytes its manifests reference, each shared layer
    /// counted once. A push that would pass the cap is refused. Only
    /// administrators may set quotas.
    Set {
        /// A user's or an organization's name (`acme`).
        namespace: String,
        /// The cap: bytes, or with a unit (`500MB`, `10GiB`).
        size: ByteSize,
    },
    /// Lift the quota of a namespace.
    Remove {
        /// A user's or an organization's name (`acme`).
        namespace: String,
    },
    /// Show each namespace's usage and quota (to others than administrators,
    /// the namespaces they administer).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: Connection, action: QuotaAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        QuotaAction::Set { namespace, size } => {
            let bytes = Some(size.as_u64());
            change_policy(&client, PolicyChange::SetQuota { namespace, bytes }).await?;
        }
        QuotaAction::Remove { namespace } => {
            let change = PolicyChange::SetQuota {
                namespace,
                bytes: None,
            };
            change_policy(&client, change).await?;
        }
        QuotaAction::Show { json } => {
            let usage: Vec<NamespaceUsage> = client.get("/_berth/quotas").await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&usage)?),
                false => print!("{}", render_usage(&usage)),
            }
        }
    }
    Ok(())
}

fn render_usage(usage: &[NamespaceUsage]) -> String {
    if usage.is_empty() {
        return "no namespace stores anything yet\n".to_owned();
    }
    let mut out = String::new();
    for u in usage {
        let used = ByteSize::b(u.bytes);
        let _ = match u.limit {
            Some(limit) => writeln!(
                out,
                "{}: {used} of {} ({:.0}%)",
                u.namespace,
                ByteSize::b(limit),
                u.bytes as f64 * 100.0 / limit.max(1) as f64
            ),
            None => writeln!(out, "{}: {used}, no quota", u.namespace),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_with_units_and_shares() {
        let usage = [
            NamespaceUsage {
                namespace: "acme".into(),
                bytes: 512 << 20,
                limit: Some(1 << 30),
            },
            NamespaceUsage {
                namespace: "alice".into(),
                bytes: 2048,
                limit: None,
            },
        ];
        assert_eq!(
            render_usage(&usage),
            "acme: 512.0 MiB of 1.0 GiB (50%)\nalice: 2.0 KiB, no quota\n"
        );
        assert_eq!("10GiB".parse::<ByteSize>().unwrap().as_u64(), 10 << 30);
    }
}
