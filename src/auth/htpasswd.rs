//! Users and bcrypt password hashes from an htpasswd file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

use super::password::Passwords;

/// How often the file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    #[error("cannot read the htpasswd file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} line {line}: {reason}")]
    Entry {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

pub struct Htpasswd {
    path: PathBuf,
    users: RwLock<Loaded>,
    passwords: Passwords,
}

struct Loaded {
    hashes: HashMap<String, String>,
    modified: Option<SystemTime>,
    checked: Instant,
}

impl Htpasswd {
    /// Reads the file; every entry must be a bcrypt hash.
    pub fn open(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        Ok(Htpasswd {
            path: path.to_owned(),
            users: RwLock::new(load(path)?),
            passwords: Passwords::default(),
        })
    }

    /// Whether `password` is `user`'s.
    pub async fn check(&self, user: &str, password: &str) -> bool {
        self.reload_if_changed();
        let stored = self
            .users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .hashes
            .get(user)
            .cloned();
        self.passwords
            .check(user, password, stored.as_deref())
            .await
    }

    /// Reads the file again when it changed; a bad new file is logged and
    /// the old users kept.
    /// Whether the file names `user`.
    pub fn contains(&self, user: &str) -> bool {
        self.reload_if_changed();
        let users = self.users.read().unwrap_or_else(|p| p.into_inner());
        users.hashes.contains_key(user)
    }

    fn reload_if_changed(&self) {
        {
            let users = self.users.read().unwrap_or_else(|p| p.into_inner());
            if users.checked.elapsed() < RELOAD_CHECK {
                return;
            }
        }
        let mut users = self.users.write().unwrap_or_else(|p| p.into_inner());
        users.checked = Instant::now();
        if modified(&self.path) == users.modified {
            return;
        }
        match load(&self.path) {
            Ok(fresh) => {
                tracing::info!(path = %self.path.display(), users = fresh.hashes.len(), "reloaded the htpasswd file");
                *users = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "kept the previous htpasswd users"),
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(path: &Path) -> Result<Loaded, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: path.to_owned(),
        source,
    })?;
    let modified = modified(path);
    let hashes = parse(&text).map_err(|(line, reason)| HtpasswdError::Entry {
        path: path.to_owned(),
        line,
        reason,
    })?;
    Ok(Loaded {
        hashes,
        modified,
        checked: Instant::now(),
    })
}

/// `user:hash` lines; blank lines and `#` comments are skipped.
fn parse(text: &str) -> Result<HashMap<String, String>, (usize, String)> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err((i + 1, "expected user:hash".into()));
        };
        if user.is_empty() {
            return Err((i + 1, "the user name is empty".into()));
        }
        if !super::password::is_bcrypt(hash) {
            return Err((
                i + 1,
                format!("the entry of {user:?} is not a bcrypt hash (write it with `htpasswd -B`)"),
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        let h = bcrypt::hash("pw", 4).unwrap();
        let users = parse(&format!("# users\n\nalice:{h}\n")).unwrap();
        assert_eq!(users.len(), 1);
        for (text, line) in [
            ("bob:$apr1$abc$def\n", 1),
            ("alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n", 1),
            ("# c\nnocolon\n", 2),
            (":$2y$05$x\n", 1),
        ] {
            assert_eq!(parse(text).unwrap_err().0, line, "{text}");
        }
    }

    #[tokio::test]
    async fn checks_passwords_and_notices_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("secret", 4).unwrap()),
        )
        .unwrap();
        let h = Htpasswd::open(&path).unwrap();
        assert!(h.check("alice", "secret").await);
        assert!(h.check("alice", "secret").await, "remembered");
        assert!(!h.check("alice", "wrong").await);
        assert!(!h.check("mallory", "secret").await);
        // A new password replaces the old one once the file is read again.
        std::fs::write(
            &path,
            format!("alice:{}\n", bcrypt::hash("new", 4).unwrap()),
        )
        .unwrap();
        h.users.write().unwrap().checked -= RELOAD_CHECK;
        h.users.write().unwrap().modified = None;
        assert!(h.check("alice", "new").await);
        assert!(
            !h.check("alice", "secret").await,
            "the old password still worked"
        );
    }
}
