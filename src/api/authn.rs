//! The check every `/v2/` request passes before its handler runs: who the
//! caller is (a token, a password, or nobody) and whether the access rules
//! let them do what the request needs. Refusals say what would help: 401
//! with a challenge when signing in (or a token with more scope) could, 403
//! `DENIED` when the caller is known and not allowed.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{AUTHORIZATION, HOST};
use http::HeaderMap;

use crate::auth::header::bearer_challenge;
use crate::auth::token::{Access, Grant, Tokens};
use crate::auth::{basic_credentials, bearer_token, Caller, Htpasswd, LoginLimiter, Policy};
use crate::auth::{Rules, REALM};
use crate::registry::{Error, Registry};

/// What a request needs the caller to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Only to be signed in (`GET /v2/`).
    SignedIn,
    /// An action on a repository: `pull`, `push` or `delete`.
    Repository { name: String, action: &'static str },
    /// The repository list, which shows each caller what it may read.
    Catalog,
    /// A pull through a mirror of `name` (as the client named it), cached
    /// in `cache`: reading `cache` is what the rules ask, unless the mirror
    /// lets anyone pull.
    Mirror {
        name: String,
        cache: String,
        anonymous: bool,
    },
}

impl Need {
    fn access(&self) -> Option<Access> {
        let (kind, name, action) = match self {
            Need::SignedIn => return None,
            Need::Repository { name, action } => ("repository", name.as_str(), *action),
            Need::Mirror { name, .. } => ("repository", name.as_str(), "pull"),
            Need::Catalog => ("registry", "catalog", "*"),
        };
        Some(Access {
            kind: kind.into(),
            name: name.into(),
            actions: vec![action.into()],
        })
    }
}

/// A caller the check let through, and the rules it was judged by.
pub struct Authorized {
    pub caller: Caller,
    /// `None` when sign-in is off.
    policy: Option<Arc<Policy>>,
    /// The grant of a token an external issuer signed: that issuer, not
    /// berth's rules, decides what its callers may read.
    external: Option<Arc<Grant>>,
}

impl Authorized {
    /// Whether the caller may read `repo`: anyone may when sign-in is off.
    pub fn may_read(&self, repo: &str) -> bool {
        match (&self.policy, &self.external) {
            (None, _) => true,
            (Some(_), Some(grant)) => grant.allows("repository", repo, "pull"),
            (Some(p), None) => p.allows(&self.caller, repo, "pull"),
        }
    }

    /// Whether the catalog shows `repo`: what the caller may read, or every
    /// repository to a caller an external issuer granted the catalog.
    pub fn lists(&self, repo: &str) -> bool {
        match &self.external {
            Some(grant) => grant.allows("registry", "catalog", "*"),
            None => self.may_read(repo),
        }
    }

    /// The rules the caller was judged by; `None` when sign-in is off.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_deref()
    }
}

/// How callers prove who they are. With no sign-in configured there is
/// nothing to prove and everyone may do everything.
#[derive(Clone)]
pub struct Authn {
    htpasswd: Option<Arc<Htpasswd>>,
    tokens: Option<Arc<Tokens>>,
    /// The access rules; `None` when sign-in is off.
    rules: Option<Arc<Rules>>,
    realm: Option<String>,
    https: bool,
    limiter: Arc<LoginLimiter>,
    passwords: Arc<crate::auth::password::Passwords>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Authn {
    /// Sign-in is on when `rules` is given.
    pub fn new(
        htpasswd: Option<Arc<Htpasswd>>,
        tokens: Option<Arc<Tokens>>,
        rules: Option<Arc<Rules>>,
        realm: Option<String>,
        https: bool,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Authn {
        Authn {
            htpasswd,
            tokens,
            rules,
            realm,
            https,
            limiter: Arc::default(),
            passwords: Arc::default(),
            metrics,
        }
    }

    /// Whether callers must prove anything at all.
    pub fn required(&self) -> bool {
        self.rules.is_some()
    }

    /// The rules as of now; `None` when sign-in is off.
    pub fn policy(&self) -> Result<Option<Arc<Policy>>, Error> {
        self.rules
            .as_ref()
            .map(|r| r.current().map_err(|e| Error::Internal(e.to_string())))
            .transpose()
    }

    /// Who the request from `source` comes from, if it may do `need`.
    pub async fn check(
        &self,
        source: IpAddr,
        headers: &HeaderMap,
        need: &Need,
    ) -> Result<Authorized, Error> {
        let Some(policy) = self.policy()? else {
            return Ok(Authorized {
                caller: Caller::Anonymous,
                policy: None,
                external: None,
            });
        };
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let (caller, grant) = match header.and_then(bearer_token) {
            Some(token) => {
                let grant = self.verify(token, headers, need, source)?;
                let caller = Caller::from_subject(&grant.subject);
                // Deleting a user or robot ends the tokens it already holds.
                if self.issues_tokens() && !self.still_known(&policy, &caller) {
                    tracing::warn!(target: "berth::audit", %source, caller = who(&caller), "refused a token of a deleted or expired account");
                    self.metrics.login_refused("account");
                    return Err(self.challenge(headers, need, Some("invalid_token")));
                }
                (caller, Some(grant))
            }
            None if header.is_some_and(|h| basic_credentials(h).is_some()) => {
                (self.login(source, headers, &policy).await?, None)
            }
            None => (Caller::Anonymous, None),
        };
        let by_rules = allowed(&policy, &caller, need);
        let ok = match &grant {
            // An external issuer decides alone; berth's own tokens are
            // checked against the rules again, so a revocation is at once.
            Some(grant) if !self.issues_tokens() => grants(grant, need),
            Some(grant) => grants(grant, need) && by_rules,
            None => by_rules,
        };
        if ok {
            let external = grant.filter(|_| !self.issues_tokens());
            return Ok(Authorized {
                caller,
                policy: Some(policy),
                external,
            });
        }
        tracing::warn!(target: "berth::audit", %source, caller = who(&caller), ?need, "refused: not allowed");
        let external = grant.is_some() && !self.issues_tokens();
        Err(if external || (grant.is_some() && by_rules) {
            // A new token would carry it: ask the client to get one.
            self.challenge(headers, need, Some("insufficient_scope"))
        } else if caller == Caller::Anonymous {
            self.challenge(headers, need, None)
        } else {
            Error::Denied(format!(
                "{} may not {}{}",
                who(&caller),
                what(need),
                hint(&policy, &caller, need)
            ))
        })
    }

    /// [`Authn::check`], then, for a refusal, once more after this node has
    /// caught up with the cluster: its copy of the access rules may lag a
    /// change completed elsewhere (a new robot, a grant). Only a refusal
    /// under rules that moved is decided again, so a wrong password is
    /// never checked twice; a node cut off from the quorum keeps its answer.
    pub async fn check_caught_up(
        &self,
        reg: &Registry,
        source: IpAddr,
        headers: &HeaderMap,
        need: &Need,
    ) -> Result<Authorized, Error> {
        let refused = match self.check(source, headers, need).await {
            Err(e @ (Error::Unauthorized { .. } | Error::Denied(_))) => e,
            decided => return decided,
        };
        let before = self.policy()?;
        if !reg.catch_up().await {
            return Err(refused);
        }
        match (before, self.policy()?) {
            (Some(old), Some(new)) if !Arc::ptr_eq(&old, &new) => {
                self.check(source, headers, need).await
            }
            _ => Err(refused),
        }
    }

    /// Whether a token's subject still exists: a user kept in the cluster or
    /// in the htpasswd file, an unexpired robot, or anonymous.
    pub fn still_known(&self, policy: &Policy, caller: &Caller) -> bool {
        match caller {
            Caller::Anonymous => true,
            Caller::Robot(name) => policy.robot_active(name),
            Caller::User(name) => {
                policy.state().users.contains_key(name)
                    || self.htpasswd.as_ref().is_some_and(|h| h.contains(name))
            }
        }
    }

    fn verify(
        &self,
        token: &str,
        headers: &HeaderMap,
        need: &Need,
        source: IpAddr,
    ) -> Result<Arc<Grant>, Error> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or_else(|| self.challenge(headers, need, None))?;
        tokens.verify_access(token).map_err(|e| {
            tracing::warn!(target: "berth::audit", %source, error = %e, "refused a token");
            self.metrics.login_refused("token");
            self.challenge(headers, need, Some("invalid_token"))
        })
    }

    fn issues_tokens(&self) -> bool {
        self.tokens.as_ref().is_some_and(|t| t.issues())
    }

    /// Who a request's basic credentials prove under `policy`, counting
    /// failures against its source.
    pub async fn login(
        &self,
        source: IpAddr,
        headers: &HeaderMap,
        policy: &Policy,
    ) -> Result<Caller, Error> {
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        let (user, password) =
            header
                .and_then(basic_credentials)
                .ok_or_else(|| Error::Unauthorized {
                    reason: "send a user name and password (HTTP basic authentication)".into(),
                    challenge: basic_challenge(),
                })?;
        self.password_login(source, &user, &password, policy).await
    }

    /// Checks `name`'s `password` (a robot's secret for a robot) under
    /// `policy`, counting failures against `source`.
    pub async fn password_login(
        &self,
        source: IpAddr,
        name: &str,
        password: &str,
        policy: &Policy,
    ) -> Result<Caller, Error> {
        // Counted before the check, so parallel guesses cannot all be
        // checked before their failures are recorded.
        let attempt = self.limiter.attempt(source).map_err(|retry_after| {
            self.metrics.login_refused("rate_limited");
            Error::TooManyRequests { retry_after }
        })?;
        let caller = Caller::from_subject(name);
        let known = match &caller {
            Caller::Anonymous => false,
            Caller::Robot(name) => policy.robot_login(name, password),
            Caller::User(user) => match policy.password_hash(user) {
                Some(hash) => self.passwords.check(user, password, Some(hash)).await,
                None => match &self.htpasswd {
                    Some(h) => h.check(user, password).await,
                    None => self.passwords.check(user, password, None).await,
                },
            },
        };
        if known {
            attempt.succeeded();
            Ok(caller)
        } else {
            attempt.failed();
            tracing::warn!(target: "berth::audit", user = %name, %source, "refused a login: unknown user or wrong password");
            self.metrics.login_refused("password");
            Err(Error::Unauthorized {
                reason: "unknown user or wrong password".into(),
                challenge: basic_challenge(),
            })
        }
    }

    pub fn tokens(&self) -> Option<&Tokens> {
        self.tokens.as_deref()
    }

    /// 401 with the challenge a client follows to get what `need` takes:
    /// a token from the realm when tokens are on, else a password.
    fn challenge(&self, headers: &HeaderMap, need: &Need, error: Option<&str>) -> Error {
        let Some(tokens) = &self.tokens else {
            return Error::Unauthorized {
                reason: format!(
                    "authentication required to {}: send a user name and password",
                    what(need)
                ),
                challenge: basic_challenge(),
            };
        };
        let realm = self.realm.clone().unwrap_or_else(|| {
            let host = headers
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            let scheme = if self.https { "https" } else { "http" };
            format!("{scheme}://{host}/auth/token")
        });
        let scope = need.access().map(|a| a.scope());
        let params: Vec<(&str, &str)> = [
            Some(("realm", realm.as_str())),
            Some(("service", tokens.service())),
            scope.as_deref().map(|s| ("scope", s)),
            error.map(|e| ("error", e)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let challenge = bearer_challenge(&params);
        let reason = match error {
            Some("insufficient_scope") => "the token does not grant this",
            Some(_) => "the token is invalid or expired",
            None => "authentication required: get a token from the realm the challenge names",
        };
        Error::Unauthorized {
            reason: reason.into(),
            challenge,
        }
    }
}

/// Whether the rules let `caller` do `need`.
fn allowed(policy: &Policy, caller: &Caller, need: &Need) -> bool {
    match need {
        Need::SignedIn => *caller != Caller::Anonymous,
        Need::Repository { name, action } => policy.allows(caller, name, action),
        Need::Mirror {
            cache, anonymous, ..
        } => *anonymous || policy.allows(caller, cache, "pull"),
        Need::Catalog => true,
    }
}

/// Whether a token carries what `need` takes.
fn grants(grant: &Grant, need: &Need) -> bool {
    match need {
        Need::SignedIn => true,
        Need::Repository { name, action } => grant.allows("repository", name, action),
        Need::Mirror {
            name,
            cache,
            anonymous,
        } => {
            *anonymous
                || grant.allows("repository", name, "pull")
                || grant.allows("repository", cache, "pull")
        }
        Need::Catalog => grant.allows("registry", "catalog", "*"),
    }
}

/// What a user refused outside its namespace may want to know: berth's
/// rules differ from Distribution's with htpasswd, and one setting bridges
/// them.
fn hint(policy: &Policy, caller: &Caller, need: &Need) -> &'static str {
    let outside = match (caller, need) {
        (Caller::User(user), Need::Repository { name, .. }) => {
            crate::meta::access::namespace_of(name) != user
        }
        _ => false,
    };
    match outside && policy.signed_in().is_none() {
        true => " (each user has its own namespace; grant access with `berth grant`, or start berth with --signed-in-level write to let every signed-in user push anywhere, as Distribution with htpasswd does)",
        false => "",
    }
}

fn who(caller: &Caller) -> String {
    match caller {
        Caller::Anonymous => "an anonymous caller".into(),
        Caller::User(u) => format!("user {u}"),
        Caller::Robot(r) => format!("robot {r}"),
    }
}

fn what(need: &Need) -> String {
    match need {
        Need::SignedIn => "use the registry".into(),
        Need::Repository { name, action } => format!("{action} {name}"),
        Need::Mirror { name, cache, .. } => format!("pull {name} (through the mirror, {cache})"),
        Need::Catalog => "list repositories".into(),
    }
}

/// The challenge of the token endpoint itself, which takes passwords.
pub fn basic_challenge() -> String {
    format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")
}
