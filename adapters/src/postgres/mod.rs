//! The production event store on PostgreSQL, shared by any number of chatledger processes.
//!
//! # Global order with concurrent writers
//!
//! A plain identity column is not enough: positions are drawn at insert but become visible
//! at commit, so a reader could pass position 11 while 10 is still uncommitted, and never see
//! 10. Every append here therefore takes one transaction-scoped advisory lock right before it
//! draws positions, and holds it until its commit. Positions are thus drawn and made visible
//! in the same order, across processes; a rolled-back append leaves a gap that nothing can
//! fill later. The stream's head and the duplicate check are read under the same lock, so
//! they cannot change before the insert. Why this scheme and not the transaction-id
//! horizon: docs/adr/0001-postgres-global-order.md.
//!
//! # Group commit
//!
//! Holding one lock from drawing positions to commit serialises appends; one transaction per
//! append would then cap the whole installation at one commit (one flush of the WAL) per
//! append. So each process has one writer task: appends from concurrent callers queue to it,
//! and it writes everything queued (up to [`MAX_GROUP`] appends) in one transaction under the
//! lock, each append planned against the state the earlier ones leave, then answers each
//! caller with its own outcome. Should the group fail as a whole, its appends are written one
//! by one, each in its own transaction, so that one bad append does not fail the others.
//! Before gathering the next group it gives the callers it has just answered a few turns to
//! append again (`append::wait_for_comebacks`), so that callers in a loop share one group
//! rather than alternate between two.
//!
//! # Waking followers
//!
//! Each append sends `NOTIFY` in its transaction, so it is delivered at commit. One listener
//! task per store turns notifications into a signal for this process's followers.

mod subject_keys;
mod writer;

use subject_keys::{store_group_keys, store_key};
use writer::Writer;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chatledger_core::canonical::truncate_to_micros;
use chatledger_core::{
    AppendResult, EventStore, ExpectedVersion, KeyStore, NewEvent, Position, RecordedEvent,
    StoreError, StoredEvent, SubjectKey,
};
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, PgPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::append::{
    plan_append, plan_group, results, stream_head, validate, AppendJob, PlannedRow, PreparedEvent,
    StreamHead,
};
use crate::follow::{follow, ReadAll};
use crate::keys;
use crate::rows::{db_error, violated_unique, RawEvent};
use crate::{redact_url, Counts, OpenError, WriterCounts};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../schema/migrations/postgres");

/// At most this many appends are written in one transaction.
const MAX_GROUP: usize = 512;

/// An append that hits a unique violation (a row written outside chatledger's append path)
/// is re-run against the new state at most this many times.
const MAX_ATTEMPTS: usize = 8;
/// Followers re-read at least this often even without a notification (a safety net for a
/// listener connection that is being re-established).
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// The stored events among the given ids, with their streams. One index lookup per id, by
/// the shape of the query: `event_id = ANY($1)` gets a sequential scan from the planner while
/// the table is small (fresh, not yet analyzed), and a prepared statement keeps that plan
/// as the table grows, each append then reading the whole log.
const LOOKUP_IDS: &str = "SELECT f.event_id, f.stream FROM UNNEST($1::uuid[]) AS i(id)
     CROSS JOIN LATERAL (SELECT event_id, stream FROM events e WHERE e.event_id = i.id LIMIT 1) f";

const SELECT_EVENT: &str =
    "SELECT position, event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash FROM events";

/// The PostgreSQL event store.
pub struct PostgresStore {
    pool: PgPool,
    connect_options: PgConnectOptions,
    location: String,
    lock_key: i64,
    appends: mpsc::Sender<Queued>,
    wake: watch::Receiver<u64>,
    listener: JoinHandle<()>,
    writer: JoinHandle<()>,
    counts: Arc<Counts>,
}

/// An append waiting for the writer, the new key to store with it (a new conversation's),
/// and where to answer: `None` when the stream had another key, and nothing was written.
type Queued = (
    AppendJob,
    Option<SubjectKey>,
    oneshot::Sender<Result<Option<AppendResult>, StoreError>>,
);

impl PostgresStore {
    /// Builds the store without connecting, so that a server can start (and say it is not
    /// ready) while PostgreSQL is down. `schema`, if given, becomes the connections'
    /// `search_path`: everything chatledger creates and reads lives there.
    pub fn connect_lazy(url: &str, schema: Option<&str>) -> Result<Self, OpenError> {
        let location = redact_url(url);
        let mut options = PgConnectOptions::from_str(url).map_err(|e| {
            OpenError::Invalid(format!(
                "DATABASE_URL {location} is not a valid PostgreSQL URL: {e}"
            ))
        })?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            // sqlx already checks each connection as it goes back to the pool (a round trip);
            // checking it again as it comes out would cost every statement a second one.
            .test_before_acquire(false)
            .connect_lazy_with(options.clone());
        let scope = schema.unwrap_or("public");
        let channel = format!("chatledger_events_{scope}");
        let (wake_tx, wake) = watch::channel(0);
        let listener = tokio::spawn(listen(pool.clone(), channel.clone(), wake_tx));
        let lock_key = append_lock_key(scope);
        let (appends, queue) = mpsc::channel(4096);
        let counts = Arc::new(Counts::default());
        let writer = tokio::spawn(
            Writer {
                pool: pool.clone(),
                lock_key,
                channel,
                counts: counts.clone(),
            }
            .run(queue),
        );
        Ok(PostgresStore {
            pool,
            connect_options: options,
            location,
            lock_key,
            appends,
            wake,
            listener,
            writer,
            counts,
        })
    }

    /// Appends written and the transactions that wrote them, since the store was opened.
    pub fn writer_counts(&self) -> WriterCounts {
        self.counts.get()
    }

    /// Where this store points, without credentials.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The advisory lock key appends hold while they draw positions and commit. Exposed so
    /// that operators (and tests) can see which lock a stalled append waits on.
    pub fn append_lock_key(&self) -> i64 {
        self.lock_key
    }

    /// Opens one connection directly, to report exactly why the server cannot be reached.
    pub async fn check_connection(&self) -> Result<(), OpenError> {
        let connect = PgConnection::connect_with(&self.connect_options);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                Ok(())
            }
            Ok(Err(e)) => Err(self.open_error(e)),
            Err(_) => Err(OpenError::Unreachable {
                location: self.location.clone(),
                reason: "no answer within 5s".into(),
            }),
        }
    }

    /// Applies the migrations, refusing a schema that holds another application's tables.
    pub async fn migrate(&self) -> Result<(), OpenError> {
        // One direct attempt first: a pool retries quietly until its timeout, which would hide
        // why the server cannot be reached.
        self.check_connection().await?;
        // A pool of one rather than a bare connection: sqlx's migrator future is only `Send`
        // (spawnable) when it runs on a pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(self.connect_options.clone())
            .await
            .map_err(|e| self.open_error(e))?;
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .map_err(|e| self.open_error(e))?;
        if !tables.is_empty() && !tables.iter().any(|t| t == "_sqlx_migrations") {
            return Err(OpenError::Foreign {
                location: self.location.clone(),
                tables,
            });
        }
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => self.open_error(e),
            other => OpenError::Migrate(other.to_string()),
        })?;
        pool.close().await;
        Ok(())
    }

    fn open_error(&self, e: sqlx::Error) -> OpenError {
        match db_error(e) {
            StoreError::Unavailable(reason) => OpenError::Unreachable {
                location: self.location.clone(),
                reason,
            },
            other => OpenError::Migrate(other.to_string()),
        }
    }

    /// Hands an append (with its stream's new key, if any) to the writer and waits for its
    /// answer.
    async fn write(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        key: Option<SubjectKey>,
    ) -> Result<Option<AppendResult>, StoreError> {
        let (reply, outcome) = oneshot::channel();
        let job = AppendJob::new(stream, expected, events);
        let stopped = || StoreError::Unavailable("the PostgreSQL writer has stopped".into());
        self.appends
            .send((job, key, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn stream_version(&self, stream: &str) -> Result<Option<u64>, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM events WHERE stream = $1")
                .bind(stream)
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        Ok(version.map(|v| v as u64))
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.writer.abort();
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        validate(stream, &events)?;
        if events.is_empty() {
            return Ok(AppendResult {
                stored: vec![],
                duplicates: vec![],
                stream_version: self.stream_version(stream).await?,
            });
        }
        let started = std::time::Instant::now();
        let result = self
            .write(stream, expected, events, None)
            .await
            .and_then(|answered| {
                answered.ok_or_else(|| {
                    StoreError::Backend(
                        "the writer answered an append with no key as if it had one".into(),
                    )
                })
            });
        crate::append::measured("postgres", started, &result);
        result
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!(
            "{SELECT_EVENT} WHERE stream = $1 AND version >= $2 ORDER BY version LIMIT $3"
        ))
        .bind(stream)
        .bind(from_version as i64)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(decode).collect()
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        read_all(&self.pool, after, limit).await
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(head as u64)
    }

    fn follow(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let pool = self.pool.clone();
        let read: ReadAll = std::sync::Arc::new(move |after, limit| {
            let pool = pool.clone();
            Box::pin(async move { read_all(&pool, after, limit).await })
        });
        follow(read, after, self.wake.clone(), FALLBACK_POLL)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn keys(&self) -> Option<&dyn KeyStore> {
        Some(self)
    }
}

async fn read_all(
    pool: &PgPool,
    after: Position,
    limit: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let rows = sqlx::query(&format!(
        "{SELECT_EVENT} WHERE position > $1 ORDER BY position LIMIT $2"
    ))
    .bind(after as i64)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await
    .map_err(db_error)?;
    rows.into_iter().map(decode).collect()
}

fn decode(row: PgRow) -> Result<RecordedEvent, StoreError> {
    let schema_version: i32 = row.try_get(5).map_err(db_error)?;
    let recorded_at: DateTime<Utc> = row.try_get(8).map_err(db_error)?;
    RawEvent {
        position: row.try_get(0).map_err(db_error)?,
        event_id: row.try_get(1).map_err(db_error)?,
        stream: row.try_get(2).map_err(db_error)?,
        version: row.try_get(3).map_err(db_error)?,
        event_type: row.try_get(4).map_err(db_error)?,
        schema_version: schema_version.into(),
        data: row.try_get(6).map_err(db_error)?,
        metadata: row.try_get(7).map_err(db_error)?,
        recorded_at,
        hash: row.try_get(9).map_err(db_error)?,
    }
    .into_recorded()
}

/// The advisory lock key that serialises position assignment: one per schema, so separate
/// chatledger installations (and parallel tests) in one database do not wait for each other.
fn append_lock_key(schema: &str) -> i64 {
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in b"chatledger.append:".iter().chain(schema.as_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

async fn listen(pool: PgPool, channel: String, wake: watch::Sender<u64>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Ok(mut listener) = PgListener::connect_with(&pool).await {
            if listener.listen(&channel).await.is_ok() {
                backoff = Duration::from_millis(100);
                wake.send_modify(|n| *n += 1);
                loop {
                    match listener.try_recv().await {
                        Ok(_) => wake.send_modify(|n| *n += 1),
                        Err(e) => {
                            tracing::debug!(error = %e, "event notification listener lost its connection");
                            break;
                        }
                    }
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
