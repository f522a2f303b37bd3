//! `berth mirror status`: every pull-through mirror of the node asked,
//! through its admin API (`/_berth/mirrors`).

use std::fmt::Write as _;

use clap::Subcommand;

use super::client::{Client, Connection};
use super::CliResult;
use crate::registry::mirror::MirrorReport;

#[derive(Debug, Subcommand)]
pub enum MirrorAction {
    /// Per upstream: cached repositories, blobs and bytes (the cluster's),
    /// and the node's hits, misses, bytes fetched upstream and last
    /// upstream error since it started.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: Connection, action: MirrorAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        MirrorAction::Status { json } => {
            let reports: Vec<MirrorReport> = client.get("/_berth/mirrors").await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&reports)?),
                false => print!("{}", render(&reports)),
            }
        }
    }
    Ok(())
}

fn render(reports: &[MirrorReport]) -> String {
    if reports.is_empty() {
        return "no mirrors configured (the `mirrors` list of the node's configuration file)\n"
            .into();
    }
    let mut out = String::new();
    for r in reports {
        let mut flags = Vec::new();
        if r.default {
            flags.push("default");
        }
        if r.anonymous {
            flags.push("anonymous pulls");
        }
        let flags = match flags.is_empty() {
            true => String::new(),
            false => format!(" ({})", flags.join(", ")),
        };
        let _ = writeln!(
            out,
            "{} → {}{flags}, tags checked every {} s",
            r.name, r.url, r.tag_ttl_secs
        );
        let _ = writeln!(
            out,
            "  cached:   {} repositories, {} blobs, {}",
            r.cached_repositories,
            r.cached_blobs,
            bytesize::ByteSize(r.cached_bytes)
        );
        let _ = writeln!(
            out,
            "  this node: {} hits, {} misses, {} fetched upstream",
            r.hits,
            r.misses,
            bytesize::ByteSize(r.upstream_bytes)
        );
        match &r.last_error {
            Some((at, e)) => {
                let when = httpdate::fmt_http_date(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(*at),
                );
                let _ = writeln!(out, "  last upstream error ({when}): {e}");
            }
            None => out.push_str("  no upstream error\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_reads_at_a_glance() {
        let report = MirrorReport {
            name: "docker.io".into(),
            url: "https://registry-1.docker.io/".into(),
            default: true,
            tag_ttl_secs: 300,
            cached_repositories: 2,
            cached_blobs: 5,
            cached_bytes: 3 << 20,
            hits: 7,
            misses: 5,
            upstream_bytes: 3 << 20,
            last_error: Some((0, "upstream docker.io answered 429".into())),
            ..Default::default()
        };
        let text = render(&[report]);
        assert!(
            text.contains("docker.io → https://registry-1.docker.io/ (default)"),
            "{text}"
        );
        assert!(text.contains("2 repositories, 5 blobs, 3.0 MiB"), "{text}");
        assert!(text.contains("7 hits, 5 misses"), "{text}");
        assert!(text.contains("answered 429"), "{text}");
        assert!(render(&[]).contains("no mirrors configured"));
    }
}
