//! Teams, members, grants and robots, for those who administer them: what
//! `berth team|grant|robot` do, as forms. What a visitor sees and may change
//! is what the admin API would show and allow them
//! ([`crate::auth::Policy::visible_to`], [`crate::auth::Policy::may_change`]).

use axum::body::Body;
use axum::extract::{Query as Q, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::StatusCode;
use maud::{html, Markup};

use super::Query;
use crate::meta::access::{AccessChange, AccessState, Grantee, Level, Resource, Robot};
use crate::storage::now_secs;
use crate::ui::layout::{self, csrf, Frame};
use crate::ui::visitor::Form;
use crate::ui::{Failure, Ui, Visitor};

/// Longest a robot made here may live.
const MAX_ROBOT_DAYS: u64 = 3650;

pub async fn show(State(ui): State<Ui>, visitor: Visitor, Q(query): Q<Query>) -> Response {
    let result = async {
        let state = visible(&ui, &visitor).await?;
        let content = overview(&visitor, &state);
        let frame = Frame {
            notice: query.done.as_deref(),
            ..Frame::titled("Access")
        };
        Ok(layout::page(Some(&visitor), frame, content).into_response())
    };
    visitor.respond(result.await)
}

pub async fn change(State(ui): State<Ui>, visitor: Visitor, body: Body) -> Response {
    let result = async {
        let form = Form::read(body).await?;
        visitor.check_csrf(&form, &ui.keys)?;
        signed_in(&visitor)?;
        let mut change = parse(&form)?;
        let robot = match &mut change {
            AccessChange::PutRobot { name, robot } => {
                Some((name.clone(), robot.new_secret(now_secs())))
            }
            _ => None,
        };
        apply(&ui, &visitor, change).await?;
        Ok(match robot {
            // Shown once, never stored: on the page itself, not a redirect.
            Some((name, secret)) => robot_made(&visitor, &name, &secret),
            None => Redirect::to("/ui/access?done=access").into_response(),
        })
    };
    visitor.respond(result.await)
}

/// Makes an access change for the visitor if the rules let them, with the
/// same audit line as the admin API.
pub async fn apply(ui: &Ui, visitor: &Visitor, change: AccessChange) -> Result<(), Failure> {
    let describe = change.describe();
    crate::api::access::Actor::Caller(visitor.caller.clone()).require(
        &ui.authn,
        visitor.source.ip(),
        &describe,
        |p, c| p.may_change(c, &change),
    )?;
    ui.reg
        .change_access(change, visitor.origin(&ui.reg))
        .await?;
    tracing::info!(target: "berth::audit", source = %visitor.source, actor = visitor.caller.subject(), change = describe, "access changed from the UI");
    Ok(())
}

/// The rules a signed-in visitor is judged by; 401 for anyone else.
fn signed_in(visitor: &Visitor) -> Result<&crate::auth::Policy, Failure> {
    match (visitor.policy(), visitor.name()) {
        (Some(policy), Some(_)) => Ok(policy),
        _ => Err(Failure::new(
            StatusCode::UNAUTHORIZED,
            "Sign in to manage teams, grants and robots.",
        )),
    }
}

/// The part of the access state the signed-in visitor may see.
async fn visible(ui: &Ui, visitor: &Visitor) -> Result<AccessState, Failure> {
    let policy = signed_in(visitor)?;
    let state = ui.reg.access().await?;
    Ok(policy.visible_to(&visitor.caller, state))
}

/// The change a form asks for.
fn parse(form: &Form) -> Result<AccessChange, Failure> {
    let bad = |m: String| Failure::new(StatusCode::BAD_REQUEST, m);
    let field = |name| form.need(name).map(str::to_owned);
    let level = |name| -> Result<Level, Failure> { form.need(name)?.parse().map_err(bad) };
    Ok(match form.need("op")? {
        "put-team" => AccessChange::PutTeam {
            org: field("org")?,
            team: field("team")?,
        },
        "delete-team" => AccessChange::DeleteTeam {
            org: field("org")?,
            team: field("team")?,
        },
        "add-member" => AccessChange::AddMember {
            org: field("org")?,
            team: field("team")?,
            user: field("user")?,
        },
        "remove-member" => AccessChange::RemoveMember {
            org: field("org")?,
            team: field("team")?,
            user: field("user")?,
        },
        "grant" => AccessChange::Grant {
            resource: Resource::from_scope(form.need("resource")?),
            grantee: grantee(form.need("grantee")?)?,
            level: level("level")?,
        },
        "revoke" => AccessChange::Revoke {
            resource: Resource::from_scope(form.need("resource")?),
            grantee: grantee(form.need("grantee")?)?,
        },
        "put-robot" => {
            let days: u64 = form
                .need("days")?
                .parse()
                .ok()
                .filter(|d| (1..=MAX_ROBOT_DAYS).contains(d))
                .ok_or_else(|| bad(format!("Days must be a number from 1 to {MAX_ROBOT_DAYS}.")))?;
            let repositories = form
                .get("repositories")
                .unwrap_or("")
                .split([',', ' '])
                .filter(|r| !r.is_empty())
                .map(str::to_owned)
                .collect();
            AccessChange::PutRobot {
                name: field("name")?,
                robot: Robot {
                    secret_sha256: [0; 32],
                    repositories,
                    level: level("level")?,
                    expires: now_secs() + days * 86_400,
                    created: 0,
                },
            }
        }
        "delete-robot" => AccessChange::DeleteRobot {
            name: field("name")?,
        },
        other => return Err(bad(format!("{other:?} is not a change this page makes."))),
    })
}

/// `user:NAME` or `team:ORG/TEAM`, as the forms write grantees.
fn grantee(text: &str) -> Result<Grantee, Failure> {
    let bad = || {
        Failure::new(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a grantee: write user:NAME or team:ORG/TEAM."),
        )
    };
    match text.split_once(':').ok_or_else(bad)? {
        ("user", name) if !name.is_empty() => Ok(Grantee::User(name.to_owned())),
        ("team", team) => match team.split_once('/') {
            Some((org, team)) if !org.is_empty() && !team.is_empty() => Ok(Grantee::Team {
                org: org.to_owned(),
                team: team.to_owned(),
            }),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

fn grantee_text(g: &Grantee) -> String {
    match g {
        Grantee::User(u) => format!("user:{u}"),
        Grantee::Team { org, team } => format!("team:{org}/{team}"),
    }
}

fn resource_text(r: &Resource) -> String {
    match r {
        Resource::Repository(r) => r.clone(),
        Resource::Namespace(n) => format!("{n}/*"),
    }
}

/// A one-button form making one change, its fields hidden.
fn button(v: &Visitor, label: &str, aria: &str, fields: &[(&str, &str)]) -> Markup {
    html! {
        form.inline method="post" action="/ui/access" {
            (csrf(v))
            @for (name, value) in fields { input type="hidden" name=(name) value=(value); }
            button.delete type="submit" aria-label=(aria) { (label) }
        }
    }
}

fn overview(v: &Visitor, state: &AccessState) -> Markup {
    let empty = state.orgs.is_empty() && state.grants.is_empty() && state.robots.is_empty();
    html! {
        h1 { "Access" }
        @if empty {
            p #empty .muted { "You administer no organization, grant or robot. Administrators and organization owners manage them here." }
        }
        @for (org, o) in &state.orgs {
            section.card aria-label={ "Organization " (org) } {
                h2 { "Organization " (org) }
                @for (team, members) in &o.teams {
                    h3 { "Team " (team) }
                    ul.plain {
                        @for user in members {
                            li { (user) " " (button(v, "Remove", &format!("Remove {user} from {org}/{team}"),
                                &[("op", "remove-member"), ("org", org), ("team", team), ("user", user)])) }
                        }
                    }
                    form.inline method="post" action="/ui/access" {
                        (csrf(v))
                        input type="hidden" name="op" value="add-member";
                        input type="hidden" name="org" value=(org);
                        input type="hidden" name="team" value=(team);
                        label { "Add member " input name="user" type="text" required; }
                        button type="submit" { "Add" }
                    }
                    @if team != crate::meta::access::OWNERS {
                        (button(v, "Delete team", &format!("Delete team {org}/{team}"), &[("op", "delete-team"), ("org", org), ("team", team)]))
                    }
                }
                form.inline method="post" action="/ui/access" {
                    (csrf(v))
                    input type="hidden" name="op" value="put-team";
                    input type="hidden" name="org" value=(org);
                    label { "New team " input name="team" type="text" required; }
                    button type="submit" { "Create" }
                }
            }
        }
        section.card aria-labelledby="grants-title" {
            h2 #grants-title { "Grants" }
            div.scroll { table #grants {
                thead { tr { th scope="col" { "Repository or namespace" } th scope="col" { "Grantee" } th scope="col" { "Level" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for (resource, grants) in &state.grants {
                        @for (grantee, level) in grants {
                            @let (r, g) = (resource_text(resource), grantee_text(grantee));
                            tr {
                                td { (r) } td { (g) } td { (level) }
                                td { (button(v, "Revoke", &format!("Revoke {g} on {r}"), &[("op", "revoke"), ("resource", &r), ("grantee", &g)])) }
                            }
                        }
                    }
                }
            } }
            form.grid method="post" action="/ui/access" {
                (csrf(v))
                input type="hidden" name="op" value="grant";
                label { "Repository, or namespace/*" input name="resource" type="text" required placeholder="acme/app or acme/*"; }
                label { "Grantee" input name="grantee" type="text" required placeholder="user:alice or team:acme/dev"; }
                label { "Level" select name="level" { option { "read" } option { "write" } option { "admin" } } }
                button type="submit" { "Grant" }
            }
        }
        section.card aria-labelledby="robots-title" {
            h2 #robots-title { "Robots" }
            div.scroll { table #robots {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Repositories" } th scope="col" { "Level" } th scope="col" { "Expires" } th scope="col" { span.visually-hidden { "Actions" } } } }
                tbody {
                    @for (name, r) in &state.robots {
                        tr {
                            td { (name) }
                            td { @if r.repositories.is_empty() { "whole namespace" } @else { (r.repositories.join(", ")) } }
                            td { (r.level) }
                            td { (layout::time(r.expires)) }
                            td { (button(v, "Delete", &format!("Delete robot {name}"), &[("op", "delete-robot"), ("name", name)])) }
                        }
                    }
                }
            } }
            form.grid method="post" action="/ui/access" {
                (csrf(v))
                input type="hidden" name="op" value="put-robot";
                label { "Name (namespace+name)" input name="name" type="text" required placeholder="acme+ci"; }
                label { "Repositories (empty: whole namespace)" input name="repositories" type="text" placeholder="acme/app, acme/web"; }
                label { "Level" select name="level" { option { "read" } option { "write" } } }
                label { "Days valid" input name="days" type="number" min="1" max=(MAX_ROBOT_DAYS) value="90" required; }
                button type="submit" { "Create robot" }
            }
        }
    }
}

/// The one page that shows a new robot's secret.
fn robot_made(v: &Visitor, name: &str, secret: &str) -> Response {
    let content = html! {
        h1 { "Robot " (name) }
        p #notice .notice role="status" { "The robot was created. Copy its secret now: it is not shown again." }
        div.pull {
            label for="robot-secret" { "Secret" }
            div.copy {
                input #robot-secret type="text" readonly value=(secret) spellcheck="false";
                button type="button" data-copy="robot-secret" { "Copy" }
                span role="status" aria-live="polite" {}
            }
        }
        p { code { "docker login -u " (name) } " and paste the secret as the password." }
        p { a href="/ui/access" { "Back to access" } }
    };
    layout::page(Some(v), Frame::titled("Robot created"), content).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grantees_read_as_the_forms_write_them() {
        assert_eq!(
            grantee("user:alice").unwrap(),
            Grantee::User("alice".into())
        );
        assert_eq!(
            grantee("team:acme/dev").unwrap(),
            Grantee::Team {
                org: "acme".into(),
                team: "dev".into()
            }
        );
        for bad in ["alice", "user:", "team:acme", "team:/dev", "group:x"] {
            assert!(grantee(bad).is_err(), "{bad}");
        }
        let g = Grantee::Team {
            org: "acme".into(),
            team: "dev".into(),
        };
        assert_eq!(grantee(&grantee_text(&g)).unwrap(), g);
    }
}
