//! The admin API for webhooks and rebuild triggers:
//! - `GET /_berth/webhooks` lists endpoints with their delivery status;
//! - `POST /_berth/webhooks` adds or replaces one ([`EndpointSpec`]);
//! - `DELETE /_berth/webhooks/{id}` removes one;
//! - `POST /_berth/webhooks/{id}/test` sends it a test event now;
//! - `GET /_berth/webhooks/{id}/deliveries` shows attempts and parked events;
//! - `POST /_berth/webhooks/{id}/redeliver` queues parked events again;
//! - `GET /_berth/dependents?repository=&reference=` lists the images built
//!   on what a tag names;
//! - `POST /_berth/webhooks/callback/{event}` accepts the call a Docker Hub
//!   integration makes to `callback_url`, and does nothing with it.
//!
//! Administrators manage every endpoint; an organization's owners (or a
//! user, for their own namespace) endpoints whose repositories all lie in
//! their namespace; a repository's admins endpoints on that repository.
//! An endpoint for every repository, or one allowed to reach internal
//! addresses, is an administrator's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderMap, Method, StatusCode};
use serde::Deserialize;

use super::access::{actor, Actor};
use super::authn::Authn;
use super::ClientAddr;
use crate::auth::policy::{Caller, Policy};
use crate::events::endpoint::EndpointSpec;
use crate::meta::events::EventId;
use crate::meta::webhooks::{Endpoint, Source};
use crate::oci::{Reference, RepoName};
use crate::registry::{Error, Registry};

/// Whether `caller` may manage `endpoint`.
fn may_manage(p: &Policy, c: &Caller, endpoint: &Endpoint) -> bool {
    if p.is_admin(c) {
        return true;
    }
    !endpoint.allow_internal
        && !endpoint.repositories.is_empty()
        && endpoint.repositories.iter().all(|r| p.administers(c, r))
}

/// Refuses (and audits) an actor who may not manage `endpoint`.
fn require(
    actor: &Actor,
    authn: &Authn,
    source: std::net::IpAddr,
    what: &str,
    endpoint: &Endpoint,
) -> Result<(), Error> {
    actor.require(authn, source, what, |p, c| may_manage(p, c, endpoint))
}

/// Who is asking, and the endpoint `id` if they may manage it.
async fn managed(
    reg: &Registry,
    authn: &Authn,
    source: std::net::SocketAddr,
    headers: &HeaderMap,
    id: &str,
    what: &str,
) -> Result<(Actor, Endpoint), Error> {
    let actor = actor(reg, authn, source.ip(), headers).await?;
    let endpoint = reg.webhook(id).await?;
    require(
        &actor,
        authn,
        source.ip(),
        &format!("{what} webhook {id}"),
        &endpoint,
    )?;
    Ok((actor, endpoint))
}

pub async fn list(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let actor = actor(&reg, &authn, source.ip(), &headers).await?;
    let mut all = reg.webhooks().await?;
    if let Actor::Caller(caller) = &actor {
        // Only what the caller could manage.
        let policy = authn.policy()?;
        all.retain(|w| {
            policy
                .as_ref()
                .is_some_and(|p| may_manage(p, caller, &w.endpoint))
        });
    }
    Ok(Json(all).into_response())
}

pub async fn put(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let body = super::small_body(body).await?;
    let spec: EndpointSpec = serde_json::from_slice(&body)
        .map_err(|e| Error::RequestInvalid(format!("not a webhook endpoint: {e}")))?;
    let actor = actor(&reg, &authn, source.ip(), &headers).await?;
    let by = actor.name();
    let endpoint = spec
        .build(Source::Api { by: by.clone() }, crate::storage::now_secs())
        .map_err(Error::RequestInvalid)?;
    let what = format!("manage webhook {}", endpoint.id);
    require(&actor, &authn, source.ip(), &what, &endpoint)?;
    // Replacing an endpoint needs the right to manage the old one too.
    if let Ok(old) = reg.webhook(&endpoint.id).await {
        require(&actor, &authn, source.ip(), &what, &old)?;
    }
    let (id, url) = (endpoint.id.clone(), endpoint.url.clone());
    let origin = actor.origin(&reg, source, &Method::POST, &headers);
    reg.put_webhook(endpoint.clone(), origin).await?;
    tracing::info!(target: "berth::audit", %source, actor = %by, webhook = %id, %url, "webhook endpoint set");
    Ok((StatusCode::CREATED, Json(endpoint.redacted())).into_response())
}

pub async fn remove(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (actor, _) = managed(&reg, &authn, source, &headers, &id, "remove").await?;
    let by = actor.name();
    let origin = actor.origin(&reg, source, &Method::DELETE, &headers);
    reg.remove_webhook(&id, origin).await?;
    tracing::info!(target: "berth::audit", %source, actor = %by, webhook = %id, "webhook endpoint removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn test(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let (actor, _) = managed(&reg, &authn, source, &headers, &id, "test").await?;
    let origin = actor.origin(&reg, source, &Method::POST, &headers);
    Ok(Json(reg.test_webhook(&id, origin).await?).into_response())
}

pub async fn deliveries(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    managed(&reg, &authn, source, &headers, &id, "see deliveries of").await?;
    Ok(Json(reg.webhook_deliveries(&id).await?).into_response())
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverRequest {
    /// Parked event ids; all parked events when empty.
    #[serde(default)]
    events: Vec<String>,
}

pub async fn redeliver(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let req: RedeliverRequest = super::optional_json(body, "a redelivery request").await?;
    let events = req
        .events
        .iter()
        .map(|e| e.parse::<EventId>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::RequestInvalid)?;
    let (actor, _) = managed(&reg, &authn, source, &headers, &id, "redeliver to").await?;
    let by = actor.name();
    let origin = actor.origin(&reg, source, &Method::POST, &headers);
    let queued = reg.redeliver(&id, events, origin).await?;
    tracing::info!(target: "berth::audit", %source, actor = %by, webhook = %id, queued, "parked webhook events queued again");
    Ok(Json(serde_json::json!({ "queued": queued })).into_response())
}

/// Docker Hub integrations report a build's state to `callback_url`.
pub async fn callback() -> Response {
    Json(serde_json::json!({})).into_response()
}

#[derive(Deserialize)]
pub struct DependentsQuery {
    repository: String,
    reference: String,
}

pub async fn dependents(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    Query(q): Query<DependentsQuery>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let repo: RepoName = q.repository.parse().map_err(Error::NameInvalid)?;
    let reference: Reference = q.reference.parse().map_err(Error::TagInvalid)?;
    let actor = actor(&reg, &authn, source.ip(), &headers).await?;
    let mut found = reg.dependents(&repo, &reference).await?;
    if let Actor::Caller(caller) = &actor {
        // Dependents the caller cannot read stay unseen.
        if let Some(policy) = authn.policy()? {
            found.retain(|d| policy.allows(caller, &d.repository, "pull"));
        }
    }
    Ok(Json(found).into_response())
}
