//! The `Authorization` header's two forms. Pure text handling, fuzzed
//! (tests/fuzz).

/// The realm named in `Basic` challenges.
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

/// The token of an `Authorization: Bearer` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token(" bearer  abc "), Some("abc"));
        for bad in ["Bearer", "Bearer  ", "Basic abc", ""] {
            assert_eq!(bearer_token(bad), None, "{bad}");
        }
    }

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
