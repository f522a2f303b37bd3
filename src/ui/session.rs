//! Who is browsing, and whether a form really came from the UI.
//!
//! A signed-in visitor holds a session cookie: a short JWT naming the user,
//! signed with a key every node derives from the cluster secret (or a
//! standalone node's own key), so any node behind a load balancer accepts
//! it. The key differs from the API token key, so a session is never a
//! bearer token and a bearer token never a session. Nothing is stored per
//! session; deleting the user ends its sessions at once.
//!
//! Forms carry a CSRF token: an HMAC of a random per-browser cookie and the
//! signed-in name. A forged form on another site can neither read the cookie
//! nor compute the HMAC (the signed double-submit pattern); the cookies are
//! `SameSite=Strict` besides.

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::storage::now_secs;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "berth_session";
/// The CSRF cookie's name.
pub const CSRF_COOKIE: &str = "berth_csrf";
/// How long a sign-in lasts, in seconds.
pub const SESSION_TTL: u64 = 12 * 3600;
/// The `typ` of a session, which no API token carries.
const SESSION_TYP: &str = "ui-session";
const AUDIENCE: &str = "berth-ui";

/// The UI's keys, derived from the node's base secret.
pub struct Keys {
    encode: EncodingKey,
    decode: DecodingKey,
    csrf: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    typ: String,
}

impl Keys {
    /// Keys from `base`: the cluster secret, or a standalone node's key.
    pub fn derive(base: &[u8]) -> Keys {
        let session = derive(b"berth ui session key\0", base);
        Keys {
            encode: EncodingKey::from_secret(&session),
            decode: DecodingKey::from_secret(&session),
            csrf: derive(b"berth ui csrf key\0", base),
        }
    }

    /// A session cookie value for `subject`, good for [`SESSION_TTL`].
    pub fn session(&self, subject: &str) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: subject.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + SESSION_TTL,
            typ: SESSION_TYP.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encode)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The subject of a valid, unexpired session cookie.
    pub fn subject(&self, cookie: &str) -> Option<String> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.leeway = 30;
        let claims = jsonwebtoken::decode::<Claims>(cookie, &self.decode, &validation)
            .ok()?
            .claims;
        (claims.typ == SESSION_TYP).then_some(claims.sub)
    }

    /// The CSRF token forms carry, for a browser's CSRF cookie and the
    /// signed-in name (empty when signed out).
    pub fn csrf_token(&self, browser: &str, subject: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.csrf)
            .expect("HMAC takes keys of any length");
        mac.update(browser.as_bytes());
        mac.update(b"\0");
        mac.update(subject.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// Whether `presented` is the CSRF token of this browser and subject.
    pub fn csrf_ok(&self, browser: &str, subject: &str, presented: &str) -> bool {
        !browser.is_empty()
            && bool::from(
                self.csrf_token(browser, subject)
                    .as_bytes()
                    .ct_eq(presented.as_bytes()),
            )
    }
}

fn derive(label: &[u8], base: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(base);
    h.finalize().into()
}

/// A fresh CSRF cookie value.
pub fn new_browser_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the UI's paths,
/// Secure when served over TLS. `max_age` 0 deletes the cookie; `None`
/// lasts the browser session.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, https: bool) -> String {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if https {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_hold_their_subject_under_their_key_only() {
        let keys = Keys::derive(b"cluster secret 0123456789");
        let cookie = keys.session("alice");
        assert_eq!(keys.subject(&cookie).as_deref(), Some("alice"));
        let other = Keys::derive(b"another secret 0123456789");
        assert_eq!(other.subject(&cookie), None);
        assert_eq!(keys.subject("not.a.jwt"), None);
        let mut forged = cookie.clone();
        forged.pop();
        assert_eq!(keys.subject(&forged), None);
    }

    #[test]
    fn api_tokens_are_not_sessions() {
        let secret = b"cluster secret 0123456789";
        let tokens = crate::auth::token::Tokens::internal(secret, "berth");
        let token = tokens.access_token("alice", vec![]).unwrap();
        assert_eq!(Keys::derive(secret).subject(&token), None);
        let refresh = tokens.refresh_token("alice").unwrap();
        assert_eq!(Keys::derive(secret).subject(&refresh), None);
    }

    #[test]
    fn csrf_tokens_bind_browser_and_subject() {
        let keys = Keys::derive(b"cluster secret 0123456789");
        let token = keys.csrf_token("b1", "alice");
        assert!(keys.csrf_ok("b1", "alice", &token));
        assert!(!keys.csrf_ok("b2", "alice", &token));
        assert!(!keys.csrf_ok("b1", "bob", &token));
        assert!(!keys.csrf_ok("b1", "alice", ""));
        assert!(!keys.csrf_ok("", "", &keys.csrf_token("", "")));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "a=1; berth_csrf=xyz".parse().unwrap());
        headers.append(http::header::COOKIE, "berth_session=s".parse().unwrap());
        assert_eq!(cookie(&headers, CSRF_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("s"));
        assert_eq!(cookie(&headers, "b"), None);
        let set = set_cookie(SESSION_COOKIE, "v", Some(60), true);
        assert_eq!(
            set,
            "berth_session=v; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60; Secure"
        );
    }
}
