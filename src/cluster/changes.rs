//! Which blobs' holder records this node has applied changes to: what
//! repair follows, so that a round on a healthy cluster reads the blobs
//! that changed since the last round, not every blob.
//!
//! The set lives in memory. Whatever it cannot vouch for (the node just
//! started, a snapshot replaced the state, too many changes piled up) makes
//! the next [`BlobChanges::take`] answer "everything".

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::meta::Command;
use crate::oci::Digest;

/// More changes than this between two rounds are forgotten, and the next
/// round looks at every blob: memory stays bounded under any push rate.
const MAX_TRACKED: usize = 100_000;

#[derive(Clone, Default)]
pub struct BlobChanges(Arc<Mutex<Pending>>);

#[derive(Default)]
struct Pending {
    digests: HashSet<Digest>,
    /// Whether `digests` holds every change since the last take; false
    /// until the first take, so the first round looks at everything.
    complete: bool,
}

impl BlobChanges {
    /// Notes what an applied command changed about blob holders.
    pub fn applied(&self, cmd: &Command) {
        match cmd.inner() {
            Command::LinkBlob { digest, .. } | Command::AddHolders { digest, .. } => {
                self.note(digest)
            }
            _ => {}
        }
    }

    /// Notes that `digest`'s holders changed, or that it must be looked at
    /// again (a copy that failed).
    pub fn note(&self, digest: &Digest) {
        let mut p = self.lock();
        if !p.complete {
            return;
        }
        if p.digests.len() >= MAX_TRACKED {
            p.complete = false;
            p.digests = HashSet::new();
        } else {
            p.digests.insert(digest.clone());
        }
    }

    /// Something changed that is not tracked blob by blob (a snapshot was
    /// installed): the next round looks at everything.
    pub fn lose_track(&self) {
        let mut p = self.lock();
        p.complete = false;
        p.digests = HashSet::new();
    }

    /// The blobs changed since the last call, or `None` when every blob
    /// must be looked at. Tracking starts afresh from here.
    pub fn take(&self) -> Option<Vec<Digest>> {
        let mut p = self.lock();
        let taken = std::mem::take(&mut p.digests);
        let complete = std::mem::replace(&mut p.complete, true);
        complete.then(|| taken.into_iter().collect())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> Digest {
        Digest::sha256(&n.to_be_bytes())
    }

    #[test]
    fn everything_first_then_only_what_changed() {
        let changes = BlobChanges::default();
        changes.note(&digest(1));
        assert_eq!(changes.take(), None, "the first round looks at everything");
        assert_eq!(changes.take(), Some(vec![]));
        changes.applied(&Command::AddHolders {
            digest: digest(2),
            nodes: vec![3],
        });
        changes.applied(&Command::UnlinkBlob {
            repo: "a/b".parse().unwrap(),
            digest: digest(3),
        });
        changes.note(&digest(2));
        assert_eq!(changes.take(), Some(vec![digest(2)]));
        changes.lose_track();
        assert_eq!(changes.take(), None);
    }

    #[test]
    fn too_many_changes_mean_everything() {
        let changes = BlobChanges::default();
        changes.take();
        for n in 0..=MAX_TRACKED as u32 {
            changes.note(&digest(n));
        }
        assert_eq!(changes.take(), None);
        assert_eq!(changes.take(), Some(vec![]));
    }
}
