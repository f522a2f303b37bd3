//! Query parameters, extracted once and validated on access.

use axum::extract::FromRequestParts;
use http::request::Parts;
use percent_encoding::percent_decode_str;

use crate::oci::{Digest, RepoName};
use crate::registry::Error;

/// Largest page a listing returns, whatever `n` asks for.
pub const MAX_PAGE: usize = 10_000;
/// Page size when the client gives no `n`.
pub const DEFAULT_PAGE: usize = 1_000;

pub struct Params(Vec<(String, String)>);

impl Params {
    /// Splits `k=v&…` and percent-decodes each part. `+` stays `+`: media
    /// types such as `application/vnd.x+json` arrive unescaped.
    pub fn parse(query: &str) -> Params {
        let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (decode(k), decode(v)),
                None => (decode(p), String::new()),
            })
            .collect();
        Params(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn digest(&self, key: &str) -> Result<Option<Digest>, Error> {
        self.get(key)
            .map(|v| v.parse().map_err(Error::DigestInvalid))
            .transpose()
    }

    pub fn repo(&self, key: &str) -> Result<Option<RepoName>, Error> {
        self.get(key)
            .map(|v| v.parse().map_err(Error::NameInvalid))
            .transpose()
    }

    /// `n` and `last` of a paginated listing.
    pub fn page(&self) -> Result<(usize, Option<&str>), Error> {
        let n = match self.get("n") {
            None | Some("") => DEFAULT_PAGE,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| {
                    Error::PaginationInvalid(format!("n={v:?} is not a non-negative integer"))
                })?
                .min(MAX_PAGE),
        };
        Ok((n, self.get("last").filter(|l| !l.is_empty())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Params, Error> {
        Ok(Params::parse(parts.uri.query().unwrap_or("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_keeps_plus() {
        let p = Params::parse("artifactType=application/vnd.x+json&last=a%2Fb&flag&n=");
        assert_eq!(p.get("artifactType"), Some("application/vnd.x+json"));
        assert_eq!(p.get("last"), Some("a/b"));
        assert_eq!(p.get("flag"), Some(""));
        assert_eq!(p.page().unwrap(), (DEFAULT_PAGE, Some("a/b")));
        assert!(Params::parse("n=-1").page().is_err());
        assert_eq!(Params::parse("n=99999999").page().unwrap().0, MAX_PAGE);
    }
}
