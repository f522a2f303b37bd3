//! The visitor of a page: who they are (from the session cookie), what the
//! access rules let them do, and the CSRF token their forms carry.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, Method, StatusCode};

use super::session::{self, SESSION_COOKIE};
use super::{Browser, Failure, Ui};
use crate::api::ClientAddr;
use crate::auth::{Caller, Policy};
use crate::meta::events::Origin;

pub struct Visitor {
    pub caller: Caller,
    /// The rules in force; `None` when sign-in is off and anyone may do anything.
    policy: Option<Arc<Policy>>,
    browser: String,
    csrf: String,
    /// The address the browser used, for pull commands.
    pub host: String,
    pub source: SocketAddr,
    headers: HeaderMap,
    method: Method,
}

impl FromRequestParts<Ui> for Visitor {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, ui: &Ui) -> Result<Visitor, Response> {
        let browser = parts
            .extensions
            .get::<Browser>()
            .map(|b| b.id.clone())
            .unwrap_or_default();
        let source = parts
            .extensions
            .get::<ConnectInfo<ClientAddr>>()
            .map(|c| c.0 .0)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let policy = ui.authn.policy().map_err(|e| Failure::from(e).page(None))?;
        let caller = match (&policy, session::cookie(&parts.headers, SESSION_COOKIE)) {
            (Some(policy), Some(cookie)) => ui
                .keys
                .subject(cookie)
                .map(|s| Caller::from_subject(&s))
                // Deleting an account ends its sessions.
                .filter(|c| ui.authn.still_known(policy, c))
                .unwrap_or(Caller::Anonymous),
            _ => Caller::Anonymous,
        };
        let csrf = ui.keys.csrf_token(&browser, caller.subject());
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("localhost")
            .to_owned();
        Ok(Visitor {
            caller,
            policy,
            browser,
            csrf,
            host,
            source,
            headers: parts.headers.clone(),
            method: parts.method.clone(),
        })
    }
}

impl Visitor {
    /// Whether sign-in is on (and so whether signing in means anything).
    pub fn signin_on(&self) -> bool {
        self.policy.is_some()
    }

    /// The signed-in name, if any.
    pub fn name(&self) -> Option<&str> {
        match &self.caller {
            Caller::Anonymous => None,
            c => Some(c.subject()),
        }
    }

    /// Whether the rules let the visitor do `action` on `repo`.
    pub fn may(&self, repo: &str, action: &str) -> bool {
        self.policy
            .as_ref()
            .is_none_or(|p| p.allows(&self.caller, repo, action))
    }

    /// The rules in force, with sign-in on.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_deref()
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Refuses a form whose CSRF token is not this browser's and visitor's.
    pub fn check_csrf(&self, form: &Form, keys: &session::Keys) -> Result<(), Failure> {
        let presented = form.get("csrf").unwrap_or("");
        if keys.csrf_ok(&self.browser, self.caller.subject(), presented) {
            return Ok(());
        }
        tracing::warn!(target: "berth::audit", source = %self.source, caller = self.caller.subject(), "refused a UI form without a valid CSRF token");
        Err(Failure::refused(
            "This form is stale or did not come from this registry's pages. Reload the page and try again.",
        ))
    }

    /// Who made a change through the UI, for its events.
    pub fn origin(&self, reg: &crate::registry::Registry) -> Origin {
        crate::api::origin::of(reg, self.name(), self.source, &self.method, &self.headers)
    }

    /// The page, or its failure rendered for this visitor.
    pub fn respond(&self, result: super::PageResult) -> Response {
        result.unwrap_or_else(|f| f.page(Some(self)))
    }
}

/// A posted form's fields (`application/x-www-form-urlencoded`).
pub struct Form(Vec<(String, String)>);

impl Form {
    /// Reads a small form body; too large or not a form is 400.
    pub async fn read(body: axum::body::Body) -> Result<Form, Failure> {
        let bytes = crate::api::small_body(body).await.map_err(Failure::from)?;
        Ok(Form(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A required field, or 400 naming it.
    pub fn need(&self, name: &str) -> Result<&str, Failure> {
        self.get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Failure::new(
                    StatusCode::BAD_REQUEST,
                    format!("The form is missing its {name:?} field."),
                )
            })
    }
}
