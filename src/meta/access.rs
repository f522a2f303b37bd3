//! Who may do what, replicated with the rest of the metadata: users,
//! organizations and their teams, grants, public repositories and robot
//! accounts, as Docker Hub has them.
//!
//! All of it is one record. It changes at an administrator's pace and stays
//! small, and every request's permission check wants all of it at hand, so
//! nodes keep it decoded in memory and reload it only when its `version`
//! moves. [`AccessState::apply`] is a pure function of the state and one
//! [`AccessChange`]: every node reaches the same state.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use super::Rejection;

/// What a grant allows on a repository: `read` pulls, `write` also pushes,
/// `admin` also deletes and manages the repository's visibility and grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Read,
    Write,
    Admin,
}

impl Level {
    /// The level a registry action needs; `None` for an unknown action.
    pub fn for_action(action: &str) -> Option<Level> {
        match action {
            "pull" => Some(Level::Read),
            "push" => Some(Level::Write),
            "delete" | "*" => Some(Level::Admin),
            _ => None,
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s {
            "read" => Ok(Level::Read),
            "write" => Ok(Level::Write),
            "admin" => Ok(Level::Admin),
            _ => Err(format!("{s:?} is not a level: read, write or admin")),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Read => "read",
            Level::Write => "write",
            Level::Admin => "admin",
        })
    }
}

/// Who a grant is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grantee {
    User(String),
    Team { org: String, team: String },
}

/// What a grant covers: one repository, or every repository of a namespace
/// (its first path component: a user's or an organization's name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Repository(String),
    Namespace(String),
}

impl Resource {
    /// `acme/*` names a namespace, anything else a repository.
    pub fn from_scope(text: &str) -> Resource {
        match text.strip_suffix("/*") {
            Some(ns) => Resource::Namespace(ns.to_owned()),
            None => Resource::Repository(text.to_owned()),
        }
    }

    /// Whether the resource is `repo` or the namespace it lies in.
    pub fn covers(&self, repo: &str) -> bool {
        match self {
            Resource::Repository(r) => r == repo,
            Resource::Namespace(n) => namespace_of(repo) == n,
        }
    }

    /// The namespace the resource lies in.
    pub fn namespace(&self) -> &str {
        match self {
            Resource::Repository(r) => namespace_of(r),
            Resource::Namespace(n) => n,
        }
    }
}

/// The namespace of a repository name: its first component.
pub fn namespace_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// bcrypt; `None` for a user who signs in elsewhere (an htpasswd file).
    pub password_hash: Option<String>,
    /// May do anything, the admin API included.
    pub admin: bool,
    pub created: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Org {
    /// Teams and their members. `owners` always exists and administers the
    /// organization's namespace.
    pub teams: BTreeMap<String, BTreeSet<String>>,
    pub created: u64,
}

/// The team of an organization that administers its namespace.
pub const OWNERS: &str = "owners";

/// A robot account: a secret for a pipeline, confined to one namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Robot {
    /// SHA-256 of the secret, which the admin API draws at random (256
    /// bits): a fast hash is enough, and the secret itself is shown once
    /// and never stored. Callers of the API leave it out.
    #[serde(default)]
    pub secret_sha256: [u8; 32],
    /// Repositories (full names) it may use; empty for the whole namespace.
    pub repositories: Vec<String>,
    /// `read` or `write`.
    pub level: Level,
    /// Unix seconds after which it is refused.
    pub expires: u64,
    /// Set by the admin API.
    #[serde(default)]
    pub created: u64,
}

impl Robot {
    /// Gives the robot a new random secret, made at `now`; returns it.
    pub fn new_secret(&mut self, now: u64) -> String {
        use sha2::Digest as _;
        let secret = hex::encode(rand::random::<[u8; 32]>());
        self.secret_sha256 = sha2::Sha256::digest(secret.as_bytes()).into();
        self.created = now;
        secret
    }
}

/// Longest user, organization, team or robot name part.
pub const MAX_NAME: usize = 64;
/// Most entries of each kind, so the record and its check stay small.
pub const MAX_ENTRIES: usize = 10_000;

/// Checks a user, organization or team name: one repository name component
/// (the grammar of [`crate::oci::RepoName`]), so that a user's or
/// organization's namespace is its name.
pub fn check_name(kind: &str, name: &str) -> Result<(), Rejection> {
    let component = name.len() <= MAX_NAME
        && !name.contains('/')
        && name.parse::<crate::oci::RepoName>().is_ok();
    if !component {
        return Err(Rejection::AccessInvalid(format!(
            "{kind} name {name:?} must be one repository name component of at most \
             {MAX_NAME} characters: [a-z0-9] joined by '.', '_', '__' or hyphens"
        )));
    }
    Ok(())
}

/// The namespace of a robot's full name, `<namespace>+<name>`, when it is
/// one: the `+` keeps robots apart from every user name.
pub fn robot_namespace(name: &str) -> Option<&str> {
    name.split_once('+').map(|(ns, _)| ns)
}

/// One change to the access state, as the admin API proposes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessChange {
    /// Creates or updates a user; a `None` password hash keeps the old one.
    PutUser {
        name: String,
        password_hash: Option<String>,
        admin: bool,
    },
    DeleteUser {
        name: String,
    },
    /// Creates an organization with its `owners` team, `owner` in it.
    PutOrg {
        name: String,
        owner: Option<String>,
    },
    DeleteOrg {
        name: String,
    },
    PutTeam {
        org: String,
        team: String,
    },
    DeleteTeam {
        org: String,
        team: String,
    },
    AddMember {
        org: String,
        team: String,
        user: String,
    },
    RemoveMember {
        org: String,
        team: String,
        user: String,
    },
    Grant {
        resource: Resource,
        grantee: Grantee,
        level: Level,
    },
    Revoke {
        resource: Resource,
        grantee: Grantee,
    },
    SetPublic {
        repository: String,
        public: bool,
    },
    /// Creates a robot (`<namespace>+<name>`) or replaces its secret.
    PutRobot {
        name: String,
        robot: Robot,
    },
    DeleteRobot {
        name: String,
    },
}

impl AccessChange {
    /// What the change does, for the audit log: names, never secrets.
    pub fn describe(&self) -> String {
        use AccessChange::*;
        match self {
            PutUser { name, admin, .. } => format!("put user {name} (admin: {admin})"),
            DeleteUser { name } => format!("delete user {name}"),
            PutOrg { name, owner } => format!("put organization {name} (owner: {owner:?})"),
            DeleteOrg { name } => format!("delete organization {name}"),
            PutTeam { org, team } => format!("put team {org}/{team}"),
            DeleteTeam { org, team } => format!("delete team {org}/{team}"),
            AddMember { org, team, user } => format!("add {user} to {org}/{team}"),
            RemoveMember { org, team, user } => format!("remove {user} from {org}/{team}"),
            Grant {
                resource,
                grantee,
                level,
            } => format!("grant {level} on {resource:?} to {grantee:?}"),
            Revoke { resource, grantee } => format!("revoke {resource:?} from {grantee:?}"),
            SetPublic { repository, public } => format!("set {repository} public: {public}"),
            PutRobot { name, robot } => format!(
                "put robot {name} ({} on {:?} until {})",
                robot.level, robot.repositories, robot.expires
            ),
            DeleteRobot { name } => format!("delete robot {name}"),
        }
    }
}

/// Everything the access rules know.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccessState {
    /// Counts applied changes; a node reloads its rules when it moves.
    pub version: u64,
    pub users: BTreeMap<String, User>,
    pub orgs: BTreeMap<String, Org>,
    pub grants: BTreeMap<Resource, BTreeMap<Grantee, Level>>,
    /// Repositories anyone may pull, signed in or not.
    pub public: BTreeSet<String>,
    pub robots: BTreeMap<String, Robot>,
}

impl AccessState {
    /// Applies one change made at `at` (Unix seconds on the proposer).
    /// A rejected change leaves the state as it was.
    pub fn apply(&mut self, change: &AccessChange, at: u64) -> Result<(), Rejection> {
        let mut next = self.clone();
        next.apply_inner(change, at)?;
        next.version += 1;
        *self = next;
        Ok(())
    }

    fn apply_inner(&mut self, change: &AccessChange, at: u64) -> Result<(), Rejection> {
        use AccessChange::*;
        match change {
            PutUser {
                name,
                password_hash,
                admin,
            } => {
                check_name("user", name)?;
                if self.orgs.contains_key(name) {
                    return Err(invalid(format!("{name:?} is an organization")));
                }
                if !self.users.contains_key(name) {
                    room(self.users.len(), "users")?;
                }
                let user = self.users.entry(name.clone()).or_insert_with(|| User {
                    created: at,
                    ..User::default()
                });
                if password_hash.is_some() {
                    user.password_hash.clone_from(password_hash);
                }
                user.admin = *admin;
            }
            DeleteUser { name } => {
                self.users
                    .remove(name)
                    .ok_or_else(|| unknown("user", name))?;
                for org in self.orgs.values_mut() {
                    for members in org.teams.values_mut() {
                        members.remove(name);
                    }
                }
                self.drop_grants_to(|g| matches!(g, Grantee::User(u) if u == name));
            }
            PutOrg { name, owner } => {
                check_name("organization", name)?;
                if self.users.contains_key(name) {
                    return Err(invalid(format!("{name:?} is a user")));
                }
                if let Some(owner) = owner {
                    check_name("user", owner)?;
                }
                if !self.orgs.contains_key(name) {
                    room(self.orgs.len(), "organizations")?;
                }
                let org = self.orgs.entry(name.clone()).or_insert_with(|| Org {
                    created: at,
                    ..Org::default()
                });
                let owners = org.teams.entry(OWNERS.into()).or_default();
                owners.extend(owner.iter().cloned());
            }
            DeleteOrg { name } => {
                self.orgs
                    .remove(name)
                    .ok_or_else(|| unknown("organization", name))?;
                self.drop_grants_to(|g| matches!(g, Grantee::Team { org, .. } if org == name));
            }
            PutTeam { org, team } => {
                check_name("team", team)?;
                let teams = &mut self.org_mut(org)?.teams;
                room(teams.len(), "teams")?;
                teams.entry(team.clone()).or_default();
            }
            DeleteTeam { org, team } => {
                if team == OWNERS {
                    return Err(invalid(format!(
                        "the {OWNERS} team cannot be deleted; delete the organization"
                    )));
                }
                self.org_mut(org)?
                    .teams
                    .remove(team)
                    .ok_or_else(|| unknown("team", &format!("{org}/{team}")))?;
                self.drop_grants_to(
                    |g| matches!(g, Grantee::Team { org: o, team: t } if o == org && t == team),
                );
            }
            AddMember { org, team, user } => {
                check_name("user", user)?;
                let members = self.team_mut(org, team)?;
                room(members.len(), "members")?;
                members.insert(user.clone());
            }
            RemoveMember { org, team, user } => {
                if !self.team_mut(org, team)?.remove(user) {
                    return Err(unknown("member", user));
                }
            }
            Grant {
                resource,
                grantee,
                level,
            } => {
                self.check_resource(resource)?;
                match grantee {
                    Grantee::User(user) => check_name("user", user)?,
                    Grantee::Team { org, team } => {
                        self.team_mut(org, team)?;
                    }
                }
                room(self.grants.len(), "grant targets")?;
                let grants = self.grants.entry(resource.clone()).or_default();
                room(grants.len(), "grants")?;
                grants.insert(grantee.clone(), *level);
            }
            Revoke { resource, grantee } => {
                let grants = self.grants.get_mut(resource);
                if grants.and_then(|g| g.remove(grantee)).is_none() {
                    return Err(unknown("grant", &format!("{grantee:?} on {resource:?}")));
                }
                self.grants.retain(|_, g| !g.is_empty());
            }
            SetPublic { repository, public } => {
                self.check_resource(&Resource::Repository(repository.clone()))?;
                if *public {
                    room(self.public.len(), "public repositories")?;
                    self.public.insert(repository.clone());
                } else {
                    self.public.remove(repository);
                }
            }
            PutRobot { name, robot } => {
                let Some((namespace, short)) = name.split_once('+') else {
                    return Err(invalid(format!(
                        "robot name {name:?} is not <namespace>+<name>"
                    )));
                };
                check_name("namespace", namespace)?;
                check_name("robot", short)?;
                if robot.level == Level::Admin {
                    return Err(invalid("robots get read or write, not admin".into()));
                }
                for repo in &robot.repositories {
                    self.check_resource(&Resource::Repository(repo.clone()))?;
                    if namespace_of(repo) != namespace {
                        return Err(invalid(format!(
                            "robot {name} cannot use {repo}, outside its namespace"
                        )));
                    }
                }
                if !self.robots.contains_key(name) {
                    room(self.robots.len(), "robots")?;
                }
                self.robots.insert(name.clone(), robot.clone());
            }
            DeleteRobot { name } => {
                self.robots
                    .remove(name)
                    .ok_or_else(|| unknown("robot", name))?;
            }
        }
        Ok(())
    }

    fn org_mut(&mut self, org: &str) -> Result<&mut Org, Rejection> {
        self.orgs
            .get_mut(org)
            .ok_or_else(|| unknown("organization", org))
    }

    fn team_mut(&mut self, org: &str, team: &str) -> Result<&mut BTreeSet<String>, Rejection> {
        self.org_mut(org)?
            .teams
            .get_mut(team)
            .ok_or_else(|| unknown("team", &format!("{org}/{team}")))
    }

    fn check_resource(&self, resource: &Resource) -> Result<(), Rejection> {
        match resource {
            Resource::Repository(r) => r
                .parse::<crate::oci::RepoName>()
                .map(drop)
                .map_err(|e| invalid(e.to_string())),
            Resource::Namespace(n) => check_name("namespace", n),
        }
    }

    fn drop_grants_to(&mut self, gone: impl Fn(&Grantee) -> bool) {
        for grants in self.grants.values_mut() {
            grants.retain(|g, _| !gone(g));
        }
        self.grants.retain(|_, g| !g.is_empty());
    }
}

/// Refuses one more entry where `len` are already.
fn room(len: usize, what: &str) -> Result<(), Rejection> {
    if len >= MAX_ENTRIES {
        return Err(invalid(format!("at most {MAX_ENTRIES} {what}")));
    }
    Ok(())
}

fn invalid(reason: String) -> Rejection {
    Rejection::AccessInvalid(reason)
}

fn unknown(kind: &str, name: &str) -> Rejection {
    Rejection::AccessUnknown(format!("no {kind} {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[AccessChange]) -> AccessState {
        let mut state = AccessState::default();
        for c in changes {
            state.apply(c, 1).unwrap();
        }
        state
    }

    fn team(org: &str, team: &str) -> Grantee {
        Grantee::Team {
            org: org.into(),
            team: team.into(),
        }
    }

    #[test]
    fn organizations_come_with_owners_and_deleting_cleans_up() {
        let mut state = applied(&[
            AccessChange::PutOrg {
                name: "acme".into(),
                owner: Some("alice".into()),
            },
            AccessChange::PutTeam {
                org: "acme".into(),
                team: "dev".into(),
            },
            AccessChange::AddMember {
                org: "acme".into(),
                team: "dev".into(),
                user: "bob".into(),
            },
            AccessChange::Grant {
                resource: Resource::Namespace("acme".into()),
                grantee: team("acme", "dev"),
                level: Level::Write,
            },
        ]);
        assert!(state.orgs["acme"].teams[OWNERS].contains("alice"));
        assert_eq!(state.version, 4);
        let delete_owners = AccessChange::DeleteTeam {
            org: "acme".into(),
            team: OWNERS.into(),
        };
        assert!(matches!(
            state.apply(&delete_owners, 2),
            Err(Rejection::AccessInvalid(_))
        ));
        assert_eq!(state.version, 4, "a rejected change counts");
        state
            .apply(
                &AccessChange::DeleteTeam {
                    org: "acme".into(),
                    team: "dev".into(),
                },
                2,
            )
            .unwrap();
        assert!(state.grants.is_empty(), "grants to a deleted team stay");
    }

    #[test]
    fn bad_or_clashing_names_and_unknown_targets_are_rejected() {
        let mut state = applied(&[AccessChange::PutOrg {
            name: "acme".into(),
            owner: None,
        }]);
        let before = state.clone();
        for change in [
            AccessChange::PutUser {
                name: "acme".into(),
                password_hash: None,
                admin: false,
            },
            AccessChange::PutUser {
                name: "Alice".into(),
                password_hash: None,
                admin: false,
            },
            AccessChange::PutTeam {
                org: "nope".into(),
                team: "dev".into(),
            },
            AccessChange::Grant {
                resource: Resource::Repository("acme/App".into()),
                grantee: Grantee::User("bob".into()),
                level: Level::Read,
            },
            AccessChange::Grant {
                resource: Resource::Namespace("acme".into()),
                grantee: team("acme", "ghost"),
                level: Level::Read,
            },
            AccessChange::PutRobot {
                name: "acme+ci".into(),
                robot: Robot {
                    secret_sha256: [0; 32],
                    repositories: vec!["other/app".into()],
                    level: Level::Write,
                    expires: 10,
                    created: 1,
                },
            },
        ] {
            assert!(state.apply(&change, 2).is_err(), "{change:?}");
        }
        assert_eq!(state, before);
    }
}
