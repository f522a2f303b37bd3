//! Cluster administration on the client port, for `berth cluster …`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{HeaderMap, StatusCode};

use crate::registry::{Error, Registry};

/// The header carrying the cluster secret on administrative calls.
pub const SECRET_HEADER: &str = "x-berth-cluster-secret";

pub async fn status(State(reg): State<Arc<Registry>>) -> Response {
    Json(reg.cluster_status()).into_response()
}

pub async fn remove(
    State(reg): State<Arc<Registry>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Result<StatusCode, Error> {
    let secret = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    reg.remove_node(id, secret).await?;
    Ok(StatusCode::NO_CONTENT)
}
