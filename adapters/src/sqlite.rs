//! The embedded event store on SQLite: the default, needing no other service.
//!
//! # Writes
//!
//! SQLite has one writer at a time, so this store has exactly one writing connection, owned by
//! a writer task. Appends from concurrent callers queue to it; the task takes everything
//! queued (up to [`MAX_GROUP`] appends) and writes it in one `BEGIN IMMEDIATE` transaction
//! (group commit), then answers each caller with its own outcome. Each append in a group is
//! checked against the state the earlier ones left, so two appends to one stream in one group
//! conflict exactly as they would one after the other. `synchronous=FULL` makes a commit
//! durable before anyone is told it happened; grouping is what keeps that affordable.
//!
//! # Order
//!
//! Positions come from `AUTOINCREMENT` under the single writer, so they become visible in
//! increasing order and are never reused. After each commit the writer signals followers in
//! this process; writers in other processes (a CLI command) are picked up by the followers'
//! fallback poll.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatledger_core::canonical::{format_recorded_at, truncate_to_micros};
use chatledger_core::{
    AppendResult, EventStore, ExpectedVersion, KeyStore, NewEvent, Position, RecordedEvent,
    StoreError, SubjectKey,
};
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::append::{
    plan_group, results, stream_head, validate, AppendJob, PlannedRow, StreamHead,
};
use crate::follow::{follow, ReadAll};
use crate::keys;
use crate::rows::{db_error, RawEvent};
use crate::{Counts, OpenError, WriterCounts};

/// At most this many appends are written in one transaction.
const MAX_GROUP: usize = 512;
/// How often an idle follower looks for events written by other processes.
const CROSS_PROCESS_POLL: Duration = Duration::from_millis(250);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../schema/migrations/sqlite");

const SELECT_EVENT: &str =
    "SELECT position, event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash FROM events";

/// What the writer is asked to do.
enum Work {
    Append(AppendJob),
    /// Store `key` as the stream's key and append (events sealed with it), unless the stream
    /// has another key: then nothing is written.
    AppendWithKey {
        job: AppendJob,
        key: SubjectKey,
    },
    /// Store `fresh` as the stream's key unless it has one; answer the stream's key.
    CreateKey {
        stream: String,
        fresh: SubjectKey,
    },
    DestroyKey {
        stream: String,
    },
    /// Empty the write-ahead log into the database file (outside any transaction).
    Checkpoint,
}

/// What the writer answers.
enum Done {
    Appended(AppendResult),
    Key(SubjectKey),
    /// The stream already had another key.
    KeyTaken,
    Nothing,
}

type Reply = oneshot::Sender<Result<Done, StoreError>>;

/// The SQLite event store. Cheap to share behind an `Arc`; dropping it stops its writer.
pub struct SqliteStore {
    path: PathBuf,
    reader: SqlitePool,
    writer: mpsc::Sender<(Work, Reply)>,
    wake: watch::Receiver<u64>,
    counts: Arc<Counts>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path` and applies the migrations.
    ///
    /// A file that is not a SQLite database, or one that holds another application's tables,
    /// is refused with an error that says so; it is never modified.
    pub async fn open(path: &Path) -> Result<Self, OpenError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| OpenError::Invalid(e.to_string()))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Deleted keys and erased text are overwritten, not left in free pages.
            .pragma("secure_delete", "on")
            // Statement journals (a multi-row insert that must be undone alone) stay in memory
            // rather than in a temporary file.
            .pragma("temp_store", "memory");
        let not_a_db = |e: sqlx::Error| OpenError::NotADatabase {
            path: path.display().to_string(),
            reason: match e {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => other.to_string(),
            },
        };
        let mut writer = SqliteConnection::connect_with(&options)
            .await
            .map_err(not_a_db)?;
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
                .fetch_all(&mut writer)
                .await
                .map_err(not_a_db)?;
        if !tables.is_empty() && !tables.iter().any(|t| t == "_sqlx_migrations") {
            return Err(OpenError::Foreign {
                location: path.display().to_string(),
                tables,
            });
        }
        MIGRATOR
            .run(&mut writer)
            .await
            .map_err(|e| OpenError::Migrate(e.to_string()))?;

        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await
            .map_err(not_a_db)?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&reader)
            .await
            .map_err(not_a_db)?;
        let (wake_tx, wake) = watch::channel(head as u64);
        let (to_writer, queue) = mpsc::channel(4096);
        let counts = Arc::new(Counts::default());
        tokio::spawn(writer_loop(writer, queue, wake_tx, counts.clone()));
        Ok(SqliteStore {
            path: path.to_owned(),
            reader,
            writer: to_writer,
            wake,
            counts,
        })
    }

    /// Requests written and the transactions that wrote them, since the store was opened.
    pub fn writer_counts(&self) -> WriterCounts {
        self.counts.get()
    }

    /// Hands `work` to the writer and waits for its answer.
    async fn write(&self, work: Work) -> Result<Done, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.writer
            .send((work, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        validate(stream, &events)?;
        let started = std::time::Instant::now();
        let job = AppendJob {
            stream: stream.to_owned(),
            expected,
            events,
        };
        let result = match self.write(Work::Append(job)).await {
            Ok(Done::Appended(result)) => Ok(result),
            Ok(_) => Err(StoreError::Backend(
                "the writer answered an append with something else".into(),
            )),
            Err(e) => Err(e),
        };
        crate::append::measured("sqlite", started, &result);
        result
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_EVENT} WHERE stream = ? AND version >= ? ORDER BY version LIMIT ?"
        ))
        .bind(stream)
        .bind(from_version as i64)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(decode).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all(&self.reader, after, limit).await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(head as u64)
    }

    fn follow(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let pool = self.reader.clone();
        let read: ReadAll = std::sync::Arc::new(move |after, limit| {
            let pool = pool.clone();
            Box::pin(async move { read_all(&pool, after, limit).await })
        });
        follow(read, after, self.wake.clone(), CROSS_PROCESS_POLL)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn keys(&self) -> Option<&dyn KeyStore> {
        Some(self)
    }
}

/// Keys are read through the readers and written by the writer, in its group transactions:
/// a new conversation's key never waits for the database's write lock, nor makes an append
/// wait for it.
#[async_trait]
impl KeyStore for SqliteStore {
    async fn stream_key(&self, stream: &str) -> Result<Option<SubjectKey>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT key_id, key FROM subject_keys WHERE stream = ?")
                .bind(stream)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_error)?;
        row.map(|(key_id, key)| keys::decode(stream, key_id, &key))
            .transpose()
    }

    async fn create_stream_key(
        &self,
        stream: &str,
        fresh: SubjectKey,
    ) -> Result<SubjectKey, StoreError> {
        let work = Work::CreateKey {
            stream: stream.to_owned(),
            fresh,
        };
        match self.write(work).await? {
            Done::Key(key) => Ok(key),
            _ => Err(StoreError::Backend(
                "the writer answered a new key with something else".into(),
            )),
        }
    }

    async fn append_with_new_key(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        key: SubjectKey,
    ) -> Result<Option<AppendResult>, StoreError> {
        validate(stream, &events)?;
        let job = AppendJob {
            stream: stream.to_owned(),
            expected,
            events,
        };
        match self.write(Work::AppendWithKey { job, key }).await? {
            Done::Appended(result) => Ok(Some(result)),
            Done::KeyTaken => Ok(None),
            _ => Err(StoreError::Backend(
                "the writer answered an append with something else".into(),
            )),
        }
    }

    async fn key_by_id(&self, key_id: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let key: Option<String> =
            sqlx::query_scalar("SELECT key FROM subject_keys WHERE key_id = ?")
                .bind(key_id)
                .fetch_optional(&self.reader)
                .await
                .map_err(db_error)?;
        key.map(|key| keys::decode(key_id, key_id.to_owned(), &key).map(|k| k.key))
            .transpose()
    }

    async fn keyed_streams_ending(
        &self,
        suffix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        sqlx::query_as(keys::STREAMS_ENDING)
            .bind(suffix)
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)
    }

    async fn destroy_stream_key(&self, stream: &str) -> Result<(), StoreError> {
        self.write(Work::DestroyKey {
            stream: stream.to_owned(),
        })
        .await
        .map(|_| ())
    }

    async fn purge_destroyed_keys(&self) -> Result<(), StoreError> {
        // Deleted rows are zeroed in the file (`secure_delete`); the write-ahead log may still
        // hold the pages as they were, so it is emptied.
        self.write(Work::Checkpoint).await.map(|_| ())
    }
}

async fn read_all(
    pool: &SqlitePool,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT_EVENT} WHERE position > ? ORDER BY position LIMIT ?"
    ))
    .bind(after as i64)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.into_iter().map(decode).collect()
}

fn decode(row: SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position: i64 = row.try_get(0).map_err(db_error)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("event at position {position}: {what}"));
    let event_id: String = row.try_get(1).map_err(db_error)?;
    let recorded_at: String = row.try_get(8).map_err(db_error)?;
    RawEvent {
        position,
        event_id: Uuid::parse_str(&event_id).map_err(|_| corrupt("event_id is not a UUID"))?,
        stream: row.try_get(2).map_err(db_error)?,
        version: row.try_get(3).map_err(db_error)?,
        event_type: row.try_get(4).map_err(db_error)?,
        schema_version: row.try_get(5).map_err(db_error)?,
        data: row.try_get(6).map_err(db_error)?,
        metadata: row.try_get(7).map_err(db_error)?,
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|_| corrupt("recorded_at is not RFC 3339"))?
            .with_timezone(&Utc),
        hash: row.try_get(9).map_err(db_error)?,
    }
    .into_recorded()
}

/// Owns the one writing connection; see the module documentation.
async fn writer_loop(
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
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up waiting is no reason to stop writing for the others.
            let _ = reply.send(outcome);
        }
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
            .flat_map(|job| job.events.iter().map(|e| e.event_id.to_string()))
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
                .bind(row.event_type.as_str())
                .bind(row.schema_version as i64)
                .bind(row.data.as_str())
                .bind(row.metadata.as_str())
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
