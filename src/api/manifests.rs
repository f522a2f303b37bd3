//! `GET|HEAD|PUT|DELETE /v2/<name>/manifests/<reference>`

use axum::body::Body;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, LOCATION};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::empty;
use super::headers::{accept, content_type, value, DOCKER_CONTENT_DIGEST, OCI_SUBJECT};
use crate::meta::events::Origin;
use crate::oci::{Reference, RepoName};
use crate::registry::mirror::Pull;
use crate::registry::{Error, Registry};
use crate::storage::ByteStream;

pub async fn get(
    reg: &Registry,
    via: Option<&Pull>,
    repo: &RepoName,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
    pulled: Option<Origin>,
) -> Result<Response, Error> {
    let found = match via {
        Some(pull) => reg.pull_manifest(pull, reference, accept(headers)).await?,
        None => reg.get_manifest(repo, reference, accept(headers)).await?,
    };
    if let Some(origin) = pulled {
        let repo = via.map_or(repo, |p| &p.cache);
        reg.note_pull(repo, reference, &found, origin);
    }
    let len = found.record.body.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from(found.record.body)
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, value(&found.record.media_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(DOCKER_CONTENT_DIGEST, value(found.digest.as_str()));
    h.insert(ETAG, value(format!("\"{}\"", found.digest)));
    Ok(resp)
}

pub async fn put(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    headers: &HeaderMap,
    body: ByteStream,
    origin: Origin,
) -> Result<Response, Error> {
    let pushed = reg
        .put_manifest(repo, reference, content_type(headers), body, origin)
        .await?;
    let location = value(format!("/v2/{repo}/manifests/{}", pushed.digest));
    let digest = value(pushed.digest.as_str());
    let mut resp = empty(
        StatusCode::CREATED,
        [
            (LOCATION.as_str(), location),
            (DOCKER_CONTENT_DIGEST, digest),
        ],
    );
    if let Some(subject) = pushed.subject {
        resp.headers_mut()
            .insert(OCI_SUBJECT, value(subject.as_str()));
    }
    Ok(resp)
}

pub async fn delete(
    reg: &Registry,
    repo: &RepoName,
    reference: &Reference,
    origin: Origin,
) -> Result<Response, Error> {
    reg.delete_manifest(repo, reference, origin).await?;
    Ok(empty(StatusCode::ACCEPTED, []))
}
