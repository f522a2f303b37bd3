//! Request framing HTTP itself forbids (RFC 9112), refused before any
//! handler runs: an HTTP/1.1 request without exactly one valid `Host`, and a
//! request target or header section past its limit.
//!
//! hyper refuses the rest of what RFC 9112 §6.3 lists: a malformed or
//! repeated conflicting `Content-Length`, and a `Transfer-Encoding` that
//! does not end in `chunked` (400); a request carrying both
//! `Transfer-Encoding` and `Content-Length` is read by its chunked framing
//! alone and its connection closed after the answer, as §6.3 allows, so no
//! request can be smuggled behind it.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Version};

use crate::registry::Error;

/// Request headers larger than this in total are refused (431).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// Request targets (path and query) longer than this are refused (414).
pub const MAX_TARGET_BYTES: usize = 8 << 10;

pub async fn check(request: Request, next: Next) -> Response {
    match refusal(&request) {
        None => next.run(request).await,
        Some(e) => {
            let mut resp = e.into_response();
            // What follows such a request cannot be trusted to be framed
            // as the client meant: end the connection after the answer.
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    }
}

fn refusal(request: &Request) -> Option<Error> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    if target > MAX_TARGET_BYTES {
        return Some(Error::UriTooLong {
            limit: MAX_TARGET_BYTES,
        });
    }
    if let Err(e) = check_header_size(request.headers()) {
        return Some(e);
    }
    if request.version() == Version::HTTP_11 {
        return check_host(request.headers()).err();
    }
    None
}

fn check_header_size(headers: &HeaderMap) -> Result<(), Error> {
    let total: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if total > MAX_HEADER_BYTES {
        return Err(Error::HeadersTooLarge {
            limit: MAX_HEADER_BYTES,
        });
    }
    Ok(())
}

/// RFC 9112 §3.2: exactly one `Host`, holding a valid host.
fn check_host(headers: &HeaderMap) -> Result<(), Error> {
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let invalid = |why: &str| Err(Error::RequestInvalid(why.into()));
    let Some(host) = hosts.next() else {
        return invalid("an HTTP/1.1 request must carry a Host header");
    };
    if hosts.next().is_some() {
        return invalid("a request must carry exactly one Host header");
    }
    let valid = host.to_str().ok().is_some_and(|h| {
        h.is_empty() || (h.parse::<http::uri::Authority>().is_ok() && !h.contains('@'))
    });
    if !valid {
        return invalid("the Host header is not a valid host");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(hosts: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(http::header::HOST, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_rules() {
        assert!(check_host(&headers(&["registry:5000"])).is_ok());
        assert!(check_host(&headers(&["[::1]:5000"])).is_ok());
        assert!(check_host(&headers(&["10.0.0.1"])).is_ok());
        for bad in [&[][..], &["a", "b"], &["a b"], &["user@host"], &["a/b"]] {
            assert!(check_host(&headers(bad)).is_err(), "{bad:?}");
        }
    }
}
