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

pub async fn scrape(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    Extension(access): Extension<Access>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    if !access.public {
        let actor = actor(&reg, &authn, source.ip(), &headers).await?;
        actor.require(
            &authn,
            source.ip(),
            "read the metrics (administrators only, unless --metrics-public)",
            |p, c| p.is_admin(c),
        )?;
    }
    let body = reg.metrics().encode();
    Ok((
        [(http::header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        body,
    )
        .into_response())
}
