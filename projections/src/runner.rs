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

/// Events applied in one transaction at most.
const BATCH: usize = 1_000;
/// Events read from the log at once while rebuilding.
const REBUILD_READ: usize = 5_000;

pub(crate) use crate::projector::apply_guarded;
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
    let suffixes: Vec<String> = registrations.iter().map(Registration::suffix).collect();
    let mut checkpoints: Vec<Position> = registrations.iter().map(|r| r.checkpoint).collect();
    for event in events {
        for ((live, suffix), checkpoint) in projectors.iter().zip(&suffixes).zip(&mut checkpoints) {
            if event.position <= *checkpoint {
                continue;
            }
            if live.projector.wants(&event.event_type) {
                apply_guarded(live.projector.as_ref(), &mut tx, suffix, event).await?;
            }
            *checkpoint = event.position;
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
/// events too) before it is handed over, two batches ahead of the reader of the channel.
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
            let decoded: Vec<DecodedEvent> = batch.into_iter().map(DecodedEvent::new).collect();
            for event in &decoded {
                // Decoded here, off the thread that applies; an error is met again there.
                let _ = event.conversation();
            }
            if batches.send(Ok(decoded)).await.is_err() {
                return;
            }
        }
    });
    received
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
    batch: &[DecodedEvent],
) -> Result<(), ProjectionError> {
    for event in batch {
        for (projector, suffix) in projectors.iter().zip(suffixes) {
            if projector.wants(&event.event_type) {
                apply_guarded(projector.as_ref(), tx, suffix, event).await?;
            }
        }
    }
    Ok(())
}

/// A read model's generation being built, and its tables' suffix.
struct Building {
    generation: i64,
    suffix: String,
}

/// Applies `batch` to the generations being built, in one transaction; when an event cannot be
/// applied, the batch is applied again one event and one read model per transaction, and what
/// still fails is quarantined for the new generation (see [`crate::quarantine`]).
async fn fill(
    db: &ReadDb,
    projectors: &[Arc<dyn Projector>],
    building: &[Building],
    suffixes: &[String],
    batch: &[DecodedEvent],
) -> Result<(), ProjectionError> {
    let together = async {
        let mut tx = db.begin().await?;
        apply_all(&mut tx, projectors, suffixes, batch).await?;
        tx.commit().await?;
        Ok::<_, ProjectionError>(())
    }
    .await;
    match together {
        Err(e) if e.is_permanent() => {}
        other => return other,
    }
    for event in batch {
        for (projector, new) in projectors.iter().zip(building) {
            if !projector.wants(&event.event_type) {
                continue;
            }
            let applied = async {
                let mut tx = db.begin().await?;
                apply_guarded(projector.as_ref(), &mut tx, &new.suffix, event).await?;
                tx.commit().await?;
                Ok::<_, ProjectionError>(())
            }
            .await;
            match applied {
                Ok(()) => {}
                Err(e) if e.is_permanent() => {
                    let mut tx = db.begin().await?;
                    crate::quarantine::record(&mut tx, projector.name(), new.generation, event, &e)
                        .await?;
                    tx.commit().await?;
                    tracing::error!(read_model = projector.name(), position = event.position, stream = %event.stream,
                        event_type = %event.event_type, error = %e,
                        "an event cannot be applied to this read model: quarantined, the rebuild goes on");
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Rebuilds `projectors` from position 0 into new generations of their tables, reading the
/// log once for all of them, and switches each to its new generation. `progress` is called
/// with the position reached and the log events read after each batch. Events a read model
/// cannot apply are quarantined for its new generation; the rebuild goes on past them.
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    db: &ReadDb,
    projectors: &[Arc<dyn Projector>],
    mut progress: impl FnMut(Position, u64),
) -> Result<Rebuilt, ProjectionError> {
    let started = Instant::now();
    let mut registered = Vec::with_capacity(projectors.len());
    for projector in projectors {
        registered.push(register(db, projector.as_ref()).await?);
    }
    let mut building = Vec::with_capacity(projectors.len());
    let mut tx = db.begin().await?;
    for (projector, live) in projectors.iter().zip(&registered) {
        let generation = live.generation + 1;
        let new_suffix = suffix(generation);
        for table in projector.tables() {
            // A rebuild that was interrupted may have left this generation half-built.
            tx.execute(&format!("DROP TABLE IF EXISTS {table}{new_suffix}"), &[])
                .await?;
        }
        tx.execute(
            "DELETE FROM quarantine WHERE read_model = $1 AND generation = $2",
            &[projector.name().into(), Arg::Int(generation)],
        )
        .await?;
        for statement in projector.schema(&new_suffix) {
            tx.execute(&statement, &[]).await?;
        }
        building.push(Building {
            generation,
            suffix: new_suffix,
        });
    }
    tx.commit().await?;

    let suffixes: Vec<String> = building.iter().map(|b| b.suffix.clone()).collect();
    let mut position = 0;
    let mut events = 0u64;
    // The next batches are read and decoded (on another thread) while this one is applied.
    let mut batches = read_ahead(store.clone());
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        let Some(last) = batch.last() else { break };
        position = last.position;
        events += batch.len() as u64;
        where_blocking_is_fine(db, fill(db, projectors, &building, &suffixes, &batch)).await?;
        progress(position, events);
    }

    // PostgreSQL plans queries by its statistics, which fresh tables do not have yet (until
    // autovacuum comes by): without them the dashboard's first queries may scan whole tables.
    if db.kind() == "postgres" {
        let mut tx = db.begin().await?;
        for (projector, new_suffix) in projectors.iter().zip(&suffixes) {
            for table in projector.tables() {
                tx.execute(&format!("ANALYZE {table}{new_suffix}"), &[])
                    .await?;
            }
        }
        tx.commit().await?;
    }

    // Switch over: under the registry rows' locks, apply what arrived meanwhile, then point
    // the rows and the views at the new generations. What arrived is caught up outside the
    // locks first, so that an event that cannot be applied is quarantined there, not inside
    // the one transaction that must commit.
    let old = loop {
        loop {
            let batch: Vec<DecodedEvent> = store
                .read_all(position, REBUILD_READ)
                .await?
                .into_iter()
                .map(DecodedEvent::new)
                .collect();
            let Some(last) = batch.last() else { break };
            position = last.position;
            events += batch.len() as u64;
            fill(db, projectors, &building, &suffixes, &batch).await?;
        }
        let mut tx = db.begin().await?;
        let mut old = Vec::with_capacity(projectors.len());
        for (projector, live) in projectors.iter().zip(&registered) {
            old.push(
                read_registration(&mut tx, projector.name())
                    .await?
                    .unwrap_or(*live),
            );
        }
        let (mut reached, mut read) = (position, 0u64);
        let mut cannot_apply = false;
        loop {
            let batch: Vec<DecodedEvent> = store
                .read_all(reached, REBUILD_READ)
                .await?
                .into_iter()
                .map(DecodedEvent::new)
                .collect();
            let Some(last) = batch.last() else { break };
            match apply_all(&mut tx, projectors, &suffixes, &batch).await {
                Ok(()) => {
                    reached = last.position;
                    read += batch.len() as u64;
                }
                Err(e) if e.is_permanent() => {
                    cannot_apply = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if cannot_apply {
            // Caught up (and quarantined) outside the locks on the next round.
            continue;
        }
        for (projector, new) in projectors.iter().zip(&building) {
            tx.execute(
                "UPDATE projections SET generation = $2, checkpoint = $3, updated_at = $4 WHERE name = $1",
                &[
                    projector.name().into(),
                    Arg::Int(new.generation),
                    reached.into(),
                    time_text(Utc::now()).into(),
                ],
            )
            .await?;
            create_views(&mut tx, projector.as_ref(), &new.suffix).await?;
        }
        tx.commit().await?;
        position = reached;
        events += read;
        break old;
    };
    progress(position, events);

    let mut tx = db.begin().await?;
    for (projector, current) in projectors.iter().zip(&old) {
        let old_suffix = suffix(current.generation);
        for table in projector.tables() {
            tx.execute(&format!("DROP TABLE IF EXISTS {table}{old_suffix}"), &[])
                .await?;
        }
        tx.execute(
            "DELETE FROM quarantine WHERE read_model = $1 AND generation <= $2",
            &[projector.name().into(), Arg::Int(current.generation)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Rebuilt {
        generations: projectors
            .iter()
            .zip(&building)
            .map(|(projector, new)| (projector.name(), new.generation))
            .collect(),
        events,
        checkpoint: position,
        elapsed: started.elapsed(),
    })
}
