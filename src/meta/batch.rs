//! The writes a command stages, and the changes they make as events
//! describe them: recorded together where the change is decided, so an
//! event can never disagree with what was applied.

use std::ops::{Deref, DerefMut};

use rocksdb::WriteBatch;

use super::events::Change;

#[derive(Default)]
pub struct Batch {
    writes: WriteBatch,
    changes: Vec<Change>,
}

impl Batch {
    pub fn record(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// The writes and the changes, to be committed together.
    pub fn into_parts(self) -> (WriteBatch, Vec<Change>) {
        (self.writes, self.changes)
    }

    pub fn into_writes(self) -> WriteBatch {
        self.writes
    }
}

impl Deref for Batch {
    type Target = WriteBatch;
    fn deref(&self) -> &WriteBatch {
        &self.writes
    }
}

impl DerefMut for Batch {
    fn deref_mut(&mut self) -> &mut WriteBatch {
        &mut self.writes
    }
}
