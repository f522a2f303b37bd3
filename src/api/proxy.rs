//! Forwarding an upload-session request to the node that owns the session,
//! body streamed both ways, so uploads work behind round-robin balancing.

use std::sync::LazyLock;

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

static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("an HTTP client without TLS always builds")
});

/// Whether a node already forwarded this request.
pub fn was_forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED_HEADER)
}

/// Sends the request to `owner` (its client API address) and relays the
/// answer.
pub async fn forward(
    owner: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<Response, Error> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("http://{owner}{path}");
    let mut req = CLIENT
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
