//! An image or an index: the manifest tree, layers with their sizes, media
//! types and holders, the configuration (entrypoint, env, labels, history),
//! annotations and referrers (signatures, SBOMs, attestations).

use std::collections::BTreeMap;

use axum::response::IntoResponse;
use maud::{html, Markup};

use crate::meta::ManifestRecord;
use crate::oci::{Digest, Reference, RepoName};
use crate::ui::layout::{self, facts, text, Frame};
use crate::ui::model::{command_line, Config, Desc, Doc};
use crate::ui::{Failure, PageResult, Ui, Visitor};

pub async fn render(
    ui: &Ui,
    visitor: &Visitor,
    repo: &RepoName,
    reference: &Reference,
) -> PageResult {
    if !visitor.may(repo.as_str(), "pull") {
        return Err(crate::registry::Error::NameUnknown.into());
    }
    let (digest, record) = ui.reg.manifest_record(repo, reference).await?;
    let doc = Doc::of(&record);
    let name = repo.as_str();
    let (title, pull) = match reference {
        Reference::Tag(tag) => (format!("{name}:{tag}"), format!("{name}:{tag}")),
        Reference::Digest(d) => (
            format!("{name}@{}", layout::short_digest(d)),
            format!("{name}@{d}"),
        ),
    };
    let body = match &doc {
        Doc::Index(children) => index(ui, repo, children)?,
        Doc::Image { config, layers } => image(ui, repo, config, layers).await?,
        Doc::Other => html! { p.muted { "This manifest lists neither layers nor manifests." } },
    };
    let referrers = ui.reg.referrers(repo, &digest, None).await?;
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href=(layout::repo_path(name)) { (name) } " / " span { (title.trim_start_matches(name)) }
        }
        h1 { (title) }
        (layout::pull_command(&format!("docker pull {}/{pull}", visitor.host)))
        (summary(&digest, &record, &doc))
        (body)
        (annotations(&record))
        section #referrers aria-labelledby="referrers-title" {
            h2 #referrers-title { "Referrers" }
            @if referrers.is_empty() {
                p.muted { "No signatures, SBOMs or attestations refer to this manifest." }
            } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Artifact type" } th scope="col" { "Digest" } th scope="col" { "Size" } } }
                    tbody {
                        @for r in &referrers {
                            tr.referrer {
                                td { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) }
                                td { a href=(layout::image_path(name, r.digest.as_str())) { (layout::digest(&r.digest)) } }
                                td.size { (layout::size(r.size)) }
                            }
                        }
                    }
                } }
            }
        }
    };
    Ok(layout::page(Some(visitor), Frame::titled(&title), content).into_response())
}

fn summary(digest: &Digest, record: &ManifestRecord, doc: &Doc) -> Markup {
    let size = doc.image_size().unwrap_or(record.body.len() as u64);
    facts(
        Some("summary"),
        [
            ("Digest", html! { code { (digest.as_str()) } }),
            ("Media type", text(&record.media_type)),
            ("Size", text(layout::size(size))),
            ("Pushed", layout::time(record.created)),
            (
                "Artifact type",
                text(record.artifact_type.as_deref().unwrap_or("")),
            ),
            (
                "Subject",
                match &record.subject {
                    Some(s) => layout::digest(s),
                    None => layout::nothing(),
                },
            ),
        ],
    )
}

fn index(ui: &Ui, repo: &RepoName, children: &[Desc]) -> Result<Markup, Failure> {
    let digests: Vec<Digest> = children.iter().map(|c| c.digest.clone()).collect();
    let records = ui.reg.child_records(repo, &digests)?;
    let name = repo.as_str();
    Ok(html! {
        section aria-labelledby="manifests-title" {
            h2 #manifests-title { "Manifests" }
            div.scroll { table #manifests {
                thead { tr {
                    th scope="col" { "Platform" } th scope="col" { "Digest" }
                    th scope="col" { "Media type" } th scope="col" { "Size" }
                } }
                tbody {
                    @for (child, record) in children.iter().zip(&records) {
                        tr.child {
                            td.platform { (child.platform.as_ref().map(|p| p.text()).unwrap_or_default()) }
                            td { a.child-link href=(layout::image_path(name, child.digest.as_str())) { (layout::digest(&child.digest)) } }
                            td.media-type { (child.media_type) }
                            td.size {
                                @if let Some(s) = record.as_ref().and_then(|r| Doc::of(r).image_size()) { (layout::size(s)) }
                            }
                        }
                    }
                }
            } }
        }
    })
}

async fn image(
    ui: &Ui,
    repo: &RepoName,
    config: &Desc,
    layers: &[Desc],
) -> Result<Markup, Failure> {
    let parsed = match ui.reg.image_config(repo, &config.digest).await {
        Some(bytes) => Config::parse(&bytes),
        None => None,
    };
    let blob_row = |d: &Desc, label: Markup| -> Result<Markup, Failure> {
        let holders = ui.reg.blob_holders(&d.digest)?;
        Ok(html! {
            tr.layer {
                td { (label) }
                td { (layout::digest(&d.digest)) }
                td.media-type { (d.media_type) }
                td.size { (layout::size(d.size)) }
                td.holders { (holders.join(", ")) }
            }
        })
    };
    let mut rows = Vec::with_capacity(layers.len());
    for (i, layer) in layers.iter().enumerate() {
        rows.push(blob_row(layer, html! { (i + 1) })?);
    }
    let config_holders = ui.reg.blob_holders(&config.digest)?;
    Ok(html! {
        section aria-labelledby="layers-title" {
            h2 #layers-title { "Layers" }
            div.scroll { table #layers {
                thead { tr {
                    th scope="col" { "#" } th scope="col" { "Digest" } th scope="col" { "Media type" }
                    th scope="col" { "Size" } th scope="col" { "Held by" }
                } }
                tbody { @for row in rows { (row) } }
            } }
        }
        section #config aria-labelledby="config-title" {
            h2 #config-title { "Configuration" }
            (facts(None, [
                ("Digest", layout::digest(&config.digest)),
                ("Media type", text(&config.media_type)),
                ("Size", text(layout::size(config.size))),
                ("Held by", text(config_holders.join(", "))),
            ]))
            @match &parsed {
                Some(c) => (run_config(c)),
                None => p.muted { "The configuration is not a readable image configuration." },
            }
        }
    })
}

fn run_config(c: &Config) -> Markup {
    let run = &c.config;
    let list = |items: &[String]| html! { ul.plain { @for i in items { li { code { (i) } } } } };
    let ports: Vec<String> = run
        .exposed_ports
        .iter()
        .flat_map(BTreeMap::keys)
        .cloned()
        .collect();
    html! {
        (facts(None, [
            ("Platform", text(c.platform().unwrap_or_default())),
            ("Created", text(c.created.as_deref().unwrap_or(""))),
            ("Author", text(c.author.as_deref().unwrap_or(""))),
            ("Entrypoint", run.entrypoint.as_deref().map_or_else(layout::nothing, |a| html! { code { (command_line(a)) } })),
            ("Command", run.cmd.as_deref().map_or_else(layout::nothing, |a| html! { code { (command_line(a)) } })),
            ("Working directory", text(run.working_dir.as_deref().unwrap_or(""))),
            ("User", text(run.user.as_deref().unwrap_or(""))),
            ("Exposed ports", if ports.is_empty() { layout::nothing() } else { text(ports.join(", ")) }),
            ("Environment", run.env.as_deref().filter(|e| !e.is_empty()).map_or_else(layout::nothing, list)),
        ]))
        @if let Some(labels) = run.labels.as_ref().filter(|l| !l.is_empty()) {
            h3 { "Labels" }
            (pairs("labels", labels))
        }
        @if !c.history.is_empty() {
            h3 { "History" }
            div.scroll { table #history {
                thead { tr { th scope="col" { "Created" } th scope="col" { "Step" } th scope="col" { "Layer" } } }
                tbody {
                    @for h in &c.history {
                        tr {
                            td { (h.created.as_deref().unwrap_or("")) }
                            td { code.wrap { (h.created_by.as_deref().or(h.comment.as_deref()).unwrap_or("")) } }
                            td { @if h.empty_layer { "none" } @else { "yes" } }
                        }
                    }
                }
            } }
        }
    }
}

fn annotations(record: &ManifestRecord) -> Markup {
    match record.annotations.as_ref().filter(|a| !a.is_empty()) {
        Some(a) => html! {
            section aria-labelledby="annotations-title" {
                h2 #annotations-title { "Annotations" }
                (pairs("annotations", a))
            }
        },
        None => layout::nothing(),
    }
}

/// Keys and values as a definition list.
fn pairs(id: &str, map: &BTreeMap<String, String>) -> Markup {
    html! {
        dl.facts.pairs id=(id) {
            @for (k, v) in map { dt { code { (k) } } dd { (v) } }
        }
    }
}
