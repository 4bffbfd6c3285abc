//! The checkpointed projector runner, live and rebuilding.
//!
//! # Generations and checkpoints
//!
//! A projector's tables carry a generation suffix (`chats_g1`) and are read through a view of
//! the plain name (`chats`). Its row in `projections` names the live generation and the
//! position of the last event the tables reflect.
//!
//! Live, every read model follows the log's tail together: a batch locks each read model's
//! row, checks that generation and checkpoint are what the runner expects, applies the events
//! each has not seen, moves the checkpoints, and commits, all in one transaction: a crash can
//! neither lose nor double-apply an event, and two runners (two processes) never apply one
//! batch twice; the one that finds a row moved simply follows on from there.
//!
//! A rebuild fills generation N+1 from position 0 while the live runner keeps serving
//! generation N, then, holding the row's lock, applies what arrived meanwhile, points the row
//! and the views at N+1, and commits. The live runner's next batch sees the row moved and
//! carries on in the new generation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatledger_core::conversation::DecodedEvent;
use chatledger_core::{EventStore, Position, StoreError};
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::read_db::{time_text, Arg, DbError, ReadDb, ReadTx};
use crate::tail::LogTail;

mod rebuild;

pub use rebuild::{rebuild, Rebuilt};

/// Events applied in one transaction at most.
const BATCH: usize = 1_000;
/// Events read from the log at once while rebuilding.
const REBUILD_READ: usize = 5_000;

pub(crate) use crate::projector::{apply_batch_guarded, apply_guarded};
pub use crate::projector::{ProjectionError, Projector};
pub use crate::registry::Registration;
pub(crate) use crate::registry::{read_registration, read_registrations, suffix};

async fn create_views(
    tx: &mut ReadTx,
    projector: &dyn Projector,
    suffix: &str,
) -> Result<(), DbError> {
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
    // Not there: create it, one process at a time, and look again once it is our turn.
    tx.lock_table_changes().await?;
    if let Some(existing) = read_registration(&mut tx, projector.name()).await? {
        tx.commit().await?;
        return Ok(existing);
    }
    let registration = Registration {
        generation: 1,
        checkpoint: 0,
    };
    let suffix = registration.suffix();
    for statement in projector
        .schema(&suffix)
        .into_iter()
        .chain(projector.query_indexes(&suffix))
    {
        tx.execute(&statement, &[]).await?;
    }
    create_views(&mut tx, projector, &suffix).await?;
    tx.execute(
        "INSERT INTO projections (name, generation, checkpoint, updated_at) VALUES ($1, 1, 0, $2)",
        &[projector.name().into(), time_text(Utc::now()).into()],
    )
    .await?;
    tx.commit().await?;
    Ok(registration)
}

/// What a live batch found.
enum Batch {
    Applied,
    /// A registry row had moved (a rebuild switched generations, or another process
    /// projected these events): nothing was written.
    Moved,
}

/// A projector running live, and where it stands.
pub struct Live {
    pub projector: Arc<dyn Projector>,
    /// Gets each new checkpoint.
    pub progress: watch::Sender<Position>,
}

/// Applies `events` to every projector that has not seen them, all in one transaction with
/// their checkpoints. `registrations` are what the runner expects each row to hold; they move
/// on when the batch commits.
async fn apply_batch(
    db: &ReadDb,
    projectors: &[Live],
    registrations: &mut [Registration],
    events: &[Arc<DecodedEvent>],
) -> Result<Batch, ProjectionError> {
    let mut tx = db.begin().await?;
    let names: Vec<&str> = projectors
        .iter()
        .map(|live| live.projector.name())
        .collect();
    let current = read_registrations(&mut tx, &names).await?;
    for (name, expected) in names.iter().zip(registrations.iter()) {
        if current.get(*name).unwrap_or(expected) != expected {
            return Ok(Batch::Moved);
        }
    }
    let mut checkpoints: Vec<Position> = registrations.iter().map(|r| r.checkpoint).collect();
    // Each read model gets the events it has not seen and wants, together (read models never
    // read each other's tables).
    for ((live, registration), checkpoint) in projectors
        .iter()
        .zip(registrations.iter())
        .zip(&mut checkpoints)
    {
        let mut unseen = events
            .iter()
            .filter(|e| e.position > registration.checkpoint);
        let wanted: Vec<&DecodedEvent> = unseen
            .clone()
            .filter(|e| live.projector.wants(&e.event_type))
            .map(|e| e.as_ref())
            .collect();
        apply_batch_guarded(
            live.projector.as_ref(),
            &mut tx,
            &registration.suffix(),
            &wanted,
        )
        .await?;
        if let Some(last) = unseen.next_back() {
            *checkpoint = last.position;
        }
    }
    for ((live, registration), checkpoint) in projectors
        .iter()
        .zip(registrations.iter())
        .zip(&checkpoints)
    {
        if *checkpoint != registration.checkpoint {
            move_checkpoint(&mut tx, live.projector.name(), *checkpoint).await?;
        }
    }
    tx.commit().await?;
    for (registration, checkpoint) in registrations.iter_mut().zip(checkpoints) {
        registration.checkpoint = checkpoint;
    }
    Ok(Batch::Applied)
}

async fn move_checkpoint(tx: &mut ReadTx, name: &str, position: Position) -> Result<(), DbError> {
    tx.execute(
        "UPDATE projections SET checkpoint = $2, updated_at = $3 WHERE name = $1",
        &[name.into(), position.into(), time_text(Utc::now()).into()],
    )
    .await
}

/// Applies `events` like [`apply_batch`], but one event and one projector per transaction,
/// after a batch failed on an event that cannot be applied: the event that fails again is
/// quarantined for that projector (see [`crate::quarantine`]) and its checkpoint moves past
/// it, so the others and the events after it go on. An error that may pass on a retry is
/// returned, and nothing is quarantined for it.
async fn apply_one_by_one(
    db: &ReadDb,
    projectors: &[Live],
    registrations: &mut [Registration],
    events: &[Arc<DecodedEvent>],
) -> Result<Batch, ProjectionError> {
    for event in events {
        for (live, registration) in projectors.iter().zip(registrations.iter_mut()) {
            if event.position <= registration.checkpoint {
                continue;
            }
            let name = live.projector.name();
            // A write may fail only at the commit (PostgreSQL's writes are pipelined): the
            // event, its checkpoint and the commit are tried as one.
            let applied = async {
                let mut tx = db.begin().await?;
                if read_registration(&mut tx, name).await?.as_ref() != Some(registration) {
                    return Ok(false);
                }
                if live.projector.wants(&event.event_type) {
                    let suffix = registration.suffix();
                    apply_guarded(live.projector.as_ref(), &mut tx, &suffix, event).await?;
                }
                move_checkpoint(&mut tx, name, event.position).await?;
                tx.commit().await?;
                Ok::<_, ProjectionError>(true)
            }
            .await;
            match applied {
                Ok(true) => {}
                Ok(false) => return Ok(Batch::Moved),
                Err(e) if e.is_permanent() => {
                    let mut tx = db.begin().await?;
                    if read_registration(&mut tx, name).await?.as_ref() != Some(registration) {
                        return Ok(Batch::Moved);
                    }
                    crate::quarantine::record(&mut tx, name, registration.generation, event, &e)
                        .await?;
                    move_checkpoint(&mut tx, name, event.position).await?;
                    tx.commit().await?;
                    tracing::error!(read_model = name, position = event.position, stream = %event.stream,
                        event_type = %event.event_type, error = %e,
                        "an event cannot be applied to this read model: quarantined, the read model goes on");
                }
                Err(e) => return Err(e),
            }
            registration.checkpoint = event.position;
            live.progress.send_replace(event.position);
        }
    }
    Ok(Batch::Applied)
}

/// Runs `projectors` live until `shutdown` turns true: each catches up from its checkpoint,
/// then all follow the log's tail together, every batch applied to all of them in one
/// transaction. Each projector's `progress` gets its new checkpoints.
pub async fn run_live(
    tail: LogTail,
    db: ReadDb,
    projectors: Vec<Live>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut retry = Duration::from_millis(200);
    'restart: loop {
        if *shutdown.borrow() {
            return;
        }
        let mut registrations = Vec::with_capacity(projectors.len());
        for live in &projectors {
            match register(&db, live.projector.as_ref()).await {
                Ok(r) => registrations.push(r),
                Err(e) => {
                    tracing::warn!(projector = live.projector.name(), error = %e, "cannot register the projector; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.changed() => return,
                    }
                    retry = (retry * 2).min(Duration::from_secs(10));
                    continue 'restart;
                }
            }
        }
        for (live, registration) in projectors.iter().zip(&registrations) {
            live.progress.send_replace(registration.checkpoint);
        }
        let from = registrations
            .iter()
            .map(|r| r.checkpoint)
            .min()
            .unwrap_or(0);
        let mut follower = tail.subscribe(from);
        loop {
            let first = tokio::select! {
                next = follower.next() => next,
                _ = shutdown.changed() => return,
            };
            let mut events = Vec::with_capacity(64);
            match first {
                Some(Ok(event)) => events.push(event),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "reading the log for the read models failed; the follower retries");
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
            let mut applied = where_blocking_is_fine(
                &db,
                apply_batch(&db, &projectors, &mut registrations, &events),
            )
            .await;
            if matches!(&applied, Err(e) if e.is_permanent()) {
                tracing::warn!(
                    position = events[0].position,
                    events = events.len(),
                    "a batch failed on an event that cannot be applied; applying it event by event"
                );
                applied = where_blocking_is_fine(
                    &db,
                    apply_one_by_one(&db, &projectors, &mut registrations, &events),
                )
                .await;
            }
            match applied {
                Ok(Batch::Applied) => {
                    retry = Duration::from_millis(200);
                    for (live, registration) in projectors.iter().zip(&registrations) {
                        live.progress.send_replace(registration.checkpoint);
                    }
                }
                Ok(Batch::Moved) => {
                    tracing::info!("a read model moved on elsewhere (rebuild or another process); following from there");
                    continue 'restart;
                }
                Err(e) => {
                    tracing::error!(error = %e, position = events[0].position, "projection failed; retrying");
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

/// Reads the whole log in batches on a task of its own, each event decoded (conversation
/// events too, see [`DecodedEvent::decoded_now`]) before it is handed over, two batches ahead
/// of the reader of the channel.
fn read_ahead(
    store: Arc<dyn EventStore>,
) -> tokio::sync::mpsc::Receiver<Result<Vec<DecodedEvent>, StoreError>> {
    let (batches, received) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut position = 0;
        loop {
            let batch = match store.read_all(position, REBUILD_READ).await {
                Ok(batch) => batch,
                Err(e) => {
                    let _ = batches.send(Err(e)).await;
                    return;
                }
            };
            let Some(last) = batch.last() else { return };
            position = last.position;
            // Decoded here, off the thread that applies; an error is met again there.
            let decoded: Vec<DecodedEvent> =
                batch.into_iter().map(DecodedEvent::decoded_now).collect();
            if batches.send(Ok(decoded)).await.is_err() {
                return;
            }
        }
    });
    received
}

/// Frees a batch of events on a thread of the blocking pool: dropping thousands of decoded
/// events (their JSON trees and typed forms) took an eighth of the applying thread's time in a
/// rebuild on SQLite and more than a quarter on PostgreSQL, where the next batch waited for it.
fn drop_elsewhere(batch: Vec<DecodedEvent>) {
    tokio::task::spawn_blocking(move || drop(batch));
}

/// Runs `work` (database writes) where it may block its thread: on SQLite's native writer the
/// statements run right here, not behind an await, so on a multi-threaded runtime the thread is
/// handed over for the duration and the runtime's other tasks move elsewhere.
pub(crate) async fn where_blocking_is_fine<T>(
    db: &ReadDb,
    work: impl std::future::Future<Output = T>,
) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if db.writes_block() && Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(|| Handle::current().block_on(work))
    } else {
        work.await
    }
}
