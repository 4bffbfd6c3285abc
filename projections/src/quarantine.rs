//! Events a read model could not apply, set aside so that the read model goes on.
//!
//! One event the read-model database refuses (a value it cannot store, a panic in a fold) must
//! not stop a read model for everyone, for good. When a batch fails on such an event, the
//! runner applies the batch again one event and one read model at a time; the event that still
//! fails is recorded here (read model, generation of its tables, position, why), the read
//! model's checkpoint moves past it, and the read model goes on. Errors that may pass on a
//! retry (the database unreachable, a lock timeout) are never quarantined: the runner waits
//! and tries again. Readiness reports quarantined events as `degraded`;
//! `chatledger quarantine list` shows them and `chatledger quarantine retry` applies them
//! again once a release that can apply them runs.

use std::collections::BTreeMap;

use chatledger_core::conversation::DecodedEvent;
use chatledger_core::{EventStore, StoreError};
use chrono::{DateTime, Utc};

use crate::projector::{apply_guarded, ProjectionError, Projector};
use crate::read_db::{time_text, DbError, ReadDb, ReadTx};
use crate::registry::read_registration;

/// The longest error text kept.
const ERROR_TEXT_MAX: usize = 2_000;

/// One quarantined event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Quarantined {
    pub read_model: String,
    pub generation: i64,
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub error: String,
    pub quarantined_at: Option<DateTime<Utc>>,
}

/// Text safe for any column: no NUL, bounded length.
fn storable(text: &str, max: usize) -> String {
    let clean: String = text.chars().filter(|c| *c != '\0').take(max).collect();
    clean
}

/// Records that `read_model` (generation `generation`) could not apply `event`, in `tx`.
pub(crate) async fn record(
    tx: &mut ReadTx,
    read_model: &str,
    generation: i64,
    event: &DecodedEvent,
    error: &ProjectionError,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO quarantine (read_model, generation, position, stream, event_type, error, quarantined_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (read_model, generation, position) DO UPDATE SET error = excluded.error,
            quarantined_at = excluded.quarantined_at",
        &[
            read_model.into(),
            generation.into(),
            event.position.into(),
            storable(&event.stream, 1_000).into(),
            storable(&event.event_type, 200).into(),
            storable(&error.to_string(), ERROR_TEXT_MAX).into(),
            time_text(Utc::now()).into(),
        ],
    )
    .await
}

/// Quarantined events of the live generation of each read model, by read model.
pub async fn counts(db: &ReadDb) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let rows = db
        .fetch_all(
            "SELECT q.read_model, COUNT(*) FROM quarantine q
             JOIN projections p ON p.name = q.read_model AND p.generation = q.generation
             GROUP BY q.read_model",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.text(0)?, row.i64(1)? as u64)))
        .collect())
}

/// Every quarantined event of the live generations, in log order (one read model's only,
/// when named).
pub async fn list(db: &ReadDb, read_model: Option<&str>) -> Result<Vec<Quarantined>, sqlx::Error> {
    let rows = db
        .fetch_all(
            "SELECT q.read_model, q.generation, q.position, q.stream, q.event_type, q.error, q.quarantined_at
             FROM quarantine q
             JOIN projections p ON p.name = q.read_model AND p.generation = q.generation
             WHERE $1 = '' OR q.read_model = $1
             ORDER BY q.position, q.read_model",
            &[read_model.unwrap_or_default().into()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| Quarantined {
            read_model: row.text(0).unwrap_or_default(),
            generation: row.i64(1).unwrap_or_default(),
            position: row.i64(2).unwrap_or_default() as u64,
            stream: row.text(3).unwrap_or_default(),
            event_type: row.text(4).unwrap_or_default(),
            error: row.text(5).unwrap_or_default(),
            quarantined_at: row.time(6),
        })
        .collect())
}

/// What a retry did with one quarantined event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// Applied now; no longer quarantined.
    Applied,
    /// Still fails; the quarantine keeps it with the new error.
    StillFails(String),
    /// The event is no longer in the log (it cannot be, but a restored backup might lack it);
    /// its quarantine entry is dropped.
    Gone,
}

/// Applies every quarantined event of `projectors` again, in log order, each in a transaction
/// of its own holding its read model's registry row. Those that apply leave the quarantine.
///
/// They are applied now, after the events that followed them; a read model whose later rows
/// depend on the earlier event is rebuilt whole by `chatledger replay NAME` instead.
pub async fn retry(
    store: &dyn EventStore,
    db: &ReadDb,
    projectors: &[std::sync::Arc<dyn Projector>],
) -> Result<Vec<(Quarantined, Retried)>, ProjectionError> {
    let mut results = Vec::new();
    for entry in list(db, None).await.map_err(DbError::from)? {
        let Some(projector) = projectors.iter().find(|p| p.name() == entry.read_model) else {
            continue;
        };
        let event = read_at(store, entry.position).await?;
        // The event and the end of its quarantine commit together (a write may fail only at
        // the commit: PostgreSQL's writes are pipelined).
        let attempt = async {
            let mut tx = db.begin().await?;
            let Some(registration) = read_registration(&mut tx, projector.name()).await? else {
                return Ok(None);
            };
            if registration.generation != entry.generation {
                // A rebuild switched generations meanwhile; its own quarantine is what counts.
                return Ok(None);
            }
            let outcome = match &event {
                None => Retried::Gone,
                Some(event) => {
                    let suffix = registration.suffix();
                    apply_guarded(projector.as_ref(), &mut tx, &suffix, event).await?;
                    Retried::Applied
                }
            };
            tx.execute(
                "DELETE FROM quarantine WHERE read_model = $1 AND generation = $2 AND position = $3",
                &[
                    entry.read_model.as_str().into(),
                    entry.generation.into(),
                    entry.position.into(),
                ],
            )
            .await?;
            tx.commit().await?;
            Ok::<_, ProjectionError>(Some(outcome))
        }
        .await;
        let outcome = match (attempt, &event) {
            (Ok(Some(outcome)), _) => outcome,
            (Ok(None), _) => continue,
            (Err(e), Some(event)) if e.is_permanent() => {
                let mut tx = db.begin().await?;
                record(&mut tx, projector.name(), entry.generation, event, &e).await?;
                tx.commit().await?;
                Retried::StillFails(e.to_string())
            }
            (Err(e), _) => return Err(e),
        };
        results.push((entry, outcome));
    }
    Ok(results)
}

/// The event at `position`, if the log has one there.
async fn read_at(
    store: &dyn EventStore,
    position: u64,
) -> Result<Option<DecodedEvent>, StoreError> {
    Ok(store
        .read_all(position.saturating_sub(1), 1)
        .await?
        .into_iter()
        .find(|e| e.position == position)
        .map(DecodedEvent::new))
}
