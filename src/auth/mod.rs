//! Who is calling. Today: HTTP basic authentication against an htpasswd
//! file ([`htpasswd`]), with failed logins limited per source ([`limit`]).

pub mod header;
pub mod htpasswd;
pub mod limit;
pub mod token;

pub use header::{basic_credentials, bearer_token, REALM};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use limit::LoginLimiter;
