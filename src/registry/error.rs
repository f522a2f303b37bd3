//! The one table of client-visible errors: each variant knows its OCI code,
//! HTTP status and message. Handlers return these and never pick statuses.

use http::StatusCode;

use crate::cluster::ClusterError;
use crate::db::DbError;
use crate::meta::Rejection;
use crate::oci::{Digest, ErrorCode, ManifestError, ParseError};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NameInvalid(ParseError),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("{0}")]
    DigestInvalid(ParseError),
    #[error("{0}")]
    TagInvalid(ParseError),
    /// A read of a reference that cannot be a tag: it names no manifest.
    #[error("manifest unknown: {0}")]
    TagUnknown(ParseError),
    #[error("provided digest did not match uploaded content: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("digest query parameter is required to finish an upload")]
    DigestMissing,
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    UploadUnknown,
    #[error("chunk out of order: the upload holds {offset} bytes but the chunk starts at {start}")]
    UploadOutOfOrder { offset: u64, start: u64 },
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    #[error("requested range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("manifest invalid: {0}")]
    ManifestInvalid(#[from] ManifestError),
    #[error("manifest exceeds the {limit} byte limit")]
    ManifestTooLarge { limit: usize },
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("manifest has media type {media_type}, which the Accept header does not admit")]
    ManifestNotAcceptable { media_type: String },
    #[error("invalid pagination parameter: {0}")]
    PaginationInvalid(String),
    #[error("request headers exceed {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("the request body failed before it was complete: {0}")]
    BodyFailed(String),
    #[error("the request body arrived too slowly: {0}")]
    BodyTimeout(String),
    /// A request whose framing HTTP forbids (RFC 9112): no `Host`, say.
    #[error("malformed request: {0}")]
    RequestInvalid(String),
    #[error("request target exceeds {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("{method} is not supported on this endpoint")]
    MethodNotAllowed { method: String },
    #[error("no such endpoint")]
    RouteUnknown,
    #[error("{0}")]
    NodeUnknown(String),
    #[error("{reason}")]
    Unauthorized { reason: String, challenge: String },
    #[error("token request invalid: {0}")]
    TokenRequestInvalid(String),
    #[error("too many failed logins from this address; try again in {retry_after} s")]
    TooManyRequests { retry_after: u64 },
    #[error("access denied: {0}")]
    Denied(String),
    /// A push or delete an immutable-tag rule refuses.
    #[error("{0}")]
    Immutable(String),
    /// An account, team or grant change that cannot be made.
    #[error("{0}")]
    AccessInvalid(String),
    /// An account, team or grant that does not exist.
    #[error("{0}")]
    AccessUnknown(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// A pull-through mirror's upstream failed, refused berth, or sent
    /// what does not match its digest; nothing of it was cached.
    #[error("{0}")]
    Upstream(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        use Error::*;
        match self {
            NameInvalid(_) | AccessInvalid(_) => ErrorCode::NameInvalid,
            NameUnknown => ErrorCode::NameUnknown,
            DigestInvalid(_) | DigestMismatch { .. } | DigestMissing => ErrorCode::DigestInvalid,
            TagInvalid(_) | ManifestInvalid(_) | ManifestTooLarge { .. } => {
                ErrorCode::ManifestInvalid
            }
            BlobUnknown => ErrorCode::BlobUnknown,
            UploadUnknown => ErrorCode::BlobUploadUnknown,
            UploadOutOfOrder { .. } | UploadInvalid(_) | BodyFailed(_) | BodyTimeout(_) => {
                ErrorCode::BlobUploadInvalid
            }
            RangeNotSatisfiable { .. } | HeadersTooLarge { .. } | BodyTooLarge { .. } => {
                ErrorCode::SizeInvalid
            }
            ManifestBlobUnknown(_) => ErrorCode::ManifestBlobUnknown,
            ManifestUnknown | TagUnknown(_) | ManifestNotAcceptable { .. } => {
                ErrorCode::ManifestUnknown
            }
            PaginationInvalid(_)
            | RequestInvalid(_)
            | UriTooLong { .. }
            | TokenRequestInvalid(_)
            | MethodNotAllowed { .. }
            | RouteUnknown => ErrorCode::Unsupported,
            NodeUnknown(_) | AccessUnknown(_) => ErrorCode::NameUnknown,
            Unauthorized { .. } => ErrorCode::Unauthorized,
            TooManyRequests { .. } => ErrorCode::TooManyRequests,
            Denied(_) | Immutable(_) => ErrorCode::Denied,
            Unavailable(_) | Upstream(_) => ErrorCode::Unavailable,
            Internal(_) => ErrorCode::Unknown,
        }
    }

    pub fn status(&self) -> StatusCode {
        use Error::*;
        match self {
            NameUnknown
            | BlobUnknown
            | UploadUnknown
            | ManifestUnknown
            | TagUnknown(_)
            | ManifestNotAcceptable { .. }
            | RouteUnknown => StatusCode::NOT_FOUND,
            UploadOutOfOrder { .. } | RangeNotSatisfiable { .. } => {
                StatusCode::RANGE_NOT_SATISFIABLE
            }
            ManifestTooLarge { .. } | BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            NodeUnknown(_) | AccessUnknown(_) => StatusCode::NOT_FOUND,
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Denied(_) | Immutable(_) => StatusCode::FORBIDDEN,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Upstream(_) => StatusCode::BAD_GATEWAY,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            NameInvalid(_)
            | AccessInvalid(_)
            | DigestInvalid(_)
            | TagInvalid(_)
            | DigestMismatch { .. }
            | DigestMissing
            | UploadInvalid(_)
            | ManifestInvalid(_)
            | ManifestBlobUnknown(_)
            | PaginationInvalid(_)
            | TokenRequestInvalid(_)
            | RequestInvalid(_)
            | BodyFailed(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A request body that failed: too slowly sent (the body guard says so
    /// with `TimedOut`), or broken.
    pub fn body(e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::TimedOut => Error::BodyTimeout(e.to_string()),
            _ => Error::BodyFailed(e.to_string()),
        }
    }

    /// Extra detail for the error body, where a structured one helps clients.
    pub fn detail(&self) -> Option<serde_json::Value> {
        match self {
            Error::ManifestBlobUnknown(d) => Some(serde_json::json!({ "digest": d })),
            Error::DigestMismatch { expected, actual } => {
                Some(serde_json::json!({ "expected": expected, "actual": actual }))
            }
            Error::UploadOutOfOrder { offset, .. } => Some(serde_json::json!({ "offset": offset })),
            Error::RangeNotSatisfiable { size } => Some(serde_json::json!({ "size": size })),
            _ => None,
        }
    }
}

impl From<StorageError> for Error {
    fn from(e: StorageError) -> Error {
        match e {
            StorageError::DigestMismatch { expected, actual } => {
                Error::DigestMismatch { expected, actual }
            }
            StorageError::UploadUnknown => Error::UploadUnknown,
            StorageError::OutOfOrder { offset, start } => Error::UploadOutOfOrder { offset, start },
            StorageError::ChunkLength { .. } => Error::UploadInvalid(e.to_string()),
            StorageError::Body(e) => Error::body(e),
            StorageError::TooLarge { limit } => Error::BodyTooLarge { limit },
            StorageError::Io(_) | StorageError::Db(_) => Error::Internal(e.to_string()),
        }
    }
}

impl From<Rejection> for Error {
    fn from(r: Rejection) -> Error {
        match r {
            Rejection::ManifestBlobUnknown(d) => Error::ManifestBlobUnknown(d),
            Rejection::ManifestUnknown => Error::ManifestUnknown,
            Rejection::BlobUnknown => Error::BlobUnknown,
            Rejection::AccessInvalid(m) => Error::AccessInvalid(m),
            Rejection::AccessUnknown(m) => Error::AccessUnknown(m),
            r @ Rejection::TagImmutable { .. } => Error::Immutable(r.to_string()),
            r @ Rejection::QuotaExceeded { .. } => Error::Denied(r.to_string()),
            r @ Rejection::WebhookUnknown(_) => Error::AccessUnknown(r.to_string()),
            // Only a node's own proposer builds batches.
            r @ Rejection::Malformed(_) => Error::Internal(r.to_string()),
        }
    }
}

impl From<DbError> for Error {
    fn from(e: DbError) -> Error {
        Error::Internal(e.to_string())
    }
}

impl From<crate::replication::ReplicationError> for Error {
    fn from(e: crate::replication::ReplicationError) -> Error {
        Error::Unavailable(e.to_string())
    }
}

impl From<crate::gc::GcError> for Error {
    fn from(e: crate::gc::GcError) -> Error {
        match e {
            crate::gc::GcError::Cluster(e) => e.into(),
            crate::gc::GcError::Db(e) => e.into(),
            crate::gc::GcError::Rejected(r) => r.into(),
        }
    }
}

impl From<ClusterError> for Error {
    fn from(e: ClusterError) -> Error {
        match e {
            ClusterError::NotMember(_) => Error::NodeUnknown(e.to_string()),
            e => Error::Unavailable(e.to_string()),
        }
    }
}
