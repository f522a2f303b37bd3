//! The `Authorization` header's two forms, and the `Bearer` challenge of
//! `WWW-Authenticate`. Pure text handling, fuzzed (tests/fuzz).

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

/// A `Bearer` challenge with these parameters, each a quoted string. What
/// a client sent can reach a value (its `Host` names the default realm), so
/// values keep only printable ASCII, with `"` and `\` escaped: no value can
/// end early and add parameters of its own.
pub fn bearer_challenge(params: &[(&str, &str)]) -> String {
    let mut out = String::from("Bearer ");
    for (i, (name, value)) in params.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars().filter(|c| (' '..='~').contains(c)) {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out
}

/// The parameters of a `Bearer` challenge, read as a client reads them;
/// `None` unless it is one, every value quoted.
pub fn challenge_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("Bearer ")?;
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => value.push(chars.next()?),
                c => value.push(c),
            }
        }
        params.push((name, value));
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(_) => return None,
        }
    }
    Some(params)
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

    #[test]
    fn challenges_quote_what_they_carry() {
        let header = bearer_challenge(&[
            ("realm", "https://evil\", service=\"x/auth"),
            ("scope", "repository:a/b:pull"),
        ]);
        assert_eq!(
            challenge_params(&header).unwrap(),
            [
                ("realm".into(), "https://evil\", service=\"x/auth".into()),
                ("scope".into(), "repository:a/b:pull".into()),
            ]
        );
        assert!(http::HeaderValue::from_str(&header).is_ok());
        assert_eq!(challenge_params("Bearer realm=x"), None);
        assert_eq!(challenge_params("Basic realm=\"x\""), None);
    }
}
