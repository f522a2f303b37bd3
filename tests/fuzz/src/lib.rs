//! berth's pure modules, compiled on their own for fuzzing: the OCI parsing,
//! and the `Authorization` header and token handling of `auth`. They are the
//! very source files of the registry, not copies, so the fuzzers test what
//! ships.

#[path = "../../../src/oci/mod.rs"]
pub mod oci;

/// `auth::header` of berth.
#[path = "../../../src/auth/header.rs"]
pub mod auth_header;
/// `auth::token` of berth.
#[path = "../../../src/auth/token.rs"]
pub mod auth_token;

/// What `auth::token` takes from berth's storage module.
pub mod storage {
    pub fn now_secs() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}
