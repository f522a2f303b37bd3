//! The admin API for repository policies: `GET /_berth/policies` shows the
//! immutable-tag rules, `POST /_berth/policies` makes one change
//! ([`PolicyChange`]). Administrators change any rule, an organization's
//! owners (or a user, for their own namespace) their namespace's and its
//! repositories', a repository's admins that repository's. Every change is
//! an audit event.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderMap, StatusCode};
use serde_json::json;

use super::access::{actor, Actor};
use super::authn::Authn;
use super::ClientAddr;
use crate::meta::policy::{scope_text, PolicyChange};
use crate::registry::{Error, Registry};

pub async fn show(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    actor(&reg, &authn, source.ip(), &headers).await?;
    let rules = reg.immutable_rules().await?;
    Ok(Json(json!({ "immutable": rules })).into_response())
}

pub async fn change(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let body = super::small_body(body).await?;
    let change: PolicyChange = serde_json::from_slice(&body)
        .map_err(|e| Error::RequestInvalid(format!("not a policy change: {e}")))?;
    let actor = actor(&reg, &authn, source.ip(), &headers).await?;
    if let Actor::Caller(caller) = &actor {
        let allowed = authn
            .policy()?
            .is_some_and(|p| p.administers(caller, change.scope()));
        if !allowed {
            tracing::warn!(target: "berth::audit", %source, actor = caller.subject(), change = change.describe(), "refused a policy change");
            return Err(Error::Denied(format!(
                "{} does not administer {}",
                caller.subject(),
                scope_text(change.scope())
            )));
        }
    }
    let actor = actor.name();
    let describe = change.describe();
    reg.change_policy(change).await?;
    tracing::info!(target: "berth::audit", %source, %actor, change = describe, "policy changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}
