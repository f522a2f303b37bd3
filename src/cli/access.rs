//! `berth user|org|team|repo|grant|revoke|robot|access`: the commands that
//! manage who may do what, through the admin API of any node
//! (`/_berth/access`). Each builds one [`AccessChange`] and sends it; a new
//! robot's secret comes back from the node, which draws it.

use std::io::Read;

use clap::{Args, Subcommand};

use super::client::{Client, Connection};
use super::CliResult;
use crate::auth::password;
use crate::meta::access::{AccessChange, Grantee, Level, Resource, Robot};
use crate::storage::now_secs;

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create a user, or change its password or administrator flag.
    Add {
        name: String,
        /// Read the new password from standard input (one line). Without
        /// it the user signs in with an htpasswd file's password.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user an administrator of the whole registry.
        #[arg(long)]
        admin: bool,
    },
    /// Delete a user, its team memberships and its grants.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum OrgAction {
    /// Create an organization; its `owners` team administers its namespace.
    Add {
        name: String,
        /// First member of the owners team.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Delete an organization, its teams and their grants.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum TeamAction {
    /// Create a team in an organization.
    Add { org: String, team: String },
    /// Delete a team and its grants.
    Delete { org: String, team: String },
    /// Add a user to a team.
    AddMember {
        org: String,
        team: String,
        user: String,
    },
    /// Remove a user from a team.
    RemoveMember {
        org: String,
        team: String,
        user: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RepoAction {
    /// Let anyone pull the repository, signed in or not.
    Public { repository: String },
    /// Let only those granted access pull it (the default).
    Private { repository: String },
}

/// Whom a grant is for: `--user NAME` or `--team ORG/TEAM`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Whom {
    /// A user (kept in the cluster or in the htpasswd file).
    #[arg(long)]
    pub user: Option<String>,
    /// A team of an organization, e.g. `acme/dev`.
    #[arg(long, value_name = "ORG/TEAM")]
    pub team: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RobotAction {
    /// Create a robot account `<namespace>+<name>` (or give it a new
    /// secret) and print its secret, which is shown only this once.
    Add {
        /// `<namespace>+<name>`, e.g. `acme+ci`.
        name: String,
        /// A repository it may use (repeatable); none for every repository
        /// of its namespace.
        #[arg(long = "repository")]
        repositories: Vec<String>,
        /// `read` (pull) or `write` (pull and push).
        #[arg(long, default_value = "write")]
        level: Level,
        /// Days until the secret stops working.
        #[arg(long, default_value_t = 90)]
        expires_in_days: u64,
    },
    /// Delete a robot: its secret and tokens stop working on every node.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// Manage users kept in the cluster.
    User {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: UserAction,
    },
    /// Manage organizations.
    Org {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: OrgAction,
    },
    /// Manage an organization's teams and their members.
    Team {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: TeamAction,
    },
    /// Make a repository public or private.
    Repo {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: RepoAction,
    },
    /// Grant a user or team `read`, `write` or `admin` on a repository
    /// (`acme/app`) or a whole namespace (`acme/*`).
    Grant {
        #[command(flatten)]
        conn: Connection,
        /// `read` (pull), `write` (also push) or `admin` (also delete, and
        /// manage the repository's visibility and grants).
        level: Level,
        /// A repository (`acme/app`) or a namespace (`acme/*`).
        target: String,
        #[command(flatten)]
        whom: Whom,
    },
    /// Take back a grant.
    Revoke {
        #[command(flatten)]
        conn: Connection,
        /// The repository or namespace (`acme/*`) the grant was on.
        target: String,
        #[command(flatten)]
        whom: Whom,
    },
    /// Manage robot accounts, for pipelines.
    Robot {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: RobotAction,
    },
    /// Show users, organizations, grants, public repositories and robots
    /// (as JSON; secrets are never shown).
    Access {
        #[command(flatten)]
        conn: Connection,
    },
}

const ACCESS: &str = "/_berth/access";

pub async fn run(cmd: AccessCommand) -> CliResult<()> {
    use AccessCommand as C;
    let (conn, change, done) = match cmd {
        C::User { conn, action } => {
            let change = match action {
                UserAction::Add {
                    name,
                    password_stdin,
                    admin,
                } => AccessChange::PutUser {
                    password_hash: match password_stdin {
                        true => Some(password::hash(&read_password()?)?),
                        false => None,
                    },
                    name,
                    admin,
                },
                UserAction::Delete { name } => AccessChange::DeleteUser { name },
            };
            (conn, change, None)
        }
        C::Org { conn, action } => {
            let change = match action {
                OrgAction::Add { name, owner } => AccessChange::PutOrg { name, owner },
                OrgAction::Delete { name } => AccessChange::DeleteOrg { name },
            };
            (conn, change, None)
        }
        C::Team { conn, action } => {
            let change = match action {
                TeamAction::Add { org, team } => AccessChange::PutTeam { org, team },
                TeamAction::Delete { org, team } => AccessChange::DeleteTeam { org, team },
                TeamAction::AddMember { org, team, user } => {
                    AccessChange::AddMember { org, team, user }
                }
                TeamAction::RemoveMember { org, team, user } => {
                    AccessChange::RemoveMember { org, team, user }
                }
            };
            (conn, change, None)
        }
        C::Repo { conn, action } => {
            let (repository, public) = match action {
                RepoAction::Public { repository } => (repository, true),
                RepoAction::Private { repository } => (repository, false),
            };
            (conn, AccessChange::SetPublic { repository, public }, None)
        }
        C::Grant {
            conn,
            level,
            target,
            whom,
        } => {
            let change = AccessChange::Grant {
                resource: resource(&target),
                grantee: grantee(whom)?,
                level,
            };
            (conn, change, None)
        }
        C::Revoke { conn, target, whom } => {
            let change = AccessChange::Revoke {
                resource: resource(&target),
                grantee: grantee(whom)?,
            };
            (conn, change, None)
        }
        C::Robot { conn, action } => match action {
            RobotAction::Add {
                name,
                repositories,
                level,
                expires_in_days,
            } => {
                let robot = Robot {
                    secret_sha256: [0; 32],
                    repositories,
                    level,
                    expires: now_secs() + expires_in_days * 86_400,
                    created: 0,
                };
                let done = format!("robot {name}");
                (conn, AccessChange::PutRobot { name, robot }, Some(done))
            }
            RobotAction::Delete { name } => (conn, AccessChange::DeleteRobot { name }, None),
        },
        C::Access { conn } => {
            let body: serde_json::Value = Client::new(&conn)?.get(ACCESS).await?;
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
    };
    // The change is built first: a password on standard input is read
    // before the connection can fail.
    let body: serde_json::Value = Client::new(&conn)?.post(ACCESS, &change).await?;
    println!("{}", done.unwrap_or_else(|| change.describe()));
    if matches!(change, AccessChange::PutRobot { .. }) {
        let secret = body["secret"].as_str().ok_or("the node sent no secret")?;
        println!("secret {secret}");
    }
    Ok(())
}

/// `acme/*` is the namespace `acme`; anything else a repository.
fn resource(target: &str) -> Resource {
    Resource::from_scope(target)
}

fn grantee(whom: Whom) -> CliResult<Grantee> {
    match (whom.user, whom.team) {
        (Some(user), _) => Ok(Grantee::User(user)),
        (None, Some(team)) => {
            let (org, team) = team
                .split_once('/')
                .ok_or("--team takes ORG/TEAM, e.g. acme/dev")?;
            Ok(Grantee::Team {
                org: org.to_owned(),
                team: team.to_owned(),
            })
        }
        (None, None) => Err("say whom: --user NAME or --team ORG/TEAM".into()),
    }
}

fn read_password() -> CliResult<String> {
    let mut text = String::new();
    std::io::stdin().take(4096).read_to_string(&mut text)?;
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err("no password on standard input".into());
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn parse(args: &[&str]) -> AccessCommand {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Access(cmd) => cmd,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn commands_parse_with_the_connection_anywhere() {
        let cmd = parse(&[
            "berth",
            "user",
            "add",
            "bob",
            "--admin",
            "--node",
            "https://r:5000",
            "--login",
            "root",
        ]);
        let AccessCommand::User { conn, action } = cmd else {
            panic!("user")
        };
        assert_eq!(conn.node, "https://r:5000");
        assert_eq!(conn.login.as_deref(), Some("root"));
        assert!(matches!(action, UserAction::Add { admin: true, .. }));
        let AccessCommand::Grant {
            level,
            target,
            whom,
            ..
        } = parse(&["berth", "grant", "write", "acme/*", "--team", "acme/dev"])
        else {
            panic!("grant")
        };
        assert_eq!(level, Level::Write);
        assert_eq!(resource(&target), Resource::Namespace("acme".into()));
        assert_eq!(
            grantee(whom).unwrap(),
            Grantee::Team {
                org: "acme".into(),
                team: "dev".into()
            }
        );
        assert_eq!(
            resource("acme/app"),
            Resource::Repository("acme/app".into())
        );
        assert!(Cli::try_parse_from(["berth", "grant", "write", "acme/app"]).is_err());
        assert!(Cli::try_parse_from(["berth", "grant", "owner", "a/b", "--user", "x"]).is_err());
    }
}
