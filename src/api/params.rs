//! Query parameters, extracted once and validated on access.

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::oci::{Digest, RepoName};
use crate::registry::Error;

/// Largest page a listing returns, whatever `n` asks for.
pub const MAX_PAGE: usize = 10_000;
/// Page size when the client gives no `n`.
pub const DEFAULT_PAGE: usize = 1_000;

pub struct Params(Vec<(String, String)>);

impl Params {
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
        let query = parts.uri.query().unwrap_or("");
        Ok(Params(
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect(),
        ))
    }
}
