//! `POST /v2/<name>/blobs/uploads/` and `GET|PATCH|PUT|DELETE …/uploads/<id>`

use axum::response::Response;
use http::header::{LOCATION, RANGE};
use http::{HeaderMap, StatusCode};

use super::empty;
use super::headers::{
    content_length, declared_body, upload_range, value, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID,
};
use super::params::Params;
use crate::meta::events::Origin;
use crate::oci::{Digest, RepoName};
use crate::registry::{Error, Registry, StartUpload, UploadStarted};
use crate::storage::{ByteStream, UploadId};

pub async fn start(
    reg: &Registry,
    repo: &RepoName,
    params: &Params,
    may_mount: bool,
    headers: &HeaderMap,
    body: ByteStream,
    origin: &Origin,
) -> Result<Response, Error> {
    let mount = params.digest("mount")?.filter(|_| may_mount);
    let how = match (mount, params.digest("digest")?) {
        (Some(digest), _) => StartUpload::Mount {
            digest,
            from: params.repo("from")?,
        },
        (None, Some(digest)) => StartUpload::Monolithic {
            digest,
            body,
            length: content_length(headers)?,
        },
        (None, None) => StartUpload::Session,
    };
    match reg.start_upload(repo, how, origin).await? {
        UploadStarted::Committed(digest) => Ok(created(repo, &digest)),
        UploadStarted::Session(id) => Ok(session(StatusCode::ACCEPTED, repo, id, 0)),
    }
}

pub async fn status(reg: &Registry, repo: &RepoName, id: UploadId) -> Result<Response, Error> {
    let len = reg.upload_status(repo, id).await?;
    Ok(session(StatusCode::NO_CONTENT, repo, id, len))
}

pub async fn chunk(
    reg: &Registry,
    repo: &RepoName,
    id: UploadId,
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<Response, Error> {
    let len = reg
        .upload_chunk(repo, id, declared_body(headers)?, body)
        .await?;
    Ok(session(StatusCode::ACCEPTED, repo, id, len))
}

pub async fn finish(
    reg: &Registry,
    repo: &RepoName,
    id: UploadId,
    params: &Params,
    headers: &HeaderMap,
    body: ByteStream,
) -> Result<Response, Error> {
    let digest = params.digest("digest")?.ok_or(Error::DigestMissing)?;
    // A final chunk is optional; a declared range must still be in order.
    reg.finish_upload(repo, id, &digest, declared_body(headers)?, body)
        .await?;
    Ok(created(repo, &digest))
}

pub async fn cancel(reg: &Registry, repo: &RepoName, id: UploadId) -> Result<Response, Error> {
    reg.cancel_upload(repo, id).await?;
    Ok(empty(StatusCode::NO_CONTENT, []))
}

/// A response naming an upload session and how far it has come.
fn session(status: StatusCode, repo: &RepoName, id: UploadId, len: u64) -> Response {
    empty(
        status,
        [
            (
                LOCATION.as_str(),
                value(format!("/v2/{repo}/blobs/uploads/{id}")),
            ),
            (RANGE.as_str(), upload_range(len)),
            (DOCKER_UPLOAD_UUID, value(id.to_string())),
        ],
    )
}

fn created(repo: &RepoName, digest: &Digest) -> Response {
    empty(
        StatusCode::CREATED,
        [
            (
                LOCATION.as_str(),
                value(format!("/v2/{repo}/blobs/{digest}")),
            ),
            (DOCKER_CONTENT_DIGEST, value(digest.as_str())),
        ],
    )
}
