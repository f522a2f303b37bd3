//! The access rules: what a caller may do to a repository, decided from the
//! replicated [`AccessState`] and the operator's list of administrators.
//!
//! ```text
//! administrator (flag or --admins)      admin on everything, and the admin API
//! a user, in the namespace of its name  admin
//! an organization's `owners` team       admin in the organization's namespace
//! a grant to the user or to its team    its level, on a repository or namespace
//! a robot, unexpired                    its level, on its repositories
//! anyone, signed in or not              read on a public repository
//! ```
//! The highest level that applies wins. `read` pulls, `write` pushes too,
//! `admin` also deletes and manages the repository.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

use crate::meta::access::{
    namespace_of, robot_namespace, AccessChange, AccessState, Grantee, Level, Resource, Robot,
    OWNERS,
};
use crate::storage::now_secs;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User(String),
    /// A robot account, `<namespace>+<name>`.
    Robot(String),
}

impl Caller {
    /// The caller a token's subject names: empty for anonymous, with a `+`
    /// for a robot.
    pub fn from_subject(subject: &str) -> Caller {
        match subject {
            "" => Caller::Anonymous,
            s if robot_namespace(s).is_some() => Caller::Robot(s.to_owned()),
            s => Caller::User(s.to_owned()),
        }
    }

    /// The name a token's subject carries.
    pub fn subject(&self) -> &str {
        match self {
            Caller::Anonymous => "",
            Caller::User(n) | Caller::Robot(n) => n,
        }
    }
}

/// A level every signed-in user holds on the repositories some patterns
/// match, set per node (`--signed-in-level`): how Distribution with an
/// htpasswd file behaves, for those who move from it unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedIn {
    pub level: Level,
    pub repositories: Vec<String>,
}

impl SignedIn {
    /// The setting from its options; patterns without a level are a
    /// mistake worth refusing.
    pub fn from_settings(
        level: Option<Level>,
        repositories: Vec<String>,
    ) -> Result<Option<SignedIn>, String> {
        let repositories: Vec<String> = repositories
            .into_iter()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        match level {
            None if !repositories.is_empty() => Err(
                "--signed-in-repositories needs --signed-in-level (read, write or admin)".into(),
            ),
            None => Ok(None),
            Some(level) => Ok(Some(SignedIn {
                level,
                repositories: if repositories.is_empty() {
                    vec!["*".into()]
                } else {
                    repositories
                },
            })),
        }
    }

    fn covers(&self, repo: &str) -> Option<Level> {
        crate::meta::policy::matching_pattern(&self.repositories, repo).map(|_| self.level)
    }
}

/// The rules as of one version of the access state.
pub struct Policy {
    state: AccessState,
    admins: Arc<BTreeSet<String>>,
    signed_in: Option<Arc<SignedIn>>,
    /// Each user's teams, `(org, team)`.
    teams: HashMap<String, Vec<(String, String)>>,
    /// Grants by namespace and by repository, looked up by `&str` on every
    /// request without building a key.
    namespace_grants: HashMap<String, Vec<(Grantee, Level)>>,
    repository_grants: HashMap<String, Vec<(Grantee, Level)>>,
}

impl Policy {
    pub fn new(state: AccessState, admins: Arc<BTreeSet<String>>) -> Policy {
        let mut teams: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (org, o) in &state.orgs {
            for (team, members) in &o.teams {
                for user in members {
                    teams
                        .entry(user.clone())
                        .or_default()
                        .push((org.clone(), team.clone()));
                }
            }
        }
        let (mut namespace_grants, mut repository_grants) = (HashMap::new(), HashMap::new());
        for (resource, grants) in &state.grants {
            let (map, name) = match resource {
                Resource::Namespace(n) => (&mut namespace_grants, n),
                Resource::Repository(r) => (&mut repository_grants, r),
            };
            let list: Vec<(Grantee, Level)> = grants.iter().map(|(g, l)| (g.clone(), *l)).collect();
            map.insert(name.clone(), list);
        }
        Policy {
            state,
            admins,
            signed_in: None,
            teams,
            namespace_grants,
            repository_grants,
        }
    }

    /// These rules with every signed-in user holding `signed_in`.
    pub fn with_signed_in(mut self, signed_in: Option<Arc<SignedIn>>) -> Policy {
        self.signed_in = signed_in;
        self
    }

    /// What every signed-in user holds beside the replicated rules.
    pub fn signed_in(&self) -> Option<&SignedIn> {
        self.signed_in.as_deref()
    }

    pub fn version(&self) -> u64 {
        self.state.version
    }

    pub fn state(&self) -> &AccessState {
        &self.state
    }

    /// Whether the caller is an administrator of the whole registry.
    pub fn is_admin(&self, caller: &Caller) -> bool {
        match caller {
            Caller::User(name) => self.is_admin_user(name),
            _ => false,
        }
    }

    fn is_admin_user(&self, name: &str) -> bool {
        self.admins.contains(name) || self.state.users.get(name).is_some_and(|u| u.admin)
    }

    /// The bcrypt hash of a user kept in the cluster.
    pub fn password_hash(&self, user: &str) -> Option<&str> {
        self.state.users.get(user)?.password_hash.as_deref()
    }

    /// Whether `secret` is the secret of an unexpired robot `name`.
    pub fn robot_login(&self, name: &str, secret: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.robot(name)
            .is_some_and(|r| bool::from(r.secret_sha256.ct_eq(&hash)))
    }

    /// Whether robot `name` exists and has not expired.
    pub fn robot_active(&self, name: &str) -> bool {
        self.robot(name).is_some()
    }

    fn robot(&self, name: &str) -> Option<&Robot> {
        self.state
            .robots
            .get(name)
            .filter(|r| r.expires > now_secs())
    }

    /// The highest level the caller holds on `repo`, if any.
    pub fn level(&self, caller: &Caller, repo: &str) -> Option<Level> {
        let public = self.state.public.contains(repo).then_some(Level::Read);
        let own = match caller {
            Caller::Anonymous => None,
            Caller::Robot(name) => self.robot(name).and_then(|r| {
                let inside = robot_namespace(name) == Some(namespace_of(repo))
                    && (r.repositories.is_empty() || r.repositories.iter().any(|x| x == repo));
                inside.then_some(r.level)
            }),
            Caller::User(user) => {
                let everyone = self.signed_in.as_ref().and_then(|s| s.covers(repo));
                self.user_level(user, namespace_of(repo), Some(repo))
                    .max(everyone)
            }
        };
        own.max(public)
    }

    /// A user's level over a namespace, and over `repo` in it when given.
    fn user_level(&self, user: &str, namespace: &str, repo: Option<&str>) -> Option<Level> {
        if self.is_admin_user(user) {
            return Some(Level::Admin);
        }
        let teams = self.teams.get(user).map(Vec::as_slice).unwrap_or_default();
        let owns = match self.state.orgs.get(namespace) {
            None => namespace == user,
            Some(_) => teams.iter().any(|(o, t)| o == namespace && t == OWNERS),
        };
        if owns {
            return Some(Level::Admin);
        }
        let on_repo = repo.and_then(|r| self.repository_grants.get(r));
        [self.namespace_grants.get(namespace), on_repo]
            .into_iter()
            .flatten()
            .flat_map(|grants| grants.iter())
            .filter(|(grantee, _)| match grantee {
                Grantee::User(u) => u == user,
                Grantee::Team { org, team } => teams.iter().any(|(o, t)| o == org && t == team),
            })
            .map(|(_, level)| *level)
            .max()
    }

    /// Whether the caller may do `action` (`pull`, `push`, `delete`) on `repo`.
    pub fn allows(&self, caller: &Caller, repo: &str, action: &str) -> bool {
        match Level::for_action(action) {
            Some(needed) => self.level(caller, repo).is_some_and(|l| l >= needed),
            None => false,
        }
    }

    /// The part of `state` the caller may see through the admin API:
    /// everything for administrators; for a user, itself and what lies in
    /// the namespaces it administers; nothing for anyone else.
    pub fn visible_to(&self, caller: &Caller, mut state: AccessState) -> AccessState {
        if self.is_admin(caller) {
            return state;
        }
        let Caller::User(user) = caller else {
            return AccessState {
                version: state.version,
                ..AccessState::default()
            };
        };
        let administers = |ns: &str| self.user_level(user, ns, None) == Some(Level::Admin);
        state.users.retain(|name, _| name == user);
        state.orgs.retain(|org, _| administers(org));
        state
            .grants
            .retain(|resource, _| administers(resource.namespace()));
        state.public.retain(|repo| administers(namespace_of(repo)));
        state
            .robots
            .retain(|name, _| robot_namespace(name).is_some_and(administers));
        state
    }

    /// Whether the caller administers a repository (its admins, and its
    /// namespace's) or a namespace (an organization's owners, a user's own).
    pub fn administers(&self, caller: &Caller, resource: &Resource) -> bool {
        if self.is_admin(caller) {
            return true;
        }
        let Caller::User(user) = caller else {
            return false;
        };
        match resource {
            Resource::Namespace(ns) => self.user_level(user, ns, None) == Some(Level::Admin),
            Resource::Repository(repo) => self.level(caller, repo) == Some(Level::Admin),
        }
    }

    /// Whether the caller may make `change` through the admin API:
    /// administrators anything; an organization's owners its teams, robots
    /// and grants; a repository's admins its visibility and grants.
    pub fn may_change(&self, caller: &Caller, change: &AccessChange) -> bool {
        use AccessChange::*;
        if self.is_admin(caller) {
            return true;
        }
        let Caller::User(user) = caller else {
            return false;
        };
        let admin_of_namespace = |ns: &str| self.user_level(user, ns, None) == Some(Level::Admin);
        match change {
            PutUser { .. } | DeleteUser { .. } | PutOrg { .. } | DeleteOrg { .. } => false,
            PutTeam { org, .. }
            | DeleteTeam { org, .. }
            | AddMember { org, .. }
            | RemoveMember { org, .. } => admin_of_namespace(org),
            Grant { resource, .. } | Revoke { resource, .. } => self.administers(caller, resource),
            SetPublic { repository, .. } => self.level(caller, repository) == Some(Level::Admin),
            PutRobot { name, .. } | DeleteRobot { name } => {
                robot_namespace(name).is_some_and(admin_of_namespace)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::access::AccessChange::*;

    fn policy(changes: Vec<AccessChange>, admins: &[&str]) -> Policy {
        let mut state = AccessState::default();
        for c in &changes {
            state.apply(c, 1).unwrap();
        }
        let admins = admins.iter().map(|a| a.to_string()).collect();
        Policy::new(state, Arc::new(admins))
    }

    fn user(name: &str) -> Caller {
        Caller::User(name.into())
    }

    #[test]
    fn a_signed_in_level_reaches_every_user_on_matching_repositories_only() {
        let patterns = vec!["*".to_string(), "!secret/*".to_string()];
        let signed_in = SignedIn::from_settings(Some(Level::Write), patterns).unwrap();
        let p = policy(vec![], &[]).with_signed_in(signed_in.map(Arc::new));
        let ada = user("ada");
        assert!(p.allows(&ada, "bars/auth", "push"));
        assert!(p.allows(&ada, "ubuntu", "pull"));
        assert!(!p.allows(&ada, "bars/auth", "delete"));
        assert!(!p.allows(&ada, "secret/x", "pull"));
        // Her own namespace stays hers to administer.
        assert!(p.allows(&ada, "ada/app", "delete"));
        // Only people who signed in: not robots, not anonymous callers.
        assert!(!p.allows(&Caller::Anonymous, "bars/auth", "pull"));
        assert!(!p.allows(&Caller::Robot("bars+ci".into()), "bars/auth", "pull"));
        // Without the setting, berth's own rules.
        assert!(!policy(vec![], &[]).allows(&ada, "bars/auth", "push"));
    }

    #[test]
    fn the_signed_in_setting_defaults_to_everything_and_needs_a_level() {
        let all = SignedIn::from_settings(Some(Level::Read), vec![" ".into()]).unwrap();
        assert_eq!(all.unwrap().repositories, ["*"]);
        assert_eq!(SignedIn::from_settings(None, vec![]).unwrap(), None);
        assert!(SignedIn::from_settings(None, vec!["acme/*".into()]).is_err());
    }

    #[test]
    fn owners_and_repository_admins_administer_their_scope_only() {
        let p = policy(
            vec![
                PutOrg {
                    name: "acme".into(),
                    owner: Some("olga".into()),
                },
                Grant {
                    resource: Resource::Repository("acme/app".into()),
                    grantee: Grantee::User("rita".into()),
                    level: Level::Admin,
                },
                Grant {
                    resource: Resource::Repository("acme/app".into()),
                    grantee: Grantee::User("will".into()),
                    level: Level::Write,
                },
            ],
            &["root"],
        );
        let ns = Resource::Namespace("acme".into());
        let app = Resource::Repository("acme/app".into());
        let other = Resource::Repository("acme/other".into());
        for (who, on_ns, on_app, on_other) in [
            ("root", true, true, true),
            ("olga", true, true, true),
            ("rita", false, true, false),
            ("will", false, false, false),
            ("otto", false, false, false),
        ] {
            let caller = user(who);
            assert_eq!(p.administers(&caller, &ns), on_ns, "{who} on acme/*");
            assert_eq!(p.administers(&caller, &app), on_app, "{who} on acme/app");
            assert_eq!(
                p.administers(&caller, &other),
                on_other,
                "{who} on acme/other"
            );
        }
        // A user's own namespace is theirs.
        assert!(p.administers(&user("otto"), &Resource::Namespace("otto".into())));
    }

    #[test]
    fn levels_follow_namespaces_teams_grants_and_visibility() {
        let p = policy(
            vec![
                PutOrg {
                    name: "acme".into(),
                    owner: Some("olga".into()),
                },
                PutTeam {
                    org: "acme".into(),
                    team: "dev".into(),
                },
                AddMember {
                    org: "acme".into(),
                    team: "dev".into(),
                    user: "dave".into(),
                },
                Grant {
                    resource: Resource::Namespace("acme".into()),
                    grantee: Grantee::Team {
                        org: "acme".into(),
                        team: "dev".into(),
                    },
                    level: Level::Write,
                },
                Grant {
                    resource: Resource::Repository("acme/app".into()),
                    grantee: Grantee::User("rita".into()),
                    level: Level::Read,
                },
                SetPublic {
                    repository: "acme/site".into(),
                    public: true,
                },
            ],
            &["root"],
        );
        let level = |c: &Caller, r: &str| p.level(c, r);
        assert_eq!(level(&user("root"), "acme/app"), Some(Level::Admin));
        assert_eq!(level(&user("olga"), "acme/app"), Some(Level::Admin));
        assert_eq!(level(&user("dave"), "acme/app"), Some(Level::Write));
        assert_eq!(level(&user("rita"), "acme/app"), Some(Level::Read));
        assert_eq!(level(&user("rita"), "acme/other"), None);
        assert_eq!(level(&user("rita"), "rita/tool"), Some(Level::Admin));
        assert_eq!(level(&user("rita"), "acme/site"), Some(Level::Read));
        assert_eq!(level(&Caller::Anonymous, "acme/site"), Some(Level::Read));
        assert_eq!(level(&Caller::Anonymous, "acme/app"), None);
        // A user named like nobody's organization does not own it.
        assert_eq!(level(&user("acme"), "acme/app"), None);
        assert!(p.allows(&user("dave"), "acme/app", "push"));
        assert!(!p.allows(&user("dave"), "acme/app", "delete"));
        assert!(!p.allows(&user("dave"), "acme/app", "bogus"));
        assert!(p.may_change(
            &user("olga"),
            &PutTeam {
                org: "acme".into(),
                team: "qa".into()
            }
        ));
        assert!(!p.may_change(
            &user("dave"),
            &PutTeam {
                org: "acme".into(),
                team: "qa".into()
            }
        ));
        assert!(!p.may_change(
            &user("olga"),
            &PutUser {
                name: "x".into(),
                password_hash: None,
                admin: true
            }
        ));
    }

    #[test]
    fn robots_reach_only_their_repositories_until_they_expire() {
        let secret = "s3cret-robot-token";
        let robot = |expires| Robot {
            secret_sha256: Sha256::digest(secret).into(),
            repositories: vec!["acme/app".into()],
            level: Level::Write,
            expires,
            created: 1,
        };
        let later = now_secs() + 3600;
        let p = policy(
            vec![
                PutRobot {
                    name: "acme+ci".into(),
                    robot: robot(later),
                },
                PutRobot {
                    name: "acme+old".into(),
                    robot: robot(1),
                },
            ],
            &[],
        );
        let ci = Caller::from_subject("acme+ci");
        assert_eq!(ci, Caller::Robot("acme+ci".into()));
        assert!(p.robot_login("acme+ci", secret));
        assert!(!p.robot_login("acme+ci", "guess"));
        assert!(!p.robot_login("acme+old", secret), "expired");
        assert!(p.allows(&ci, "acme/app", "push"));
        assert!(!p.allows(&ci, "acme/app", "delete"));
        assert!(!p.allows(&ci, "acme/other", "pull"));
        assert!(!p.allows(&Caller::Robot("acme+old".into()), "acme/app", "pull"));
    }
}
