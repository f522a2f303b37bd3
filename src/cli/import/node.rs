//! The client of the node's registry API (`/v2/`) that the import pushes
//! through: what docker or skopeo would send, signed in with basic
//! credentials, or with a Bearer token when the node's challenge asks for
//! one. Transient failures (connection errors, 429, 5xx) are retried.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};

use crate::auth::client::{parse_challenge, read_token_answer, Challenge};
use crate::cli::client::Connection;
use crate::oci::media;
use crate::oci::Digest;

/// Any request without a blob body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Tries of a request whose failure looks transient.
const TRIES: u32 = 4;
/// A token is not used in its last seconds.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);

/// Why a request failed; a transient failure is worth trying again.
#[derive(Debug, Clone)]
pub struct NodeError {
    pub message: String,
    pub transient: bool,
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NodeError {}

fn refused(message: String) -> NodeError {
    NodeError {
        message,
        transient: false,
    }
}

/// What a mount request ended with.
pub enum Mounted {
    /// The blob is linked into the repository.
    Done,
    /// The node opened an upload session instead (the source is not
    /// readable, or the blob is unknown there).
    Upload(Url),
}

/// Where the node sends clients for tokens.
#[derive(Clone, Debug)]
struct Realm {
    url: String,
    service: Option<String>,
}

pub struct Node {
    http: reqwest::Client,
    base: String,
    login: Option<(String, String)>,
    realm: Mutex<Option<Realm>>,
    /// Bearer tokens by the scopes they were asked for, with the instant
    /// they stop being used.
    tokens: Mutex<HashMap<String, (String, Instant)>>,
}

/// The scope a push into `repo` needs.
pub fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// The scope a mount from `repo` needs besides the push.
pub fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

impl Node {
    /// Reads the CA certificate and BERTH_PASSWORD now, so a missing file
    /// or password fails before anything is sent.
    pub fn new(conn: &Connection) -> Result<Node, String> {
        // The secret opens only the admin API; with --login as well (both
        // may be in the environment for other commands) it is not needed.
        if conn.cluster_secret_file.is_some() && conn.login.is_none() {
            return Err(
                "the registry API takes no cluster secret: sign in with --login USER (a user who may push), the password in BERTH_PASSWORD"
                    .into(),
            );
        }
        let http = conn
            .trusting(
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(30))
                    .user_agent(concat!("berth-import/", env!("CARGO_PKG_VERSION"))),
            )
            .map_err(|e| e.to_string())?;
        let login = conn.login().map_err(|e| e.to_string())?;
        let base = conn.node.trim_end_matches('/').to_owned();
        Url::parse(&base).map_err(|e| format!("--node {base:?}: {e}"))?;
        Ok(Node::with(
            http.build().map_err(|e| e.to_string())?,
            base,
            login,
        ))
    }

    fn with(http: reqwest::Client, base: String, login: Option<(String, String)>) -> Node {
        Node {
            http,
            base,
            login,
            realm: Mutex::default(),
            tokens: Mutex::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    fn v2(&self, path: &str) -> Result<Url, NodeError> {
        let text = format!("{}/v2/{path}", self.base);
        Url::parse(&text).map_err(|e| refused(format!("{text}: {e}")))
    }

    /// `GET /v2/`: the node answers and takes the credentials.
    pub async fn ping(&self) -> Result<(), NodeError> {
        let resp = self
            .send(Method::GET, self.v2("")?, &[], HeaderMap::new(), None)
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(()),
            _ => Err(failure("GET /v2/", resp).await),
        }
    }

    pub async fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, NodeError> {
        let url = self.v2(&format!("{repo}/blobs/{digest}"))?;
        let scopes = [push_scope(repo)];
        let resp = self
            .send(Method::HEAD, url, &scopes, HeaderMap::new(), None)
            .await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(failure(&format!("HEAD {repo} blob {digest}"), resp).await),
        }
    }

    /// Links a blob `from` holds (or, without `from`, any repository the
    /// caller may read), or starts an upload.
    pub async fn mount(
        &self,
        repo: &str,
        digest: &Digest,
        from: Option<&str>,
    ) -> Result<Mounted, NodeError> {
        let mut url = self.v2(&format!("{repo}/blobs/uploads/"))?;
        url.query_pairs_mut().append_pair("mount", digest.as_str());
        let mut scopes = vec![push_scope(repo)];
        if let Some(from) = from {
            url.query_pairs_mut().append_pair("from", from);
            scopes.push(pull_scope(from));
        }
        let resp = self
            .send(Method::POST, url, &scopes, empty_body(), None)
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(Mounted::Done),
            StatusCode::ACCEPTED => Ok(Mounted::Upload(location(&resp)?)),
            _ => Err(failure(&format!("mount of {digest} into {repo}"), resp).await),
        }
    }

    /// Opens an upload session; its URL.
    pub async fn start_upload(&self, repo: &str) -> Result<Url, NodeError> {
        let url = self.v2(&format!("{repo}/blobs/uploads/"))?;
        let scopes = [push_scope(repo)];
        let resp = self
            .send(Method::POST, url, &scopes, empty_body(), None)
            .await?;
        match resp.status() {
            StatusCode::ACCEPTED => location(&resp),
            _ => Err(failure(&format!("upload into {repo}"), resp).await),
        }
    }

    /// Finishes the session at `session` with the whole blob as the body
    /// of one `PUT`. Not retried here: the body is a stream.
    pub async fn put_blob(
        &self,
        repo: &str,
        mut session: Url,
        digest: &Digest,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), NodeError> {
        session
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let scopes = [push_scope(repo)];
        let mut req = self
            .http
            .put(session)
            .header(CONTENT_TYPE, media::OCTET_STREAM)
            .header(CONTENT_LENGTH, size)
            // At least 256 KiB/s, so a stalled node cannot hold the import.
            .timeout(Duration::from_secs(300 + size / (256 << 10)))
            .body(body);
        if let Some(auth) = self.authorization(&scopes).await? {
            req = req.header(AUTHORIZATION, auth);
        }
        let resp = req.send().await.map_err(|e| NodeError {
            message: format!("upload of {digest}: {}", chain(&e)),
            transient: true,
        })?;
        match resp.status() {
            StatusCode::CREATED => Ok(()),
            StatusCode::UNAUTHORIZED => {
                // A token that ran out: the next try gets a new one.
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clear();
                let mut e = failure(&format!("upload of {digest}"), resp).await;
                e.transient = true;
                Err(e)
            }
            _ => Err(failure(&format!("upload of {digest}"), resp).await),
        }
    }

    /// Drops an upload session, best effort.
    pub async fn cancel_upload(&self, repo: &str, session: Url) {
        let scopes = [push_scope(repo)];
        let _ = self
            .send(Method::DELETE, session, &scopes, HeaderMap::new(), None)
            .await;
    }

    /// The digest a manifest reference resolves to, if it exists.
    pub async fn manifest_digest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Digest>, NodeError> {
        let url = self.v2(&format!("{repo}/manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        let accept = [
            media::OCI_MANIFEST,
            media::OCI_INDEX,
            media::DOCKER_MANIFEST,
            media::DOCKER_MANIFEST_LIST,
        ]
        .join(", ");
        headers.insert(ACCEPT, header_value(&accept)?);
        let scopes = [push_scope(repo)];
        let resp = self.send(Method::HEAD, url, &scopes, headers, None).await?;
        match resp.status() {
            StatusCode::OK => Ok(content_digest(&resp)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(failure(&format!("HEAD {repo}:{reference}"), resp).await),
        }
    }

    /// Stores a manifest under `reference` (a tag or its digest); the
    /// digest the node answered with.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> Result<Option<Digest>, NodeError> {
        let url = self.v2(&format!("{repo}/manifests/{reference}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, header_value(media_type)?);
        let scopes = [push_scope(repo)];
        let resp = self
            .send(Method::PUT, url, &scopes, headers, Some(bytes))
            .await?;
        match resp.status() {
            StatusCode::CREATED => Ok(content_digest(&resp)),
            _ => Err(failure(&format!("PUT {repo}:{reference}"), resp).await),
        }
    }

    /// Sends a request, answering one 401 by signing in and retrying
    /// transient failures; any other answer is the caller's to read.
    async fn send(
        &self,
        method: Method,
        url: Url,
        scopes: &[String],
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<Response, NodeError> {
        let what = format!("{method} {}", url.path());
        let mut signed_in = false;
        let mut tries = 0;
        loop {
            tries += 1;
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .headers(headers.clone())
                .timeout(REQUEST_TIMEOUT);
            if let Some(body) = &body {
                req = req.body(body.clone());
            }
            if let Some(auth) = self.authorization(scopes).await? {
                req = req.header(AUTHORIZATION, auth);
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) if tries < TRIES => {
                    tracing::debug!(%what, error = %chain(&e), "retrying");
                    tokio::time::sleep(backoff(tries)).await;
                    continue;
                }
                Err(e) => {
                    return Err(NodeError {
                        message: format!("{what}: {}", chain(&e)),
                        transient: true,
                    })
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !signed_in {
                signed_in = true;
                self.sign_in(&resp, scopes).await?;
                continue;
            }
            if is_transient(status) && tries < TRIES {
                let wait = retry_after(&resp).unwrap_or_else(|| backoff(tries));
                tracing::debug!(%what, %status, "retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` for a request needing `scopes`: a token once the
    /// node asked for tokens, else the basic credentials.
    async fn authorization(&self, scopes: &[String]) -> Result<Option<String>, NodeError> {
        let realm = self.realm.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(realm) = realm else {
            return Ok(self.basic());
        };
        let key = scopes.join(" ");
        {
            let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((token, until)) = tokens.get(&key) {
                if *until > Instant::now() {
                    return Ok(Some(format!("Bearer {token}")));
                }
            }
        }
        let (token, life) = self.fetch_token(&realm, scopes).await?;
        let until = Instant::now()
            + life
                .saturating_sub(TOKEN_MARGIN)
                .max(Duration::from_secs(1));
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, (_, t)| *t > Instant::now());
        tokens.insert(key, (token.clone(), until));
        Ok(Some(format!("Bearer {token}")))
    }

    fn basic(&self) -> Option<String> {
        use base64::Engine as _;
        let (user, password) = self.login.as_ref()?;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Some(format!("Basic {encoded}"))
    }

    /// Answers a 401: a Bearer challenge names the token realm to use from
    /// now on; a Basic one can only be met with --login.
    async fn sign_in(&self, resp: &Response, scopes: &[String]) -> Result<(), NodeError> {
        let header = resp
            .headers()
            .get(http::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        match parse_challenge(header) {
            Some(Challenge::Bearer { realm, service, .. }) => {
                let realm = Realm {
                    url: realm,
                    service,
                };
                tracing::debug!(realm = %realm.url, "the node hands out tokens");
                *self.realm.lock().unwrap_or_else(|p| p.into_inner()) = Some(realm);
                // Whatever was held for these scopes did not do.
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&scopes.join(" "));
                Ok(())
            }
            _ if self.login.is_none() => Err(refused(
                "the node asks for sign-in: give --login USER (a user who may push) and the password in BERTH_PASSWORD"
                    .into(),
            )),
            _ => Err(refused(format!(
                "the node refused the password of --login {:?}",
                self.login.as_ref().map(|l| l.0.as_str()).unwrap_or_default()
            ))),
        }
    }

    async fn fetch_token(
        &self,
        realm: &Realm,
        scopes: &[String],
    ) -> Result<(String, Duration), NodeError> {
        let mut url = Url::parse(&realm.url)
            .map_err(|e| refused(format!("the token realm {:?} is not a URL: {e}", realm.url)))?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = &realm.service {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", scope);
            }
        }
        let mut req = self.http.get(url).timeout(REQUEST_TIMEOUT);
        if let Some(basic) = self.basic() {
            req = req.header(AUTHORIZATION, basic);
        }
        let resp = req.send().await.map_err(|e| NodeError {
            message: format!("token realm {}: {}", realm.url, chain(&e)),
            transient: true,
        })?;
        let status = resp.status();
        if !status.is_success() {
            let mut e = failure(&format!("token request to {}", realm.url), resp).await;
            e.transient = is_transient(status);
            return Err(e);
        }
        let body = resp.bytes().await.map_err(|e| NodeError {
            message: format!("token realm {}: {}", realm.url, chain(&e)),
            transient: true,
        })?;
        let (token, life) = read_token_answer(&body).map_err(refused)?;
        Ok((token, Duration::from_secs(life.unwrap_or(60))))
    }
}

fn empty_body() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    headers
}

fn header_value(text: &str) -> Result<HeaderValue, NodeError> {
    HeaderValue::from_str(text).map_err(|e| refused(format!("{text:?}: {e}")))
}

fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn backoff(tries: u32) -> Duration {
    Duration::from_millis(500 << tries.min(5))
}

/// A `Retry-After` in seconds, at most a minute.
fn retry_after(resp: &Response) -> Option<Duration> {
    let secs: u64 = resp
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

fn location(resp: &Response) -> Result<Url, NodeError> {
    let value = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| refused("the node opened an upload without a Location".into()))?;
    resp.url()
        .join(value)
        .map_err(|e| refused(format!("upload Location {value:?}: {e}")))
}

fn content_digest(resp: &Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A refusal worded with the node's own OCI error message.
async fn failure(what: &str, resp: Response) -> NodeError {
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let error = &body["errors"][0];
    let detail = match (error["code"].as_str(), error["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, Some(message)) => message.to_owned(),
        (None, None) => "no error message".to_owned(),
    };
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            " (import as a user who may push: --login USER, the password in BERTH_PASSWORD)"
        }
        _ => "",
    };
    NodeError {
        message: format!("{what}: {status} {detail}{hint}"),
        transient: is_transient(status),
    }
}

/// An error with its causes, which reqwest keeps apart.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::extract::{Query, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;

    use super::*;

    /// A registry that wants tokens, like Distribution behind a token
    /// service: it records the scopes asked for.
    #[derive(Clone, Default)]
    struct Fake {
        base: Arc<Mutex<String>>,
        scopes: Arc<Mutex<Vec<String>>>,
    }

    async fn v2(State(fake): State<Fake>, headers: HeaderMap) -> Response {
        let auth = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        if auth == Some("Bearer granted") {
            return StatusCode::OK.into_response();
        }
        let base = fake.base.lock().unwrap().clone();
        let challenge = format!(r#"Bearer realm="{base}/token",service="fake""#);
        (
            StatusCode::UNAUTHORIZED,
            [(http::header::WWW_AUTHENTICATE, challenge)],
        )
            .into_response()
    }

    async fn token(
        State(fake): State<Fake>,
        Query(query): Query<Vec<(String, String)>>,
        headers: HeaderMap,
    ) -> Response {
        let basic = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        // "u:p" in base64.
        if basic != Some("Basic dTpw") {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let mut scopes = fake.scopes.lock().unwrap();
        for (k, v) in query {
            scopes.push(format!("{k}={v}"));
        }
        r#"{"token":"granted","expires_in":300}"#.into_response()
    }

    async fn serve() -> (String, Fake) {
        let fake = Fake::default();
        let app = Router::new()
            .route("/v2/", get(v2))
            .route("/token", get(token))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        *fake.base.lock().unwrap() = base.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, fake)
    }

    #[tokio::test]
    async fn a_bearer_challenge_is_answered_with_a_token() {
        let (base, fake) = serve().await;
        let login = Some(("u".to_owned(), "p".to_owned()));
        let node = Node::with(reqwest::Client::new(), base.clone(), login);
        node.ping().await.unwrap();
        // The token is kept: a second request asks for none.
        node.ping().await.unwrap();
        assert_eq!(*fake.scopes.lock().unwrap(), ["service=fake"]);

        let url = node.v2("").unwrap();
        let scopes = [push_scope("a/b"), pull_scope("c")];
        node.send(Method::GET, url, &scopes, HeaderMap::new(), None)
            .await
            .unwrap();
        assert_eq!(
            fake.scopes.lock().unwrap()[1..],
            [
                "service=fake",
                "scope=repository:a/b:pull,push",
                "scope=repository:c:pull"
            ]
        );

        let wrong = Node::with(
            reqwest::Client::new(),
            base.clone(),
            Some(("u".into(), "x".into())),
        );
        let e = wrong.ping().await.unwrap_err();
        assert!(!e.transient);
        assert!(e.message.contains("401"), "{e}");
        let anonymous = Node::with(reqwest::Client::new(), base, None);
        let e = anonymous.ping().await.unwrap_err();
        assert!(e.message.contains("--login"), "{e}");
    }
}
