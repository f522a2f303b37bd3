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

static RANGE_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?i:bytes)[ \t]*=[ \t]*(\d{0,19})[ \t]*-[ \t]*(\d{0,19})$")
        .expect("range grammar")
});

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

/// The byte range a blob GET asks for, as RFC 9110 §14 reads it: one
/// `bytes` range, honoured only while `If-Range` (when sent) names the
/// blob's strong entity tag. A header berth does not serve (another unit,
/// several ranges, a malformed or backwards range) is ignored and the
/// whole blob sent; whether a well-formed range fits the blob is decided
/// against its size (416 if not).
pub fn blob_range(headers: &HeaderMap, etag: &str) -> Option<ByteRange> {
    let raw = headers.get(http::header::RANGE)?;
    if let Some(validator) = headers.get(http::header::IF_RANGE) {
        // Strong comparison: a weak tag or a date never matches.
        if validator.as_bytes().trim_ascii() != etag.as_bytes() {
            return None;
        }
    }
    let caps = RANGE_RE.captures(raw.to_str().ok()?.trim())?;
    let num = |i: usize| caps[i].parse::<u64>().ok();
    match (num(1), num(2)) {
        (Some(first), Some(last)) if first <= last => Some(ByteRange::FromTo(first, last)),
        (Some(first), None) if caps[2].is_empty() => Some(ByteRange::From(first)),
        (None, Some(n)) if caps[1].is_empty() => Some(ByteRange::Suffix(n)),
        _ => None,
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
        const TAG: &str = "\"sha256:abc\"";
        let r = |pairs: &[(&'static str, &str)]| blob_range(&headers(pairs), TAG);
        let range = |v: &str| r(&[("range", v)]);
        assert_eq!(range("bytes=0-9"), Some(ByteRange::FromTo(0, 9)));
        assert_eq!(range("Bytes = 0 - 9"), Some(ByteRange::FromTo(0, 9)));
        assert_eq!(range("bytes=5-"), Some(ByteRange::From(5)));
        assert_eq!(range("bytes=-5"), Some(ByteRange::Suffix(5)));
        // Well-formed but unsatisfiable: decided against the size later.
        assert_eq!(range("bytes=-0"), Some(ByteRange::Suffix(0)));
        // Not served, so ignored: the whole blob goes out.
        for ignored in [
            "bytes=-",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "0-1",
            "bytes=9-3",
        ] {
            assert_eq!(range(ignored), None, "{ignored}");
        }
        assert_eq!(blob_range(&HeaderMap::new(), TAG), None);
        // If-Range: the strong tag keeps the range; anything else drops it.
        assert_eq!(
            r(&[("range", "bytes=0-9"), ("if-range", TAG)]),
            Some(ByteRange::FromTo(0, 9))
        );
        for other in [
            "\"sha256:def\"",
            "W/\"sha256:abc\"",
            "Fri, 04 Dec 2026 17:00:00 GMT",
        ] {
            assert_eq!(
                r(&[("range", "bytes=0-9"), ("if-range", other)]),
                None,
                "{other}"
            );
        }
    }
}
