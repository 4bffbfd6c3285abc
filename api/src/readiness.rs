//! Whether the server can do its work yet.
//!
//! With PostgreSQL the server starts before the database is known to be reachable: it keeps
//! answering liveness checks, says here why it is not ready, and becomes ready once the
//! migrations are applied.

use std::sync::{Arc, RwLock};

/// Shared, cheap to clone.
#[derive(Clone, Debug)]
pub struct Readiness(Arc<RwLock<Option<String>>>);

impl Readiness {
    /// Ready from the start.
    pub fn ready() -> Self {
        Readiness(Arc::new(RwLock::new(None)))
    }

    /// Not ready, for `reason`.
    pub fn waiting(reason: impl Into<String>) -> Self {
        Readiness(Arc::new(RwLock::new(Some(reason.into()))))
    }

    pub fn set_ready(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn set_waiting(&self, reason: impl Into<String>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
    }

    /// `None` when ready, else why not.
    pub fn blocker(&self) -> Option<String> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
