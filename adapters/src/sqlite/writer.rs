//! The one writer task: every request queued (appends, new keys, checkpoints) written in one
//! transaction (a group), each answered with its own outcome; a group that fails as a whole
//! is written again one request at a time.

use super::*;

/// Owns the one writing connection; see the module documentation.
pub(super) async fn writer_loop(
    mut conn: SqliteConnection,
    mut queue: mpsc::Receiver<(Work, Reply)>,
    wake: watch::Sender<u64>,
    counts: Arc<Counts>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (work, replies): (Vec<Work>, Vec<Reply>) = group.into_iter().unzip();
        counts.add(work.len());
        let mut outcomes = match write_group(&mut conn, &work, &wake).await {
            Ok(outcomes) => outcomes,
            Err(e) if work.len() > 1 => {
                // One request may have broken the whole group (a disk error, a bad value):
                // write them one by one so the others are not lost with it.
                tracing::warn!(error = %e, requests = work.len(), "group write failed; retrying requests one by one");
                let mut outcomes = Vec::with_capacity(work.len());
                for one in &work {
                    let written = write_group(&mut conn, std::slice::from_ref(one), &wake).await;
                    outcomes.push(written.map_or_else(|e| Err(db_error(e)), |mut o| o.remove(0)));
                }
                outcomes
            }
            Err(e) => vec![Err(db_error(e))],
        };
        // A checkpoint cannot run inside a transaction: it runs once the group is committed.
        for (one, outcome) in work.iter().zip(outcomes.iter_mut()) {
            if matches!(one, Work::Checkpoint) && outcome.is_ok() {
                *outcome = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut conn)
                    .await
                    .map(|_| Done::Nothing)
                    .map_err(db_error);
            }
        }
        let answered = replies.len();
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up waiting is no reason to stop writing for the others.
            let _ = reply.send(outcome);
        }
        crate::append::wait_for_comebacks(&queue, answered).await;
    }
}

/// Writes a group of requests in one transaction, answering each in order. The outer error is
/// a failed write; the inner ones are requests refused on their own merits (a version
/// conflict, say).
async fn write_group(
    conn: &mut SqliteConnection,
    work: &[Work],
    wake: &watch::Sender<u64>,
) -> Result<Vec<Result<Done, StoreError>>, sqlx::Error> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    // Keys first: an append in the same group may be sealed with a key made before it.
    let made = create_keys(&mut tx, work).await?;
    let kept = |stream: &String| match made.get(stream.as_str()) {
        Some((key_id, key)) => keys::decode(stream, key_id.clone(), key),
        None => Err(StoreError::Backend(format!(
            "the key of {stream} was not kept"
        ))),
    };
    // Each request's answer, in the order asked; appends are answered once written.
    let mut answers: Vec<Option<Result<Done, StoreError>>> = Vec::with_capacity(work.len());
    let mut jobs: Vec<&AppendJob> = Vec::new();
    for w in work {
        let answer = match w {
            Work::Append(job) => {
                jobs.push(job);
                None
            }
            Work::AppendWithKey { job, key } => match kept(&job.stream) {
                Ok(stored) if stored.key_id == key.key_id => {
                    jobs.push(job);
                    None
                }
                Ok(_) => Some(Ok(Done::KeyTaken)),
                Err(e) => Some(Err(e)),
            },
            Work::CreateKey { stream, .. } => Some(kept(stream).map(Done::Key)),
            Work::DestroyKey { stream } => {
                sqlx::query("DELETE FROM subject_keys WHERE stream = ?")
                    .bind(stream)
                    .execute(&mut *tx)
                    .await?;
                Some(Ok(Done::Nothing))
            }
            Work::Checkpoint => Some(Ok(Done::Nothing)),
        };
        answers.push(answer);
    }
    let appended = append_all(&mut tx, &jobs).await?;
    let committing = std::time::Instant::now();
    tx.commit().await?;
    crate::append::commit_took("sqlite", committing);
    if let Some(position) = appended.last_position {
        wake.send_replace(position);
    }
    let mut appended = appended.outcomes.into_iter();
    Ok(answers
        .into_iter()
        .map(|answer| {
            answer.unwrap_or_else(|| {
                appended
                    .next()
                    .unwrap_or_else(|| Err(StoreError::Backend("an append went unanswered".into())))
                    .map(Done::Appended)
            })
        })
        .collect())
}

/// Rows a multi-row statement inserts at once: a few fixed sizes (each with at most 9 × 256
/// parameters, far below SQLite's limit), so that every statement text is prepared once and
/// cached, however large the group, and a group needs only a few statements.
const ROWS_PER_STATEMENT: [usize; 9] = [256, 128, 64, 32, 16, 8, 4, 2, 1];

/// Splits `n` rows into statement sizes from [`ROWS_PER_STATEMENT`], largest first.
fn statement_sizes(mut n: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    for size in ROWS_PER_STATEMENT {
        while n >= size {
            sizes.push(size);
            n -= size;
        }
    }
    sizes
}

/// `INSERT INTO {table} ({columns}) VALUES (?, …), … ` with `rows` rows of `width` values.
fn insert_rows(table_and_columns: &str, width: usize, rows: usize, tail: &str) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    format!(
        "INSERT INTO {table_and_columns} VALUES {} {tail}",
        vec![row; rows].join(", ")
    )
}

/// Stores the group's new keys (those asked for streams that have none) and answers every
/// stream asked about with its key: `stream -> (key_id, key as stored)`.
async fn create_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    work: &[Work],
) -> Result<HashMap<String, (String, String)>, sqlx::Error> {
    let fresh: Vec<(&String, &SubjectKey)> = work
        .iter()
        .filter_map(|w| match w {
            Work::CreateKey { stream, fresh } => Some((stream, fresh)),
            Work::AppendWithKey { job, key } => Some((&job.stream, key)),
            _ => None,
        })
        .collect();
    if fresh.is_empty() {
        return Ok(HashMap::new());
    }
    let created_at = format_recorded_at(Utc::now());
    let mut rest = fresh.as_slice();
    for size in statement_sizes(fresh.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let sql = insert_rows(
            "subject_keys (stream, key_id, key, created_at)",
            4,
            size,
            "ON CONFLICT (stream) DO NOTHING",
        );
        let mut query = sqlx::query(&sql);
        for (stream, key) in chunk {
            query = query
                .bind(stream.as_str())
                .bind(key.key_id.as_str())
                .bind(keys::encode(&key.key))
                .bind(created_at.as_str());
        }
        query.execute(&mut **tx).await?;
    }
    let streams: Vec<&String> = fresh.iter().map(|(stream, _)| *stream).collect();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT stream, key_id, key FROM subject_keys WHERE stream IN (SELECT value FROM json_each(?))",
    )
    .bind(serde_json::to_string(&streams).unwrap_or_else(|_| "[]".into()))
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(stream, key_id, key)| (stream, (key_id, key)))
        .collect())
}

struct Appended {
    outcomes: Vec<Result<AppendResult, StoreError>>,
    last_position: Option<u64>,
}

/// The appends of a group, inside its transaction.
async fn append_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    jobs: &[&AppendJob],
) -> Result<Appended, sqlx::Error> {
    if jobs.is_empty() {
        return Ok(Appended {
            outcomes: Vec::new(),
            last_position: None,
        });
    }
    let recorded_at = truncate_to_micros(Utc::now());
    let recorded_text = format_recorded_at(recorded_at);
    // What the whole group needs from the table, in two statements rather than two per
    // append: the given ids already stored, and the head of every stream named. Both are
    // kept current as the group's rows are inserted.
    let as_json =
        |values: Vec<String>| serde_json::to_string(&values).unwrap_or_else(|_| "[]".into());
    let ids = as_json(
        jobs.iter()
            .flat_map(|job| job.events.iter().map(|e| e.event.event_id.to_string()))
            .collect(),
    );
    let streams = as_json(jobs.iter().map(|job| job.stream.clone()).collect());
    // One statement for both: which given ids are stored already (in which stream), and the
    // head of every stream named.
    type Found = (String, String, Option<String>, Option<i64>, Option<String>);
    let found: Vec<Found> = sqlx::query_as(
        "SELECT 'id', event_id, stream, NULL, NULL FROM events
           WHERE event_id IN (SELECT value FROM json_each(?1))
         UNION ALL
         SELECT 'head', e.stream, NULL, e.version, e.hash FROM events e
         JOIN (SELECT stream, MAX(version) AS version FROM events
               WHERE stream IN (SELECT value FROM json_each(?2)) GROUP BY stream) h
           ON e.stream = h.stream AND e.version = h.version",
    )
    .bind(ids)
    .bind(streams)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored_ids: HashMap<Uuid, String> = HashMap::new();
    let mut heads: HashMap<String, Result<StreamHead, String>> = HashMap::new();
    for (kind, key, stream, version, hash) in found {
        if kind == "id" {
            if let (Ok(id), Some(stream)) = (Uuid::parse_str(&key), stream) {
                stored_ids.insert(id, stream);
            }
            continue;
        }
        let head = stream_head(version, hash);
        heads.insert(key, head);
    }
    // Plan every append against the state the earlier ones leave, then insert all their
    // rows with a few multi-row statements.
    let plans = plan_group(jobs, stored_ids, heads, recorded_at);
    let rows: Vec<(&str, &PlannedRow)> = jobs
        .iter()
        .zip(&plans)
        .filter_map(|(job, plan)| plan.as_ref().ok().map(|plan| (job, plan)))
        .flat_map(|(job, plan)| plan.rows.iter().map(|row| (job.stream.as_str(), row)))
        .collect();
    let mut positions: HashMap<Uuid, u64> = HashMap::with_capacity(rows.len());
    let mut rest = rows.as_slice();
    for size in statement_sizes(rows.len()) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let sql = insert_rows(
            "events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash)",
            9,
            size,
            "RETURNING event_id, position",
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for (stream, row) in chunk {
            query = query
                .bind(row.event_id.to_string())
                .bind(*stream)
                .bind(row.version as i64)
                .bind(row.event_type)
                .bind(row.schema_version as i64)
                .bind(row.data)
                .bind(row.metadata)
                .bind(recorded_text.as_str())
                .bind(row.hash.to_string());
        }
        for (event_id, position) in query.fetch_all(&mut **tx).await? {
            if let Ok(event_id) = Uuid::parse_str(&event_id) {
                positions.insert(event_id, position as u64);
            }
        }
    }
    let last_position = positions.values().max().copied();
    drop(rows);
    let outcomes = results(plans, &positions)?;
    Ok(Appended {
        outcomes,
        last_position,
    })
}
