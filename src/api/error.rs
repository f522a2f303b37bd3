//! The single place registry errors become HTTP responses:
//! `{"errors":[{"code","message","detail"}]}` with the variant's status.

use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::HeaderValue;

use crate::registry::Error;

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut entry = serde_json::json!({
            "code": self.code().as_str(),
            "message": self.to_string(),
        });
        if let Some(detail) = self.detail() {
            entry["detail"] = detail;
        }
        let body = serde_json::json!({ "errors": [entry] }).to_string();
        let mut resp = (status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self {
            // Tell the client where the upload really stands, so it can resume.
            Error::UploadOutOfOrder { offset, .. } => {
                headers.insert(RANGE, super::headers::upload_range(offset));
            }
            Error::RangeNotSatisfiable { size } => {
                headers.insert(
                    CONTENT_RANGE,
                    super::headers::value(format!("bytes */{size}")),
                );
            }
            // A failover (lease, election timeout, election) takes 3-4 s.
            Error::Unavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("4"));
            }
            Error::TooManyRequests { retry_after } => {
                headers.insert(RETRY_AFTER, super::headers::value(retry_after.to_string()));
            }
            Error::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(&challenge) {
                    headers.insert(WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::{Digest, ErrorCode, ManifestError, ParseError};

    /// One instance of every variant, so the test below walks the whole table.
    fn every_variant() -> Vec<Error> {
        let parse = || ParseError::new("x", "y", "z");
        let d = Digest::sha256(b"");
        vec![
            Error::NameInvalid(parse()),
            Error::NameUnknown,
            Error::DigestInvalid(parse()),
            Error::TagInvalid(parse()),
            Error::TagUnknown(parse()),
            Error::DigestMismatch {
                expected: d.clone(),
                actual: d.clone(),
            },
            Error::DigestMissing,
            Error::BlobUnknown,
            Error::UploadUnknown,
            Error::UploadOutOfOrder {
                offset: 5,
                start: 9,
            },
            Error::UploadInvalid("x".into()),
            Error::RangeNotSatisfiable { size: 3 },
            Error::ManifestInvalid(ManifestError::SchemaVersion),
            Error::ManifestTooLarge { limit: 1 },
            Error::ManifestBlobUnknown(d),
            Error::ManifestUnknown,
            Error::ManifestNotAcceptable {
                media_type: "x".into(),
            },
            Error::PaginationInvalid("n".into()),
            Error::HeadersTooLarge { limit: 1 },
            Error::BodyTooLarge { limit: 1 },
            Error::BodyFailed("reset".into()),
            Error::BodyTimeout("1 byte in 60 s".into()),
            Error::RequestInvalid("no Host".into()),
            Error::UriTooLong { limit: 8192 },
            Error::MethodNotAllowed {
                method: "PATCH".into(),
            },
            Error::RouteUnknown,
            Error::NodeUnknown("node 3".into()),
            Error::Unauthorized {
                reason: "no credentials".into(),
                challenge: "Basic realm=\"berth\"".into(),
            },
            Error::TooManyRequests { retry_after: 30 },
            Error::TokenRequestInvalid("grant_type".into()),
            Error::Denied("wrong secret".into()),
            Error::Immutable("tag v1 is immutable (rule acme/* v*)".into()),
            Error::Unavailable("no quorum".into()),
            Error::Internal("disk".into()),
        ]
    }

    #[tokio::test]
    async fn every_variant_renders_oci_error_json() {
        let mut codes = std::collections::HashSet::new();
        for err in every_variant() {
            let (status, code, message) = (err.status(), err.code(), err.to_string());
            // Only server faults may be 5xx; everything a client can cause is 4xx.
            assert_eq!(
                status.is_server_error(),
                matches!(err, Error::Internal(_) | Error::Unavailable(_)),
                "{err:?}"
            );
            assert!(status.is_client_error() || status.is_server_error());
            codes.insert(code);
            let resp = err.into_response();
            assert_eq!(resp.status(), status);
            assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["errors"][0]["code"], code.as_str());
            assert_eq!(v["errors"][0]["message"], message.as_str());
        }
        // Every spec code that a request can provoke is reachable from the table.
        for code in ErrorCode::ALL {
            assert!(codes.contains(&code), "{code} is never produced");
        }
    }

    #[test]
    fn resumable_errors_carry_position_headers() {
        let resp = Error::UploadOutOfOrder {
            offset: 10,
            start: 3,
        }
        .into_response();
        assert_eq!(resp.headers()[RANGE], "0-9");
        let resp = Error::RangeNotSatisfiable { size: 42 }.into_response();
        assert_eq!(resp.headers()[CONTENT_RANGE], "bytes */42");
    }
}
