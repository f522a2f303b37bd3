//! `/healthz` and `/readyz`: cheap probes for orchestrators. They need no
//! credentials and stay out of the access log, which they would flood.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::cluster::NotReady;
use crate::registry::Registry;

/// The process is up and serving HTTP.
pub async fn alive() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// The node has joined the cluster and caught up, so it can serve. With
/// `?joining`, a node that is not a member yet also passes: Swarm lists a
/// task in the DNS its peers discover it by only once its health check
/// passes, so a check that waited for membership would never let a cluster
/// form. A member that is behind still fails.
pub async fn ready(State(reg): State<Arc<Registry>>, RawQuery(query): RawQuery) -> Response {
    let joining_ok = query.is_some_and(|q| q.split('&').any(|p| p == "joining"));
    match reg.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(NotReady::Joining) if joining_ok => (StatusCode::OK, "joining\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
