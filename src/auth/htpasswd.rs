//! Users and bcrypt password hashes from an htpasswd file.
//!
//! bcrypt is slow on purpose (tens of milliseconds), and clients send their
//! credentials with every request, so a successful check is remembered for a
//! while: the cost lands on the first request, not on each. The memory is
//! keyed by a hash of user, password and stored hash, so a changed password
//! or file takes effect at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest as _, Sha256};

/// How long a verified password is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// Most remembered checks; the memory is emptied when it fills.
const REMEMBER_MAX: usize = 4096;
/// How often the file is looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);
/// Verified against when the user is unknown, so that an unknown user and a
/// wrong password take about the same time. Cost 5 is `htpasswd -B`'s.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| bcrypt::hash("not a password", 5).unwrap_or_default());

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
    verified: Mutex<HashMap<[u8; 32], Instant>>,
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
            verified: Mutex::new(HashMap::new()),
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
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| DUMMY_HASH.clone());
        let key = memory_key(user, password, &hash);
        if known && self.remembered(&key) {
            return true;
        }
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        if known && matches {
            self.remember(key);
        }
        known && matches
    }

    fn remembered(&self, key: &[u8; 32]) -> bool {
        let memory = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        memory.get(key).is_some_and(|at| at.elapsed() < REMEMBER)
    }

    fn remember(&self, key: [u8; 32]) {
        let mut memory = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if memory.len() >= REMEMBER_MAX {
            memory.clear();
        }
        memory.insert(key, Instant::now());
    }

    /// Reads the file again when it changed; a bad new file is logged and
    /// the old users kept.
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

fn memory_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, password, hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
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
        if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
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
