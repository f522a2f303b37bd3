//! A client of one upstream registry: it signs in the way the upstream
//! asks (Bearer tokens, anonymous or with credentials, as Docker Hub and
//! ghcr.io issue them; or Basic), and keeps each token until shortly before
//! it expires.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use serde::Deserialize;

use crate::auth::challenge_params;
use crate::config::MirrorConfig;

/// A token whose issuer gives no lifetime lasts this long (the token
/// specification's default).
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Tokens are dropped this long before they expire, so that none expires
/// on its way.
const TOKEN_SLACK: Duration = Duration::from_secs(10);
/// Connecting and each request's answer; a body streams for as long as it
/// keeps coming.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot set up the client of mirror {mirror}: {reason}")]
    Setup { mirror: String, reason: String },
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("{url} refused berth's sign-in: {reason}")]
    SignIn { url: String, reason: String },
}

pub struct Upstream {
    pub config: MirrorConfig,
    http: reqwest::Client,
    /// `user:password` for its sign-in.
    credentials: Option<(String, String)>,
    /// `Authorization` values by scope, with when to stop using them.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Upstream {
    /// A client for `config`, with its credentials and CA read now.
    pub fn new(config: MirrorConfig) -> Result<Upstream, UpstreamError> {
        let setup = |reason: String| UpstreamError::Setup {
            mirror: config.name.clone(),
            reason,
        };
        let credentials = match &config.credentials_file {
            Some(path) => Some(read_credentials(path).map_err(setup)?),
            None => None,
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca {
            let pem = std::fs::read(ca).map_err(|e| setup(format!("{}: {e}", ca.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| setup(format!("{}: {e}", ca.display())))?;
            http = http.add_root_certificate(cert);
        }
        let http = http.build().map_err(|e| setup(e.to_string()))?;
        Ok(Upstream {
            config,
            http,
            credentials,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `method` to `path` (under `/v2/`) for the upstream repository
    /// `remote`, signing in when the upstream asks. The answer is returned
    /// whatever its status, once signed in or refused.
    pub async fn send(
        &self,
        method: Method,
        remote: &str,
        path: &str,
        accept: &str,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url =
            self.config
                .url
                .join(&format!("v2/{path}"))
                .map_err(|e| UpstreamError::Setup {
                    mirror: self.config.name.clone(),
                    reason: e.to_string(),
                })?;
        let scope = format!("repository:{remote}:pull");
        let mut authorization = self.cached(&scope);
        for attempt in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .header(ACCEPT, accept);
            if let Some(value) = &authorization {
                req = req.header(AUTHORIZATION, value);
            }
            let resp = req
                .send()
                .await
                .map_err(|source| UpstreamError::Unreachable {
                    url: url.to_string(),
                    source,
                })?;
            if resp.status() != StatusCode::UNAUTHORIZED || attempt == 1 {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            authorization = Some(self.sign_in(&challenge, &scope).await?);
        }
        unreachable!("the second attempt always returns")
    }

    fn cached(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        let (value, until) = tokens.get(scope)?;
        (Instant::now() < *until).then(|| value.clone())
    }

    /// The `Authorization` value that answers `challenge`.
    async fn sign_in(&self, challenge: &str, scope: &str) -> Result<String, UpstreamError> {
        let refused = |reason: String| UpstreamError::SignIn {
            url: self.config.url.to_string(),
            reason,
        };
        if challenge
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("basic "))
        {
            return match &self.credentials {
                Some((user, password)) => Ok(basic(user, password)),
                None => Err(refused(
                    "it asks for a password and the mirror has no credentials-file".into(),
                )),
            };
        }
        let params = challenge_params(challenge)
            .ok_or_else(|| refused(format!("an unknown challenge: {challenge:?}")))?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let realm = param("realm").ok_or_else(|| refused("a challenge without a realm".into()))?;
        let mut query: Vec<(&str, String)> =
            vec![("scope", param("scope").unwrap_or(scope.to_owned()))];
        if let Some(service) = param("service") {
            query.push(("service", service));
        }
        let mut req = self.http.get(&realm).query(&query);
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req
            .send()
            .await
            .map_err(|source| UpstreamError::Unreachable {
                url: realm.clone(),
                source,
            })?;
        if !resp.status().is_success() {
            return Err(refused(format!(
                "its token service answered {}",
                resp.status()
            )));
        }
        let answer: TokenAnswer = resp
            .json()
            .await
            .map_err(|e| refused(format!("its token service's answer: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| refused("its token service gave no token".into()))?;
        let value = format!("Bearer {token}");
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
        let until = Instant::now() + lifetime.saturating_sub(TOKEN_SLACK);
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(scope.to_owned(), (value.clone(), until));
        Ok(value)
    }
}

fn basic(user: &str, password: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {encoded}")
}

/// `user:password` from the first line of a file.
fn read_credentials(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or_default().trim();
    match line.split_once(':') {
        Some((user, password)) if !user.is_empty() => Ok((user.to_owned(), password.to_owned())),
        _ => Err(format!(
            "{}: the first line must be user:password",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds");
        std::fs::write(&file, "robot:s3:cret\nignored\n").unwrap();
        assert_eq!(
            read_credentials(&file).unwrap(),
            ("robot".to_owned(), "s3:cret".to_owned())
        );
        std::fs::write(&file, "no colon\n").unwrap();
        assert!(read_credentials(&file).is_err());
        assert_eq!(basic("a", "b"), "Basic YTpi");
    }
}
