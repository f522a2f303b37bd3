//! Pure OCI types: digests, names and references, media types, manifest
//! parsing and the spec's error codes. Nothing here does I/O.

pub mod digest;
pub mod error;
pub mod manifest;
pub mod media;
pub mod name;

pub use digest::{Algorithm, Digest, Hasher};
pub use error::ErrorCode;
pub use manifest::{Descriptor, Manifest, ManifestError};
pub use name::{Reference, RepoName, Tag};

/// Why a string is not a valid name, tag, digest or reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {reason}")]
pub struct ParseError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

impl ParseError {
    pub(crate) fn new(what: &'static str, value: &str, reason: &'static str) -> Self {
        // Keep error messages bounded even for hostile input.
        let value: String = value.chars().take(300).collect();
        ParseError {
            what,
            value,
            reason,
        }
    }
}
