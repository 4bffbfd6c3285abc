//! What a read model is to the runner: a [`Projector`], the ways applying an event can fail,
//! and applying one event with a panic turned into an error.

use async_trait::async_trait;
use chatledger_core::conversation::DecodedEvent;
use chatledger_core::StoreError;
use futures_util::FutureExt;

use crate::read_db::{DbError, ReadTx};

/// A read model: a fold from events to rows.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Its name in the `projections` registry (and in `chatledger replay NAME`).
    fn name(&self) -> &'static str;
    /// The tables it owns, by their plain (view) names.
    fn tables(&self) -> &'static [&'static str];
    /// Statements creating its tables with `suffix` appended to every table and index name,
    /// with the indexes applying events reads through (keys, erasure's stream).
    fn schema(&self, suffix: &str) -> Vec<String>;
    /// Statements creating the indexes only queries read through. A rebuild creates them once
    /// its tables are filled, where building an index from the rows at once costs less than
    /// keeping it up to date row by row; a new read model creates them with its tables.
    fn query_indexes(&self, _suffix: &str) -> Vec<String> {
        Vec::new()
    }
    /// Whether events of this type can change its tables; the runner skips the others without
    /// reading them. Every type by default.
    fn wants(&self, _event_type: &str) -> bool {
        true
    }
    /// Applies one event to the tables with `suffix`. Must not read the clock or the network:
    /// everything it needs is in the events.
    async fn apply(
        &self,
        tx: &mut ReadTx,
        suffix: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError>;

    /// Applies `events` (in log order, each one it wants) as [`Projector::apply`] would one
    /// after the other, which is what it does unless a read model folds the batch in memory
    /// and writes it with a few statements.
    async fn apply_batch(
        &self,
        tx: &mut ReadTx,
        suffix: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            self.apply(tx, suffix, event).await?;
        }
        Ok(())
    }
}

/// A failed projection step.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model database: {0}")]
    Db(#[from] DbError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} cannot be projected: {reason}")]
    Event { position: u64, reason: String },
    /// The projector panicked on the event (a defect; the event is quarantined, not retried).
    #[error("the projector panicked: {0}")]
    Panicked(String),
}

impl ProjectionError {
    /// Whether applying the same event again would fail the same way: the event itself is at
    /// fault (or the code that folds it), not the database's availability.
    pub fn is_permanent(&self) -> bool {
        match self {
            ProjectionError::Event { .. } | ProjectionError::Panicked(_) => true,
            ProjectionError::Db(e) => e.refused_the_values(),
            ProjectionError::Store(_) => false,
        }
    }
}

/// What a panic carried, as text.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// `projector.apply`, with a panic turned into [`ProjectionError::Panicked`]: one event must
/// not take the read side down. The transaction is unusable after an error and is dropped.
pub(crate) async fn apply_guarded(
    projector: &dyn Projector,
    tx: &mut ReadTx,
    suffix: &str,
    event: &DecodedEvent,
) -> Result<(), ProjectionError> {
    match std::panic::AssertUnwindSafe(projector.apply(tx, suffix, event))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => Err(ProjectionError::Panicked(panic_text(panic.as_ref()))),
    }
}

/// `projector.apply_batch`, with a panic turned into [`ProjectionError::Panicked`] (see
/// [`apply_guarded`]).
pub(crate) async fn apply_batch_guarded(
    projector: &dyn Projector,
    tx: &mut ReadTx,
    suffix: &str,
    events: &[&DecodedEvent],
) -> Result<(), ProjectionError> {
    if events.is_empty() {
        return Ok(());
    }
    match std::panic::AssertUnwindSafe(projector.apply_batch(tx, suffix, events))
        .catch_unwind()
        .await
    {
        Ok(result) => result,
        Err(panic) => Err(ProjectionError::Panicked(panic_text(panic.as_ref()))),
    }
}

impl From<sqlx::Error> for ProjectionError {
    fn from(e: sqlx::Error) -> Self {
        ProjectionError::Db(e.into())
    }
}
