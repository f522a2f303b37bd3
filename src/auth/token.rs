//! Bearer tokens, as the Docker registry token specification has them: a
//! short-lived signed JWT naming the caller and the access granted, which a
//! client fetches from the token endpoint after a `Bearer` challenge and
//! sends on every request. Checking one costs a signature check, not a
//! password hash.
//!
//! berth signs its own with HS256 under a key every node derives from the
//! cluster secret (or a standalone node keeps in its data directory), so a
//! token one node issued is good on all. With `--token-issuer-key` it
//! instead trusts an external token service's public key and issues none.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::storage::now_secs;

/// The `iss` of the tokens berth issues.
pub const ISSUER: &str = "berth";
/// Lifetime of an access token, in seconds.
pub const ACCESS_TTL: u64 = 300;
/// Lifetime of a refresh token (what `docker login` keeps), in seconds.
pub const REFRESH_TTL: u64 = 30 * 24 * 3600;
/// Clock skew allowed between nodes, in seconds.
const LEEWAY: u64 = 30;

/// Access to one resource: `repository:<name>:pull,push`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// Parses a scope, `type:name:action,action`. Names cannot hold a colon
    /// but a registry host with a port could, so the name is what lies
    /// between the first and the last one.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_owned(),
            name: name.to_owned(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
        })
    }

    /// The scope string of this access, for a challenge.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    exp: u64,
    nbf: u64,
    iat: u64,
    jti: String,
    #[serde(default)]
    access: Vec<Access>,
    /// `refresh` on refresh tokens, which grant nothing by themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
}

/// What a verified access token allows.
#[derive(Clone, Debug)]
pub struct Grant {
    pub subject: String,
    pub access: Vec<Access>,
    /// When the token expires, in Unix seconds.
    pub expires: u64,
}

impl Grant {
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is invalid: {0}")]
    Invalid(String),
    #[error("a refresh token cannot be used for access")]
    RefreshForAccess,
    #[error("not a refresh token")]
    NotRefresh,
    #[error("cannot read the token issuer key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// Issues and checks tokens for one service name.
pub struct Tokens {
    service: String,
    algorithm: Algorithm,
    encode: Option<EncodingKey>,
    decode: DecodingKey,
    /// Tokens verified already, by their hash: a client sends the same one
    /// with every request until it expires, and a hash costs less than a
    /// signature check and a JSON parse.
    verified: Mutex<HashMap<[u8; 32], Arc<Grant>>>,
}

/// Most verified tokens remembered; the memory is emptied when it fills.
const REMEMBER_MAX: usize = 4096;

impl Tokens {
    /// Tokens berth issues itself, signed with a key derived from `secret`.
    pub fn internal(secret: &[u8], service: &str) -> Tokens {
        let mut h = Sha256::new();
        h.update(b"berth registry token key\0");
        h.update(secret);
        let key: [u8; 32] = h.finalize().into();
        Tokens {
            service: service.to_owned(),
            algorithm: Algorithm::HS256,
            encode: Some(EncodingKey::from_secret(&key)),
            decode: DecodingKey::from_secret(&key),
            verified: Mutex::default(),
        }
    }

    /// Tokens an external service issues, checked with its public key (PEM,
    /// EC P-256 for ES256 or RSA for RS256).
    pub fn external(public_key: &Path, service: &str) -> Result<Tokens, TokenError> {
        let fail = |reason: String| TokenError::Key {
            path: public_key.display().to_string(),
            reason,
        };
        let pem = std::fs::read(public_key).map_err(|e| fail(e.to_string()))?;
        let (algorithm, decode) = match DecodingKey::from_ec_pem(&pem) {
            Ok(k) => (Algorithm::ES256, k),
            Err(_) => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(&pem)
                    .map_err(|e| fail(format!("neither an EC nor an RSA public key: {e}")))?,
            ),
        };
        Ok(Tokens {
            service: service.to_owned(),
            algorithm,
            encode: None,
            decode,
            verified: Mutex::default(),
        })
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Whether this node issues tokens (it has the signing key).
    pub fn issues(&self) -> bool {
        self.encode.is_some()
    }

    /// An access token for `subject`; `None` when this node issues none.
    pub fn access_token(&self, subject: &str, access: Vec<Access>) -> Option<String> {
        self.sign(subject, access, ACCESS_TTL, None)
    }

    /// A refresh token for `subject`.
    pub fn refresh_token(&self, subject: &str) -> Option<String> {
        self.sign(subject, Vec::new(), REFRESH_TTL, Some("refresh"))
    }

    fn sign(
        &self,
        subject: &str,
        access: Vec<Access>,
        ttl: u64,
        typ: Option<&str>,
    ) -> Option<String> {
        let key = self.encode.as_ref()?;
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: subject.to_owned(),
            aud: self.service.clone(),
            exp: now + ttl,
            nbf: now.saturating_sub(LEEWAY),
            iat: now,
            jti: hex::encode(rand::random::<[u8; 16]>()),
            access,
            typ: typ.map(str::to_owned),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, key).ok()
    }

    fn claims(&self, token: &str) -> Result<Claims, TokenError> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_audience(&[&self.service]);
        if self.issues() {
            validation.set_issuer(&[ISSUER]);
        }
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "aud", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decode, &validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The grant of a valid access token.
    pub fn verify_access(&self, token: &str) -> Result<Arc<Grant>, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        {
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(grant) = verified.get(&key).filter(|g| g.expires + LEEWAY > now) {
                return Ok(grant.clone());
            }
        }
        let claims = self.claims(token)?;
        if claims.typ.is_some() {
            return Err(TokenError::RefreshForAccess);
        }
        let grant = Arc::new(Grant {
            subject: claims.sub,
            access: claims.access,
            expires: claims.exp,
        });
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= REMEMBER_MAX {
            verified.retain(|_, g| g.expires + LEEWAY > now);
            if verified.len() >= REMEMBER_MAX {
                verified.clear();
            }
        }
        verified.insert(key, grant.clone());
        Ok(grant)
    }

    /// The subject of a valid refresh token.
    pub fn verify_refresh(&self, token: &str) -> Result<String, TokenError> {
        let claims = self.claims(token)?;
        if claims.typ.as_deref() != Some("refresh") {
            return Err(TokenError::NotRefresh);
        }
        Ok(claims.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pull(name: &str) -> Access {
        Access {
            kind: "repository".into(),
            name: name.into(),
            actions: vec!["pull".into()],
        }
    }

    #[test]
    fn scopes_parse() {
        let a = Access::parse_scope("repository:library/app:pull,push").unwrap();
        assert_eq!(a.name, "library/app");
        assert_eq!(a.actions, vec!["pull", "push"]);
        assert_eq!(a.scope(), "repository:library/app:pull,push");
        assert_eq!(
            Access::parse_scope("registry:catalog:*").unwrap().actions,
            vec!["*"]
        );
        for bad in [
            "",
            "repository",
            "repository:app",
            ":app:pull",
            "repository::pull",
        ] {
            assert!(Access::parse_scope(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tokens_grant_what_they_name_to_their_service_only() {
        let tokens = Tokens::internal(b"cluster secret 0123456789", "berth");
        let token = tokens.access_token("alice", vec![pull("a/app")]).unwrap();
        let grant = tokens.verify_access(&token).unwrap();
        assert_eq!(grant.subject, "alice");
        assert!(grant.allows("repository", "a/app", "pull"));
        assert!(!grant.allows("repository", "a/app", "push"));
        assert!(!grant.allows("repository", "b/app", "pull"));

        // Another service, another cluster, a tampered token: refused.
        let other_service = Tokens::internal(b"cluster secret 0123456789", "elsewhere");
        assert!(other_service.verify_access(&token).is_err());
        let other_cluster = Tokens::internal(b"another secret 0123456789", "berth");
        assert!(other_cluster.verify_access(&token).is_err());
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(tokens.verify_access(&forged).is_err());

        // Refresh and access tokens are not interchangeable.
        let refresh = tokens.refresh_token("alice").unwrap();
        assert_eq!(tokens.verify_refresh(&refresh).unwrap(), "alice");
        assert!(matches!(
            tokens.verify_access(&refresh),
            Err(TokenError::RefreshForAccess)
        ));
        assert!(tokens.verify_refresh(&token).is_err());
    }

    #[test]
    fn tokens_of_an_external_issuer_are_checked_with_its_public_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap(); // P-256
        let public = dir.path().join("issuer.pem");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let tokens = Tokens::external(&public, "berth").unwrap();
        assert!(!tokens.issues());
        assert!(tokens.access_token("alice", Vec::new()).is_none());
        let now = now_secs();
        let claims = Claims {
            iss: "https://auth.example.com".into(),
            sub: "alice".into(),
            aud: "berth".into(),
            exp: now + 60,
            nbf: now - 1,
            iat: now,
            jti: "x".into(),
            access: vec![pull("a/app")],
            typ: None,
        };
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        assert!(tokens
            .verify_access(&token)
            .unwrap()
            .allows("repository", "a/app", "pull"));
        // Signed by anyone else: refused.
        let other = rcgen::KeyPair::generate().unwrap();
        let signing = EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap();
        let forged =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        assert!(tokens.verify_access(&forged).is_err());
        std::fs::write(&public, "not a key").unwrap();
        assert!(Tokens::external(&public, "berth").is_err());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let tokens = Tokens::internal(b"cluster secret 0123456789", "berth");
        let now = now_secs();
        let claims = Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: "berth".into(),
            exp: now - LEEWAY - 10,
            nbf: now - 1000,
            iat: now - 1000,
            jti: "x".into(),
            access: vec![pull("a/app")],
            typ: None,
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            tokens.encode.as_ref().unwrap(),
        )
        .unwrap();
        let e = tokens.verify_access(&token).unwrap_err().to_string();
        assert!(e.contains("Expired"), "{e}");
    }
}
