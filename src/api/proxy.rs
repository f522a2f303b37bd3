//! Forwarding an upload-session request to the node that owns the session,
//! body streamed both ways, so uploads work behind round-robin balancing.

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
/// Response headers a client reads from an upload response.
const RESPONSE_HEADERS: [&str; 6] = [
    "location",
    "range",
    "docker-upload-uuid",
    "docker-content-digest",
    "content-type",
    "content-length",
];

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
    let mut out = Response::builder().status(resp.status());
    for name in RESPONSE_HEADERS {
        for value in resp.headers().get_all(name) {
            out = out.header(name, value.clone());
        }
    }
    let body = Body::from_stream(resp.bytes_stream().map_err(std::io::Error::other));
    out.body(body)
        .map_err(|e| Error::Internal(format!("relaying the owner's answer: {e}")))
}
