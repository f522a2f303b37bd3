//! The check every `/v2/` request passes before its handler runs.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::auth::{basic_credentials, Htpasswd, LoginLimiter};
use crate::registry::Error;

/// How callers prove who they are; nothing to prove when no users are
/// configured.
#[derive(Clone, Default)]
pub struct Authn {
    htpasswd: Option<Arc<Htpasswd>>,
    limiter: Arc<LoginLimiter>,
}

impl Authn {
    pub fn new(htpasswd: Option<Arc<Htpasswd>>) -> Authn {
        Authn {
            htpasswd,
            limiter: Arc::default(),
        }
    }

    /// Whether the request from `source` proves who sent it.
    pub async fn check(&self, source: IpAddr, headers: &HeaderMap) -> Result<(), Error> {
        let Some(htpasswd) = &self.htpasswd else {
            return Ok(());
        };
        if let Err(retry_after) = self.limiter.admit(source) {
            return Err(Error::TooManyRequests { retry_after });
        }
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some((user, password)) = header.and_then(basic_credentials) else {
            return Err(Error::Unauthorized(
                "send a user name and password (HTTP basic authentication)".into(),
            ));
        };
        if htpasswd.check(&user, &password).await {
            self.limiter.succeeded(source);
            Ok(())
        } else {
            self.limiter.failed(source);
            tracing::warn!(target: "berth::audit", %user, %source, "refused a login: unknown user or wrong password");
            Err(Error::Unauthorized("unknown user or wrong password".into()))
        }
    }
}
