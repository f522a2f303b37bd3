//! The check every `/v2/` request passes before its handler runs, and the
//! token endpoint clients are sent to by its `Bearer` challenge.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, HOST};
use http::HeaderMap;

use crate::auth::token::{Access, Grant, Tokens};
use crate::auth::{basic_credentials, bearer_token, Htpasswd, LoginLimiter, REALM};
use crate::registry::Error;

/// What a request needs the caller to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Only to be someone (`GET /v2/`).
    Anyone,
    /// An action on a repository: `pull`, `push` or `delete`.
    Repository { name: String, action: &'static str },
    /// The repository list.
    Catalog,
}

impl Need {
    fn access(&self) -> Option<Access> {
        let (kind, name, action) = match self {
            Need::Anyone => return None,
            Need::Repository { name, action } => ("repository", name.as_str(), *action),
            Need::Catalog => ("registry", "catalog", "*"),
        };
        Some(Access {
            kind: kind.into(),
            name: name.into(),
            actions: vec![action.into()],
        })
    }
}

/// How callers prove who they are. With no users and no token issuer
/// configured there is nothing to prove.
#[derive(Clone, Default)]
pub struct Authn {
    htpasswd: Option<Arc<Htpasswd>>,
    tokens: Option<Arc<Tokens>>,
    realm: Option<String>,
    https: bool,
    limiter: Arc<LoginLimiter>,
}

impl Authn {
    pub fn new(
        htpasswd: Option<Arc<Htpasswd>>,
        tokens: Option<Arc<Tokens>>,
        realm: Option<String>,
        https: bool,
    ) -> Authn {
        Authn {
            htpasswd,
            tokens,
            realm,
            https,
            limiter: Arc::default(),
        }
    }

    /// Whether callers must prove anything at all.
    pub fn required(&self) -> bool {
        self.htpasswd.is_some() || self.tokens.is_some()
    }

    /// Whether the request from `source` proves its caller may do `need`.
    pub async fn check(
        &self,
        source: IpAddr,
        headers: &HeaderMap,
        need: &Need,
    ) -> Result<(), Error> {
        if !self.required() {
            return Ok(());
        }
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Some(token) = header.and_then(bearer_token) {
            let tokens = self
                .tokens
                .as_ref()
                .ok_or_else(|| self.challenge(headers, need, None))?;
            let grant = tokens.verify_access(token).map_err(|e| {
                tracing::warn!(target: "berth::audit", %source, error = %e, "refused a token");
                self.challenge(headers, need, Some("invalid_token"))
            })?;
            return if grants(&grant, need) {
                Ok(())
            } else {
                tracing::warn!(target: "berth::audit", %source, user = %grant.subject, ?need, "refused: the token does not grant this");
                Err(self.challenge(headers, need, Some("insufficient_scope")))
            };
        }
        if header.is_some_and(|h| basic_credentials(h).is_some()) {
            self.login(source, headers).await?;
            return Ok(());
        }
        Err(self.challenge(headers, need, None))
    }

    /// The user a request's basic credentials prove, counting failures
    /// against its source.
    pub async fn login(&self, source: IpAddr, headers: &HeaderMap) -> Result<String, Error> {
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let (user, password) =
            header
                .and_then(basic_credentials)
                .ok_or_else(|| Error::Unauthorized {
                    reason: "send a user name and password (HTTP basic authentication)".into(),
                    challenge: basic_challenge(),
                })?;
        self.password_login(source, &user, &password).await?;
        Ok(user)
    }

    /// Checks `user`'s `password`, counting failures against `source`.
    pub async fn password_login(
        &self,
        source: IpAddr,
        user: &str,
        password: &str,
    ) -> Result<(), Error> {
        if let Err(retry_after) = self.limiter.admit(source) {
            return Err(Error::TooManyRequests { retry_after });
        }
        let known = match &self.htpasswd {
            Some(h) => h.check(user, password).await,
            None => false,
        };
        if known {
            self.limiter.succeeded(source);
            Ok(())
        } else {
            self.limiter.failed(source);
            tracing::warn!(target: "berth::audit", %user, %source, "refused a login: unknown user or wrong password");
            Err(Error::Unauthorized {
                reason: "unknown user or wrong password".into(),
                challenge: basic_challenge(),
            })
        }
    }

    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_deref()
    }

    /// 401 with the challenge a client follows to get what `need` takes:
    /// a token from the realm when tokens are on, else a password.
    fn challenge(&self, headers: &HeaderMap, need: &Need, error: Option<&str>) -> Error {
        let Some(tokens) = &self.tokens else {
            return Error::Unauthorized {
                reason: "send a user name and password (HTTP basic authentication)".into(),
                challenge: basic_challenge(),
            };
        };
        let realm = self.realm.clone().unwrap_or_else(|| {
            let host = headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            let scheme = if self.https { "https" } else { "http" };
            format!("{scheme}://{host}/auth/token")
        });
        let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{}\"", tokens.service());
        if let Some(access) = need.access() {
            challenge.push_str(&format!(",scope=\"{}\"", access.scope()));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        let reason = match error {
            Some("insufficient_scope") => "the token does not grant this",
            Some(_) => "the token is invalid or expired",
            None => "authentication required: get a token from the realm the challenge names",
        };
        Error::Unauthorized {
            reason: reason.into(),
            challenge,
        }
    }
}

fn grants(grant: &Grant, need: &Need) -> bool {
    match need {
        Need::Anyone => true,
        Need::Repository { name, action } => grant.allows("repository", name, action),
        Need::Catalog => grant.allows("registry", "catalog", "*"),
    }
}

/// The challenge of the token endpoint itself, which takes passwords.
pub fn basic_challenge() -> String {
    format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")
}
