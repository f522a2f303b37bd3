//! `/healthz` and `/readyz`: cheap probes for orchestrators. They need no
//! credentials and stay out of the access log, which they would flood.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::registry::Registry;

/// The process is up and serving HTTP.
pub async fn alive() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

/// The node has joined the cluster and caught up, so it can serve.
pub async fn ready(State(reg): State<Arc<Registry>>) -> Response {
    match reg.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(http::header::RETRY_AFTER, "1")],
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}
