//! The check every `/v2/` request passes before its handler runs.

use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::auth::{basic_credentials, Htpasswd};
use crate::registry::Error;

/// How callers prove who they are; nothing to prove when no users are
/// configured.
#[derive(Clone, Default)]
pub struct Authn {
    htpasswd: Option<Arc<Htpasswd>>,
}

impl Authn {
    pub fn new(htpasswd: Option<Arc<Htpasswd>>) -> Authn {
        Authn { htpasswd }
    }

    pub async fn check(&self, headers: &HeaderMap) -> Result<(), Error> {
        let Some(htpasswd) = &self.htpasswd else {
            return Ok(());
        };
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return Err(Error::Unauthorized(
                "send a user name and password (HTTP basic authentication)".into(),
            ));
        };
        if htpasswd.check(&user, &password).await {
            Ok(())
        } else {
            tracing::warn!(target: "berth::audit", %user, "refused a login: unknown user or wrong password");
            Err(Error::Unauthorized("unknown user or wrong password".into()))
        }
    }
}
