//! `GET /_berth/mirrors`: each pull-through mirror's cached content and
//! this node's hits, misses, upstream bytes and last upstream error.
//! `berth mirror status` calls it. Administrators only (or the cluster
//! secret); with sign-in off, anyone.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::HeaderMap;

use super::access::administrator_only;
use super::authn::Authn;
use super::ClientAddr;
use crate::registry::{Error, Registry};

pub async fn status(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    administrator_only(
        &reg,
        &authn,
        source.ip(),
        &headers,
        "see the mirrors' status (administrators only)",
    )
    .await?;
    Ok(Json(reg.mirror_status().await?).into_response())
}
