//! `GET|POST /auth/token`: the token endpoint of the Docker registry token
//! specification. A caller proves who it is (basic credentials on `GET`, a
//! password or refresh token in the OAuth2 form of `POST`) and gets a
//! short-lived token granting what it asked for and the access rules allow;
//! with `offline_token=true` or `access_type=offline` also a refresh token,
//! which `docker login` keeps instead of the password. A `GET` without
//! credentials gets an anonymous token, good for public repositories.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::header::AUTHORIZATION;
use http::HeaderMap;
use serde_json::json;

use super::authn::{basic_challenge, Authn};
use super::ClientAddr;
use crate::auth::token::{Access, Tokens, ACCESS_TTL};
use crate::auth::{Caller, Policy};
use crate::registry::{Error, Registry};

/// Actions a signed-in user may be granted on a repository.
const REPOSITORY_ACTIONS: [&str; 4] = ["pull", "push", "delete", "*"];

pub async fn get(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let form = Form::parse(query.as_deref().unwrap_or(""));
    let (tokens, policy) = issuer(&authn)?;
    form.check_service(tokens)?;
    let caller = match headers.contains_key(AUTHORIZATION) {
        true => authn.login(source.ip(), &headers, &policy).await?,
        false => Caller::Anonymous,
    };
    let scopes = form
        .all("scope")
        .into_iter()
        .filter_map(Access::parse_scope)
        .collect();
    let token = sign(tokens, &policy, &reg, &caller, scopes)?;
    reg.metrics().tokens_issued.inc();
    reg.metrics().tokens_issued.inc();
    let mut body = json!({ "token": token, "access_token": token, "expires_in": ACCESS_TTL });
    if form.get("offline_token") == Some("true") && caller != Caller::Anonymous {
        body["refresh_token"] = tokens.refresh_token(caller.subject()).into();
    }
    Ok(Json(body).into_response())
}

pub async fn post(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    body: Body,
) -> Result<Response, Error> {
    let body = super::small_body(body).await?;
    let form = Form::parse(std::str::from_utf8(&body).unwrap_or(""));
    let (tokens, policy) = issuer(&authn)?;
    form.check_service(tokens)?;
    let caller = match form.get("grant_type") {
        Some("password") => {
            let user = form.get("username").unwrap_or_default();
            let password = form.get("password").unwrap_or_default();
            authn
                .password_login(source.ip(), user, password, &policy)
                .await?
        }
        Some("refresh_token") => {
            let refresh = form.get("refresh_token").unwrap_or_default();
            let subject = tokens
                .verify_refresh(refresh)
                .map_err(|e| Error::Unauthorized {
                    reason: format!("refresh token refused: {e}"),
                    challenge: basic_challenge(),
                })?;
            let caller = Caller::from_subject(&subject);
            if !authn.still_known(&policy, &caller) || caller == Caller::Anonymous {
                return Err(Error::Unauthorized {
                    reason: format!("refresh token refused: {subject:?} no longer exists"),
                    challenge: basic_challenge(),
                });
            }
            caller
        }
        other => {
            return Err(Error::TokenRequestInvalid(format!(
                "grant_type must be password or refresh_token, not {other:?}"
            )))
        }
    };
    let scope = form.get("scope").unwrap_or_default();
    let scopes = scope.split(' ').filter_map(Access::parse_scope).collect();
    let token = sign(tokens, &policy, &reg, &caller, scopes)?;
    let mut body = json!({ "access_token": token, "expires_in": ACCESS_TTL, "scope": scope });
    if form.get("grant_type") == Some("password") && form.get("access_type") == Some("offline") {
        body["refresh_token"] = tokens.refresh_token(caller.subject()).into();
    }
    Ok(Json(body).into_response())
}

/// This node's token issuer and the rules its tokens follow; 404 where
/// berth issues no tokens (sign-in off, or an external issuer).
fn issuer(authn: &Authn) -> Result<(&Tokens, Arc<Policy>), Error> {
    let tokens = authn
        .tokens()
        .filter(|t| t.issues())
        .ok_or(Error::RouteUnknown)?;
    let policy = authn.policy()?.ok_or(Error::RouteUnknown)?;
    Ok((tokens, policy))
}

/// A token granting the caller what it asked for, as far as the access
/// rules allow: the actions they refuse are left out, not refused, as the
/// token specification has it.
fn sign(
    tokens: &Tokens,
    policy: &Policy,
    reg: &Registry,
    caller: &Caller,
    asked: Vec<Access>,
) -> Result<String, Error> {
    // A pull of a name served through a mirror is judged on the mirror's
    // cache repository, as the request itself will be.
    let mirror_pull = |name: &str| {
        let Some(Ok(Some(pull))) = name.parse().ok().map(|n| reg.pull_target(&n, None)) else {
            return false;
        };
        pull.mirror.config.anonymous || policy.allows(caller, pull.cache.as_str(), "pull")
    };
    let granted = asked
        .into_iter()
        .filter_map(|mut a| {
            match a.kind.as_str() {
                "repository" => a.actions.retain(|x| {
                    REPOSITORY_ACTIONS.contains(&x.as_str())
                        && (policy.allows(caller, &a.name, x)
                            || (x == "pull" && mirror_pull(&a.name)))
                }),
                "registry" if a.name == "catalog" => a.actions.retain(|x| x == "*"),
                _ => return None,
            }
            (!a.actions.is_empty()).then_some(a)
        })
        .collect();
    tokens
        .access_token(caller.subject(), granted)
        .ok_or_else(|| Error::Internal("the token could not be signed".into()))
}

/// `k=v&…` pairs, from a query or a form body.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(text: &str) -> Form {
        Form(
            form_urlencoded::parse(text.as_bytes())
                .into_owned()
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.all(key).into_iter().next()
    }

    fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn check_service(&self, tokens: &Tokens) -> Result<(), Error> {
        match self.get("service") {
            Some(s) if s != tokens.service() => Err(Error::Denied(format!(
                "tokens here are for the service {:?}, not {s:?}",
                tokens.service()
            ))),
            _ => Ok(()),
        }
    }
}
