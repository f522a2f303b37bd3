//! `Authorization` header values, `WWW-Authenticate` challenges, token
//! scopes and tokens from arbitrary bytes.
//!
//! Properties: nothing panics; basic credentials that parse encode back to
//! the same user and password; a bearer token is never empty or padded; a
//! scope that parses prints back to a scope that parses equal; and no input
//! is ever accepted as a token, nor are the fuzzer's bytes once appended to
//! a real one. A challenge built from any values is printable ASCII and
//! reads back as exactly those parameters, what is not printable dropped.

#![no_main]

use base64::Engine as _;
use berth_fuzz::auth_header::{basic_credentials, bearer_challenge, bearer_token, challenge_params};
use berth_fuzz::auth_token::{Access, Tokens};
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static TOKENS: LazyLock<Tokens> =
    LazyLock::new(|| Tokens::internal(b"fuzzing cluster secret", "berth"));
static VALID: LazyLock<String> = LazyLock::new(|| {
    let access = Access::parse_scope("repository:a/app:pull").unwrap();
    TOKENS.access_token("alice", vec![access]).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    if let Some((user, password)) = basic_credentials(&s) {
        assert!(!user.contains(':'));
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        assert_eq!(
            basic_credentials(&format!("Basic {encoded}")),
            Some((user, password))
        );
    }
    if let Some(token) = bearer_token(&s) {
        assert!(!token.is_empty() && token.trim() == token);
        assert!(TOKENS.verify_access(token).is_err(), "{token:?} was accepted");
        assert!(TOKENS.verify_refresh(token).is_err());
    }
    if let Some(access) = Access::parse_scope(&s) {
        assert_eq!(Access::parse_scope(&access.scope()), Some(access));
    }
    assert!(TOKENS.verify_access(&s).is_err());
    let names = ["realm", "service", "scope", "error"];
    let params: Vec<(&str, &str)> = names.into_iter().zip(s.split('\n')).collect();
    let challenge = bearer_challenge(&params);
    assert!(challenge.bytes().all(|b| (b' '..=b'~').contains(&b)), "{challenge:?}");
    let expected: Vec<(String, String)> = params
        .iter()
        .map(|(n, v)| (n.to_string(), v.chars().filter(|c| (' '..='~').contains(c)).collect()))
        .collect();
    assert_eq!(challenge_params(&challenge), Some(expected), "{challenge:?}");
    // A real token with anything changed or added is no token.
    if !data.is_empty() {
        let tampered = format!("{}{s}", VALID.as_str());
        assert!(TOKENS.verify_access(&tampered).is_err(), "{tampered:?}");
    }
});
