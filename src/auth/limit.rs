//! Failed logins per source address: after too many in a window, a source
//! is turned away without its credentials being checked, until the window
//! ends. Guessing passwords then costs days, not seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures a source may have in one window.
const FAILURES: u32 = 10;
/// How long a window lasts, from its first failure.
const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked at most; beyond it, finished windows are dropped first.
const SOURCES: usize = 10_000;

#[derive(Default)]
pub struct LoginLimiter {
    sources: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    started: Instant,
    failures: u32,
}

impl LoginLimiter {
    /// `Err(seconds)` until `source` may try again.
    pub fn admit(&self, source: IpAddr) -> Result<(), u64> {
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get(&source) {
            Some(w) if w.failures >= FAILURES && w.started.elapsed() < WINDOW => {
                Err((WINDOW - w.started.elapsed()).as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, source: IpAddr) {
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        if sources.len() >= SOURCES {
            sources.retain(|_, w| w.started.elapsed() < WINDOW);
            if sources.len() >= SOURCES {
                // Flooded from everywhere at once: forget, rather than grow.
                sources.clear();
            }
        }
        let w = sources.entry(source).or_insert(Window {
            started: Instant::now(),
            failures: 0,
        });
        if w.started.elapsed() >= WINDOW {
            *w = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        w.failures += 1;
    }

    pub fn succeeded(&self, source: IpAddr) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_turned_away_after_too_many_failures() {
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..FAILURES {
            assert!(l.admit(a).is_ok());
            l.failed(a);
        }
        let wait = l.admit(a).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(l.admit(b).is_ok(), "another source is not affected");
        // The window ends.
        l.sources.lock().unwrap().get_mut(&a).unwrap().started -= WINDOW;
        assert!(l.admit(a).is_ok());
        l.failed(a);
        assert!(l.admit(a).is_ok(), "a new window starts counting afresh");
        l.succeeded(a);
        assert!(l.sources.lock().unwrap().is_empty());
    }
}
