//! A repository: its tags (digest, size, push time, platforms), a pull
//! command, and the actions its admins have: deleting a tag, making it
//! public or private. `/ui/r/REPO/-/REF` is an image, in [`super::image`].

use axum::body::Body;
use axum::extract::{Path, Query as Q, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::Query;
use crate::meta::access::AccessChange;
use crate::oci::{Reference, RepoName, Tag};
use crate::registry::TagEntry;
use crate::ui::layout::{self, Frame};
use crate::ui::model::Doc;
use crate::ui::visitor::Form;
use crate::ui::{Failure, PageResult, Ui, Visitor};

const PAGE: usize = 50;

/// What a `/ui/r/…` path names.
enum Target {
    Repository(RepoName),
    Image(RepoName, Reference),
    /// `REPO/-/TAG/delete`
    DeleteTag(RepoName, Tag),
    /// `REPO/-/visibility`
    Visibility(RepoName),
}

/// Reads a path after `/ui/r/`: pages for a GET, actions for a POST (so a
/// tag named `visibility` is still a page). Repository components cannot
/// be `-`, so `/-/` always ends the name. Anything unreadable is "no such
/// page".
fn target(path: &str, post: bool) -> Option<Target> {
    let (repo, rest) = match path.split_once("/-/") {
        Some((repo, rest)) => (repo, Some(rest)),
        None => (path.trim_end_matches('/'), None),
    };
    let repo: RepoName = repo.parse().ok()?;
    Some(match (rest, post) {
        (None, false) => Target::Repository(repo),
        (Some(reference), false) => Target::Image(repo, reference.parse().ok()?),
        (Some("visibility"), true) => Target::Visibility(repo),
        (Some(rest), true) => Target::DeleteTag(repo, rest.strip_suffix("/delete")?.parse().ok()?),
        (None, true) => return None,
    })
}

fn no_such_page() -> Failure {
    Failure::new(http::StatusCode::NOT_FOUND, "There is no such page.")
}

/// A repository the visitor may not read does not exist, for them.
fn readable(visitor: &Visitor, repo: &RepoName) -> Result<(), Failure> {
    match visitor.may(repo.as_str(), "pull") {
        true => Ok(()),
        false => Err(crate::registry::Error::NameUnknown.into()),
    }
}

pub async fn show(
    State(ui): State<Ui>,
    visitor: Visitor,
    Path(path): Path<String>,
    Q(query): Q<Query>,
) -> Response {
    let result = match target(&path, false) {
        Some(Target::Repository(repo)) => render(&ui, &visitor, &repo, &query).await,
        Some(Target::Image(repo, reference)) => {
            super::image::render(&ui, &visitor, &repo, &reference).await
        }
        _ => Err(no_such_page()),
    };
    visitor.respond(result)
}

pub async fn act(
    State(ui): State<Ui>,
    visitor: Visitor,
    Path(path): Path<String>,
    body: Body,
) -> Response {
    let result = async {
        let form = Form::read(body).await?;
        visitor.check_csrf(&form, &ui.keys)?;
        match target(&path, true) {
            Some(Target::DeleteTag(repo, tag)) => delete_tag(&ui, &visitor, &repo, tag).await,
            Some(Target::Visibility(repo)) => visibility(&ui, &visitor, &repo, &form).await,
            _ => Err(no_such_page()),
        }
    };
    visitor.respond(result.await)
}

async fn delete_tag(ui: &Ui, visitor: &Visitor, repo: &RepoName, tag: Tag) -> PageResult {
    readable(visitor, repo)?;
    if !visitor.may(repo.as_str(), "delete") {
        tracing::warn!(target: "berth::audit", source = %visitor.source, caller = visitor.caller.subject(), %repo, %tag, "refused a tag delete from the UI");
        return Err(Failure::refused(format!(
            "You may not delete tags of {repo}: that takes admin access to the repository."
        )));
    }
    let reference = Reference::Tag(tag.clone());
    ui.reg
        .delete_manifest(repo, &reference, visitor.origin(&ui.reg))
        .await?;
    tracing::info!(target: "berth::audit", source = %visitor.source, caller = visitor.caller.subject(), %repo, %tag, "tag deleted from the UI");
    Ok(back_to(repo, "tag-deleted"))
}

async fn visibility(ui: &Ui, visitor: &Visitor, repo: &RepoName, form: &Form) -> PageResult {
    readable(visitor, repo)?;
    let public = form.need("public")? == "true";
    let change = AccessChange::SetPublic {
        repository: repo.to_string(),
        public,
    };
    super::access::apply(ui, visitor, change).await?;
    Ok(back_to(repo, "visibility"))
}

/// 303 to the repository page, showing `notice`.
fn back_to(repo: &RepoName, notice: &str) -> Response {
    Redirect::to(&format!(
        "{}?done={notice}",
        layout::repo_path(repo.as_str())
    ))
    .into_response()
}

/// One tag row's figures.
struct Row {
    entry: TagEntry,
    size: Option<u64>,
    platforms: Vec<String>,
}

async fn render(ui: &Ui, visitor: &Visitor, repo: &RepoName, query: &Query) -> PageResult {
    readable(visitor, repo)?;
    let (entries, more) = ui
        .reg
        .tag_entries(repo, query.after.as_deref(), PAGE)
        .await?;
    let mut rows = Vec::with_capacity(entries.len());
    for entry in entries {
        let (size, platforms) = figures(ui, repo, &entry).await?;
        rows.push(Row {
            entry,
            size,
            platforms,
        });
    }
    let name = repo.as_str();
    let may_delete = visitor.may(name, "delete");
    let next = rows.last().filter(|_| more).map(|r| {
        form_urlencoded::Serializer::new(format!("{}?", layout::repo_path(name)))
            .append_pair("after", &r.entry.tag)
            .finish()
    });
    let content = html! {
        h1 { (name) }
        (layout::pull_command(&format!("docker pull {}/{name}", visitor.host)))
        @if visitor.signin_on() && may_delete {
            (visibility_form(visitor, name))
        }
        @if rows.is_empty() {
            p #empty .muted { "This repository has no tags." }
        } @else {
            div.scroll {
                table #tags {
                    caption { "Tags" }
                    thead { tr {
                        th scope="col" { "Tag" } th scope="col" { "Digest" } th scope="col" { "Size" }
                        th scope="col" { "Pushed" } th scope="col" { "Platforms" }
                        @if may_delete { th scope="col" { span.visually-hidden { "Actions" } } }
                    } }
                    tbody {
                        @for row in &rows { (tag_row(visitor, name, row, may_delete)) }
                    }
                }
            }
        }
        @if let Some(next) = next {
            nav.pager aria-label="Pages" { a #next rel="next" href=(next) { "Next page" } }
        }
    };
    let frame = Frame {
        notice: query.done.as_deref(),
        ..Frame::titled(name)
    };
    Ok(layout::page(Some(visitor), frame, content).into_response())
}

/// A tag's size and platforms: an image's own; an index's, summed and
/// gathered from its children.
async fn figures(
    ui: &Ui,
    repo: &RepoName,
    entry: &TagEntry,
) -> Result<(Option<u64>, Vec<String>), Failure> {
    let Some(record) = &entry.manifest else {
        return Ok((None, Vec::new()));
    };
    let doc = Doc::of(record);
    Ok(match &doc {
        Doc::Index(children) => {
            let digests: Vec<_> = children.iter().map(|c| c.digest.clone()).collect();
            let size = ui
                .reg
                .child_records(repo, &digests)?
                .iter()
                .flatten()
                .filter_map(|r| Doc::of(r).image_size())
                .sum();
            (
                Some(size),
                crate::meta::events::index_platforms(&record.body),
            )
        }
        Doc::Image { .. } => {
            let platform = ui.reg.image_platform(repo, &entry.digest).await;
            (doc.image_size(), platform.into_iter().collect())
        }
        Doc::Other => (None, Vec::new()),
    })
}

fn tag_row(visitor: &Visitor, repo: &str, row: &Row, may_delete: bool) -> Markup {
    let tag = &row.entry.tag;
    html! {
        tr.tag data-tag=(tag) {
            th scope="row" { a.tag-link href=(layout::image_path(repo, tag)) { (tag) } }
            td { (layout::digest(&row.entry.digest)) }
            td.size { @if let Some(s) = row.size { (layout::size(s)) } }
            td { (layout::time(row.entry.pushed)) }
            td.platforms { (row.platforms.join(", ")) }
            @if may_delete {
                td {
                    form.delete-tag method="post" action={ (layout::image_path(repo, tag)) "/delete" } {
                        (layout::csrf(visitor))
                        button.delete type="submit" aria-label={ "Delete tag " (tag) } { "Delete" }
                    }
                }
            }
        }
    }
}

fn visibility_form(visitor: &Visitor, repo: &str) -> Markup {
    let public = visitor
        .policy()
        .is_some_and(|p| p.state().public.contains(repo));
    html! {
        form #visibility .inline method="post" action={ (layout::repo_path(repo)) "/-/visibility" } {
            (layout::csrf(visitor))
            span { "This repository is " strong { @if public { "public" } @else { "private" } } ". " }
            input type="hidden" name="public" value=(if public { "false" } else { "true" });
            button #visibility-toggle type="submit" {
                @if public { "Make private" } @else { "Make public" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_repositories_images_and_actions() {
        let page = |p| target(p, false);
        let action = |p| target(p, true);
        assert!(
            matches!(page("acme/app"), Some(Target::Repository(r)) if r.as_str() == "acme/app")
        );
        assert!(matches!(page("acme/app/"), Some(Target::Repository(_))));
        assert!(
            matches!(page("acme/app/-/v1"), Some(Target::Image(r, Reference::Tag(t))) if r.as_str() == "acme/app" && t.as_str() == "v1")
        );
        assert!(matches!(
            page("acme/app/-/visibility"),
            Some(Target::Image(..))
        ));
        let digest = format!("acme/app/-/sha256:{}", "a".repeat(64));
        assert!(matches!(
            page(&digest),
            Some(Target::Image(_, Reference::Digest(_)))
        ));
        assert!(
            matches!(action("acme/app/-/v1/delete"), Some(Target::DeleteTag(_, t)) if t.as_str() == "v1")
        );
        assert!(matches!(
            action("acme/app/-/visibility"),
            Some(Target::Visibility(_))
        ));
        for bad in [
            "<script>",
            "Acme/App",
            "acme/app/-/",
            "acme/app/-/a/b",
            "-/v1",
            "",
        ] {
            assert!(page(bad).is_none(), "{bad}");
        }
        for bad in [
            "acme/app",
            "acme/app/-/v1",
            "acme/app/-/v1/remove",
            "acme/app/-/a/b/delete",
        ] {
            assert!(action(bad).is_none(), "{bad}");
        }
    }
}
