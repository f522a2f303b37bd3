//! The HTTP API: `/v2/` routes and thin handlers. Each handler parses the
//! request, calls one [`Registry`] operation and writes the response; errors
//! become OCI error JSON in exactly one place ([`error`]).

pub(crate) mod access;
mod access_log;
pub mod admin;
pub mod authn;
pub mod backup;
mod blobs;
pub mod body;
mod error;
mod framing;
mod gc;
pub mod headers;
mod health;
mod listings;
mod manifests;
pub mod metrics;
mod mirrors;
pub(crate) mod origin;
mod params;
mod policies;
pub mod proxy;
pub mod route;
mod token;
mod uploads;
mod webhooks;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures_util::TryStreamExt;
use http::{Method, StatusCode};

use crate::registry::{Error, Registry};
use crate::storage::ByteStream;
use params::Params;
use route::Route;

/// The address a connection comes from, over plain TCP or TLS.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// How the application is built, besides who may do what.
pub struct Options {
    pub body_limits: body::BodyLimits,
    /// `/metrics` without sign-in.
    pub metrics_public: bool,
    /// The web UI's session and CSRF keys.
    pub ui_keys: Arc<crate::ui::session::Keys>,
    /// Whether the node serves HTTPS.
    pub https: bool,
}

/// Builds the application: every `/v2/` route, the web UI and the health
/// probes, behind the access log, the framing checks and the body guard.
/// `forwarder` reaches the other nodes, for upload sessions they own;
/// `authn` decides who may do what.
pub fn router(
    registry: Arc<Registry>,
    forwarder: proxy::Forwarder,
    authn: authn::Authn,
    options: Options,
) -> Router {
    let Options {
        body_limits,
        metrics_public,
        ui_keys,
        https,
    } = options;
    let ui = crate::ui::router(crate::ui::Ui {
        reg: registry.clone(),
        authn: authn.clone(),
        keys: ui_keys,
        https,
    });
    let metrics = registry.metrics().clone();
    let probes = Router::new()
        .route("/healthz", axum::routing::get(health::alive))
        .route("/readyz", axum::routing::get(health::ready))
        .with_state(registry.clone());
    let api = Router::new()
        .route("/_berth/cluster/status", axum::routing::get(admin::status))
        .route(
            "/auth/token",
            axum::routing::get(token::get).post(token::post),
        )
        .route(
            "/_berth/cluster/members/{id}",
            axum::routing::delete(admin::remove),
        )
        .route(
            "/_berth/access",
            axum::routing::get(access::show).post(access::change),
        )
        .route("/_berth/gc", axum::routing::get(gc::status).post(gc::run))
        .route(
            "/_berth/backup/snapshot",
            axum::routing::get(backup::snapshot),
        )
        .route(
            "/_berth/backup/blobs/{digest}",
            axum::routing::get(backup::blob),
        )
        .route(
            "/_berth/policies",
            axum::routing::get(policies::show).post(policies::change),
        )
        .route(
            "/_berth/retention/preview",
            axum::routing::post(policies::preview),
        )
        .route("/_berth/quotas", axum::routing::get(policies::quotas))
        .route("/_berth/mirrors", axum::routing::get(mirrors::status))
        .route(
            "/_berth/webhooks",
            axum::routing::get(webhooks::list).post(webhooks::put),
        )
        .route(
            "/_berth/webhooks/{id}",
            axum::routing::delete(webhooks::remove),
        )
        .route(
            "/_berth/webhooks/{id}/test",
            axum::routing::post(webhooks::test),
        )
        .route(
            "/_berth/webhooks/{id}/deliveries",
            axum::routing::get(webhooks::deliveries),
        )
        .route(
            "/_berth/webhooks/{id}/redeliver",
            axum::routing::post(webhooks::redeliver),
        )
        .route(
            "/_berth/webhooks/callback/{event}",
            axum::routing::post(webhooks::callback),
        )
        .route(
            "/_berth/dependents",
            axum::routing::get(webhooks::dependents),
        )
        .route("/metrics", axum::routing::get(metrics::scrape))
        .fallback(dispatch)
        .with_state(registry)
        .layer(axum::Extension(Arc::new(forwarder)))
        .layer(axum::Extension(metrics::Access {
            public: metrics_public,
        }))
        .layer(axum::Extension(authn));
    // Layers run outside in: the last added sees the request first.
    probes
        .merge(ui)
        .merge(api)
        .layer(axum::middleware::from_fn(body::guard))
        .layer(axum::Extension(body_limits))
        .layer(axum::middleware::from_fn(framing::check))
        .layer(axum::middleware::from_fn(api_version))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            access_log::layer,
        ))
}

/// Every response names the API version, probes and refusals included.
async fn api_version(request: Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(request).await;
    resp.headers_mut().insert(
        headers::API_VERSION,
        http::HeaderValue::from_static("registry/2.0"),
    );
    resp
}

async fn dispatch(
    State(reg): State<Arc<Registry>>,
    axum::Extension(forwarder): axum::Extension<Arc<proxy::Forwarder>>,
    axum::Extension(authn): axum::Extension<authn::Authn>,
    axum::extract::ConnectInfo(ClientAddr(source)): axum::extract::ConnectInfo<ClientAddr>,
    route: Route,
    params: Params,
    request: Request,
) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let (method, headers) = (parts.method, parts.headers);
    let via = pull_through(&reg, &route, &method, &params)?;
    let need = match &via {
        Some(pull) => authn::Need::Mirror {
            name: route.repo().map(ToString::to_string).unwrap_or_default(),
            cache: pull.cache.to_string(),
            anonymous: pull.mirror.config.anonymous,
        },
        None => need(&route, &method),
    };
    let authorized = authn
        .check_caught_up(&reg, source.ip(), &headers, &need)
        .await?;
    let body = byte_stream(body);
    let reg = reg.as_ref();
    let asked = method.clone();
    let origin = || {
        origin::of(
            reg,
            Some(authorized.caller.subject()),
            source,
            &asked,
            &headers,
        )
    };
    // A session lives on the node that opened it; others pass requests on.
    if let Route::Upload { id, .. } = &route {
        if let Some(owner) = reg.upload_owner(*id)? {
            if proxy::was_forwarded(&headers) {
                return Err(Error::UploadUnknown);
            }
            return proxy::forward(&forwarder, &owner, method, &parts.uri, &headers, body).await;
        }
    }
    match (route, method) {
        (Route::Base, Method::GET | Method::HEAD) => Ok(base()),
        (Route::Manifest { repo, reference }, m @ (Method::GET | Method::HEAD)) => {
            let head = m == Method::HEAD;
            // Only a GET is a pull, and only built when someone listens.
            let pulled = (!head && reg.pulls_wanted()).then(origin);
            manifests::get(reg, via.as_ref(), &repo, &reference, &headers, head, pulled).await
        }
        (Route::Manifest { repo, reference }, Method::PUT) => {
            manifests::put(reg, &repo, &reference, &headers, body, origin()).await
        }
        (Route::Manifest { repo, reference }, Method::DELETE) => {
            manifests::delete(reg, &repo, &reference, origin()).await
        }
        (Route::Blob { repo, digest }, m @ (Method::GET | Method::HEAD)) => {
            blobs::get(
                reg,
                via.as_ref(),
                &repo,
                &digest,
                &headers,
                m == Method::HEAD,
            )
            .await
        }
        (Route::Blob { repo, digest }, Method::DELETE) => blobs::delete(reg, &repo, &digest).await,
        (Route::UploadStart { repo }, Method::POST) => {
            // A mount reads the blob from another repository; from one the
            // caller cannot read it becomes a plain upload, as the spec lets
            // a registry do, and shows nothing of that repository.
            let from = params.repo("from")?;
            let may_mount = from.as_ref().map_or(authorized.policy().is_none(), |f| {
                authorized.may_read(f.as_str())
            });
            uploads::start(reg, &repo, &params, may_mount, &headers, body, &origin()).await
        }
        (Route::Upload { repo, id }, Method::GET) => uploads::status(reg, &repo, id).await,
        (Route::Upload { repo, id }, Method::PATCH) => {
            uploads::chunk(reg, &repo, id, &headers, body).await
        }
        (Route::Upload { repo, id }, Method::PUT) => {
            uploads::finish(reg, &repo, id, &params, &headers, body).await
        }
        (Route::Upload { repo, id }, Method::DELETE) => uploads::cancel(reg, &repo, id).await,
        (Route::Tags { repo }, Method::GET) => listings::tags(reg, &repo, &params).await,
        (Route::Catalog, Method::GET) => {
            listings::catalog(reg, &params, |repo| authorized.lists(repo)).await
        }
        (Route::Referrers { repo, digest }, Method::GET) => {
            listings::referrers(reg, &repo, &digest, &params).await
        }
        (_, method) => Err(Error::MethodNotAllowed {
            method: method.to_string(),
        }),
    }
}

/// The mirror a read goes through, if it is a pull through one: manifest
/// and blob reads, addressed by prefix, by containerd's `ns`, or by the
/// default mirror.
fn pull_through(
    reg: &Registry,
    route: &Route,
    method: &Method,
    params: &Params,
) -> Result<Option<crate::registry::mirror::Pull>, Error> {
    let ns = params.get("ns");
    match (route, method) {
        (Route::Manifest { repo, .. } | Route::Blob { repo, .. }, &Method::GET | &Method::HEAD) => {
            // A push asks `HEAD` of each blob of a repository it may be
            // creating: without a prefix or `ns` that stays local, so the
            // push uploads what it must (and the upstream never hears of it).
            // Pulls through Docker's registry-mirrors only `GET` blobs.
            let push_check =
                matches!(route, Route::Blob { .. }) && method == Method::HEAD && ns.is_none();
            match push_check {
                true => Ok(reg.mirror_prefix(repo)),
                false => reg.pull_target(repo, ns),
            }
        }
        _ => Ok(None),
    }
}

/// What a request needs its caller to be allowed.
fn need(route: &Route, method: &Method) -> authn::Need {
    use authn::Need;
    let repo = match (route, route.repo()) {
        (_, Some(repo)) => repo,
        (Route::Catalog, None) => return Need::Catalog,
        (_, None) => return Need::SignedIn,
    };
    let action = match (route, method) {
        (Route::UploadStart { .. } | Route::Upload { .. }, _) => "push",
        (_, &Method::GET | &Method::HEAD) => "pull",
        (_, &Method::DELETE) => "delete",
        _ => "push",
    };
    Need::Repository {
        name: repo.to_string(),
        action,
    }
}

fn base() -> Response {
    (
        StatusCode::OK,
        [(http::header::CONTENT_TYPE, "application/json")],
        "{}",
    )
        .into_response()
}

/// Largest body of a form or JSON request: a token request, an access change.
pub const MAX_SMALL_BODY: usize = 64 << 10;

/// The whole of a small request body, refused (413) past [`MAX_SMALL_BODY`].
pub(crate) async fn small_body(body: Body) -> Result<bytes::Bytes, Error> {
    axum::body::to_bytes(body, MAX_SMALL_BODY)
        .await
        .map_err(|e| {
            match e
                .into_inner()
                .downcast::<http_body_util::LengthLimitError>()
            {
                Ok(_) => Error::BodyTooLarge {
                    limit: MAX_SMALL_BODY as u64,
                },
                Err(e) => Error::body(body::to_io(e)),
            }
        })
}

/// A small JSON request body as `T`; an empty body is `T::default()`. A
/// body that is not one is 400, naming `what` it should have been.
async fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: Body,
    what: &str,
) -> Result<T, Error> {
    let body = small_body(body).await?;
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&body).map_err(|e| Error::RequestInvalid(format!("not {what}: {e}")))
}

fn byte_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(body::to_io))
}

/// An empty response with the given status and headers.
fn empty<const N: usize>(
    status: StatusCode,
    headers: [(&'static str, http::HeaderValue); N],
) -> Response {
    let mut resp = (status, Body::empty()).into_response();
    for (name, value) in headers {
        resp.headers_mut().insert(name, value);
    }
    resp.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    resp
}
