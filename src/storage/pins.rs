//! Which blob files the sweeper must leave alone right now.
//!
//! A file enters `blobs/` before the metadata that names it is committed
//! (a client's upload before its `LinkBlob`, a peer's copy before the
//! sender's). A collection applied in between finds no record for the
//! digest, and its sweep would remove the new file. So every file that
//! arrives is pinned for a while, an upload holds its pin until its link is
//! committed, and the sweeper checks pins and removes a file under the
//! same lock that pins take.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::oci::Digest;

/// How long a file that just arrived is safe from sweeps: longer than a
/// sender takes to commit the link that names a copy it pushed (its write
/// retries for at most the 10 s write timeout).
pub const ARRIVAL_HOLD: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Pin {
    holds: u32,
    until: Option<Instant>,
}

#[derive(Clone, Default)]
pub struct Pins(Arc<Mutex<HashMap<Digest, Pin>>>);

/// Keeps a blob's file from sweeps until dropped.
pub struct Hold {
    pins: Pins,
    digest: Digest,
}

/// The pins, locked: while a sweeper holds this, no file can arrive or be
/// claimed by a peer.
pub struct Locked<'a>(MutexGuard<'a, HashMap<Digest, Pin>>);

impl Pins {
    pub fn lock(&self) -> Locked<'_> {
        Locked(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Pins `digest` until the returned hold is dropped.
    pub fn hold(&self, digest: &Digest) -> Hold {
        self.lock().0.entry(digest.clone()).or_default().holds += 1;
        Hold {
            pins: self.clone(),
            digest: digest.clone(),
        }
    }
}

impl Locked<'_> {
    /// Pins `digest` for [`ARRIVAL_HOLD`] from now.
    pub fn arrived(&mut self, digest: &Digest) {
        let pin = self.0.entry(digest.clone()).or_default();
        pin.until = Some(Instant::now() + ARRIVAL_HOLD);
    }

    /// Whether a sweep must leave `digest` alone; forgets pins that ran out.
    pub fn pinned(&mut self, digest: &Digest) -> bool {
        let now = Instant::now();
        let Some(pin) = self.0.get_mut(digest) else {
            return false;
        };
        if pin.until.is_some_and(|u| u <= now) {
            pin.until = None;
        }
        if pin.holds == 0 && pin.until.is_none() {
            self.0.remove(digest);
            return false;
        }
        true
    }
}

#[cfg(test)]
impl Locked<'_> {
    /// Ends an arrival's pin at once.
    pub fn expire(&mut self, digest: &Digest) {
        if let Some(pin) = self.0.get_mut(digest) {
            pin.until = Some(Instant::now());
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut pins = self.pins.lock();
        if let Some(pin) = pins.0.get_mut(&self.digest) {
            pin.holds = pin.holds.saturating_sub(1);
        }
        // Forget it unless an arrival still pins it.
        pins.pinned(&self.digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_and_arrivals_pin_until_released() {
        let pins = Pins::default();
        let d = Digest::sha256(b"x");
        assert!(!pins.lock().pinned(&d));
        let hold = pins.hold(&d);
        let second = pins.hold(&d);
        assert!(pins.lock().pinned(&d));
        drop(hold);
        assert!(pins.lock().pinned(&d));
        drop(second);
        assert!(!pins.lock().pinned(&d));
        pins.lock().arrived(&d);
        assert!(pins.lock().pinned(&d));
        assert!(pins.0.lock().unwrap().contains_key(&d));
    }
}
