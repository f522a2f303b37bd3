//! The web UI at `/ui/`: server-rendered HTML (maud templates in
//! [`pages`]), usable without JavaScript; the one script only copies pull
//! commands. Pages call the [`Registry`] like any handler and judge what a
//! visitor may see or do by the same access rules as the API.
//!
//! Every page answers with a strict Content-Security-Policy (no inline
//! script or style, no framing), so even markup that slipped through the
//! templates' escaping could not run.

mod layout;
mod model;
mod pages;
pub mod session;
mod visitor;

use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use http::StatusCode;

use crate::api::authn::Authn;
use crate::registry::{Error, Registry};
pub use visitor::Visitor;

/// What the UI needs besides the registry.
#[derive(Clone)]
pub struct Ui {
    pub reg: Arc<Registry>,
    pub authn: Authn,
    pub keys: Arc<session::Keys>,
    /// Whether the node serves HTTPS (cookies are then `Secure`).
    pub https: bool,
}

/// The UI's routes, under `/ui`.
pub fn router(ui: Ui) -> Router {
    let https = ui.https;
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::repos::list))
        .route(
            "/ui/signin",
            get(pages::signin::form).post(pages::signin::submit),
        )
        .route("/ui/signout", post(pages::signin::signout))
        .route("/ui/cluster", get(pages::cluster::show))
        .route(
            "/ui/access",
            get(pages::access::show).post(pages::access::change),
        )
        .route("/ui/static/{file}", get(asset))
        .route(
            "/ui/r/{*path}",
            get(pages::repo::show).post(pages::repo::act),
        )
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .with_state(ui)
        .layer(axum::middleware::from_fn(move |req, next| {
            browser_cookie(req, next, https)
        }))
}

/// A browser's CSRF cookie as the request brought it, or a new one.
#[derive(Clone)]
pub(crate) struct Browser {
    pub id: String,
    pub new: bool,
}

/// Gives each browser its CSRF cookie, and every page the headers that keep
/// it in its own origin, out of caches and frames.
async fn browser_cookie(mut req: Request, next: axum::middleware::Next, https: bool) -> Response {
    let existing = session::cookie(req.headers(), session::CSRF_COOKIE)
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    let browser = match existing {
        Some(id) => Browser { id, new: false },
        None => Browser {
            id: session::new_browser_id(),
            new: true,
        },
    };
    req.extensions_mut().insert(browser.clone());
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if browser.new {
        let cookie = session::set_cookie(session::CSRF_COOKIE, &browser.id, None, https);
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            headers.append(SET_COOKIE, v);
        }
    }
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// The stylesheet and the script, compiled into the binary.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "berth.css" => (include_str!("static/berth.css"), "text/css; charset=utf-8"),
        "berth.js" => (
            include_str!("static/berth.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (CONTENT_TYPE, kind),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn not_found(visitor: Visitor) -> Response {
    Failure::new(StatusCode::NOT_FOUND, "There is no such page.").page(Some(&visitor))
}

/// Why a page could not be shown: its status and a message for people.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl Failure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// 403: the visitor may not do this.
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::FORBIDDEN, message)
    }

    /// The error page, with the visitor's header when known.
    pub fn page(self, visitor: Option<&Visitor>) -> Response {
        let body = layout::failure(visitor, &self.message);
        (self.status, body).into_response()
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let status = e.status();
        let message = match e {
            Error::NameUnknown => "There is no such repository.".to_owned(),
            Error::ManifestUnknown => "There is no such tag or manifest.".to_owned(),
            e if status.is_server_error() => {
                tracing::warn!(error = %e, "a UI page failed");
                format!("The registry could not answer: {e}")
            }
            e => e.to_string(),
        };
        Failure::new(status, message)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.page(None)
    }
}

/// What a page handler returns.
pub type PageResult = Result<Response, Failure>;
