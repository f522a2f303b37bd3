//! The in-process test node and the builders every test module shares.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Digest as _;
use tempfile::TempDir;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A registry node serving on an ephemeral loopback port, with its data in a
/// temporary directory that lives as long as the node.
pub struct TestNode {
    dir: TempDir,
    config: berth::config::ServeConfig,
    server: Option<berth::server::Server>,
    pub http: reqwest::Client,
}

impl TestNode {
    pub async fn start() -> TestNode {
        let dir = tempfile::tempdir().expect("temporary data directory");
        let config = berth::config::ServeConfig::for_test(dir.path());
        TestNode::start_with(dir, config).await
    }

    /// A node with its own configuration (a cluster member, say).
    pub async fn start_with(dir: TempDir, mut config: berth::config::ServeConfig) -> TestNode {
        let server = serve(&config).await;
        // A restart comes back on the same ports, as its peers know them.
        config.listen = server.addr;
        if let Some(peer) = server.peer_addr {
            config.peer_listen = peer;
        }
        TestNode {
            http: client(&config),
            dir,
            config,
            server: Some(server),
        }
    }

    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    pub fn server(&self) -> &berth::server::Server {
        self.server.as_ref().expect("node is running")
    }

    /// Stops the node (its data directory stays).
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops the node and starts a new one on the same data directory.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.server = Some(serve(&self.config).await);
        // Pooled connections pointed at the old listener.
        self.http = client(&self.config);
    }

    /// The configuration the next [`TestNode::restart`] uses.
    pub fn config_mut(&mut self) -> &mut berth::config::ServeConfig {
        &mut self.config
    }

    /// Returns once the node passes `/readyz`: a new node forms its
    /// one-member cluster just after it starts listening.
    pub async fn until_ready(&self) {
        let ready = || async {
            let resp = self.get("/readyz").send().await;
            resp.is_ok_and(|r| r.status() == StatusCode::OK)
        };
        let start = Instant::now();
        while !ready().await {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "node not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().expect("node is running").addr
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A full URL for a path such as `/v2/`, or for a `Location` value the
    /// node returned (relative or absolute).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            let scheme = if self.config.tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{}{}", self.addr(), path)
        }
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.req(Method::GET, path)
    }

    pub fn head(&self, path: &str) -> RequestBuilder {
        self.req(Method::HEAD, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.req(Method::PUT, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.req(Method::POST, path)
    }

    pub fn patch(&self, path: &str) -> RequestBuilder {
        self.req(Method::PATCH, path)
    }

    pub fn delete(&self, path: &str) -> RequestBuilder {
        self.req(Method::DELETE, path)
    }

    /// `GET path` with basic credentials.
    pub async fn get_as(&self, path: &str, user: &str, password: &str) -> Response {
        send(self.get(path).basic_auth(user, Some(password))).await
    }

    /// Opens an upload session; returns its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let resp = send(self.post(&format!("/v2/{repo}/blobs/uploads/"))).await;
        assert_eq!(
            resp.status(),
            StatusCode::ACCEPTED,
            "POST uploads/ in {repo}"
        );
        header(&resp, LOCATION.as_str())
    }

    /// Pushes a blob as a session: `POST` then `PUT ?digest=` with the body.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let location = self.start_upload(repo).await;
        let resp = send(
            self.put(&with_digest(&location, &digest))
                .body(bytes.to_vec()),
        )
        .await;
        assert_eq!(
            resp.status(),
            StatusCode::CREATED,
            "PUT blob {digest} in {repo}"
        );
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        digest
    }

    /// Pushes a manifest under a tag or digest; returns the response after
    /// checking it is 201.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        let resp = send(
            self.put(&format!("/v2/{repo}/manifests/{reference}"))
                .header(CONTENT_TYPE, media_type)
                .body(body.to_vec()),
        )
        .await;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = resp.text().await.unwrap_or_default();
            panic!("PUT manifest {repo}:{reference} gave {status}: {text}");
        }
        resp
    }

    /// Pushes a small random image (config and two layers) under `tag`.
    pub async fn push_image(&self, repo: &str, tag: &str) -> PushedImage {
        let config_bytes =
            format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#).into_bytes();
        let config = Blob::new(
            OCI_CONFIG,
            self.push_blob(repo, &config_bytes).await,
            config_bytes.len(),
        );
        let mut layers = Vec::new();
        for size in [1500, 70_000] {
            let bytes = random_blob(size);
            layers.push((
                Blob::new(OCI_LAYER, self.push_blob(repo, &bytes).await, size),
                bytes,
            ));
        }
        let descs: Vec<Blob> = layers.iter().map(|(b, _)| b.clone()).collect();
        let manifest = image_manifest(&config, &descs, json!({}));
        let resp = self.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        let digest = sha256(&manifest);
        assert_eq!(header(&resp, "docker-content-digest"), digest);
        PushedImage {
            digest,
            manifest,
            config,
            layers,
        }
    }
}

/// What [`TestNode::push_image`] pushed.
pub struct PushedImage {
    pub digest: String,
    pub manifest: Vec<u8>,
    pub config: Blob,
    pub layers: Vec<(Blob, Vec<u8>)>,
}

/// A content descriptor for building manifests.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: usize,
}

impl Blob {
    pub fn new(media_type: &str, digest: String, size: usize) -> Blob {
        Blob {
            media_type: media_type.to_owned(),
            digest,
            size,
        }
    }

    pub fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.size })
    }
}

async fn serve(config: &berth::config::ServeConfig) -> berth::server::Server {
    berth::server::start(config).await.expect("node starts")
}

/// A client for a node. The tests of HTTPS itself check certificates with a
/// client of their own; this one only needs to reach the node.
fn client(config: &berth::config::ServeConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(config.tls.is_some())
        .build()
        .expect("http client")
}

/// Sends a request, failing the test on a transport error.
pub async fn send(req: RequestBuilder) -> Response {
    req.send().await.expect("request reaches the node")
}

/// Polls `done` every 200 ms for up to `limit`.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    done()
}

pub fn random_blob(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    bytes
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

pub fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(bytes)))
}

/// Adds `digest=` to an upload `Location`, which may already carry a query.
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// An OCI image manifest; `extra` fields (an object) are added at the top.
pub fn image_manifest(config: &Blob, layers: &[Blob], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    merge(&mut m, extra);
    serde_json::to_vec(&m).expect("manifest serializes")
}

/// An OCI index over the given manifests.
pub fn index_manifest(children: &[Blob], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(Blob::descriptor).collect::<Vec<_>>(),
    });
    merge(&mut m, extra);
    serde_json::to_vec(&m).expect("index serializes")
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        t.extend(e);
    }
}

/// The value of a response header as text; fails the test when absent.
pub fn header(resp: &Response, name: &str) -> String {
    header_of(resp.headers(), name)
}

pub fn header_of(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("response lacks {name}: {headers:?}"))
        .to_str()
        .expect("header is text")
        .to_owned()
}

/// Checks an OCI error response: status, JSON content type and the body
/// `{"errors":[{"code":…,"message":…}]}` whose first code is `code`.
/// Returns the body.
pub async fn assert_oci_error(resp: Response, status: u16, code: &str) -> Value {
    let got = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("error body");
    check_oci_error(got, &headers, &body, status, code).unwrap_or_else(|e| panic!("{e}"))
}

/// The checks of [`assert_oci_error`], as a result so tables can collect them.
pub fn check_oci_error(
    got: u16,
    headers: &HeaderMap,
    body: &[u8],
    status: u16,
    code: &str,
) -> Result<Value, String> {
    let text = String::from_utf8_lossy(body);
    if got != status {
        return Err(format!("status {got}, want {status} ({code}); body {text}"));
    }
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("Content-Type {ct:?} is not JSON; body {text}"));
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON ({e}): {text}"))?;
    let errors = v["errors"]
        .as_array()
        .ok_or_else(|| format!("no errors array: {text}"))?;
    let first = errors
        .first()
        .ok_or_else(|| format!("empty errors array: {text}"))?;
    if first["code"] != code {
        return Err(format!("code {}, want {code}; body {text}", first["code"]));
    }
    if !first["message"].is_string() {
        return Err(format!("message is not a string: {text}"));
    }
    Ok(v)
}

/// Reads a JSON response body.
pub async fn json_body(resp: Response) -> Value {
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The session id at the end of an upload `Location`.
pub fn upload_id(location: &str) -> String {
    let last = location.rsplit('/').next().unwrap_or(location);
    last.split('?').next().unwrap_or(last).to_owned()
}

/// A node whose htpasswd file holds `users` and `admin` (all with
/// `password`), with `admin` its administrator and its test client signed
/// in as `admin`. The second value keeps the htpasswd file.
pub async fn node_with_users(
    users: &[&str],
    admin: &str,
    password: &str,
) -> (TestNode, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let text: String = users
        .iter()
        .chain([&admin])
        .map(|u| format!("{u}:{}\n", bcrypt::hash(password, 4).unwrap()))
        .collect();
    std::fs::write(files.path().join("htpasswd"), text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::config::ServeConfig::for_test(dir.path());
    config.htpasswd = Some(files.path().join("htpasswd"));
    config.admins.insert(admin.into());
    let mut node = TestNode::start_with(dir, config).await;
    node.http = signed_in(admin, password);
    (node, files)
}

/// A client that sends basic credentials with every request.
pub fn signed_in(user: &str, password: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let basic = reqwest::Client::new()
        .get("http://x/")
        .basic_auth(user, Some(password))
        .build()
        .unwrap();
    let auth = reqwest::header::AUTHORIZATION;
    headers.insert(auth.clone(), basic.headers()[auth].clone());
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}
