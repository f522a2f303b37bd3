//! Signing in to a registry as its client (a mirror's upstream, the node an
//! import pushes to): reading a 401's challenge, and the token realm's
//! answer.

use super::header::challenge_params;

/// Largest token answer read: a token is a few KiB.
pub const MAX_TOKEN_ANSWER: usize = 64 << 10;

/// The scheme of a 401's challenge, as a client answers it.
#[derive(Debug, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// A `WWW-Authenticate` value; `None` when it is neither a Basic challenge
/// nor a Bearer one that names its realm.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let scheme = header.split_whitespace().next()?;
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    let params = challenge_params(header)?;
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm")?,
        service: get("service"),
        scope: get("scope"),
    })
}

/// A token realm's answer: the token (`access_token`, else `token`) and
/// how many seconds it lives, if said. The error says what is wrong with it.
pub fn read_token_answer(body: &[u8]) -> Result<(String, Option<u64>), String> {
    if body.len() > MAX_TOKEN_ANSWER {
        return Err("the token answer is too large".into());
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("the token answer is not JSON: {e}"))?;
    let token = answer
        .access_token
        .or(answer.token)
        .filter(|t| !t.is_empty())
        .ok_or("the token answer carries no token")?;
    Ok((token, answer.expires_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_clients_read_them() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/alpine:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert!(
            parse_challenge("Bearer service=\"x\"").is_none(),
            "no realm"
        );
        assert!(parse_challenge("").is_none());
    }

    #[test]
    fn token_answers_are_read_as_docker_reads_them() {
        assert_eq!(
            read_token_answer(br#"{"token":"t","expires_in":300}"#),
            Ok(("t".into(), Some(300)))
        );
        assert_eq!(
            read_token_answer(br#"{"access_token":"a","token":"t"}"#),
            Ok(("a".into(), None))
        );
        assert!(read_token_answer(br#"{"token":""}"#).is_err());
        assert!(read_token_answer(b"<html>").is_err());
        assert!(read_token_answer(&vec![b' '; MAX_TOKEN_ANSWER + 1]).is_err());
    }
}
