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

use super::access::administrator_only;
use super::authn::Authn;
use super::ClientAddr;
use crate::gc::RunRequest;
use crate::registry::{Error, Registry};

/// What the refusal says a caller may not do.
const COLLECT: &str = "run garbage collection (administrators only)";

pub async fn run(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let actor = administrator_only(&reg, &authn, source.ip(), &headers, COLLECT).await?;
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
    administrator_only(&reg, &authn, source.ip(), &headers, COLLECT).await?;
    Ok(Json(reg.gc_status().await?).into_response())
}
