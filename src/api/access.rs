//! The admin API for users, organizations, teams, grants, visibility and
//! robots, on the client port of any node: `GET /_berth/access` shows them
//! (to an administrator all, to others what they administer),
//! `POST /_berth/access` makes one [`AccessChange`]. `berth user|org|team|
//! repo|grant|robot` call it. Callers are administrators, an organization's
//! owners or a repository's admins (see [`crate::auth::Policy::may_change`]),
//! or carry the cluster secret, which is how the first users are made.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;

use super::admin::SECRET_HEADER;
use super::authn::{Authn, Need};
use super::ClientAddr;
use crate::auth::password::is_bcrypt;
use crate::auth::Caller;
use crate::meta::access::{AccessChange, AccessState};
use crate::registry::{Error, Registry};
use crate::storage::now_secs;

/// Who is asking, when they may administer: `None` for the cluster secret.
pub(super) async fn administrator(
    reg: &Registry,
    authn: &Authn,
    source: std::net::IpAddr,
    headers: &HeaderMap,
) -> Result<Option<Caller>, Error> {
    let secret = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    if reg.is_cluster_secret(secret) {
        return Ok(None);
    }
    if !authn.required() {
        return Err(Error::Denied(
            "sign-in is off on this node: send the cluster secret to change access".into(),
        ));
    }
    Ok(Some(
        authn
            .check_caught_up(reg, source, headers, &Need::SignedIn)
            .await?
            .caller,
    ))
}

/// Who is asking on an admin endpoint that a node with sign-in off leaves
/// open (where anyone may delete, anyone may collect or set policies).
pub(crate) enum Actor {
    Anyone,
    ClusterSecret,
    Caller(Caller),
}

impl Actor {
    /// The name the audit log gives.
    pub(super) fn name(&self) -> String {
        match self {
            Actor::Anyone => "anonymous (sign-in is off)".to_owned(),
            Actor::ClusterSecret => "cluster secret".to_owned(),
            Actor::Caller(caller) => caller.subject().to_owned(),
        }
    }

    /// Who asked for a change made through an admin endpoint, for its
    /// events: the signed-in caller or the cluster secret; no one when
    /// sign-in is off.
    pub(super) fn origin(
        &self,
        reg: &Registry,
        source: std::net::SocketAddr,
        method: &Method,
        headers: &HeaderMap,
    ) -> crate::meta::events::Origin {
        let actor = match self {
            Actor::Anyone => None,
            other => Some(other.name()),
        };
        super::origin::of(reg, actor.as_deref(), source, method, headers)
    }

    /// Refuses a caller whom `allowed` does not admit to `what` (the
    /// anonymous actor of a node with sign-in off and the cluster secret are
    /// always admitted), and audits the refusal.
    pub(crate) fn require(
        &self,
        authn: &Authn,
        source: std::net::IpAddr,
        what: &str,
        allowed: impl FnOnce(&crate::auth::Policy, &Caller) -> bool,
    ) -> Result<(), Error> {
        let Actor::Caller(caller) = self else {
            return Ok(());
        };
        if authn.policy()?.is_some_and(|p| allowed(&p, caller)) {
            return Ok(());
        }
        tracing::warn!(target: "berth::audit", %source, actor = caller.subject(), what, "refused");
        Err(Error::Denied(format!(
            "{} may not {what}",
            caller.subject()
        )))
    }
}

/// The caller of an administrators-only call, refused (and the refusal
/// audited) unless it is one; its name for the audit log.
pub(super) async fn administrator_only(
    reg: &Registry,
    authn: &Authn,
    source: std::net::IpAddr,
    headers: &HeaderMap,
    what: &str,
) -> Result<String, Error> {
    let actor = actor(reg, authn, source, headers).await?;
    actor.require(authn, source, what, |p, c| p.is_admin(c))?;
    Ok(actor.name())
}

pub(super) async fn actor(
    reg: &Registry,
    authn: &Authn,
    source: std::net::IpAddr,
    headers: &HeaderMap,
) -> Result<Actor, Error> {
    if !authn.required() && !headers.contains_key(SECRET_HEADER) {
        return Ok(Actor::Anyone);
    }
    Ok(match administrator(reg, authn, source, headers).await? {
        None => Actor::ClusterSecret,
        Some(caller) => Actor::Caller(caller),
    })
}

pub async fn show(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let caller = administrator(&reg, &authn, source.ip(), &headers).await?;
    let state = reg.access().await?;
    let shown = match (caller, authn.policy()?) {
        (Some(caller), Some(policy)) => policy.visible_to(&caller, state),
        _ => state,
    };
    Ok(Json(redacted(shown)).into_response())
}

pub async fn change(
    State(reg): State<Arc<Registry>>,
    Extension(authn): Extension<Authn>,
    ConnectInfo(ClientAddr(source)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let admin = administrator(&reg, &authn, source.ip(), &headers).await?;
    let mut change = parse(&super::small_body(body).await?)?;
    // A robot's secret is drawn here, never chosen by a caller.
    let secret = match &mut change {
        AccessChange::PutRobot { robot, .. } => Some(robot.new_secret(now_secs())),
        _ => None,
    };
    let admin = match admin {
        Some(caller) => Actor::Caller(caller),
        None => Actor::ClusterSecret,
    };
    admin.require(&authn, source.ip(), &change.describe(), |p, c| {
        p.may_change(c, &change)
    })?;
    let actor = admin.name();
    let describe = change.describe();
    let origin = admin.origin(&reg, source, &Method::POST, &headers);
    reg.change_access(change, origin).await?;
    tracing::info!(target: "berth::audit", %source, %actor, change = describe, "access changed");
    Ok(match secret {
        Some(secret) => Json(json!({ "secret": secret })).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

/// A change from its JSON, with what JSON cannot check checked.
fn parse(body: &[u8]) -> Result<AccessChange, Error> {
    let change: AccessChange = serde_json::from_slice(body)
        .map_err(|e| Error::AccessInvalid(format!("not an access change: {e}")))?;
    if let AccessChange::PutUser {
        password_hash: Some(hash),
        ..
    } = &change
    {
        if !is_bcrypt(hash) {
            return Err(Error::AccessInvalid(
                "password_hash must be a bcrypt hash".into(),
            ));
        }
    }
    Ok(change)
}

/// The state without password hashes and robot secrets.
fn redacted(state: AccessState) -> serde_json::Value {
    let users: serde_json::Map<_, _> = state
        .users
        .iter()
        .map(|(name, u)| {
            let shown = json!({ "admin": u.admin, "password": u.password_hash.is_some(), "created": u.created });
            (name.clone(), shown)
        })
        .collect();
    let robots: serde_json::Map<_, _> = state
        .robots
        .iter()
        .map(|(name, r)| {
            let shown = json!({ "repositories": r.repositories, "level": r.level, "expires": r.expires, "created": r.created });
            (name.clone(), shown)
        })
        .collect();
    let grants: Vec<_> = state
        .grants
        .iter()
        .flat_map(|(resource, grants)| {
            grants.iter().map(move |(grantee, level)| {
                json!({ "resource": resource, "grantee": grantee, "level": level })
            })
        })
        .collect();
    json!({
        "version": state.version,
        "users": users,
        "organizations": state.orgs,
        "grants": grants,
        "public": state.public,
        "robots": robots,
    })
}
