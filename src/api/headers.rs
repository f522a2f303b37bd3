//! Parsing and writing the HTTP headers the registry protocol uses.

use http::{HeaderMap, HeaderValue};
use std::sync::LazyLock;

use regex::Regex;

use crate::registry::{ByteRange, Error};
use crate::storage::Declared;

pub const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";
pub const DOCKER_UPLOAD_UUID: &str = "docker-upload-uuid";
pub const API_VERSION: &str = "docker-distribution-api-version";
pub const OCI_SUBJECT: &str = "oci-subject";
pub const OCI_FILTERS_APPLIED: &str = "oci-filters-applied";

/// Builds a header value from text the registry itself produced.
pub fn value(s: impl AsRef<str>) -> HeaderValue {
    HeaderValue::from_str(s.as_ref()).expect("registry-made header values are visible ASCII")
}

/// The `Range` header of an upload holding `len` bytes. An empty upload is
/// reported as `0-0`, as Docker clients expect.
pub fn upload_range(len: u64) -> HeaderValue {
    value(format!("0-{}", len.saturating_sub(1)))
}

fn text(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    text(headers, http::header::CONTENT_TYPE)
}

/// Every `Accept` header line (skopeo sends several).
pub fn accept(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
}

static CONTENT_RANGE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:bytes[ =])?(\d{1,19})-(\d{1,19})(?:/(?:\d{1,19}|\*))?$")
        .expect("content-range grammar")
});

/// The first and last byte of an upload chunk (`Content-Range: first-last`),
/// checked against `Content-Length` when both are present.
pub fn chunk_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, Error> {
    let Some(raw) = headers.get(http::header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || Error::UploadInvalid(format!("malformed Content-Range {raw:?}"));
    let s = raw.to_str().map_err(|_| bad())?.trim();
    let caps = CONTENT_RANGE_RE.captures(s).ok_or_else(bad)?;
    let first: u64 = caps[1].parse().map_err(|_| bad())?;
    let last: u64 = caps[2].parse().map_err(|_| bad())?;
    if last < first {
        return Err(Error::UploadInvalid(format!(
            "Content-Range {s:?} ends before it starts"
        )));
    }
    if let Some(len) = content_length(headers)? {
        if len != last - first + 1 {
            return Err(Error::UploadInvalid(format!(
                "Content-Range {s:?} does not match Content-Length {len}"
            )));
        }
    }
    Ok(Some((first, last)))
}

/// What an upload request says about its body: a chunk's range and the
/// body's length, for checks made before any of the body is read.
pub fn declared_body(headers: &HeaderMap) -> Result<Declared, Error> {
    Ok(Declared {
        range: chunk_range(headers)?,
        length: content_length(headers)?,
    })
}

pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    match headers.get(http::header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| Error::UploadInvalid("malformed Content-Length".into())),
    }
}

/// A blob GET's `Range`: absent, one parsed range, or a header that cannot
/// be honoured (malformed, or several ranges). Either way the caller answers
/// 416 for the latter, with the blob's size.
pub enum RangeRequest {
    Whole,
    Range(ByteRange),
    Unsatisfiable,
}

static RANGE_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^bytes=(\d{0,19})-(\d{0,19})$").expect("range grammar"));

pub fn blob_range(headers: &HeaderMap) -> RangeRequest {
    let Some(raw) = headers.get(http::header::RANGE) else {
        return RangeRequest::Whole;
    };
    let Some(caps) = raw.to_str().ok().and_then(|s| RANGE_RE.captures(s.trim())) else {
        return RangeRequest::Unsatisfiable;
    };
    let num = |i: usize| caps[i].parse::<u64>().ok();
    match (num(1), num(2)) {
        (Some(first), Some(last)) => RangeRequest::Range(ByteRange::FromTo(first, last)),
        (Some(first), None) => RangeRequest::Range(ByteRange::From(first)),
        (None, Some(n)) => RangeRequest::Range(ByteRange::Suffix(n)),
        (None, None) => RangeRequest::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_range_forms() {
        let ok = |v: &str| chunk_range(&headers(&[("content-range", v)])).unwrap();
        assert_eq!(ok("0-9"), Some((0, 9)));
        assert_eq!(ok("bytes 10-19/100"), Some((10, 19)));
        assert_eq!(ok("bytes=10-19"), Some((10, 19)));
        assert_eq!(chunk_range(&HeaderMap::new()).unwrap(), None);
        for bad in [
            "",
            "5",
            "a-b",
            "9-3",
            "-3",
            "0-99999999999999999999",
            "1-2-3",
        ] {
            assert!(
                chunk_range(&headers(&[("content-range", bad)])).is_err(),
                "{bad}"
            );
        }
        let h = headers(&[("content-range", "0-9"), ("content-length", "5")]);
        assert!(chunk_range(&h).is_err());
        let h = headers(&[("content-range", "0-9"), ("content-length", "10")]);
        assert_eq!(chunk_range(&h).unwrap(), Some((0, 9)));
    }

    #[test]
    fn range_forms() {
        let r = |v: &str| blob_range(&headers(&[("range", v)]));
        assert!(matches!(
            r("bytes=0-9"),
            RangeRequest::Range(ByteRange::FromTo(0, 9))
        ));
        assert!(matches!(
            r("bytes=5-"),
            RangeRequest::Range(ByteRange::From(5))
        ));
        assert!(matches!(
            r("bytes=-5"),
            RangeRequest::Range(ByteRange::Suffix(5))
        ));
        for bad in ["bytes=-", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", "0-1"] {
            assert!(matches!(r(bad), RangeRequest::Unsatisfiable), "{bad}");
        }
        assert!(matches!(blob_range(&HeaderMap::new()), RangeRequest::Whole));
    }
}
