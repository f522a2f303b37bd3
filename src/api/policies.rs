//! The admin API for repository policies:
//! - `GET /_berth/policies` shows the immutable-tag and retention rules;
//! - `POST /_berth/policies` makes one change ([`PolicyChange`]);
//! - `POST /_berth/retention/preview` shows what a rule (or the stored
//!   rules) would remove, changing nothing;
//! - `GET /_berth/quotas` shows each namespace's usage and quota.
//!
//! Administrators change any rule; an organization's owners (or a user, for
//! their own namespace) their namespace's and its repositories'; a
//! repository's admins that repository's. Quotas are set by administrators
//! only. Every change is an audit event.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::access::{actor, Actor};
use super::authn::Authn;
use super::ClientAddr;
use crate::meta::access::Resource;
use crate::meta::policy::{scope_text, PolicyChange};
use crate::meta::retention::RetentionRule;
use crate::registry::{Error, Registry};

pub async fn show(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    actor(&reg, &authn, source.ip(), &headers).await?;
    Ok(Json(reg.policies().await?).into_response())
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
    let describe = change.describe();
    let scope = change.scope();
    actor.require(&authn, source.ip(), &describe, |p, c| {
        match change.needs_admin() {
            true => p.is_admin(c),
            false => p.administers(c, &scope),
        }
    })?;
    reg.change_policy(change).await?;
    let actor = actor.name();
    tracing::info!(target: "berth::audit", %source, %actor, change = describe, "policy changed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A preview request: a rule not yet stored, for `scope`; or, without a
/// rule, the stored rules, over `scope` or everything.
#[derive(Debug, Default, Deserialize)]
struct PreviewRequest {
    scope: Option<String>,
    rule: Option<RetentionRule>,
}

pub async fn preview(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let req: PreviewRequest = super::optional_json(body, "a retention preview").await?;
    let scope = req.scope.as_deref().map(Resource::from_scope);
    let actor = actor(&reg, &authn, source.ip(), &headers).await?;
    let what = match &scope {
        Some(scope) => format!("preview retention in {}", scope_text(scope)),
        None => "preview retention everywhere (administrators only)".to_owned(),
    };
    actor.require(&authn, source.ip(), &what, |p, c| match &scope {
        Some(scope) => p.administers(c, scope),
        None => p.is_admin(c),
    })?;
    let plan = reg
        .retention_preview(scope.as_ref(), req.rule.as_ref())
        .await?;
    Ok(Json(plan).into_response())
}

/// Usage and quotas: every namespace to an administrator, the namespaces
/// they administer to others.
pub async fn quotas(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let actor = actor(&reg, &authn, source.ip(), &headers).await?;
    let mut usage = reg.usage().await?;
    if let Actor::Caller(caller) = &actor {
        let policy = authn.policy()?;
        usage.retain(|u| {
            let namespace = Resource::Namespace(u.namespace.clone());
            policy
                .as_ref()
                .is_some_and(|p| p.administers(caller, &namespace))
        });
    }
    Ok(Json(usage).into_response())
}
