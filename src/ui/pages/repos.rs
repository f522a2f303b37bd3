//! The repositories a visitor may read, searched by name, 50 a page.

use axum::extract::{Query as Q, State};
use axum::response::{IntoResponse, Response};
use maud::html;

use super::Query;
use crate::ui::layout::{self, Frame};
use crate::ui::{PageResult, Ui, Visitor};

const PAGE: usize = 50;
/// Longest search term taken; names are at most 255 characters anyway.
const MAX_QUERY: usize = 255;

pub async fn list(State(ui): State<Ui>, visitor: Visitor, Q(query): Q<Query>) -> Response {
    visitor.respond(render(&ui, &visitor, &query).await)
}

async fn render(ui: &Ui, visitor: &Visitor, query: &Query) -> PageResult {
    let q: String = query
        .q
        .as_deref()
        .unwrap_or("")
        .trim()
        .chars()
        .take(MAX_QUERY)
        .collect::<String>()
        .to_lowercase();
    let page = ui
        .reg
        .catalog(query.after.as_deref(), PAGE, |name| {
            name.contains(q.as_str()) && visitor.may(name, "pull")
        })
        .await?;
    let public = |name: &str| {
        visitor
            .policy()
            .is_some_and(|p| p.state().public.contains(name))
    };
    let next = page.items.last().filter(|_| page.more).map(|last| {
        let mut url = form_urlencoded::Serializer::new(String::from("/ui/?"));
        if !q.is_empty() {
            url.append_pair("q", &q);
        }
        url.append_pair("after", last);
        url.finish()
    });
    let content = html! {
        h1 { "Repositories" }
        form #search .search method="get" action="/ui/" role="search" {
            label for="q" { "Search repositories" }
            input #q type="search" name="q" value=(q) placeholder="name contains…" autocomplete="off";
            button type="submit" { "Search" }
        }
        @if page.items.is_empty() {
            p #empty .muted {
                @if q.is_empty() { "No repositories to show." } @else { "No repository name contains “" (q) "”." }
                @if visitor.signin_on() && visitor.name().is_none() {
                    " Private repositories show after you " a href="/ui/signin" { "sign in" } "."
                }
            }
        } @else {
            ul #repositories .cards {
                @for name in &page.items {
                    li.repository {
                        a.repo href=(layout::repo_path(name)) { (name) }
                        @if visitor.signin_on() {
                            @if public(name) {
                                span.badge.public { "public" }
                            } @else {
                                span.badge { "private" }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(next) = next {
            nav.pager aria-label="Pages" {
                a #next rel="next" href=(next) { "Next page" }
            }
        }
    };
    let frame = Frame {
        notice: query.done.as_deref(),
        ..Frame::titled("Repositories")
    };
    Ok(layout::page(Some(visitor), frame, content).into_response())
}
