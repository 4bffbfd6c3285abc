//! The checkpointed projector runner, live and rebuilding.
//!
//! # Generations and checkpoints
//!
//! A projector's tables carry a generation suffix (`chats_g1`) and are read through a view of
//! the plain name (`chats`). Its row in `projections` names the live generation and the
//! position of the last event the tables reflect.
//!
//! A live batch locks that row, checks that generation and checkpoint are what the runner
//! expects, applies the events, moves the checkpoint, and commits, all in one transaction: a
//! crash can neither lose nor double-apply an event, and two runners (two processes) never
//! apply one batch twice; the one that finds the row moved simply follows on from there.
//!
//! A rebuild fills generation N+1 from position 0 while the live runner keeps serving
//! generation N, then, holding the row's lock, applies what arrived meanwhile, points the row
//! and the views at N+1, and commits. The live runner's next batch sees the row moved and
//! carries on in the new generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chatledger_core::{EventStore, Position, RecordedEvent, StoreError};
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::read_db::{time_text, Arg, ReadDb, ReadTx};

/// Events applied in one transaction at most.
const BATCH: usize = 1_000;
/// Events read from the log at once while rebuilding.
const REBUILD_READ: usize = 5_000;

/// A read model: a fold from events to rows.
#[async_trait]
pub trait Projector: Send + Sync + 'static {
    /// Its name in the `projections` registry (and in `chatledger replay NAME`).
    fn name(&self) -> &'static str;
    /// The tables it owns, by their plain (view) names.
    fn tables(&self) -> &'static [&'static str];
    /// Statements creating its tables with `suffix` appended to every table and index name.
    fn schema(&self, suffix: &str) -> Vec<String>;
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
        event: &RecordedEvent,
    ) -> Result<(), ProjectionError>;
}

/// A failed projection step.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("read-model database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} cannot be projected: {reason}")]
    Event { position: u64, reason: String },
}

/// Where a projector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub generation: i64,
    pub checkpoint: Position,
}

impl Registration {
    pub fn suffix(&self) -> String {
        suffix(self.generation)
    }
}

fn suffix(generation: i64) -> String {
    format!("_g{generation}")
}

async fn read_registration(
    tx: &mut ReadTx,
    name: &str,
) -> Result<Option<Registration>, sqlx::Error> {
    let sql = format!(
        "SELECT generation, checkpoint FROM projections WHERE name = $1{}",
        tx.lock_suffix()
    );
    Ok(tx
        .fetch_optional(&sql, &[name.into()])
        .await?
        .map(|row| Registration {
            generation: row.i64(0).unwrap_or(1),
            checkpoint: row.i64(1).unwrap_or(0) as u64,
        }))
}

async fn create_views(
    tx: &mut ReadTx,
    projector: &dyn Projector,
    suffix: &str,
) -> Result<(), sqlx::Error> {
    for table in projector.tables() {
        tx.execute(&format!("DROP VIEW IF EXISTS {table}"), &[])
            .await?;
        tx.execute(
            &format!("CREATE VIEW {table} AS SELECT * FROM {table}{suffix}"),
            &[],
        )
        .await?;
    }
    Ok(())
}

/// Makes sure the projector has a registry row, generation-1 tables and views.
pub async fn register(
    db: &ReadDb,
    projector: &dyn Projector,
) -> Result<Registration, ProjectionError> {
    let mut tx = db.begin().await?;
    if let Some(existing) = read_registration(&mut tx, projector.name()).await? {
        tx.commit().await?;
        return Ok(existing);
    }
    let registration = Registration {
        generation: 1,
        checkpoint: 0,
    };
    for statement in projector.schema(&registration.suffix()) {
        tx.execute(&statement, &[]).await?;
    }
    create_views(&mut tx, projector, &registration.suffix()).await?;
    tx.execute(
        "INSERT INTO projections (name, generation, checkpoint, updated_at) VALUES ($1, 1, 0, $2)",
        &[projector.name().into(), time_text(Utc::now()).into()],
    )
    .await?;
    tx.commit().await?;
    Ok(registration)
}

/// What a batch found.
enum Batch {
    Applied(Registration),
    /// The registry row had moved (a rebuild switched generations, or another process
    /// projected these events): nothing was written.
    Moved(Registration),
}

async fn apply_batch(
    db: &ReadDb,
    projector: &dyn Projector,
    expected: Registration,
    events: &[RecordedEvent],
) -> Result<Batch, ProjectionError> {
    let mut tx = db.begin().await?;
    let current = read_registration(&mut tx, projector.name())
        .await?
        .unwrap_or(expected);
    if current != expected {
        return Ok(Batch::Moved(current));
    }
    let suffix = current.suffix();
    let mut checkpoint = current.checkpoint;
    for event in events.iter().filter(|e| e.position > current.checkpoint) {
        if projector.wants(&event.event_type) {
            projector.apply(&mut tx, &suffix, event).await?;
        }
        checkpoint = event.position;
    }
    tx.execute(
        "UPDATE projections SET checkpoint = $2, updated_at = $3 WHERE name = $1",
        &[
            projector.name().into(),
            checkpoint.into(),
            time_text(Utc::now()).into(),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(Batch::Applied(Registration {
        checkpoint,
        ..current
    }))
}

/// Runs a projector live until `shutdown` resolves: catches up from its checkpoint in
/// batches, then follows the log as it commits. `progress` gets each new checkpoint.
pub async fn run_live(
    store: Arc<dyn EventStore>,
    db: ReadDb,
    projector: Arc<dyn Projector>,
    progress: watch::Sender<Position>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = projector.name();
    let mut retry = Duration::from_millis(200);
    'restart: loop {
        if *shutdown.borrow() {
            return;
        }
        let mut registration = match register(&db, projector.as_ref()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(projector = name, error = %e, "cannot register the projector; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = shutdown.changed() => return,
                }
                retry = (retry * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        progress.send_replace(registration.checkpoint);
        let mut follower = store.follow(registration.checkpoint);
        loop {
            let first = tokio::select! {
                next = follower.next() => next,
                _ = shutdown.changed() => return,
            };
            let mut events = Vec::with_capacity(64);
            match first {
                Some(Ok(event)) => events.push(event),
                Some(Err(e)) => {
                    tracing::warn!(projector = name, error = %e, "reading the log failed; the follower retries");
                    continue;
                }
                None => return,
            }
            // Everything already read goes into the same transaction.
            while events.len() < BATCH {
                match follower.next().now_or_never() {
                    Some(Some(Ok(event))) => events.push(event),
                    _ => break,
                }
            }
            match apply_batch(&db, projector.as_ref(), registration, &events).await {
                Ok(Batch::Applied(next)) => {
                    registration = next;
                    retry = Duration::from_millis(200);
                    progress.send_replace(registration.checkpoint);
                }
                Ok(Batch::Moved(current)) => {
                    tracing::info!(projector = name, generation = current.generation, checkpoint = current.checkpoint,
                        "projector moved on elsewhere (rebuild or another process); following from there");
                    continue 'restart;
                }
                Err(e) => {
                    tracing::error!(projector = name, error = %e, position = events[0].position, "projection failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.changed() => return,
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                    continue 'restart;
                }
            }
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// Each read model and the generation it now serves from.
    pub generations: Vec<(&'static str, i64)>,
    /// Events of the log read.
    pub events: u64,
    pub checkpoint: Position,
    pub elapsed: Duration,
}

/// Applies `batch` to each projector's tables (with its suffix), event by event.
async fn apply_all(
    tx: &mut ReadTx,
    projectors: &[Arc<dyn Projector>],
    suffixes: &[String],
    batch: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    for event in batch {
        for (projector, suffix) in projectors.iter().zip(suffixes) {
            if projector.wants(&event.event_type) {
                projector.apply(tx, suffix, event).await?;
            }
        }
    }
    Ok(())
}

/// Rebuilds `projectors` from position 0 into new generations of their tables, reading the
/// log once for all of them, and switches each to its new generation. `progress` is called
/// with the position reached and the log events read after each batch.
pub async fn rebuild(
    store: &dyn EventStore,
    db: &ReadDb,
    projectors: &[Arc<dyn Projector>],
    mut progress: impl FnMut(Position, u64),
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    let mut generations = Vec::with_capacity(projectors.len());
    let mut registered = Vec::with_capacity(projectors.len());
    for projector in projectors {
        registered.push(register(db, projector.as_ref()).await?);
    }
    let mut tx = db.begin().await?;
    for (projector, live) in projectors.iter().zip(registered) {
        let generation = live.generation + 1;
        let new_suffix = suffix(generation);
        for table in projector.tables() {
            // A rebuild that was interrupted may have left this generation half-built.
            tx.execute(&format!("DROP TABLE IF EXISTS {table}{new_suffix}"), &[])
                .await?;
        }
        for statement in projector.schema(&new_suffix) {
            tx.execute(&statement, &[]).await?;
        }
        generations.push((live, generation, new_suffix));
    }
    tx.commit().await?;

    let suffixes: Vec<String> = generations.iter().map(|(_, _, s)| s.clone()).collect();
    let mut position = 0;
    let mut events = 0u64;
    loop {
        let batch = store.read_all(position, REBUILD_READ).await?;
        let Some(last) = batch.last() else { break };
        position = last.position;
        events += batch.len() as u64;
        let mut tx = db.begin().await?;
        apply_all(&mut tx, projectors, &suffixes, &batch).await?;
        tx.commit().await?;
        progress(position, events);
    }

    // Switch over: under the registry rows' locks, apply what arrived meanwhile, then point
    // the rows and the views at the new generations.
    let mut tx = db.begin().await?;
    let mut old = Vec::with_capacity(projectors.len());
    for (projector, (live, _, _)) in projectors.iter().zip(&generations) {
        old.push(
            read_registration(&mut tx, projector.name())
                .await?
                .unwrap_or(*live),
        );
    }
    loop {
        let batch = store.read_all(position, REBUILD_READ).await?;
        let Some(last) = batch.last() else { break };
        position = last.position;
        events += batch.len() as u64;
        apply_all(&mut tx, projectors, &suffixes, &batch).await?;
    }
    for (projector, (_, generation, new_suffix)) in projectors.iter().zip(&generations) {
        tx.execute(
            "UPDATE projections SET generation = $2, checkpoint = $3, updated_at = $4 WHERE name = $1",
            &[
                projector.name().into(),
                Arg::Int(*generation),
                position.into(),
                time_text(Utc::now()).into(),
            ],
        )
        .await?;
        create_views(&mut tx, projector.as_ref(), new_suffix).await?;
    }
    tx.commit().await?;
    progress(position, events);

    let mut tx = db.begin().await?;
    for (projector, current) in projectors.iter().zip(&old) {
        let old_suffix = suffix(current.generation);
        for table in projector.tables() {
            tx.execute(&format!("DROP TABLE IF EXISTS {table}{old_suffix}"), &[])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(Rebuilt {
        generations: projectors
            .iter()
            .zip(&generations)
            .map(|(projector, (_, generation, _))| (projector.name(), *generation))
            .collect(),
        events,
        checkpoint: position,
        elapsed: started.elapsed(),
    })
}
