//! `berth webhook add|list|remove|test|deliveries|redeliver` and
//! `berth image dependents`, through the admin API (`/_berth/webhooks`,
//! `/_berth/dependents`).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::client::{Client, Connection};
use super::CliResult;
use crate::events::endpoint::EndpointSpec;

#[derive(Debug, Subcommand)]
pub enum WebhookAction {
    /// Add an endpoint, or replace the one with the same id. Events
    /// committed from now on are delivered to it, in commit order, at least
    /// once.
    Add(AddArgs),
    /// Every endpoint you may manage, with how far its delivery is.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint; its queued and parked events are dropped.
    Remove { id: String },
    /// Send the endpoint a test event now and show its answer.
    Test { id: String },
    /// The endpoint's last delivery attempts (status code, latency) and its
    /// parked events.
    Deliveries {
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Deliver parked events again: the ones named, or all of them.
    Redeliver {
        id: String,
        /// Event ids (INDEX-POSITION), as `deliveries` shows them.
        events: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Receiver URL (http or https).
    #[arg(long)]
    pub url: String,
    /// The endpoint's id: 1-64 of a-z, 0-9, '.', '_', '-'.
    #[arg(long)]
    pub id: String,
    /// Events to send, comma-separated: push, tag.moved, tag.deleted,
    /// manifest.deleted, delete (both deletions), mount, pull,
    /// mirror.fetch, gc.collected, access.changed, base.updated, all (every
    /// kind but pull). [default: all]
    #[arg(long)]
    pub events: Option<String>,
    /// Only events of these repositories or namespaces (`acme/*`);
    /// repeatable. Without it, every event (administrators only).
    #[arg(long = "repository")]
    pub repositories: Vec<String>,
    /// Body format: distribution (Distribution's notification envelope),
    /// hub (Docker Hub's webhook JSON) or cloudevents (CloudEvents 1.0).
    #[arg(long, default_value = "distribution")]
    pub format: String,
    /// File holding the key that signs each body (HMAC-SHA256, header
    /// `Berth-Signature`); at least 16 characters.
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Extra request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Milliseconds a request may take. [default: 5000]
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Attempts before events are parked. [default: 10]
    #[arg(long)]
    pub attempts: Option<u32>,
    /// First wait between attempts in milliseconds; doubles each time, with
    /// jitter, up to --max-backoff-ms. [default: 1000]
    #[arg(long)]
    pub backoff_ms: Option<u64>,
    /// [default: 300000]
    #[arg(long)]
    pub max_backoff_ms: Option<u64>,
    /// Events per request in the distribution format. [default: 100]
    #[arg(long)]
    pub max_batch: Option<u32>,
    /// Let the endpoint be a loopback, link-local or metadata-service
    /// address (administrators only).
    #[arg(long)]
    pub allow_internal: bool,
}

#[derive(Debug, Subcommand)]
pub enum ImageAction {
    /// The images built on what REPO:TAG names now (by their base
    /// annotations or by their layers): what a `base.updated` event would
    /// name if the tag moved.
    Dependents {
        /// REPO:TAG or REPO@DIGEST.
        image: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: Connection, action: WebhookAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        WebhookAction::Add(args) => {
            let secret = match &args.secret_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
                        .trim()
                        .to_owned(),
                ),
                None => None,
            };
            let spec = EndpointSpec {
                id: args.id,
                url: args.url,
                format: Some(args.format),
                events: args.events,
                repositories: args.repositories,
                secret,
                headers: args.headers,
                timeout_ms: args.timeout_ms,
                attempts: args.attempts,
                backoff_ms: args.backoff_ms,
                max_backoff_ms: args.max_backoff_ms,
                max_batch: args.max_batch,
                allow_internal: args.allow_internal,
                ..EndpointSpec::default()
            };
            let added: Value = client.post("/_berth/webhooks", &spec).await?;
            println!(
                "webhook {} → {} ({} events)",
                added["id"].as_str().unwrap_or(""),
                added["url"].as_str().unwrap_or(""),
                added["events"].as_array().map_or(0, Vec::len)
            );
        }
        WebhookAction::List { json } => {
            let all: Vec<Value> = client.get("/_berth/webhooks").await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&all)?),
                false => print!("{}", render_list(&all)),
            }
        }
        WebhookAction::Remove { id } => {
            let () = client.delete(&format!("/_berth/webhooks/{id}")).await?;
            println!("webhook {id} removed");
        }
        WebhookAction::Test { id } => {
            let out: Value = client
                .post(&format!("/_berth/webhooks/{id}/test"), &Value::Null)
                .await?;
            match out["status"].as_u64() {
                Some(status) => println!("{id} answered {status} in {} ms", out["latency_ms"]),
                None => {
                    return Err(format!(
                        "{id} could not be reached: {}",
                        out["error"].as_str().unwrap_or("unknown error")
                    )
                    .into())
                }
            }
        }
        WebhookAction::Deliveries { id, json } => {
            let d: Value = client
                .get(&format!("/_berth/webhooks/{id}/deliveries"))
                .await?;
            match json {
                true => println!("{}", serde_json::to_string_pretty(&d)?),
                false => print!("{}", render_deliveries(&d)),
            }
        }
        WebhookAction::Redeliver { id, events } => {
            let body = serde_json::json!({ "events": events });
            let out: Value = client
                .post(&format!("/_berth/webhooks/{id}/redeliver"), &body)
                .await?;
            println!(
                "{} parked events of {id} queued for delivery",
                out["queued"]
            );
        }
    }
    Ok(())
}

pub async fn run_image(conn: Connection, action: ImageAction) -> CliResult<()> {
    let client = Client::new(&conn)?;
    match action {
        ImageAction::Dependents { image, json } => {
            let (repo, reference) = split_image(&image)?;
            let path = format!(
                "/_berth/dependents?repository={}&reference={}",
                form_urlencoded::byte_serialize(repo.as_bytes()).collect::<String>(),
                form_urlencoded::byte_serialize(reference.as_bytes()).collect::<String>()
            );
            let found: Vec<Value> = client.get(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&found)?);
            } else if found.is_empty() {
                println!("no image in the registry is built on {image}");
            } else {
                for d in &found {
                    let tags: Vec<&str> = d["tags"]
                        .as_array()
                        .map(|t| t.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    println!(
                        "{}@{} [{}] (by {})",
                        d["repository"].as_str().unwrap_or(""),
                        d["digest"].as_str().unwrap_or(""),
                        tags.join(", "),
                        d["matched"].as_str().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

/// `repo:tag` or `repo@digest` into the repository and the reference.
fn split_image(image: &str) -> CliResult<(String, String)> {
    if let Some((repo, digest)) = image.split_once('@') {
        return Ok((repo.to_owned(), digest.to_owned()));
    }
    // The tag follows the last ':' after the last '/' (a registry host may
    // carry a port).
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => Ok((
            image[..slash + i].to_owned(),
            image[slash + i + 1..].to_owned(),
        )),
        None => Err(format!("{image:?}: give REPO:TAG or REPO@DIGEST").into()),
    }
}

fn render_list(all: &[Value]) -> String {
    if all.is_empty() {
        return "no webhook endpoints\n".into();
    }
    let mut out = String::new();
    for w in all {
        let e = &w["endpoint"];
        let _ = writeln!(
            out,
            "{} → {} ({}, {})",
            e["id"].as_str().unwrap_or(""),
            e["url"].as_str().unwrap_or(""),
            e["format"].as_str().unwrap_or(""),
            if e["source"].get("Config").is_some() || e["source"] == "Config" {
                "from the configuration file"
            } else {
                "added through the API"
            }
        );
        let _ = writeln!(
            out,
            "  delivered up to {}, {} waiting, {} parked",
            w["position"].as_str().unwrap_or(""),
            w["backlog"],
            w["parked"]
        );
        if let Some(a) = w["last_attempt"].as_object() {
            let _ = writeln!(
                out,
                "  last attempt: {}",
                attempt_text(&Value::Object(a.clone()))
            );
        }
    }
    out
}

fn attempt_text(a: &Value) -> String {
    let when = super::gc::when(a["at_ms"].as_u64().unwrap_or(0) / 1000);
    let outcome = match (a["status"].as_u64(), a["error"].as_str()) {
        (Some(s), None) => format!("{s}"),
        (Some(s), Some(_)) => format!("{s} (failed)"),
        (None, Some(e)) => format!("failed: {e}"),
        (None, None) => "?".into(),
    };
    format!(
        "{when}: events {}..{} ({}), {outcome}, {} ms",
        a["first"]["index"]
            .as_u64()
            .map_or(String::new(), |i| format!("{i}-{}", a["first"]["position"])),
        a["last"]["index"]
            .as_u64()
            .map_or(String::new(), |i| format!("{i}-{}", a["last"]["position"])),
        a["events"],
        a["latency_ms"]
    )
}

fn render_deliveries(d: &Value) -> String {
    let mut out = render_list(std::slice::from_ref(&d["status"]));
    let attempts = d["attempts"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "last {} attempts:", attempts.len());
    for a in &attempts {
        let _ = writeln!(out, "  {}", attempt_text(a));
    }
    let parked = d["parked"].as_array().cloned().unwrap_or_default();
    if !parked.is_empty() {
        let _ = writeln!(out, "parked ({}):", parked.len());
        for p in &parked {
            let _ = writeln!(
                out,
                "  {} {} {}{}{}",
                p["id"].as_str().unwrap_or(""),
                p["kind"].as_str().unwrap_or(""),
                p["repository"].as_str().unwrap_or(""),
                p["tag"]
                    .as_str()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default(),
                if p["requeued"] == true {
                    " (queued again)"
                } else {
                    ""
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_into_repository_and_reference() {
        assert_eq!(
            split_image("acme/app:v1").unwrap(),
            ("acme/app".into(), "v1".into())
        );
        assert_eq!(
            split_image("acme/app@sha256:abc").unwrap(),
            ("acme/app".into(), "sha256:abc".into())
        );
        assert!(split_image("acme/app").is_err());
    }
}
