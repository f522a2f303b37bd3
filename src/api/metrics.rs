//! `GET /metrics`: the node's Prometheus metrics. Open to anyone with
//! `--metrics-public`; otherwise, with sign-in on, to administrators and the
//! cluster secret only.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http::HeaderMap;

use super::access::actor;
use super::authn::Authn;
use super::ClientAddr;
use crate::registry::{Error, Registry};

/// Who may scrape.
#[derive(Clone, Copy)]
pub struct Access {
    pub public: bool,
}

/// The router of `--metrics-listen`: `/metrics` only, open to anyone.
pub fn open_router(reg: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(open_scrape))
        .with_state(reg)
}

async fn open_scrape(State(reg): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    exposition(&reg, &headers)
}

/// The exposition in the format the client asked for: Prometheus asks for
/// OpenMetrics; curl and promtool get the older text format.
fn exposition(reg: &Registry, headers: &HeaderMap) -> Response {
    let body = reg.metrics().encode();
    let openmetrics = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (content_type, body) = match openmetrics {
        true => (crate::metrics::OPENMETRICS, body),
        false => (crate::metrics::TEXT, crate::metrics::to_text(&body)),
    };
    ([(http::header::CONTENT_TYPE, content_type)], body).into_response()
}

pub async fn scrape(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    Extension(access): Extension<Access>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if !reg.metrics().enabled() {
        return Err(Error::RouteUnknown);
    }
    if !access.public {
        let actor = actor(&reg, &authn, source.ip(), &headers).await?;
        actor.require(
            &authn,
            source.ip(),
            "read the metrics (administrators only, unless --metrics-public)",
            |p, c| p.is_admin(c),
        )?;
    }
    Ok(exposition(&reg, &headers))
}
