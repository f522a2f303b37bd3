//! The frame every page shares (header, navigation, notices) and the small
//! pieces pages repeat: sizes, times, digests, pull commands and forms.
//! maud escapes every value it writes, so names, tags and annotations are
//! text, never markup.

use axum::response::Html;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::Visitor;
use crate::oci::Digest;

/// Messages a redirect may ask a page to show, by code: a page never echoes
/// text from the URL.
const NOTICES: &[(&str, &str)] = &[
    ("tag-deleted", "The tag was deleted."),
    ("visibility", "The repository's visibility was changed."),
    ("access", "The change was made."),
    ("signed-out", "You are signed out."),
];

/// What a page puts in the frame.
pub struct Frame<'a> {
    pub title: &'a str,
    /// Seconds after which the browser reloads the page.
    pub refresh: Option<u32>,
    /// A notice code from [`NOTICES`].
    pub notice: Option<&'a str>,
}

impl<'a> Frame<'a> {
    pub fn titled(title: &'a str) -> Frame<'a> {
        Frame {
            title,
            refresh: None,
            notice: None,
        }
    }
}

/// A whole page, ready to send.
pub fn page(visitor: Option<&Visitor>, frame: Frame<'_>, content: Markup) -> Html<String> {
    let notice = frame
        .notice
        .and_then(|code| NOTICES.iter().find(|(c, _)| *c == code))
        .map(|(_, text)| *text);
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = frame.refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (frame.title) " · berth" }
                link rel="stylesheet" href="/ui/static/berth.css";
                script src="/ui/static/berth.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui/" { "berth" }
                    nav aria-label="Main" {
                        ul {
                            li { a href="/ui/" { "Repositories" } }
                            li { a href="/ui/cluster" { "Cluster" } }
                            @if visitor.is_some_and(|v| v.signin_on() && v.name().is_some()) {
                                li { a href="/ui/access" { "Access" } }
                            }
                        }
                    }
                    @if let Some(v) = visitor {
                        (account(v))
                    }
                }
                main #main {
                    @if let Some(text) = notice {
                        p #notice .notice role="status" { (text) }
                    }
                    (content)
                }
            }
        }
    };
    Html(markup.into_string())
}

/// The header's account corner: who is signed in, or a sign-in link.
fn account(v: &Visitor) -> Markup {
    html! {
        div.account {
            @if let Some(name) = v.name() {
                span { "Signed in as " strong #whoami { (name) } }
                form #signout-form method="post" action="/ui/signout" {
                    (csrf(v))
                    button #signout .link type="submit" { "Sign out" }
                }
            } @else if v.signin_on() {
                a #signin-link href="/ui/signin" { "Sign in" }
            }
        }
    }
}

/// The page of a failure.
pub fn failure(visitor: Option<&Visitor>, message: &str) -> Html<String> {
    page(
        visitor,
        Frame::titled("Not shown"),
        html! {
            h1 { "Not shown" }
            p #error .error role="alert" { (message) }
            @if visitor.is_some_and(|v| v.signin_on() && v.name().is_none()) {
                p { "Private repositories show after you " a href="/ui/signin" { "sign in" } "." }
            }
            p { a href="/ui/" { "Back to the repositories" } }
        },
    )
}

/// The hidden field every form carries.
pub fn csrf(v: &Visitor) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf()); }
}

/// A byte count for people: `12.3 MiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).to_string()
}

/// A point in time, machine-readable in `datetime`.
pub fn time(secs: u64) -> Markup {
    match chrono::DateTime::from_timestamp(secs as i64, 0) {
        Some(t) if secs > 0 => html! {
            time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M UTC")) }
        },
        _ => html! { span.muted { "unknown" } },
    }
}

/// A digest shortened for reading: the algorithm and 12 hex digits.
pub fn short_digest(d: &Digest) -> String {
    let text = d.as_str();
    match text.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => text.to_owned(),
    }
}

/// A digest shortened for reading, whole in its title.
pub fn digest(d: &Digest) -> Markup {
    html! { code.digest title=(d.as_str()) { (short_digest(d)) } }
}

/// The path of a repository's page.
pub fn repo_path(repo: &str) -> String {
    format!("/ui/r/{repo}")
}

/// The path of an image's (or index's) page.
pub fn image_path(repo: &str, reference: &str) -> String {
    format!("/ui/r/{repo}/-/{reference}")
}

/// A pull command with a button that copies it. Without JavaScript the
/// field is still there to select and copy.
pub fn pull_command(command: &str) -> Markup {
    html! {
        div.pull {
            label for="pull-command" { "Pull command" }
            div.copy {
                input #pull-command type="text" readonly value=(command) spellcheck="false";
                button #copy-pull type="button" data-copy="pull-command" { "Copy" }
                span #copy-status role="status" aria-live="polite" {}
            }
        }
    }
}

/// A definition list of name and value pairs, skipping empty values.
pub fn facts<'a>(id: Option<&str>, rows: impl IntoIterator<Item = (&'a str, Markup)>) -> Markup {
    html! {
        dl.facts id=[id] {
            @for (name, value) in rows {
                @if !value.0.is_empty() {
                    dt { (name) }
                    dd { (value) }
                }
            }
        }
    }
}

/// Text as markup, for [`facts`] rows.
pub fn text(s: impl AsRef<str>) -> Markup {
    html! { (s.as_ref()) }
}

/// Nothing, for an absent [`facts`] row.
pub fn nothing() -> Markup {
    PreEscaped(String::new())
}
