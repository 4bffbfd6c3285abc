//! Rebuilding read models from the log: a fresh generation of tables filled in batches off
//! to the side, then switched to in one transaction, while the live one keeps serving.

use super::*;

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

/// Applies `batch` to each projector's tables (with its suffix), the events each wants
/// together (read models never read each other's tables).
async fn apply_all(
    tx: &mut ReadTx,
    projectors: &[Arc<dyn Projector>],
    building: &[Building],
    batch: &[DecodedEvent],
) -> Result<(), ProjectionError> {
    for (projector, new) in projectors.iter().zip(building) {
        let wanted: Vec<&DecodedEvent> = batch
            .iter()
            .filter(|event| projector.wants(&event.event_type))
            .collect();
        apply_batch_guarded(projector.as_ref(), tx, &new.suffix, &wanted).await?;
    }
    Ok(())
}

/// A read model's generation being built, and its tables' suffix.
#[derive(Clone)]
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
    batch: &[DecodedEvent],
) -> Result<(), ProjectionError> {
    let together = async {
        let mut tx = db.begin().await?;
        apply_all(&mut tx, projectors, building, batch).await?;
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

/// Read models a rebuild fills together, on one writer.
struct Lane {
    db: ReadDb,
    projectors: Vec<Arc<dyn Projector>>,
    building: Vec<Building>,
}

/// Writers a rebuild fills PostgreSQL's read models on. Replay of 1,000,000 events, taking
/// turns: two 67,702-70,334 events/s, three 73,288-81,845, four 74,529-78,410.
const FILL_WRITERS: usize = 4;

/// How a rebuild's filling is shared out. On PostgreSQL the read models go in turn to
/// [`FILL_WRITERS`] writers, each with its own connection and transactions, which the server
/// applies side by side: read models never read each other's tables, and nobody reads a
/// generation being filled until the switch, which is made on `db` alone. (One writer kept
/// the server's backend half busy, waiting on this process's folds as they waited on it.) In
/// the registry's order, chats, messages, customers and the SLA clocks, the heaviest, fall to
/// different writers. SQLite has one writer per file: one lane.
async fn lanes(db: &ReadDb, projectors: &[Arc<dyn Projector>], building: &[Building]) -> Vec<Lane> {
    let mut dbs = vec![db.clone()];
    for _ in 1..FILL_WRITERS {
        if let Some(another) = db.another_writer().await {
            dbs.push(another);
        }
    }
    let mut lanes: Vec<Lane> = dbs
        .into_iter()
        .map(|db| Lane {
            db,
            projectors: Vec::new(),
            building: Vec::new(),
        })
        .collect();
    let count = lanes.len();
    for (i, (projector, new)) in projectors.iter().zip(building).enumerate() {
        let lane = &mut lanes[i % count];
        lane.projectors.push(projector.clone());
        lane.building.push(new.clone());
    }
    lanes
}

/// Events filled after which a rebuild's tables get statistics (see [`analyze`]): early, and
/// again for read models whose rows begin later in the log. Taking them costs a few
/// milliseconds at the first and about a tenth of a second at the second.
const ANALYZED_AT: [u64; 2] = [1_000, 100_000];

/// Gives a lane's generations being built statistics, on PostgreSQL (which plans by them;
/// fresh tables have none until autovacuum comes by). A fold's read of the rows a batch touches
/// is planned afresh for each batch, on the table as it is then (`ReadTx::fetch_keys`); without
/// statistics a key of a non-unique index is taken to match a two-hundredth of the table, and
/// the plan becomes a scan of the whole table once it has grown a little: the customers read
/// by stream took 2 ms a batch in the first quarter of a 1,000,000-event replay and 22 ms in
/// the last, growing with the log. Once the statistics say a column's values are nearly all
/// distinct, they say it as a share of the rows, which holds as the table grows.
async fn analyze(lane: &Lane) -> Result<(), ProjectionError> {
    if lane.db.kind() != "postgres" {
        return Ok(());
    }
    let mut tx = lane.db.begin().await?;
    for (projector, new) in lane.projectors.iter().zip(&lane.building) {
        for table in projector.tables() {
            tx.execute(&format!("ANALYZE {table}{}", new.suffix), &[])
                .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Finishes a lane's filled tables: builds the indexes only queries read through, from the
/// filled tables at once, and gives them statistics (without which the dashboard's first
/// queries may scan whole tables). The lanes finish side by side, each on its own connection.
async fn finish(lane: &Lane) -> Result<(), ProjectionError> {
    let statements: Vec<String> = lane
        .projectors
        .iter()
        .zip(&lane.building)
        .flat_map(|(projector, new)| projector.query_indexes(&new.suffix))
        .collect();
    let mut tx = lane.db.begin().await?;
    tx.build_indexes(&statements).await?;
    tx.commit().await?;
    analyze(lane).await
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

    let mut position = 0;
    let mut events = 0u64;
    let lanes = lanes(db, projectors, &building).await;
    db.filling(true).await?;
    let filled = async {
        // The next batches are read and decoded (on another thread) while this one is applied.
        let mut batches = read_ahead(store.clone());
        while let Some(batch) = batches.recv().await {
            let batch = batch?;
            let Some(last) = batch.last() else { break };
            position = last.position;
            events += batch.len() as u64;
            let each = lanes
                .iter()
                .map(|lane| fill(&lane.db, &lane.projectors, &lane.building, &batch));
            where_blocking_is_fine(db, futures_util::future::try_join_all(each)).await?;
            if ANALYZED_AT
                .iter()
                .any(|&at| events >= at && events - (batch.len() as u64) < at)
            {
                futures_util::future::try_join_all(lanes.iter().map(analyze)).await?;
            }
            progress(position, events);
            drop_elsewhere(batch);
        }
        Ok::<_, ProjectionError>(())
    }
    .await;
    db.filling(false).await?;
    filled?;
    where_blocking_is_fine(
        db,
        futures_util::future::try_join_all(lanes.iter().map(finish)),
    )
    .await?;
    drop(lanes);

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
                .map(DecodedEvent::decoded_now)
                .collect();
            let Some(last) = batch.last() else { break };
            position = last.position;
            events += batch.len() as u64;
            fill(db, projectors, &building, &batch).await?;
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
                .map(DecodedEvent::decoded_now)
                .collect();
            let Some(last) = batch.last() else { break };
            match apply_all(&mut tx, projectors, &building, &batch).await {
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
