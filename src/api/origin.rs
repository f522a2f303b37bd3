//! Who asked for a change, as its events name them.

use std::net::SocketAddr;

use http::{HeaderMap, Method};

use crate::meta::events::Origin;
use crate::registry::Registry;

/// The origin of a request from `source` by `actor` (`None` or empty for
/// anonymous callers).
pub fn of(
    reg: &Registry,
    actor: Option<&str>,
    source: SocketAddr,
    method: &Method,
    headers: &HeaderMap,
) -> Origin {
    let header = |name: http::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    Origin {
        actor: actor.filter(|a| !a.is_empty()).map(str::to_owned),
        node: reg.node_id(),
        addr: source.to_string(),
        host: header(http::header::HOST),
        method: method.to_string(),
        user_agent: header(http::header::USER_AGENT),
        request_id: format!("{:016x}", rand::random::<u64>()),
        at_ms: crate::storage::now_millis(),
    }
}
