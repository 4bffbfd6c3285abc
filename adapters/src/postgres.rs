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
//!
//! # Waking followers
//!
//! Each append sends `NOTIFY` in its transaction, so it is delivered at commit. One listener
//! task per store turns notifications into a signal for this process's followers.

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
    plan_append, plan_group, results, stream_head, validate, AppendJob, PlannedRow, StreamHead,
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

/// What the writer task needs to write.
struct Writer {
    pool: PgPool,
    lock_key: i64,
    /// The `NOTIFY` channel of this schema's commits.
    channel: String,
    counts: Arc<Counts>,
}

enum Attempt {
    Retry,
    Failed(StoreError),
}

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
        let job = AppendJob {
            stream: stream.to_owned(),
            expected,
            events,
        };
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

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Queued>) {
        while let Some(first) = queue.recv().await {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let mut jobs = Vec::with_capacity(group.len());
            let mut keys = Vec::with_capacity(group.len());
            let mut replies = Vec::with_capacity(group.len());
            for (job, key, reply) in group {
                jobs.push(job);
                keys.push(key);
                replies.push(reply);
            }
            self.counts.add(jobs.len());
            let outcomes = match self.append_group(&jobs, &keys).await {
                Ok(outcomes) => outcomes,
                Err(e) => {
                    if jobs.len() > 1 {
                        tracing::debug!(error = %e, appends = jobs.len(), "group append failed; appending one by one");
                    }
                    let mut outcomes = Vec::with_capacity(jobs.len());
                    for (job, key) in jobs.iter().zip(keys) {
                        outcomes.push(self.append_one_keyed(job, key).await);
                    }
                    outcomes
                }
            };
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                // A caller that gave up waiting is no reason to stop writing for the others.
                let _ = reply.send(outcome);
            }
        }
    }

    /// One append on its own, its new key (if any) stored first in a transaction of its own
    /// (a key left without events is harmless: it is the stream's key when next written).
    async fn append_one_keyed(
        &self,
        job: &AppendJob,
        key: Option<SubjectKey>,
    ) -> Result<Option<AppendResult>, StoreError> {
        if let Some(key) = key {
            let key_id = key.key_id.clone();
            if store_key(&self.pool, &job.stream, key).await?.key_id != key_id {
                return Ok(None);
            }
        }
        self.append_one(job).await.map(Some)
    }

    /// One append in its own transaction, run again (a bounded number of times) when it meets
    /// a row written outside chatledger's append path.
    async fn append_one(&self, job: &AppendJob) -> Result<AppendResult, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            match self
                .try_append(&job.stream, job.expected, &job.events)
                .await
            {
                Ok(result) => return Ok(result),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Retry) => continue,
            }
        }
        Err(StoreError::Backend(format!(
            "append to {} kept meeting rows written outside chatledger ({MAX_ATTEMPTS} attempts)",
            job.stream
        )))
    }

    /// A group of appends in one transaction under the append lock. The outer error is a
    /// failed write (the group is then written one by one); the inner ones are appends refused
    /// on their own merits.
    async fn append_group(
        &self,
        jobs: &[AppendJob],
        keys: &[Option<SubjectKey>],
    ) -> Result<Vec<Result<Option<AppendResult>, StoreError>>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.lock_key)
            .execute(&mut *tx)
            .await?;
        // New conversations' keys, stored with their first events; an append whose stream
        // got another key meanwhile (here or in another process) writes nothing.
        let taken = store_group_keys(&mut tx, jobs, keys).await?;
        let written: Vec<&AppendJob> = jobs
            .iter()
            .zip(&taken)
            .filter(|(_, taken)| !**taken)
            .map(|(job, _)| job)
            .collect();
        let jobs = written;
        let ids: Vec<Uuid> = jobs
            .iter()
            .flat_map(|job| job.events.iter().map(|e| e.event_id))
            .collect();
        let mut streams: Vec<&str> = jobs.iter().map(|job| job.stream.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        // One round trip for both, read under the lock (a statement after it, so that its
        // snapshot sees every append committed before the lock was ours): which given ids are
        // stored (and where), and the head of every stream named; each by an index lookup per
        // id or stream (see LOOKUP_IDS).
        type Found = (Option<Uuid>, String, Option<i64>, Option<String>);
        let found: Vec<Found> = sqlx::query_as(
            "SELECT f.event_id, f.stream, NULL::bigint, NULL::text FROM UNNEST($1::uuid[]) AS i(id)
             CROSS JOIN LATERAL (SELECT event_id, stream FROM events e WHERE e.event_id = i.id LIMIT 1) f
             UNION ALL
             SELECT NULL::uuid, s.stream, h.version, h.hash FROM UNNEST($2::text[]) AS s(stream)
             CROSS JOIN LATERAL (SELECT version, hash FROM events e WHERE e.stream = s.stream
                                 ORDER BY version DESC LIMIT 1) h",
        )
        .bind(&ids)
        .bind(&streams)
        .fetch_all(&mut *tx)
        .await?;
        let mut stored_ids: HashMap<Uuid, String> = HashMap::new();
        let mut heads: HashMap<String, Result<StreamHead, String>> = HashMap::new();
        for (event_id, stream, version, hash) in found {
            if let Some(event_id) = event_id {
                stored_ids.insert(event_id, stream);
                continue;
            }
            let head = stream_head(version, hash);
            heads.insert(stream, head);
        }
        let recorded_at = truncate_to_micros(Utc::now());
        let plans = plan_group(&jobs, stored_ids, heads, recorded_at);
        let rows: Vec<(&str, &PlannedRow)> = jobs
            .iter()
            .zip(&plans)
            .filter_map(|(job, plan)| plan.as_ref().ok().map(|plan| (job, plan)))
            .flat_map(|(job, plan)| plan.rows.iter().map(|row| (job.stream.as_str(), row)))
            .collect();
        let mut positions: HashMap<Uuid, u64> = HashMap::with_capacity(rows.len());
        if !rows.is_empty() {
            // The insert and the notification (delivered at commit) in one statement.
            let inserted: Vec<(Uuid, i64)> = sqlx::query_as(
                "WITH inserted AS (
                    INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash)
                    SELECT e.event_id, e.stream, e.version, e.event_type, e.schema_version, e.data, e.metadata, $1, e.hash
                    FROM UNNEST($2::uuid[], $3::text[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[])
                         WITH ORDINALITY AS e(event_id, stream, version, event_type, schema_version, data, metadata, hash, ord)
                    ORDER BY e.ord
                    RETURNING event_id, position
                 ), notified AS (
                    SELECT pg_notify($10, (SELECT MAX(position) FROM inserted)::text)
                 )
                 SELECT event_id, position FROM inserted, notified",
            )
            .bind(recorded_at)
            .bind(rows.iter().map(|(_, r)| r.event_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|(stream, _)| *stream).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.version as i64).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.event_type.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.schema_version as i32).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.data.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.metadata.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|(_, r)| r.hash.to_string()).collect::<Vec<_>>())
            .bind(&self.channel)
            .fetch_all(&mut *tx)
            .await?;
            positions.extend(inserted.into_iter().map(|(id, p)| (id, p as u64)));
        }
        drop(rows);
        let outcomes = results(plans, &positions)?;
        let committing = std::time::Instant::now();
        tx.commit().await?;
        crate::append::commit_took("postgres", committing);
        let mut outcomes = outcomes.into_iter();
        Ok(taken
            .into_iter()
            .map(|taken| match taken {
                true => Ok(None),
                false => outcomes
                    .next()
                    .expect("an outcome for every append written")
                    .map(Some),
            })
            .collect())
    }

    async fn try_append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
    ) -> Result<AppendResult, Attempt> {
        let failed = |e| Attempt::Failed(db_error(e));
        let mut tx = self.pool.begin().await.map_err(failed)?;
        // Everything from here to the commit happens under the append lock: the head and the
        // duplicates read below cannot change before the insert, so an append never loses a
        // race it could not see, and `Any` never starves on a busy stream.
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(self.lock_key)
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let existing: Vec<(Uuid, String)> = sqlx::query_as(LOOKUP_IDS)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(failed)?;
        let head: Option<(i64, String)> = sqlx::query_as(
            "SELECT version, hash FROM events WHERE stream = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(stream)
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?;
        let head = match head {
            Some((version, hash)) => Some(StreamHead {
                version: version as u64,
                hash: hash.parse().map_err(|e| {
                    Attempt::Failed(StoreError::Corrupt(format!("head of stream {stream}: {e}")))
                })?,
            }),
            None => None,
        };
        let recorded_at = truncate_to_micros(Utc::now());
        let plan = plan_append(stream, expected, events, &existing, head, recorded_at)
            .map_err(Attempt::Failed)?;
        if plan.rows.is_empty() {
            return Ok(AppendResult {
                stored: vec![],
                duplicates: plan.duplicates,
                stream_version: plan.current,
            });
        }
        let inserted: Result<Vec<(i64, i64)>, sqlx::Error> = sqlx::query_as(
            "INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash) \
             SELECT e.event_id, $1, e.version, e.event_type, e.schema_version, e.data, e.metadata, $2, e.hash \
             FROM UNNEST($3::uuid[], $4::bigint[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[]) \
                  WITH ORDINALITY AS e(event_id, version, event_type, schema_version, data, metadata, hash, ord) \
             ORDER BY e.ord \
             RETURNING position, version",
        )
        .bind(stream)
        .bind(recorded_at)
        .bind(plan.rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.version as i64).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.event_type.clone()).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.schema_version as i32).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.data.clone()).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.metadata.clone()).collect::<Vec<_>>())
        .bind(plan.rows.iter().map(|r| r.hash.to_string()).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await;
        let mut inserted = match inserted {
            Ok(rows) => rows,
            Err(e) => {
                // Under the lock no other chatledger append can interleave; a unique violation
                // means a row was written some other way. Run the append again against what
                // is there now: it then sees the row as a duplicate or as a conflict.
                return match violated_unique(&e) {
                    Some(_) => Err(Attempt::Retry),
                    None => Err(failed(e)),
                };
            }
        };
        inserted.sort_unstable_by_key(|(_, version)| *version);
        let last_position = inserted.last().map(|(p, _)| *p).unwrap_or_default();
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.channel)
            .bind(last_position.to_string())
            .execute(&mut *tx)
            .await
            .map_err(failed)?;
        let committing = std::time::Instant::now();
        tx.commit().await.map_err(failed)?;
        crate::append::commit_took("postgres", committing);
        let stored: Vec<StoredEvent> = plan
            .rows
            .iter()
            .zip(&inserted)
            .map(|(row, (position, _))| StoredEvent {
                event_id: row.event_id,
                version: row.version,
                position: *position as u64,
            })
            .collect();
        Ok(AppendResult {
            stream_version: stored.last().map(|s| s.version),
            stored,
            duplicates: plan.duplicates,
        })
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

#[async_trait]
impl KeyStore for PostgresStore {
    async fn stream_key(&self, stream: &str) -> Result<Option<SubjectKey>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT key_id, key FROM subject_keys WHERE stream = $1")
                .bind(stream)
                .fetch_optional(&self.pool)
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
        store_key(&self.pool, stream, fresh).await
    }

    async fn append_with_new_key(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        key: SubjectKey,
    ) -> Result<Option<AppendResult>, StoreError> {
        validate(stream, &events)?;
        if events.is_empty() {
            let key_id = key.key_id.clone();
            if store_key(&self.pool, stream, key).await?.key_id != key_id {
                return Ok(None);
            }
            return EventStore::append(self, stream, expected, events)
                .await
                .map(Some);
        }
        // The writer stores the key in the transaction of the events.
        self.write(stream, expected, events, Some(key)).await
    }

    async fn key_by_id(&self, key_id: &str) -> Result<Option<[u8; 32]>, StoreError> {
        let key: Option<String> =
            sqlx::query_scalar("SELECT key FROM subject_keys WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
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
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)
    }

    async fn destroy_stream_key(&self, stream: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM subject_keys WHERE stream = $1")
            .bind(stream)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn purge_destroyed_keys(&self) -> Result<(), StoreError> {
        // The deleted rows' old versions stay in the table's pages until vacuumed.
        sqlx::query("VACUUM subject_keys")
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
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

/// Turns `NOTIFY`s on `channel` into wake-ups for this process's followers, reconnecting
/// with backoff when the connection drops. Every (re)connection also wakes them, because
/// notifications sent while nobody listened are lost.
/// Makes `fresh` the key of `stream` unless it has one, in a transaction of its own, and
/// answers the stream's key. Two processes may make one at once: the first row stays, both
/// use it.
async fn store_key(
    pool: &PgPool,
    stream: &str,
    fresh: SubjectKey,
) -> Result<SubjectKey, StoreError> {
    sqlx::query(
        "INSERT INTO subject_keys (stream, key_id, key, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (stream) DO NOTHING",
    )
    .bind(stream)
    .bind(&fresh.key_id)
    .bind(keys::encode(&fresh.key))
    .bind(chatledger_core::canonical::format_recorded_at(Utc::now()))
    .execute(pool)
    .await
    .map_err(db_error)?;
    // A statement of its own: its snapshot sees a key another process committed meanwhile.
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT key_id, key FROM subject_keys WHERE stream = $1")
            .bind(stream)
            .fetch_optional(pool)
            .await
            .map_err(db_error)?;
    let (key_id, key) =
        row.ok_or_else(|| StoreError::Backend(format!("the key of {stream} was not kept")))?;
    keys::decode(stream, key_id, &key)
}

/// Stores the new keys of a group's appends (inside its transaction), and answers, append by
/// append, whether its stream turned out to have another key (then nothing of it is written).
async fn store_group_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    jobs: &[AppendJob],
    keys: &[Option<SubjectKey>],
) -> Result<Vec<bool>, sqlx::Error> {
    let keyed: Vec<(&str, &SubjectKey)> = jobs
        .iter()
        .zip(keys)
        .filter_map(|(job, key)| key.as_ref().map(|key| (job.stream.as_str(), key)))
        .collect();
    if keyed.is_empty() {
        return Ok(vec![false; jobs.len()]);
    }
    let streams: Vec<&str> = keyed.iter().map(|(stream, _)| *stream).collect();
    sqlx::query(
        "INSERT INTO subject_keys (stream, key_id, key, created_at)
         SELECT n.stream, n.key_id, n.key, $4 FROM UNNEST($1::text[], $2::text[], $3::text[]) AS n(stream, key_id, key)
         ON CONFLICT (stream) DO NOTHING",
    )
    .bind(&streams)
    .bind(keyed.iter().map(|(_, key)| key.key_id.as_str()).collect::<Vec<_>>())
    .bind(keyed.iter().map(|(_, key)| keys::encode(&key.key)).collect::<Vec<_>>())
    .bind(chatledger_core::canonical::format_recorded_at(Utc::now()))
    .execute(&mut **tx)
    .await?;
    // One index probe per stream (see LOOKUP_IDS).
    let stored: HashMap<String, String> = sqlx::query_as(
        "SELECT k.stream, k.key_id FROM UNNEST($1::text[]) AS s(stream)
         CROSS JOIN LATERAL (SELECT stream, key_id FROM subject_keys k WHERE k.stream = s.stream LIMIT 1) k",
    )
    .bind(&streams)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    Ok(jobs
        .iter()
        .zip(keys)
        .map(|(job, key)| {
            key.as_ref()
                .is_some_and(|key| stored.get(&job.stream) != Some(&key.key_id))
        })
        .collect())
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
