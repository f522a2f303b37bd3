//! The admin API for garbage collection: `POST /_berth/gc` runs one (or
//! previews it with `{"dry_run": true}`), `GET /_berth/gc` shows the latest
//! run and what each node swept. `berth gc` calls it. Only administrators
//! (or the cluster secret) may use it; with sign-in off, where any client
//! may delete, any client may.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::HeaderMap;

use super::access::actor;
use super::authn::Authn;
use super::ClientAddr;
use crate::gc::RunRequest;
use crate::registry::{Error, Registry};

/// Who may collect: the actor's name for the audit log.
async fn collector(
    reg: &Registry,
    authn: &Authn,
    source: std::net::IpAddr,
    headers: &HeaderMap,
) -> Result<String, Error> {
    let actor = actor(reg, authn, source, headers).await?;
    actor.require(
        authn,
        source,
        "run garbage collection (administrators only)",
        |p, c| p.is_admin(c),
    )?;
    Ok(actor.name())
}

pub async fn run(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let actor = collector(&reg, &authn, source.ip(), &headers).await?;
    let req: RunRequest = super::optional_json(body, "a collection request").await?;
    tracing::info!(target: "berth::audit", %source, %actor, dry_run = req.dry_run, "garbage collection requested");
    Ok(Json(reg.collect_garbage(&req).await?).into_response())
}

pub async fn status(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    collector(&reg, &authn, source.ip(), &headers).await?;
    Ok(Json(reg.gc_status().await?).into_response())
}
