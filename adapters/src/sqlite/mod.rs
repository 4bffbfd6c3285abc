//! The embedded event store on SQLite: the default, needing no other service.
//!
//! # Writes
//!
//! SQLite has one writer at a time, so this store has exactly one writing connection, native
//! (`rusqlite`), owned by a writer thread ([`writer`]). Appends from concurrent callers queue
//! to it; the thread takes everything queued (up to [`MAX_GROUP`] appends) and writes it in
//! one `BEGIN IMMEDIATE` transaction (group commit), then answers each caller with its own
//! outcome. Each append in a group is checked against the state the earlier ones left, so two
//! appends to one stream in one group conflict exactly as they would one after the other.
//! `synchronous=FULL` makes a commit durable before anyone is told it happened; grouping is
//! what keeps that affordable.
//!
//! The write-ahead log is copied into the database file (checkpointed) by a task with a
//! connection of its own, every [`CHECKPOINT_EVERY`], so that the writer's commits rarely
//! find a checkpoint to run themselves: run by the writer, each stopped every append behind it
//! while the file was written and synced (two fifths of the writer's time under load).
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
use chrono::Utc;
use futures_core::stream::BoxStream;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::append::{plan_group, results, stream_head, validate, AppendJob, StreamHead};
use crate::follow::{follow, ReadAll};
use crate::keys;
use crate::rows::db_error;
use crate::{Counts, OpenError, WriterCounts};

mod bulk;
mod writer;

use bulk::BulkReader;
use writer::spawn_writer;

/// At most this many appends are written in one transaction.
const MAX_GROUP: usize = 512;
/// How often an idle follower looks for events written by other processes.
const CROSS_PROCESS_POLL: Duration = Duration::from_millis(250);
/// How often the write-ahead log is checkpointed beside the writer (see the module's
/// documentation); the writer's own checkpoints, at SQLite's 1,000 pages, remain for when this
/// one falls behind.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

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
    bulk: Arc<BulkReader>,
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
        // Migrated: the log is written through a native connection (see [`writer`]).
        let _ = writer.close().await;
        let writer = native_writer(path).map_err(|e| OpenError::NotADatabase {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;

        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(not_a_db)?;
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&reader)
            .await
            .map_err(not_a_db)?;
        let (wake_tx, wake) = watch::channel(head as u64);
        let (to_writer, queue) = mpsc::channel(4096);
        let counts = Arc::new(Counts::default());
        let checkpoints = SqliteConnection::connect_with(&options)
            .await
            .map_err(not_a_db)?;
        tokio::spawn(checkpoint_loop(checkpoints, to_writer.downgrade()));
        spawn_writer(writer, queue, wake_tx, counts.clone())
            .map_err(|e| OpenError::Invalid(format!("the log's writer did not start: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            reader,
            bulk: Arc::new(BulkReader::new(path)),
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

/// The log's writing connection, native, set as sqlx's connections are (see
/// [`SqliteStore::open`]); the file exists and is migrated.
fn native_writer(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON; PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

/// A native connection's error as the store reports it: a busy or unopenable file is
/// unavailable (worth retrying), a value too big for SQLite is refused, the rest is the
/// backend's.
fn native_error(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(ref code, _)
            if matches!(
                code.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::CannotOpen
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        rusqlite::Error::SqliteFailure(ref code, _) if code.code == rusqlite::ErrorCode::TooBig => {
            StoreError::Invalid(format!("the database refused a value: {e}"))
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// Checkpoints the write-ahead log every [`CHECKPOINT_EVERY`] until the store is dropped
/// (its writer's queue has no sender left). PASSIVE waits for nobody: it copies what no
/// reader still needs and leaves the rest for the next turn.
async fn checkpoint_loop(mut conn: SqliteConnection, writer: mpsc::WeakSender<(Work, Reply)>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if writer.upgrade().is_none() {
            break;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::debug!(error = %e, "a background checkpoint of the log failed; the writer's own checkpoints go on");
        }
    }
    let _ = conn.close().await;
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
        let job = AppendJob::new(stream, expected, events);
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
        let bulk = self.bulk.clone();
        let stream = stream.to_owned();
        tokio::task::spawn_blocking(move || bulk.read_stream(&stream, from_version, limit))
            .await
            .map_err(|e| StoreError::Backend(format!("reading the log stopped: {e}")))?
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all(&self.bulk, after, limit).await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(head as u64)
    }

    fn follow(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let bulk = self.bulk.clone();
        let read: ReadAll = std::sync::Arc::new(move |after, limit| {
            let bulk = bulk.clone();
            Box::pin(async move { read_all(&bulk, after, limit).await })
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
        let job = AppendJob::new(stream, expected, events);
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

    async fn keys_by_id(
        &self,
        key_ids: &[String],
    ) -> Result<chatledger_core::store::FoundKeys, StoreError> {
        let mut found = Vec::with_capacity(key_ids.len());
        // SQLite binds at most 32,766 parameters a statement; a few hundred a read is plenty.
        for chunk in key_ids.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT key_id, key FROM subject_keys WHERE key_id IN ({marks})");
            let mut query = sqlx::query_as::<_, (String, String)>(&sql);
            for key_id in chunk {
                query = query.bind(key_id);
            }
            let rows = query.fetch_all(&self.reader).await.map_err(db_error)?;
            found.extend(keys::found_by_id(chunk, rows)?);
        }
        Ok(found)
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

/// Up to `limit` events after `after`, read on a blocking thread.
async fn read_all(
    bulk: &Arc<BulkReader>,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let bulk = bulk.clone();
    tokio::task::spawn_blocking(move || bulk.read_all(after, limit))
        .await
        .map_err(|e| StoreError::Backend(format!("reading the log stopped: {e}")))?
}
