//! A refusal must never break the client's next request. Every row of the
//! bad-input table that carries a body is sent on a fresh connection, then
//! a second request on the same connection: over HTTP/1.1 and HTTP/2, plain
//! and TLS, with the row's own small body and with one past the drain limit.
//! The second request must succeed, or the first answer must have said
//! `Connection: close` (and then the connection must end cleanly, with the
//! answer read whole). No row may end in a reset or an EOF.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::bad_input::{all_rows, row, Fixture, Row};
use crate::cluster::TestCluster;
use crate::common::*;
use crate::tls::Ca;

/// A body larger than the node drains, so the answer must close.
const PAST_DRAIN: usize = 2 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Version {
    H1,
    H2,
}

/// One client connection, speaking either version.
enum Conn {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

struct Answer {
    status: u16,
    close: bool,
}

impl Conn {
    async fn open<S>(io: S, version: Version) -> Result<Conn, String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        match version {
            Version::H1 => {
                let (send, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Ok(Conn::H1(send))
            }
            Version::H2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(conn);
                Ok(Conn::H2(send))
            }
        }
    }

    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> Result<Answer, String> {
        let resp = match self {
            Conn::H1(s) => {
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(req).await
            }
            Conn::H2(s) => {
                s.ready().await.map_err(|e| format!("not ready: {e}"))?;
                s.send_request(req).await
            }
        }
        .map_err(|e| format!("no answer: {e:?}"))?;
        let status = resp.status().as_u16();
        let close = resp
            .headers()
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // The whole answer must arrive, not a reset midway.
        resp.into_body()
            .collect()
            .await
            .map_err(|e| format!("answer cut short: {e:?}"))?;
        Ok(Answer { status, close })
    }
}

/// A request as each version frames it: HTTP/1.1 in origin form with a
/// `Host`, HTTP/2 with the authority in the target.
fn request(authority: &str, version: Version, method: &str, path: &str) -> http::request::Builder {
    match version {
        Version::H1 => http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, authority),
        Version::H2 => http::Request::builder()
            .method(method)
            .uri(format!("http://{authority}{path}")),
    }
}

fn row_request(authority: &str, version: Version, row: &Row) -> http::Request<Full<Bytes>> {
    let mut req = request(authority, version, row.method, &row.path);
    for (k, v) in &row.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req.body(Full::new(Bytes::from(row.body.clone())))
        .expect("a row is a valid request")
}

fn ping(authority: &str, version: Version) -> http::Request<Full<Bytes>> {
    request(authority, version, "GET", "/v2/")
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// How the test reaches the node: plain TCP, or TLS trusting `ca`.
struct Transport {
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Transport {
    async fn connect(&self, node: &TestNode, version: Version) -> Result<Conn, String> {
        let tcp = TcpStream::connect(node.addr())
            .await
            .map_err(|e| e.to_string())?;
        match &self.tls {
            None => Conn::open(tcp, version).await,
            Some(tls) => {
                let name = ServerName::try_from("localhost").expect("valid name");
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("handshake: {e}"))?;
                Conn::open(stream, version).await
            }
        }
    }
}

fn tls_connector(ca_der: &[u8], version: Version) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("the test CA is a valid root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = match version {
        Version::H1 => vec![b"http/1.1".to_vec()],
        Version::H2 => vec![b"h2".to_vec()],
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Sends `row`, then a ping on the same connection; what went wrong.
async fn check(
    node: &TestNode,
    transport: &Transport,
    version: Version,
    row: &Row,
) -> Result<(), String> {
    let authority = node.addr().to_string();
    let mut conn = transport.connect(node, version).await?;
    let first = conn.send(row_request(&authority, version, row)).await?;
    // A row with a body of another size may be refused for another reason.
    let status_ok = match row.status {
        0 => (400..500).contains(&first.status),
        want => first.status == want,
    };
    if !status_ok {
        return Err(format!("status {}, want {}", first.status, row.status));
    }
    match conn.send(ping(&authority, version)).await {
        Ok(second) if second.status == 200 => Ok(()),
        Ok(second) => Err(format!("second request got {}", second.status)),
        // Closing is allowed only when the answer said so.
        Err(_) if version == Version::H1 && first.close => Ok(()),
        Err(e) => Err(format!(
            "second request on the connection failed after a keep-alive answer: {e}"
        )),
    }
}

async fn run(node: &TestNode, transport: &Transport, version: Version) {
    let f = Fixture::new(node).await;
    // Rows that frame their own body are for raw sockets only.
    let rows: Vec<Row> = all_rows(&f)
        .into_iter()
        .filter(|r| r.has_body() && !r.frames_body())
        .collect();
    assert!(rows.len() >= 20, "only {} rows with a body", rows.len());
    let big: Vec<Row> = rows.iter().map(|r| r.with_body_len(PAST_DRAIN)).collect();
    let mut failures = Vec::new();
    for row in rows.iter().chain(&big) {
        if let Err(e) = check(node, transport, version, row).await {
            failures.push(format!("{}\n    {e}", row.describe()));
        }
    }
    assert!(
        failures.is_empty(),
        "{version:?}, {} of {} rows broke the connection:\n{}",
        failures.len(),
        rows.len() + big.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_plain_connections_usable() {
    let node = TestNode::start().await;
    for version in [Version::H1, Version::H2] {
        run(&node, &Transport { tls: None }, version).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_tls_connections_usable() {
    let ca = Ca::new();
    let certs = tempfile::tempdir().unwrap();
    let (files, _) = ca.issue(certs.path(), "node");
    let node = crate::tls::tls_node(&files).await;
    for version in [Version::H1, Version::H2] {
        let transport = Transport {
            tls: Some(tls_connector(&ca.der(), version)),
        };
        run(&node, &transport, version).await;
    }
}

/// A refusal the session's owner gives to a request another node forwards
/// leaves the client's connection to the forwarding node usable too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_of_forwarded_uploads_keep_connections_usable() {
    let cluster = TestCluster::start(3).await;
    let (owner, front) = (&cluster.nodes[0], &cluster.nodes[1]);
    let location = owner.start_upload("forwarded/app").await;
    let path = location
        .strip_prefix(&owner.url(""))
        .unwrap_or(&location)
        .to_owned();
    let mut failures = Vec::new();
    for version in [Version::H1, Version::H2] {
        for n in [5, PAST_DRAIN] {
            // Out of order: the session holds nothing yet.
            let refused = row("PATCH", path.clone(), 416, "BLOB_UPLOAD_INVALID")
                .header("Content-Range", format!("100-{}", 99 + n))
                .body(vec![b'f'; n]);
            if let Err(e) = check(front, &Transport { tls: None }, version, &refused).await {
                failures.push(format!("{version:?}, {n} bytes: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
