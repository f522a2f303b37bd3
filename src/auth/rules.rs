//! The node's current [`Policy`], rebuilt only when the replicated access
//! state moves: a request pays one point read to learn that it did not.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use super::Policy;
use crate::db::DbError;
use crate::meta::StateMachine;

pub struct Rules {
    meta: StateMachine,
    admins: Arc<BTreeSet<String>>,
    signed_in: Option<Arc<super::policy::SignedIn>>,
    current: Mutex<Arc<Policy>>,
}

impl Rules {
    /// Rules over `meta`'s access state, with `admins` (user names)
    /// administrators whatever the state says, and what every signed-in
    /// user holds besides.
    pub fn new(
        meta: StateMachine,
        admins: BTreeSet<String>,
        signed_in: Option<super::policy::SignedIn>,
    ) -> Rules {
        let admins = Arc::new(admins);
        let signed_in = signed_in.map(Arc::new);
        Rules {
            meta,
            current: Mutex::new(Arc::new(
                Policy::new(Default::default(), admins.clone()).with_signed_in(signed_in.clone()),
            )),
            admins,
            signed_in,
        }
    }

    pub fn current(&self) -> Result<Arc<Policy>, DbError> {
        let version = self.meta.access_version()?;
        {
            let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            if current.version() == version {
                return Ok(current.clone());
            }
        }
        // The version travels inside the state, so the two always agree.
        let policy = Arc::new(
            Policy::new(self.meta.access()?, self.admins.clone())
                .with_signed_in(self.signed_in.clone()),
        );
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = policy.clone();
        Ok(policy)
    }
}
