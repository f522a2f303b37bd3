//! The `/v2/` route tree, parsed by one function that understands nested
//! repository names (`a/b/c/manifests/x`).
//!
//! ```text
//! /v2/                                   Base
//! /v2/_catalog                           Catalog
//! /v2/<name>/tags/list                   Tags
//! /v2/<name>/manifests/<reference>       Manifest
//! /v2/<name>/blobs/uploads/              UploadStart
//! /v2/<name>/blobs/uploads/<id>          Upload
//! /v2/<name>/blobs/<digest>              Blob
//! /v2/<name>/referrers/<digest>          Referrers
//! ```
//! The suffix decides the route; everything before it is the name. A name
//! may itself contain `blobs` or `manifests` as components.

use axum::extract::FromRequestParts;
use http::request::Parts;
use percent_encoding::percent_decode_str;

use crate::oci::{Digest, Reference, RepoName};
use crate::registry::Error;
use crate::storage::UploadId;

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Base,
    Catalog,
    Tags {
        repo: RepoName,
    },
    Manifest {
        repo: RepoName,
        reference: Reference,
    },
    UploadStart {
        repo: RepoName,
    },
    Upload {
        repo: RepoName,
        id: UploadId,
    },
    Blob {
        repo: RepoName,
        digest: Digest,
    },
    Referrers {
        repo: RepoName,
        digest: Digest,
    },
}

/// Where the route's class goes once the path is parsed: the access log
/// puts one in each request and reads it for its metrics, so the path is
/// parsed once.
#[derive(Clone, Default)]
pub struct ClassSlot(pub std::sync::Arc<std::sync::OnceLock<&'static str>>);

impl Route {
    /// What kind of request this is, as metrics label it: never a
    /// repository name or digest.
    pub fn class(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags { .. } => "tags",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::UploadStart { .. } => "upload_start",
            Route::Upload { .. } => "upload",
            Route::Referrers { .. } => "referrers",
        }
    }

    /// The repository the route is about; `None` for the base and catalog.
    pub fn repo(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { repo }
            | Route::Manifest { repo, .. }
            | Route::UploadStart { repo }
            | Route::Upload { repo, .. }
            | Route::Blob { repo, .. }
            | Route::Referrers { repo, .. } => Some(repo),
        }
    }
}

/// Parses a request path into a route; malformed parts get their OCI error.
/// `write` says whether the request would store something: a malformed tag
/// is then an invalid push (400), while for a read it names no manifest (404).
pub fn parse(path: &str, write: bool) -> Result<Route, Error> {
    let rest = path.strip_prefix("/v2").ok_or(Error::RouteUnknown)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Base);
    }
    let rest = rest.strip_prefix('/').ok_or(Error::RouteUnknown)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name = |k: usize| -> Result<RepoName, Error> {
        if n <= k {
            return Err(Error::RouteUnknown);
        }
        segs[..n - k].join("/").parse().map_err(Error::NameInvalid)
    };
    let last = decode(segs[n - 1]);
    let before = |k: usize| (n > k).then(|| segs[n - 1 - k]);
    if before(2) == Some("blobs") && before(1) == Some("uploads") {
        let repo = name(3)?;
        if last.is_empty() {
            return Ok(Route::UploadStart { repo });
        }
        let id = last.parse().map_err(|_| Error::UploadUnknown)?;
        return Ok(Route::Upload { repo, id });
    }
    if before(1) == Some("tags") && last == "list" {
        return Ok(Route::Tags { repo: name(2)? });
    }
    match before(1) {
        Some("blobs") if last == "uploads" => Ok(Route::UploadStart { repo: name(2)? }),
        Some("manifests") => {
            let repo = name(2)?;
            let reference = last
                .parse()
                .map_err(|e| match (last.contains(':'), write) {
                    (true, _) => Error::DigestInvalid(e),
                    (false, true) => Error::TagInvalid(e),
                    (false, false) => Error::TagUnknown(e),
                })?;
            Ok(Route::Manifest { repo, reference })
        }
        Some("blobs") => {
            let repo = name(2)?;
            let digest = last.parse().map_err(Error::DigestInvalid)?;
            Ok(Route::Blob { repo, digest })
        }
        Some("referrers") => {
            let repo = name(2)?;
            let digest = last.parse().map_err(Error::DigestInvalid)?;
            Ok(Route::Referrers { repo, digest })
        }
        _ => Err(Error::RouteUnknown),
    }
}

fn decode(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

impl<S: Send + Sync> FromRequestParts<S> for Route {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Route, Error> {
        let route = parse(parts.uri.path(), parts.method == http::Method::PUT)?;
        if let Some(slot) = parts.extensions.get::<ClassSlot>() {
            let _ = slot.0.set(route.class());
        }
        Ok(route)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::ErrorCode;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn routes() {
        let id = "00000000000000070123456789abcdef0123456789abcdef";
        let cases: Vec<(String, Route)> = vec![
            ("/v2/".into(), Route::Base),
            ("/v2".into(), Route::Base),
            ("/v2/_catalog".into(), Route::Catalog),
            (
                "/v2/a/b/tags/list".into(),
                Route::Tags { repo: repo("a/b") },
            ),
            (
                "/v2/tags/tags/list".into(),
                Route::Tags { repo: repo("tags") },
            ),
            (
                "/v2/a/manifests/b/manifests/latest".into(),
                Route::Manifest {
                    repo: repo("a/manifests/b"),
                    reference: "latest".parse().unwrap(),
                },
            ),
            (
                format!("/v2/x/manifests/{}", D.replace(':', "%3A")),
                Route::Manifest {
                    repo: repo("x"),
                    reference: D.parse().unwrap(),
                },
            ),
            (
                "/v2/a/blobs/uploads/".into(),
                Route::UploadStart { repo: repo("a") },
            ),
            (
                "/v2/a/blobs/uploads".into(),
                Route::UploadStart { repo: repo("a") },
            ),
            (
                format!("/v2/a/blobs/uploads/{id}"),
                Route::Upload {
                    repo: repo("a"),
                    id: id.parse().unwrap(),
                },
            ),
            (
                format!("/v2/blobs/blobs/{D}"),
                Route::Blob {
                    repo: repo("blobs"),
                    digest: D.parse().unwrap(),
                },
            ),
            (
                format!("/v2/r/referrers/{D}"),
                Route::Referrers {
                    repo: repo("r"),
                    digest: D.parse().unwrap(),
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path, false).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn malformed_parts_get_their_codes() {
        let cases = [
            ("/v2/../x/manifests/latest", ErrorCode::NameInvalid),
            ("/v2/UPPER/tags/list", ErrorCode::NameInvalid),
            ("/v2/x/manifests/sha256:zz", ErrorCode::DigestInvalid),
            ("/v2/x/manifests/-bad", ErrorCode::ManifestUnknown),
            ("/v2/x/blobs/nope", ErrorCode::DigestInvalid),
            ("/v2/x/blobs/uploads/zzz", ErrorCode::BlobUploadUnknown),
            ("/v2/x/referrers/sha256:1", ErrorCode::DigestInvalid),
            ("/v2/x", ErrorCode::Unsupported),
            ("/v2/manifests/x", ErrorCode::Unsupported),
            ("/v3/", ErrorCode::Unsupported),
            ("/v2x", ErrorCode::Unsupported),
        ];
        for (path, code) in cases {
            assert_eq!(parse(path, false).unwrap_err().code(), code, "{path}");
        }
        let push = parse("/v2/x/manifests/.bad", true).unwrap_err();
        assert_eq!(push.code(), ErrorCode::ManifestInvalid);
    }
}
