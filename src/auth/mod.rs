//! Who is calling and what they may do: HTTP basic authentication against
//! an htpasswd file ([`htpasswd`]) or users kept in the cluster, bearer
//! tokens ([`token`]), failed logins limited per source ([`limit`]), and the
//! access rules ([`policy`]).

pub mod client;
pub mod header;
pub mod htpasswd;
pub mod limit;
pub mod password;
pub mod policy;
pub mod rules;
pub mod token;

pub use header::{basic_credentials, bearer_token, REALM};
pub use htpasswd::{Htpasswd, HtpasswdError};
pub use limit::LoginLimiter;
pub use policy::{Caller, Policy};
pub use rules::Rules;
