//! Failed logins per source address: after too many in a window, a source
//! is turned away without its credentials being checked, until the window
//! ends. Guessing passwords then costs days, not seconds.
//!
//! An attempt is counted before its password is checked and settled after,
//! so attempts sent in parallel cannot all be checked before the first
//! failures are recorded: at most [`FAILURES`] checks per window are ever
//! wrong.

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
    /// When the first of `failures` came.
    started: Instant,
    failures: u32,
    /// Attempts being checked now. Each may yet fail, so each takes a slot.
    pending: u32,
}

impl Window {
    fn over(&self) -> bool {
        self.started.elapsed() >= WINDOW
    }

    fn fail(&mut self) {
        if self.failures == 0 || self.over() {
            self.started = Instant::now();
            self.failures = 0;
        }
        self.failures += 1;
    }
}

/// A login attempt, counted against its source until it is settled. One
/// dropped unsettled counts as a failure: its check runs to the end anyway.
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    source: IpAddr,
    settled: bool,
}

impl Attempt<'_> {
    /// The password was right: the slot is given back. The source's
    /// failures stay until their window ends: were a success to clear them,
    /// one valid account would let its holder guess others' passwords
    /// without limit, a login between every few guesses.
    pub fn succeeded(mut self) {
        self.settle(true);
    }

    pub fn failed(mut self) {
        self.settle(false);
    }

    fn settle(&mut self, ok: bool) {
        self.settled = true;
        let mut sources = self.limiter.lock();
        let w = sources.entry(self.source).or_insert_with(|| Window {
            started: Instant::now(),
            failures: 0,
            pending: 1,
        });
        w.pending = w.pending.saturating_sub(1);
        if !ok {
            w.fail();
        }
        if w.pending == 0 && w.failures == 0 {
            sources.remove(&self.source);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(false);
        }
    }
}

impl LoginLimiter {
    /// Counts an attempt from `source` before its credentials are checked;
    /// `Err(seconds)` until `source` may try again.
    pub fn attempt(&self, source: IpAddr) -> Result<Attempt<'_>, u64> {
        let mut sources = self.lock();
        if sources.len() >= SOURCES && !sources.contains_key(&source) {
            sources.retain(|_, w| w.pending > 0 || (w.failures > 0 && !w.over()));
            if sources.len() >= SOURCES {
                // Flooded from everywhere at once: forget, rather than grow.
                sources.clear();
            }
        }
        let w = sources.entry(source).or_insert_with(|| Window {
            started: Instant::now(),
            failures: 0,
            pending: 0,
        });
        if w.failures > 0 && w.over() {
            w.failures = 0;
        }
        if w.failures + w.pending >= FAILURES {
            // Blocked by failures: until the window ends. By attempts still
            // being checked: until they are settled, which takes moments.
            let wait = match w.failures {
                0 => Duration::ZERO,
                _ => WINDOW.saturating_sub(w.started.elapsed()),
            };
            return Err(wait.as_secs().max(1));
        }
        w.pending += 1;
        Ok(Attempt {
            limiter: self,
            source,
            settled: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
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
            l.attempt(a).unwrap().failed();
        }
        let wait = l.attempt(a).err().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
        let other = l.attempt(b).expect("another source is not affected");
        other.succeeded();
        // The window ends.
        l.lock().get_mut(&a).unwrap().started -= WINDOW;
        l.attempt(a).unwrap().failed();
        assert_eq!(l.lock()[&a].failures, 1, "a new window counts afresh");
        l.attempt(a).unwrap().succeeded();
        assert_eq!(l.lock()[&a].failures, 1, "a success forgets no failure");
        assert!(!l.lock().contains_key(&b), "a clean source is not tracked");
    }

    #[test]
    fn parallel_attempts_take_slots_before_they_are_checked() {
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let barrier = std::sync::Barrier::new(50);
        let admitted = std::thread::scope(|s| {
            let threads: Vec<_> = (0..50)
                .map(|_| {
                    s.spawn(|| {
                        let attempt = l.attempt(a);
                        // Every attempt is under way before any is settled.
                        barrier.wait();
                        attempt.map(Attempt::failed).is_ok()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&ok| ok)
                .count()
        });
        assert_eq!(admitted, FAILURES as usize);
        assert!(l.attempt(a).is_err());
    }

    #[test]
    fn a_success_gives_its_slot_back_and_keeps_failures() {
        let l = LoginLimiter::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..FAILURES - 2 {
            l.attempt(a).unwrap().failed();
        }
        let right = l.attempt(a).unwrap();
        let other = l.attempt(a).unwrap();
        assert!(l.attempt(a).is_err(), "the last slot is taken");
        right.succeeded();
        // The slot is back, the failures are not forgotten: a valid login
        // between guesses does not reset the count.
        other.failed();
        l.attempt(a).unwrap().succeeded();
        assert_eq!(l.lock()[&a].failures, FAILURES - 1);
        l.attempt(a).unwrap().failed();
        assert!(
            l.attempt(a).is_err(),
            "ten failures, whatever succeeded between"
        );
        // An attempt dropped before its outcome counts as a failure.
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        drop(l.attempt(b).unwrap());
        assert_eq!(l.lock()[&b].failures, 1);
    }
}
