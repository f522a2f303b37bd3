//! Checking a password against a bcrypt hash, cheaply when it is repeated.
//!
//! bcrypt is slow on purpose (tens of milliseconds), and clients send their
//! credentials with every request, so a successful check is remembered for a
//! while: the cost lands on the first request, not on each. The memory is
//! keyed by a hash of user, password and stored hash, so a changed password
//! takes effect at once.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

/// How long a verified password is remembered.
const REMEMBER: Duration = Duration::from_secs(600);
/// Most remembered checks; the memory is emptied when it fills.
const REMEMBER_MAX: usize = 4096;
/// Verified against when the user is unknown, so that an unknown user and a
/// wrong password take about the same time. Cost 5 is `htpasswd -B`'s.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| bcrypt::hash("not a password", 5).unwrap_or_default());

/// Remembers the passwords it verified.
#[derive(Default)]
pub struct Passwords {
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl Passwords {
    /// Whether `password` matches `user`'s bcrypt `hash`; an unknown user
    /// (`None`) costs the same and fails.
    pub async fn check(&self, user: &str, password: &str, hash: Option<&str>) -> bool {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| DUMMY_HASH.clone(), str::to_owned);
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
}

fn memory_key(user: &str, password: &str, hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user, password, hash] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// bcrypt cost of the hashes berth makes: about 60 ms a check here, paid
/// once per remembered login.
pub const COST: u32 = 10;

/// Whether `hash` is a bcrypt hash, the only kind berth checks.
pub fn is_bcrypt(hash: &str) -> bool {
    hash.len() == 60 && ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// A bcrypt hash of `password`, for a user kept in the cluster.
pub fn hash(password: &str) -> Result<String, bcrypt::BcryptError> {
    bcrypt::hash(password, COST)
}
