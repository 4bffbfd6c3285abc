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
use std::time::Duration;

use async_trait::async_trait;
use chatledger_core::canonical::{format_recorded_at, truncate_to_micros};
use chatledger_core::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
    StoredEvent,
};
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::append::{plan_append, validate, StreamHead};
use crate::follow::{follow, ReadAll};
use crate::rows::{db_error, RawEvent};
use crate::OpenError;

/// At most this many appends are written in one transaction.
const MAX_GROUP: usize = 512;
/// How often an idle follower looks for events written by other processes.
const CROSS_PROCESS_POLL: Duration = Duration::from_millis(250);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../schema/migrations/sqlite");

const SELECT_EVENT: &str =
    "SELECT position, event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash FROM events";

struct AppendJob {
    stream: String,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
}

type Reply = oneshot::Sender<Result<AppendResult, StoreError>>;

/// The SQLite event store. Cheap to share behind an `Arc`; dropping it stops its writer.
pub struct SqliteStore {
    path: PathBuf,
    reader: SqlitePool,
    appends: mpsc::Sender<(AppendJob, Reply)>,
    wake: watch::Receiver<u64>,
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
            .pragma("secure_delete", "on");
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
        let (appends, queue) = mpsc::channel(4096);
        tokio::spawn(writer_loop(writer, queue, wake_tx));
        Ok(SqliteStore {
            path: path.to_owned(),
            reader,
            appends,
            wake,
        })
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
        let (reply, outcome) = oneshot::channel();
        let job = AppendJob {
            stream: stream.to_owned(),
            expected,
            events,
        };
        let stopped = || StoreError::Unavailable("the SQLite writer has stopped".into());
        self.appends
            .send((job, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
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
        .bind(limit as i64)
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
    .bind(limit as i64)
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
    mut queue: mpsc::Receiver<(AppendJob, Reply)>,
    wake: watch::Sender<u64>,
) {
    while let Some(first) = queue.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let (jobs, replies): (Vec<AppendJob>, Vec<Reply>) = group.into_iter().unzip();
        let outcomes = match write_group(&mut conn, &jobs, &wake).await {
            Ok(outcomes) => outcomes,
            Err(e) if jobs.len() > 1 => {
                // One append may have broken the whole group (a disk error, a bad value):
                // write them one by one so the others are not lost with it.
                tracing::warn!(error = %e, appends = jobs.len(), "group append failed; retrying appends one by one");
                let mut outcomes = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    let one = write_group(&mut conn, std::slice::from_ref(job), &wake).await;
                    outcomes.push(one.map_or_else(|e| Err(db_error(e)), |mut o| o.remove(0)));
                }
                outcomes
            }
            Err(e) => vec![Err(db_error(e))],
        };
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that gave up waiting is no reason to stop writing for the others.
            let _ = reply.send(outcome);
        }
    }
}

/// Writes a group of appends in one transaction. The outer error is a failed write; the
/// inner ones are appends refused on their own merits (a version conflict, say).
async fn write_group(
    conn: &mut SqliteConnection,
    jobs: &[AppendJob],
    wake: &watch::Sender<u64>,
) -> Result<Vec<Result<AppendResult, StoreError>>, sqlx::Error> {
    let recorded_at = truncate_to_micros(Utc::now());
    let recorded_text = format_recorded_at(recorded_at);
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut outcomes = Vec::with_capacity(jobs.len());
    let mut last_position = None;
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
    let mut stored_ids: HashMap<Uuid, String> = sqlx::query_as::<_, (String, String)>(
        "SELECT event_id, stream FROM events WHERE event_id IN (SELECT value FROM json_each(?))",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .filter_map(|(id, stream)| Uuid::parse_str(&id).ok().map(|id| (id, stream)))
    .collect();
    let streams = as_json(jobs.iter().map(|job| job.stream.clone()).collect());
    let mut heads: HashMap<String, Result<StreamHead, String>> =
        sqlx::query_as::<_, (String, i64, String)>(
            "SELECT e.stream, e.version, e.hash FROM events e
         JOIN (SELECT stream, MAX(version) AS version FROM events
               WHERE stream IN (SELECT value FROM json_each(?)) GROUP BY stream) h
           ON e.stream = h.stream AND e.version = h.version",
        )
        .bind(streams)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(stream, version, hash)| {
            let head = hash
                .parse()
                .map(|hash| StreamHead {
                    version: version as u64,
                    hash,
                })
                .map_err(|e| format!("{e}"));
            (stream, head)
        })
        .collect();
    for job in jobs {
        let existing: Vec<(Uuid, String)> = job
            .events
            .iter()
            .filter_map(|e| stored_ids.get(&e.event_id).map(|s| (e.event_id, s.clone())))
            .collect();
        let head = match heads.get(&job.stream) {
            Some(Err(e)) => {
                outcomes.push(Err(StoreError::Corrupt(format!(
                    "head of stream {}: {e}",
                    job.stream
                ))));
                continue;
            }
            Some(Ok(head)) => Some(*head),
            None => None,
        };
        let plan = match plan_append(
            &job.stream,
            job.expected,
            &job.events,
            &existing,
            head,
            recorded_at,
        ) {
            Ok(plan) => plan,
            Err(refused) => {
                outcomes.push(Err(refused));
                continue;
            }
        };
        let mut stored = Vec::with_capacity(plan.rows.len());
        for row in &plan.rows {
            let position: i64 = sqlx::query_scalar(
                "INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position",
            )
            .bind(row.event_id.to_string())
            .bind(&job.stream)
            .bind(row.version as i64)
            .bind(&row.event_type)
            .bind(row.schema_version as i64)
            .bind(&row.data)
            .bind(&row.metadata)
            .bind(&recorded_text)
            .bind(row.hash.to_string())
            .fetch_one(&mut *tx)
            .await?;
            stored.push(StoredEvent {
                event_id: row.event_id,
                version: row.version,
                position: position as u64,
            });
            last_position = Some(position as u64);
            stored_ids.insert(row.event_id, job.stream.clone());
            heads.insert(
                job.stream.clone(),
                Ok(StreamHead {
                    version: row.version,
                    hash: row.hash,
                }),
            );
        }
        outcomes.push(Ok(AppendResult {
            stream_version: stored.last().map(|s| s.version).or(plan.current),
            stored,
            duplicates: plan.duplicates,
        }));
    }
    tx.commit().await?;
    if let Some(position) = last_position {
        wake.send_replace(position);
    }
    Ok(outcomes)
}
