//! Who is calling. Today: HTTP basic authentication against an htpasswd
//! file ([`htpasswd`]), with failed logins limited per source ([`limit`]).

pub mod htpasswd;
pub mod limit;
pub mod token;

pub use htpasswd::{Htpasswd, HtpasswdError};
pub use limit::LoginLimiter;

/// The realm named in challenges.
pub const REALM: &str = "berth";

/// The user and password of an `Authorization: Basic` header value.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::Engine as _;
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_headers() {
        // "alice:pa:ss" — the password may hold colons, the user may not.
        assert_eq!(
            basic_credentials("Basic YWxpY2U6cGE6c3M="),
            Some(("alice".into(), "pa:ss".into()))
        );
        assert_eq!(
            basic_credentials("basic  YWxpY2U6cGE6c3M= "),
            Some(("alice".into(), "pa:ss".into()))
        );
        for bad in ["Bearer x", "Basic", "Basic !!!", "Basic YWxpY2U=", ""] {
            assert_eq!(basic_credentials(bad), None, "{bad}");
        }
    }
}
