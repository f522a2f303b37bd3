//! One module per page: its handler and its template.

pub mod access;
pub mod cluster;
pub mod image;
pub mod repo;
pub mod repos;
pub mod signin;

use serde::Deserialize;

/// Query parameters pages share: where a listing resumes, a search, and
/// the notice a redirect asks for.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct Query {
    pub q: Option<String>,
    pub after: Option<String>,
    pub done: Option<String>,
}
