//! The client of one upstream registry: its sign-in (the Bearer token flow
//! that Docker Hub and ghcr use, anonymous or with credentials, or basic
//! authentication), tokens cached until they expire, and the reads a
//! mirror makes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, StatusCode};

use crate::auth::client::{parse_challenge, read_token_answer, Challenge};
use crate::config::MirrorConfig;
use crate::oci::Digest;
use crate::storage::ByteStream;

/// How long a connection to the upstream may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a read from the upstream may stall before it counts as gone.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A token the realm gave without `expires_in` lasts this long (the token
/// specification's default).
const DEFAULT_TOKEN_LIFE: u64 = 60;
/// A cached token is dropped this long before it expires, so that no
/// request leaves with a token that dies on the way.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Every manifest type berth stores, so that the upstream never falls back
/// to an old schema.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached, failed, or asked to slow down:
    /// what berth already holds is served instead, where it can be.
    #[error("{0}")]
    Unreachable(String),
    /// The upstream says it has no such thing.
    #[error("{0}")]
    NotFound(String),
    /// The upstream refused berth's sign-in or answered nonsense.
    #[error("{0}")]
    Refused(String),
}

/// A manifest as the upstream sent it.
pub struct Fetched {
    pub digest: Option<Digest>,
    pub media_type: Option<String>,
    pub body: Vec<u8>,
}

pub struct Upstream {
    name: String,
    base: reqwest::Url,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
    /// Bearer tokens by scope, with the instant they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

impl Upstream {
    /// The client of `config`'s upstream; reads its credentials and CA.
    pub fn new(config: &MirrorConfig) -> Result<Upstream, String> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca {
            let pem = std::fs::read(ca).map_err(|e| {
                format!("mirror {}: cannot read {}: {e}", config.name, ca.display())
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                format!(
                    "mirror {}: {} is not a PEM certificate: {e}",
                    config.name,
                    ca.display()
                )
            })?;
            http = http.add_root_certificate(cert);
        }
        let credentials = match &config.credentials_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "mirror {}: cannot read {}: {e}",
                        config.name,
                        path.display()
                    )
                })?;
                let (user, password) = text.trim_end().split_once(':').ok_or_else(|| {
                    format!(
                        "mirror {}: {} must hold \"user:password\"",
                        config.name,
                        path.display()
                    )
                })?;
                Some((user.to_owned(), password.to_owned()))
            }
            None => None,
        };
        Ok(Upstream {
            name: config.name.clone(),
            base: config.url.clone(),
            http: http
                .build()
                .map_err(|e| format!("mirror {}: {e}", config.name))?,
            credentials,
            tokens: Mutex::default(),
        })
    }

    /// A manifest by tag or digest; with `head`, only its digest and type.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        head: bool,
        limit: usize,
    ) -> Result<Fetched, UpstreamError> {
        let method = if head { Method::HEAD } else { Method::GET };
        let path = format!("{repo}/manifests/{reference}");
        let resp = self
            .send(method, repo, &path, Some(MANIFEST_ACCEPT))
            .await?;
        let text = |name| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let digest = text("docker-content-digest").and_then(|d| d.parse().ok());
        let media_type = text(CONTENT_TYPE.as_str())
            .map(|t| t.split(';').next().unwrap_or_default().trim().to_owned());
        if head {
            return Ok(Fetched {
                digest,
                media_type,
                body: Vec::new(),
            });
        }
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.refused(format!("its manifest exceeds {limit} bytes")));
        }
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.unreachable(e))? {
            if body.len() + chunk.len() > limit {
                return Err(self.refused(format!("its manifest exceeds {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            digest,
            media_type,
            body,
        })
    }

    /// A blob's size and bytes. The bytes are not checked here.
    pub async fn blob(
        &self,
        repo: &str,
        digest: &Digest,
    ) -> Result<(u64, ByteStream), UpstreamError> {
        let path = format!("{repo}/blobs/{digest}");
        let resp = self.send(Method::GET, repo, &path, None).await?;
        let size = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .ok_or_else(|| self.refused(format!("it sent {digest} without a Content-Length")))?;
        let name = self.name.clone();
        let body = resp
            .bytes_stream()
            .map_err(move |e| std::io::Error::other(format!("upstream {name}: {e}")));
        Ok((size, Box::pin(body)))
    }

    /// A blob's size, from a HEAD.
    pub async fn blob_size(&self, repo: &str, digest: &Digest) -> Result<u64, UpstreamError> {
        let path = format!("{repo}/blobs/{digest}");
        let resp = self.send(Method::HEAD, repo, &path, None).await?;
        resp.headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .ok_or_else(|| self.refused(format!("it answered HEAD {digest} without a size")))
    }

    /// Sends a request under `/v2/`, signing in once if the upstream asks.
    async fn send(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self
            .base
            .join(&format!("v2/{path}"))
            .map_err(|e| self.refused(e.to_string()))?;
        let scope = format!("repository:{repo}:pull");
        let mut signed = false;
        loop {
            let mut req = self.http.request(method.clone(), url.clone());
            if let Some(accept) = accept {
                req = req.header(ACCEPT, accept);
            }
            if let Some(auth) = self.authorization(&scope) {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = req.send().await.map_err(|e| self.unreachable(e))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !signed {
                signed = true;
                self.sign_in(&resp, &scope).await?;
                continue;
            }
            return match status {
                s if s.is_success() => Ok(resp),
                StatusCode::NOT_FOUND => Err(UpstreamError::NotFound(format!(
                    "upstream {} has no {path}",
                    self.name
                ))),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(self.refused(format!(
                    "it refused access to {repo} ({status}); check the mirror's credentials"
                ))),
                s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => Err(
                    UpstreamError::Unreachable(format!("upstream {} answered {s}", self.name)),
                ),
                s => Err(self.refused(format!("it answered {s} to {method} {path}"))),
            };
        }
    }

    /// The `Authorization` header for `scope`: a cached token, else basic
    /// credentials when the upstream took them before.
    fn authorization(&self, scope: &str) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(scope) {
            Some((token, _)) if token.is_empty() => self.basic(),
            Some((token, until)) if *until > Instant::now() => Some(format!("Bearer {token}")),
            _ => None,
        }
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        let (user, password) = self.credentials.as_ref()?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {encoded}"))
    }

    /// Answers a 401's challenge: fetches a token from the realm it names,
    /// or notes that this upstream takes basic credentials.
    async fn sign_in(&self, resp: &reqwest::Response, scope: &str) -> Result<(), UpstreamError> {
        let header = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let (token, life) = match parse_challenge(header) {
            Some(Challenge::Basic) if self.credentials.is_some() => {
                // An empty token stands for "send the basic credentials".
                (String::new(), Duration::from_secs(u64::MAX / 4))
            }
            Some(Challenge::Basic) => {
                return Err(self.refused(
                    "it asks for a password and the mirror has no credentials-file".into(),
                ))
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                self.fetch_token(
                    &realm,
                    service.as_deref(),
                    asked.as_deref().unwrap_or(scope),
                )
                .await?
            }
            None => return Err(self.refused(format!("its challenge {header:?} is not understood"))),
        };
        let until = Instant::now() + life.saturating_sub(TOKEN_MARGIN);
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, (_, t)| *t > Instant::now());
        tokens.insert(scope.to_owned(), (token, until));
        Ok(())
    }

    /// A token from `realm`, with the credentials if the mirror has any.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<(String, Duration), UpstreamError> {
        let mut url = reqwest::Url::parse(realm)
            .map_err(|e| self.refused(format!("its token realm {realm:?} is not a URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut req = self.http.get(url);
        if let Some(basic) = self.basic() {
            req = req.header(AUTHORIZATION, basic);
        }
        let resp = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(UpstreamError::Unreachable(format!(
                "upstream {}'s token realm answered {status}",
                self.name
            )));
        }
        if !status.is_success() {
            return Err(self.refused(format!(
                "its token realm refused the mirror's sign-in ({status}); check the credentials"
            )));
        }
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        let (token, life) = read_token_answer(&body).map_err(|why| self.refused(why))?;
        let life = Duration::from_secs(life.unwrap_or(DEFAULT_TOKEN_LIFE));
        Ok((token, life))
    }

    fn unreachable(&self, e: reqwest::Error) -> UpstreamError {
        UpstreamError::Unreachable(format!("upstream {} cannot be reached: {e}", self.name))
    }

    fn refused(&self, why: String) -> UpstreamError {
        UpstreamError::Refused(format!("upstream {}: {why}", self.name))
    }
}
