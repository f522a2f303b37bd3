//! A stand-in upstream registry for pull-through tests: it serves the
//! images a test gives it, counts every request by path, can require the
//! Bearer token flow or basic authentication, can send its blobs slowly,
//! and can lie about a blob's bytes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use crate::common::*;

const TOKEN: &str = "upstream-token-1";

#[derive(Clone, Copy, PartialEq)]
pub enum Auth {
    None,
    /// 401 with a Bearer challenge; tokens from `/token`.
    Bearer,
    /// 401 with a Basic challenge; `mirror:secret`.
    Basic,
}

#[derive(Default)]
struct Content {
    /// (repo, reference) → (media type, body)
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    blobs: HashMap<String, Bytes>,
    /// Digests whose bytes are sent corrupted.
    lies: Vec<String>,
    /// Requests by "METHOD path", but for those refused for want of
    /// sign-in.
    hits: HashMap<String, usize>,
}

struct Shared {
    auth: Auth,
    /// Pause between 64 KiB pieces of a blob.
    pace: Duration,
    content: Mutex<Content>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// An image the upstream serves: its manifest digest and layers.
pub struct Served {
    pub digest: String,
    pub config: (String, Vec<u8>),
    pub layers: Vec<(String, Vec<u8>)>,
}

impl FakeUpstream {
    pub async fn start(auth: Auth, pace: Duration) -> FakeUpstream {
        let shared = Arc::new(Shared {
            auth,
            pace,
            content: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        FakeUpstream {
            addr,
            shared,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves an image of `layers` under `repo:tag`.
    pub fn add_image(&self, repo: &str, tag: &str, layers: Vec<Vec<u8>>) -> Served {
        let config_bytes =
            format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}")
                .into_bytes();
        let config = (sha256(&config_bytes), config_bytes);
        let layers: Vec<(String, Vec<u8>)> = layers.into_iter().map(|l| (sha256(&l), l)).collect();
        let descriptors: Vec<Blob> = layers
            .iter()
            .map(|(d, l)| {
                Blob::new(
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    d.clone(),
                    l.len(),
                )
            })
            .collect();
        let config_blob = Blob::new(
            "application/vnd.oci.image.config.v1+json",
            config.0.clone(),
            config.1.len(),
        );
        let body = image_manifest(&config_blob, &descriptors, json!({}));
        let digest = sha256(&body);
        let mut c = self.shared.content.lock().unwrap();
        for (d, bytes) in layers.iter().chain([&config]) {
            c.blobs.insert(d.clone(), Bytes::from(bytes.clone()));
        }
        let entry = (OCI_MANIFEST.to_owned(), body);
        c.manifests.insert((repo.into(), tag.into()), entry.clone());
        c.manifests.insert((repo.into(), digest.clone()), entry);
        Served {
            digest,
            config,
            layers,
        }
    }

    /// Serves `body` as the manifest `reference` of `repo`, whatever its
    /// digest: a lie when `reference` is a digest of other bytes.
    pub fn serve_manifest(&self, repo: &str, reference: &str, body: Vec<u8>) {
        let mut c = self.shared.content.lock().unwrap();
        let entry = (OCI_MANIFEST.to_owned(), body);
        c.manifests.insert((repo.into(), reference.into()), entry);
    }

    /// Sends corrupted bytes for `digest` from now on.
    pub fn lie_about(&self, digest: &str) {
        self.shared.content.lock().unwrap().lies.push(digest.into());
    }

    /// How many requests asked for a path ending in `suffix`, by method.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        let c = self.shared.content.lock().unwrap();
        c.hits
            .iter()
            .filter(|(k, _)| k.starts_with(method) && k.ends_with(suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every request so far, by method and path.
    pub fn hits(&self) -> Vec<(String, usize)> {
        let c = self.shared.content.lock().unwrap();
        let mut hits: Vec<_> = c.hits.iter().map(|(k, n)| (k.clone(), *n)).collect();
        hits.sort();
        hits
    }

    /// Stops answering: the port refuses connections afterwards.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let headers = req.headers().clone();
    let count = || {
        let mut c = shared.content.lock().unwrap();
        *c.hits.entry(format!("{method} {path}")).or_default() += 1;
    };
    if path == "/token" {
        count();
        return token(&headers, &query);
    }
    if !authorized(shared.auth, &headers) {
        let challenge = match shared.auth {
            Auth::Basic => "Basic realm=\"fake\"".to_owned(),
            _ => format!(
                "Bearer realm=\"http://{}/token\",service=\"fake\"",
                headers
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default()
            ),
        };
        return reply(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            Body::empty(),
        );
    }
    // Only requests that got an answer count, not the sign-in's 401s.
    count();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return reply(StatusCode::NOT_FOUND, &[], Body::empty());
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let found = shared
            .content
            .lock()
            .unwrap()
            .manifests
            .get(&(repo.to_owned(), reference.to_owned()))
            .cloned();
        let Some((media_type, body)) = found else {
            return reply(StatusCode::NOT_FOUND, &[], Body::empty());
        };
        let headers = [
            ("content-type", media_type),
            ("docker-content-digest", sha256(&body)),
            ("content-length", body.len().to_string()),
        ];
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(body)
        };
        return reply(StatusCode::OK, &headers, body);
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        let (found, lie) = {
            let c = shared.content.lock().unwrap();
            (
                c.blobs.get(digest).cloned(),
                c.lies.iter().any(|l| l == digest),
            )
        };
        let Some(mut bytes) = found else {
            return reply(StatusCode::NOT_FOUND, &[], Body::empty());
        };
        if lie {
            let mut forged = bytes.to_vec();
            forged[0] ^= 0xff;
            bytes = Bytes::from(forged);
        }
        let headers = [("content-length", bytes.len().to_string())];
        if method == Method::HEAD {
            return reply(StatusCode::OK, &headers, Body::empty());
        }
        let pace = shared.pace;
        let pieces = futures_util::stream::unfold(bytes, move |mut left| async move {
            if left.is_empty() {
                return None;
            }
            tokio::time::sleep(pace).await;
            let piece = left.split_to(left.len().min(64 << 10));
            Some((Ok::<_, std::io::Error>(piece), left))
        });
        return reply(StatusCode::OK, &headers, Body::from_stream(pieces));
    }
    reply(StatusCode::NOT_FOUND, &[], Body::empty())
}

fn authorized(auth: Auth, headers: &HeaderMap) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match auth {
        Auth::None => true,
        Auth::Bearer => given == format!("Bearer {TOKEN}"),
        Auth::Basic => given == basic("mirror", "secret"),
    }
}

fn token(headers: &HeaderMap, query: &str) -> Response {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    // Anonymous tokens are fine; wrong credentials are not.
    if given.is_some_and(|g| g != basic("mirror", "secret")) || !query.contains("scope=") {
        return reply(StatusCode::UNAUTHORIZED, &[], Body::empty());
    }
    let body = json!({ "token": TOKEN, "expires_in": 300 }).to_string();
    reply(
        StatusCode::OK,
        &[("content-type", "application/json".into())],
        Body::from(body),
    )
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    for (k, v) in headers {
        resp.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}
