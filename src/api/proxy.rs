//! Forwarding an upload-session request to the node that owns the session,
//! so uploads work behind round-robin balancing. The request body streams
//! to the owner; the owner's answer (small: headers and at most an error
//! document) is read whole before it is relayed, so an answer whose status
//! arrived is relayed whole even if the connection to the owner then fails.

use axum::body::Body;
use axum::response::Response;
use futures_util::TryStreamExt;
use http::{HeaderMap, Method, Uri};

use crate::registry::Error;
use crate::storage::ByteStream;

/// Marks a request a node has already forwarded; it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-berth-forwarded";

/// Request headers the owner needs to handle an upload request.
const REQUEST_HEADERS: [&str; 5] = [
    "content-type",
    "content-length",
    "content-range",
    "transfer-encoding",
    "authorization",
];
/// Response headers a client reads from an upload response (the length is
/// the relayed body's own).
const RESPONSE_HEADERS: [&str; 5] = [
    "location",
    "range",
    "docker-upload-uuid",
    "docker-content-digest",
    "content-type",
];
/// Most of an owner's answer body relayed; upload answers are empty or a
/// short error document.
const MAX_ANSWER: usize = 64 << 10;

/// How this node reaches the other nodes' client listeners.
pub struct Forwarder {
    client: reqwest::Client,
    scheme: &'static str,
}

impl Forwarder {
    /// Plain HTTP, for nodes that serve it.
    pub fn plain() -> Forwarder {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .expect("an HTTP client always builds");
        Forwarder {
            client,
            scheme: "http",
        }
    }

    /// HTTPS with `tls`, which trusts the nodes of this cluster.
    pub fn tls(tls: rustls::ClientConfig) -> Forwarder {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .use_preconfigured_tls(tls)
            .build()
            .expect("an HTTPS client with a rustls configuration always builds");
        Forwarder {
            client,
            scheme: "https",
        }
    }
}

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a node already forwarded this request.
pub fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// Sends the request to `owner` (its client API address) and relays the
/// answer.
pub async fn forward(
    via: &Forwarder,
    owner: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<Response, Error> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}://{owner}{path}", via.scheme);
    let mut req = via
        .client
        .request(method, &url)
        .header(FORWARDED_HEADER, "1")
        .body(reqwest::Body::wrap_stream(body));
    for name in REQUEST_HEADERS {
        for value in headers.get_all(name) {
            req = req.header(name, value.clone());
        }
    }
    let resp = req.send().await.map_err(|e| {
        Error::Unavailable(format!(
            "the node holding this upload ({owner}) did not answer: {e}"
        ))
    })?;
    let status = resp.status();
    let mut out = Response::builder().status(status);
    for name in RESPONSE_HEADERS {
        for value in resp.headers().get_all(name) {
            out = out.header(name, value.clone());
        }
    }
    let body = match answer_body(resp).await {
        Ok(body) => body,
        // The owner decided, and its status and headers say what: a
        // committed upload stays committed for the client too.
        Err(e) if status.is_success() => {
            tracing::warn!(%owner, %status, error = %e, "the owner's answer was cut off after its status; relaying the status");
            bytes::Bytes::new()
        }
        Err(e) => {
            return Err(Error::Unavailable(format!(
                "the node holding this upload ({owner}) stopped answering: {e}"
            )))
        }
    };
    out.body(Body::from(body))
        .map_err(|e| Error::Internal(format!("relaying the owner's answer: {e}")))
}

/// The body of an owner's answer, at most [`MAX_ANSWER`] bytes of it.
async fn answer_body(resp: reqwest::Response) -> Result<bytes::Bytes, String> {
    let mut stream = resp.bytes_stream();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = stream.try_next().await.map_err(|e| e.to_string())? {
        let room = MAX_ANSWER.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An owner that sends `head` and `body` and then drops the connection.
    async fn owner(head: &'static str, body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            conn.write_all(head.as_bytes()).await.unwrap();
            conn.write_all(body.as_bytes()).await.unwrap();
        });
        addr
    }

    async fn forward_to(addr: &str) -> Result<Response, Error> {
        let uri: Uri = "/v2/a/blobs/uploads/x?digest=sha256:0".parse().unwrap();
        let body: ByteStream = Box::pin(futures_util::stream::empty());
        forward(
            &Forwarder::plain(),
            addr,
            Method::PUT,
            &uri,
            &HeaderMap::new(),
            body,
        )
        .await
    }

    #[tokio::test]
    async fn a_success_cut_off_after_its_status_is_still_a_success() {
        let addr = owner(
            "HTTP/1.1 201 Created\r\nLocation: /v2/a/blobs/sha256:0\r\nDocker-Content-Digest: sha256:0\r\nContent-Length: 40\r\n\r\n",
            "only part",
        )
        .await;
        let resp = forward_to(&addr).await.unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["location"], "/v2/a/blobs/sha256:0");
        assert_eq!(resp.headers()["docker-content-digest"], "sha256:0");
        // The client reads a whole answer, not one that breaks off.
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn a_refusal_cut_off_is_unavailable_and_a_whole_one_is_relayed() {
        let addr = owner(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n",
            "{\"errors\":",
        )
        .await;
        assert!(matches!(
            forward_to(&addr).await,
            Err(Error::Unavailable(_))
        ));
        let addr = owner(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n",
            "{\"errors\":[]}",
        )
        .await;
        let resp = forward_to(&addr).await.unwrap();
        assert_eq!(resp.status(), 400);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&body[..], b"{\"errors\":[]}");
    }
}
