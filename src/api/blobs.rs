//! `GET|HEAD|DELETE /v2/<name>/blobs/<digest>`

use axum::body::Body;
use axum::response::Response;
use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG,
};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::empty;
use super::headers::{blob_range, value, DOCKER_CONTENT_DIGEST};
use crate::oci::{media, Digest, RepoName};
use crate::registry::mirror::Pull;
use crate::registry::{Error, Registry};

pub async fn get(
    reg: &Registry,
    via: Option<&Pull>,
    repo: &RepoName,
    digest: &Digest,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, Error> {
    let etag = format!("\"{digest}\"");
    // HEAD has no range (RFC 9110 §14.2).
    let range = (!head).then(|| blob_range(headers, &etag)).flatten();
    let (status, size, body, content_range) = if head {
        let size = match via {
            Some(pull) => reg.pull_blob_size(pull, digest).await?,
            None => reg.stat_blob(repo, digest).await?,
        };
        (StatusCode::OK, size, Body::empty(), None)
    } else {
        let read = match via {
            Some(pull) => reg.pull_blob(pull, digest, range).await?,
            None => reg.read_blob(repo, digest, range).await?,
        };
        match read.range {
            Some((first, last)) => (
                StatusCode::PARTIAL_CONTENT,
                last - first + 1,
                Body::from_stream(read.body),
                Some(value(format!("bytes {first}-{last}/{}", read.size))),
            ),
            None => (
                StatusCode::OK,
                read.size,
                Body::from_stream(read.body),
                None,
            ),
        }
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(size));
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media::OCTET_STREAM));
    h.insert(DOCKER_CONTENT_DIGEST, value(digest.as_str()));
    h.insert(ETAG, value(etag));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    // Content under a digest never changes.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=31536000"));
    if let Some(cr) = content_range {
        h.insert(CONTENT_RANGE, cr);
    }
    Ok(resp)
}

pub async fn delete(reg: &Registry, repo: &RepoName, digest: &Digest) -> Result<Response, Error> {
    reg.delete_blob(repo, digest).await?;
    Ok(empty(
        StatusCode::ACCEPTED,
        [(DOCKER_CONTENT_DIGEST, value(digest.as_str()))],
    ))
}
