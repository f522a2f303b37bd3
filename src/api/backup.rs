//! The admin API `berth backup` reads: `GET /_berth/backup/snapshot` streams
//! a snapshot of the replicated state that includes every write completed
//! before the request, its Raft metadata (last log id, membership) as JSON
//! in the `x-berth-snapshot-meta` header; `GET /_berth/backup/blobs/{digest}`
//! streams a blob from this node or a holder. Administrators (or the
//! cluster secret) only: a backup holds every repository.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use axum::Extension;
use http::{header, HeaderMap, HeaderValue};

use super::access::administrator_only;
use super::authn::Authn;
use super::ClientAddr;
use crate::oci::Digest;
use crate::registry::{Error, Registry};

/// What the refusal says a caller may not do.
const BACK_UP: &str = "back up the registry (administrators only)";

/// The header carrying the snapshot's Raft metadata, as JSON.
pub const SNAPSHOT_META_HEADER: &str = "x-berth-snapshot-meta";

pub async fn snapshot(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let actor = administrator_only(&reg, &authn, source.ip(), &headers, BACK_UP).await?;
    let snap = reg.backup_snapshot().await?;
    tracing::info!(
        target: "berth::audit",
        %source,
        %actor,
        index = snap.meta.last_log_id.map_or(0, |l| l.index),
        bytes = snap.size,
        "backup snapshot taken"
    );
    let meta = serde_json::to_string(&snap.meta).map_err(|e| Error::Internal(e.to_string()))?;
    let body =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(snap.file), 1 << 20);
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(snap.size));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        SNAPSHOT_META_HEADER,
        HeaderValue::from_str(&meta).map_err(|e| Error::Internal(e.to_string()))?,
    );
    Ok(resp)
}

pub async fn blob(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    Path(digest): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    administrator_only(&reg, &authn, source.ip(), &headers, BACK_UP).await?;
    let digest: Digest = digest.parse().map_err(Error::DigestInvalid)?;
    let read = reg.backup_blob(&digest).await?;
    let mut resp = Response::new(Body::from_stream(read.body));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(read.size));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}
