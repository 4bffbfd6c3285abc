//! The one writer: a thread of its own holding the one writing connection, native (`rusqlite`,
//! on the bundled SQLite sqlx links). Every request queued (appends, new keys, checkpoints) is
//! written in one transaction (a group), each answered with its own outcome; a group that fails
//! as a whole is written again one request at a time.
//!
//! Statements run in process, prepared once: a group's reads, inserts and commit cost no
//! crossing between threads, where each statement through sqlx's connection was a round trip
//! to its worker thread and each returned row one more message.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::*;

/// Starts the writer thread; it stops when the store (the queue's last sender) is dropped.
pub(super) fn spawn_writer(
    conn: rusqlite::Connection,
    queue: mpsc::Receiver<(Work, Reply)>,
    wake: watch::Sender<u64>,
    counts: Arc<Counts>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("sqlite-log-writer".into())
        .spawn(move || writer_loop(conn, queue, wake, counts))
        .map(|_| ())
}

/// Owns the one writing connection; see the module documentation.
fn writer_loop(
    mut conn: rusqlite::Connection,
    mut queue: mpsc::Receiver<(Work, Reply)>,
    wake: watch::Sender<u64>,
    counts: Arc<Counts>,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (work, replies): (Vec<Work>, Vec<Reply>) = group.into_iter().unzip();
        counts.add(work.len());
        let mut outcomes = match write_group(&mut conn, &work, &wake) {
            Ok(outcomes) => outcomes,
            Err(e) if work.len() > 1 => {
                // One request may have broken the whole group (a disk error, a bad value):
                // write them one by one so the others are not lost with it.
                tracing::warn!(error = %e, requests = work.len(), "group write failed; retrying requests one by one");
                work.iter()
                    .map(|one| {
                        write_group(&mut conn, std::slice::from_ref(one), &wake)
                            .and_then(|mut o| o.pop().ok_or_else(unanswered))
                            .unwrap_or_else(Err)
                    })
                    .collect()
            }
            Err(e) => vec![Err(e)],
        };
        // A checkpoint cannot run inside a transaction: it runs once the group is committed.
        for (one, outcome) in work.iter().zip(outcomes.iter_mut()) {
            if matches!(one, Work::Checkpoint) && outcome.is_ok() {
                *outcome = conn
                    .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                    .map(|_| Done::Nothing)
                    .map_err(native_error);
            }
        }
        let answered = replies.len();
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up waiting is no reason to stop writing for the others.
            let _ = reply.send(outcome);
        }
        crate::append::wait_for_comebacks_blocking(&queue, answered);
    }
}

fn unanswered() -> StoreError {
    StoreError::Backend("a request went unanswered".into())
}

/// Writes a group of requests in one transaction, answering each in order. The outer error is
/// a failed write; the inner ones are requests refused on their own merits (a version
/// conflict, say).
fn write_group(
    conn: &mut rusqlite::Connection,
    work: &[Work],
    wake: &watch::Sender<u64>,
) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(native_error)?;
    // Keys first: an append in the same group may be sealed with a key made before it.
    let made = create_keys(&tx, work).map_err(native_error)?;
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
                tx.prepare_cached("DELETE FROM subject_keys WHERE stream = ?1")
                    .and_then(|mut delete| delete.execute([stream]))
                    .map_err(native_error)?;
                Some(Ok(Done::Nothing))
            }
            Work::Checkpoint => Some(Ok(Done::Nothing)),
        };
        answers.push(answer);
    }
    let appended = append_all(&tx, &jobs)?;
    let committing = std::time::Instant::now();
    tx.commit().map_err(native_error)?;
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
                    .unwrap_or_else(|| Err(unanswered()))
                    .map(Done::Appended)
            })
        })
        .collect())
}

/// Stores the group's new keys (those asked for streams that have none) and answers every
/// stream asked about with its key: `stream -> (key_id, key as stored)`.
fn create_keys(
    tx: &rusqlite::Transaction<'_>,
    work: &[Work],
) -> Result<HashMap<String, (String, String)>, rusqlite::Error> {
    let fresh: Vec<(&String, &SubjectKey)> = work
        .iter()
        .filter_map(|w| match w {
            Work::CreateKey { stream, fresh } => Some((stream, fresh)),
            Work::AppendWithKey { job, key } => Some((&job.stream, key)),
            _ => None,
        })
        .collect();
    let mut kept = HashMap::with_capacity(fresh.len());
    if fresh.is_empty() {
        return Ok(kept);
    }
    let created_at = format_recorded_at(Utc::now());
    let mut insert = tx.prepare_cached(
        "INSERT INTO subject_keys (stream, key_id, key, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (stream) DO NOTHING",
    )?;
    for (stream, key) in &fresh {
        insert.execute(params![
            stream,
            key.key_id,
            keys::encode(&key.key),
            created_at
        ])?;
    }
    let mut select = tx.prepare_cached("SELECT key_id, key FROM subject_keys WHERE stream = ?1")?;
    for (stream, _) in fresh {
        let key = select
            .query_row([stream], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some(key) = key {
            kept.insert(stream.clone(), key);
        }
    }
    Ok(kept)
}

struct Appended {
    outcomes: Vec<Result<AppendResult, StoreError>>,
    last_position: Option<u64>,
}

/// The appends of a group, inside its transaction.
fn append_all(tx: &rusqlite::Transaction<'_>, jobs: &[&AppendJob]) -> Result<Appended, StoreError> {
    if jobs.is_empty() {
        return Ok(Appended {
            outcomes: Vec::new(),
            last_position: None,
        });
    }
    let recorded_at = truncate_to_micros(Utc::now());
    let recorded_text = format_recorded_at(recorded_at);
    let (stored_ids, heads) = group_state(tx, jobs).map_err(native_error)?;
    // Plan every append against the state the earlier ones leave, then insert their rows.
    let plans = plan_group(jobs, stored_ids, heads, recorded_at);
    let mut positions: HashMap<Uuid, u64> = HashMap::new();
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(native_error)?;
        for (job, plan) in jobs.iter().zip(&plans) {
            let Ok(plan) = plan else { continue };
            for row in &plan.rows {
                insert
                    .execute(params![
                        row.event_id.to_string(),
                        job.stream,
                        row.version as i64,
                        row.event_type,
                        i64::from(row.schema_version),
                        row.data,
                        row.metadata,
                        recorded_text,
                        row.hash.to_string(),
                    ])
                    .map_err(native_error)?;
                positions.insert(row.event_id, tx.last_insert_rowid() as u64);
            }
        }
    }
    let last_position = positions.values().max().copied();
    let outcomes = results(plans, &positions).map_err(db_error)?;
    Ok(Appended {
        outcomes,
        last_position,
    })
}

/// The given ids already stored (and in which stream), and each named stream's head (or why it
/// cannot be read), as [`plan_group`] takes them.
type GroupState = (
    HashMap<Uuid, String>,
    HashMap<String, Result<StreamHead, String>>,
);

/// What the group needs from the table: which of the given ids are stored already (and in
/// which stream), and the head of every stream named.
fn group_state(
    tx: &rusqlite::Transaction<'_>,
    jobs: &[&AppendJob],
) -> Result<GroupState, rusqlite::Error> {
    let mut stored_ids = HashMap::new();
    let mut by_id = tx.prepare_cached("SELECT stream FROM events WHERE event_id = ?1")?;
    for event in jobs.iter().flat_map(|job| &job.events) {
        let id = event.event.event_id;
        let stream: Option<String> = by_id
            .query_row([id.to_string()], |row| row.get(0))
            .optional()?;
        if let Some(stream) = stream {
            stored_ids.insert(id, stream);
        }
    }
    let mut heads = HashMap::new();
    let mut head = tx.prepare_cached(
        "SELECT version, hash FROM events WHERE stream = ?1 ORDER BY version DESC LIMIT 1",
    )?;
    for job in jobs {
        if heads.contains_key(&job.stream) {
            continue;
        }
        let found: Option<(Option<i64>, Option<String>)> = head
            .query_row([&job.stream], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        if let Some((version, hash)) = found {
            heads.insert(job.stream.clone(), stream_head(version, hash));
        }
    }
    Ok((stored_ids, heads))
}
