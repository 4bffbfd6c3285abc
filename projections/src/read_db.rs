//! The database read models live in: on PostgreSQL the log's own database; beside a SQLite
//! log, a file of their own (`chatledger.read-models.db` beside `chatledger.db`), because
//! SQLite has one write lock per file and the log's writer must never wait for a projector.
//!
//! Projectors and queries write one SQL text for both backends (sqlx binds `$1`, `$2`, … by
//! number on SQLite as on PostgreSQL), with arguments as [`Arg`]s. Times are stored as
//! RFC 3339 text in UTC with six fraction digits, which sorts as time does.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPoolOptions, PgRow};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{PgPool, Postgres, Row, Sqlite, SqlitePool, Transaction};

use crate::pg_pipeline::{PgTx, PgWriter};
use crate::sqlite_native::{open_native, Checkpointer, NativeTx};

pub use crate::sql::{parse_time, placeholders, time_text, Arg};

static SQLITE_MIGRATOR: sqlx::migrate::Migrator =
    sqlx::migrate!("../schema/migrations/sqlite-read");

/// The file holding the read models of the SQLite log at `log`: `chatledger.db` keeps them in
/// `chatledger.read-models.db`. Deleting it loses nothing: it is rebuilt from the log.
pub fn sqlite_path(log: &Path) -> std::path::PathBuf {
    let stem = log
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "chatledger".into());
    log.with_file_name(format!("{stem}.read-models.db"))
}

/// The read-model database.
#[derive(Clone, Debug)]
pub enum ReadDb {
    /// Queries go through the pool. Projection writes, when `writer` is there, go through that
    /// one native connection: statements run in this process, prepared once, without a hop to
    /// another thread each (the cost that dominated projecting, and replay above all).
    Sqlite {
        pool: SqlitePool,
        writer: Option<Arc<tokio::sync::Mutex<rusqlite::Connection>>>,
        /// Checkpoints the writer's database while a rebuild fills (see [`ReadDb::filling`]).
        checkpointer: Arc<std::sync::Mutex<Option<Checkpointer>>>,
    },
    /// Queries go through the pool; projection writes, when `writer` is there, through its one
    /// connection, pipelined (see [`crate::pg_pipeline`]).
    Postgres {
        pool: PgPool,
        writer: Option<Arc<tokio::sync::Mutex<PgWriter>>>,
    },
}

/// A read-model transaction.
pub struct ReadTx {
    kind: TxKind,
    serial: u64,
}

/// Numbers transactions, for [`ReadTx::serial`].
static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

enum TxKind {
    Sqlite(Transaction<'static, Sqlite>),
    Native(NativeTx),
    Postgres(Transaction<'static, Postgres>),
    Pipelined(PgTx),
}

/// A row of a read-model query, read by column index.
pub enum DbRow {
    Sqlite(SqliteRow),
    Native(Vec<rusqlite::types::Value>),
    Postgres(PgRow),
    Pipelined(tokio_postgres::Row),
}

/// A failed read-model statement.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    /// Projection writes on SQLite run on a blocking thread, which ended without an answer.
    #[error("the read-model writer stopped: {0}")]
    Stopped(String),
    /// Values that do not fit the statement they were given to (refused before it was sent).
    #[error("{0}")]
    Refused(String),
}

impl DbError {
    /// Whether the database refused the values themselves (a character it cannot store, a
    /// value too long for an index, a broken constraint): trying the same write again fails
    /// the same way. Anything else (a lost connection, a lock timeout) may pass on a retry.
    pub fn refused_the_values(&self) -> bool {
        // SQLSTATE classes 22 (data exception), 23 (integrity constraint violation) and 54
        // (program limit exceeded: an index row too large).
        let sqlstate = |code: &str| ["22", "23", "54"].iter().any(|c| code.starts_with(c));
        // SQLite's primary result codes: SQLITE_TOOBIG (18), SQLITE_CONSTRAINT (19),
        // SQLITE_MISMATCH (20), SQLITE_RANGE (25).
        let sqlite = |code: i32| matches!(code & 0xff, 18 | 19 | 20 | 25);
        match self {
            DbError::Sqlx(sqlx::Error::Database(e)) => {
                let code = e.code().unwrap_or_default();
                match code.parse::<i32>() {
                    Ok(n) if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                        sqlite(n)
                    }
                    _ => sqlstate(&code),
                }
            }
            DbError::Sqlx(sqlx::Error::Encode(_) | sqlx::Error::ColumnDecode { .. }) => true,
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => sqlite(e.extended_code),
            DbError::Sqlite(
                rusqlite::Error::ToSqlConversionFailure(_)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::InvalidColumnType(..),
            ) => true,
            DbError::Postgres(e) => e.code().is_some_and(|c| sqlstate(c.code())),
            DbError::Refused(_) => true,
            _ => false,
        }
    }
}

/// Drops the read models an earlier release kept inside the log's own file (its tables, views
/// and registry rows): nothing reads them any more, and `forget` would no longer reach the names
/// and texts they hold. They are rebuilt, in their own file, from the log.
fn retire_from_log(log: &Path) -> Result<(), rusqlite::Error> {
    if !log.exists() {
        return Ok(());
    }
    let mut conn = rusqlite::Connection::open(log)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.execute_batch("PRAGMA secure_delete = ON;")?;
    let has_registry: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'projections')",
        [],
        |row| row.get(0),
    )?;
    if !has_registry {
        return Ok(());
    }
    let retired: Vec<(String, i64)> = conn
        .prepare("SELECT name, generation FROM projections")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    if retired.is_empty() {
        return Ok(());
    }
    // Their views are the only views in the log's file, and their tables are the ones named
    // after a generation (`chats_g1`): the log's own tables never are.
    let generations: Vec<i64> = retired.iter().flat_map(|(_, g)| [*g, g + 1]).collect();
    let objects: Vec<(String, String)> = conn
        .prepare("SELECT type, name FROM sqlite_master WHERE type IN ('view', 'table')")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (kind, name) in &objects {
        if kind == "view" {
            tx.execute_batch(&format!("DROP VIEW IF EXISTS \"{name}\";"))?;
        }
    }
    for (kind, name) in &objects {
        let of_a_generation = generations.iter().any(|g| {
            name.strip_suffix(&format!("_g{g}"))
                .is_some_and(|t| !t.is_empty())
        });
        if kind == "table" && of_a_generation {
            tx.execute_batch(&format!("DROP TABLE IF EXISTS \"{name}\";"))?;
        }
    }
    tx.execute("DELETE FROM projections", [])?;
    tx.commit()?;
    tracing::info!(read_models = retired.len(), "dropped the read models kept in the log's file by an earlier release; they are rebuilt in their own file");
    Ok(())
}

/// Binds `args` to a sqlx query (`postgres` or `sqlite`): see [`bind_array`].
macro_rules! bind_all {
    ($query:expr, $args:expr, $backend:ident) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Int(v) => query.bind(*v),
                Arg::Text(v) => query.bind(v.as_str()),
                Arg::Null => query.bind(Option::<String>::None),
                Arg::Ints(v) => bind_array!(query, v, $backend),
                Arg::Texts(v) => bind_array!(query, v, $backend),
            };
        }
        query
    }};
}

/// Binds an array's `values` as an array on PostgreSQL, as their JSON text on SQLite.
macro_rules! bind_array {
    ($query:expr, $values:expr, postgres) => {
        $query.bind($values.as_slice())
    };
    ($query:expr, $values:expr, sqlite) => {
        $query.bind(crate::sql::json_array($values))
    };
}

impl ReadDb {
    /// The read models of the SQLite log at `log`, in their own file beside it (see
    /// [`sqlite_path`]), created and migrated when missing. They can always be rebuilt from
    /// the log, so a commit need not wait for the disk (`synchronous=NORMAL`); each
    /// projector's checkpoint commits with its rows.
    pub async fn open_sqlite(log: &Path) -> Result<Self, DbError> {
        retire_from_log(log)?;
        let path = sqlite_path(log);
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // Deleted keys and erased text are overwritten, not left in free pages.
            .pragma("secure_delete", "on");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        SQLITE_MIGRATOR
            .run(&pool)
            .await
            .map_err(sqlx::Error::from)?;
        let writer = open_native(&path)?;
        Ok(ReadDb::Sqlite {
            pool,
            writer: Some(Arc::new(tokio::sync::Mutex::new(writer))),
            checkpointer: Arc::default(),
        })
    }

    /// Queries (and sqlx transactions) on a SQLite database that is not a read-model file:
    /// the log's own, for tools and tests.
    pub fn sqlite_pool(pool: SqlitePool) -> Self {
        ReadDb::Sqlite {
            pool,
            writer: None,
            checkpointer: Arc::default(),
        }
    }

    /// Whether projection writes run on this thread without awaiting anything (the native
    /// SQLite writer): the caller should then run a large batch where blocking is allowed.
    pub fn writes_block(&self) -> bool {
        matches!(
            self,
            ReadDb::Sqlite {
                writer: Some(_),
                ..
            }
        )
    }

    /// Whether projection writes are queued and sent together (PostgreSQL's pipelined writer).
    pub fn writes_pipelined(&self) -> bool {
        matches!(
            self,
            ReadDb::Postgres {
                writer: Some(_),
                ..
            }
        )
    }

    /// Read models beside a PostgreSQL log; `schema` as for the store.
    pub fn connect_postgres_lazy(url: &str, schema: Option<&str>) -> Result<Self, sqlx::Error> {
        let mut options = sqlx::postgres::PgConnectOptions::from_str(url)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            // Checked as they go back to the pool (by sqlx); not again as they come out.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let writer = PgWriter::new(url, schema);
        if writer.is_none() {
            tracing::warn!("the read-model writer cannot read this database URL; projection writes go one by one through the pool");
        }
        Ok(ReadDb::Postgres {
            pool,
            writer: writer.map(|w| Arc::new(tokio::sync::Mutex::new(w))),
        })
    }

    /// The same read models with a projection writer of their own, for writes that may go
    /// on beside this one's: PostgreSQL's pipelined writer only (SQLite has one writer per
    /// file; a pool's transactions are many already).
    pub async fn another_writer(&self) -> Option<ReadDb> {
        match self {
            ReadDb::Postgres {
                pool,
                writer: Some(writer),
            } => Some(ReadDb::Postgres {
                pool: pool.clone(),
                writer: Some(Arc::new(tokio::sync::Mutex::new(
                    writer.lock().await.another(),
                ))),
            }),
            _ => None,
        }
    }

    /// Tells the native SQLite writer whether a rebuild is filling new tables: it then lets
    /// the write-ahead log grow larger between its checkpoints, and a thread of its own copies
    /// the log into the file meanwhile (see [`Checkpointer`]); nothing elsewhere.
    pub async fn filling(&self, filling: bool) -> Result<(), DbError> {
        if let ReadDb::Sqlite {
            writer: Some(writer),
            checkpointer,
            ..
        } = self
        {
            let writer = writer.lock().await;
            let mut running = checkpointer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(running) = running.take() {
                running.stop();
            }
            if filling {
                *running = Checkpointer::start(&writer);
            }
            crate::sqlite_native::checkpoint_pages(&writer, filling)?;
        }
        Ok(())
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// a read-then-write transaction never fails to upgrade.
    pub async fn begin(&self) -> Result<ReadTx, DbError> {
        let kind = match self {
            ReadDb::Sqlite {
                writer: Some(writer),
                ..
            } => TxKind::Native(NativeTx::begin(writer.clone().lock_owned().await)?),
            ReadDb::Sqlite { pool, .. } => {
                TxKind::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            ReadDb::Postgres {
                writer: Some(writer),
                ..
            } => TxKind::Pipelined(PgTx::begin(writer.clone().lock_owned().await).await?),
            ReadDb::Postgres { pool, .. } => TxKind::Postgres(pool.begin().await?),
        };
        Ok(ReadTx {
            kind,
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    pub async fn fetch_all(&self, sql: &str, args: &[Arg]) -> Result<Vec<DbRow>, sqlx::Error> {
        Ok(match self {
            ReadDb::Sqlite { pool, .. } => bind_all!(sqlx::query(sql), args, sqlite)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            ReadDb::Postgres { pool, .. } => bind_all!(sqlx::query(sql), args, postgres)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    pub async fn fetch_optional(
        &self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<DbRow>, sqlx::Error> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            ReadDb::Sqlite { pool, .. } => bind_all!(sqlx::query(sql), args, sqlite)
                .execute(pool)
                .await?
                .rows_affected(),
            ReadDb::Postgres { pool, .. } => bind_all!(sqlx::query(sql), args, postgres)
                .execute(pool)
                .await?
                .rows_affected(),
        })
    }

    /// Every row of `table`, each column as text, sorted: for comparing read models built
    /// in different ways (live and rebuilt) table by table.
    pub async fn dump_table(&self, table: &str) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
        let rows = self
            .fetch_all(&format!("SELECT * FROM {table}"), &[])
            .await?;
        let mut dump: Vec<Vec<Option<String>>> = rows.iter().map(DbRow::all_as_text).collect();
        dump.sort();
        Ok(dump)
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            ReadDb::Sqlite { .. } => "sqlite",
            ReadDb::Postgres { .. } => "postgres",
        }
    }
}

impl ReadTx {
    /// This transaction's number, unique in the process: what a projector may remember of
    /// what it read holds as long as the number is the same (within one transaction, nothing
    /// else writes its tables: it holds its registry row's lock).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Builds indexes (`CREATE INDEX` statements); on SQLite's native writer with a smaller
    /// page cache, which bounds the memory SQLite sorts their keys in.
    pub async fn build_indexes(&mut self, statements: &[String]) -> Result<(), DbError> {
        if let TxKind::Native(tx) = &mut self.kind {
            tx.build_indexes(statements)?;
            return Ok(());
        }
        for statement in statements {
            self.execute(statement, &[]).await?;
        }
        Ok(())
    }

    /// Runs a write. On PostgreSQL it may be sent later, with the transaction's next read or
    /// its commit, and fail there.
    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<(), DbError> {
        match &mut self.kind {
            TxKind::Native(tx) => tx.execute(sql, args)?,
            TxKind::Sqlite(tx) => {
                bind_all!(sqlx::query(sql), args, sqlite)
                    .execute(&mut **tx)
                    .await?;
            }
            TxKind::Postgres(tx) => {
                bind_all!(sqlx::query(sql), args, postgres)
                    .execute(&mut **tx)
                    .await?;
            }
            TxKind::Pipelined(tx) => tx.execute(sql, args.to_vec()),
        }
        Ok(())
    }

    /// As [`ReadTx::execute`], with the arguments moved where the write is queued to be sent
    /// later (PostgreSQL's pipelined writer) rather than copied: a batch's rows written as
    /// column arrays hold all of its texts.
    pub async fn execute_owned(&mut self, sql: &str, args: Vec<Arg>) -> Result<(), DbError> {
        match &mut self.kind {
            TxKind::Pipelined(tx) => {
                tx.execute(sql, args);
                Ok(())
            }
            _ => self.execute(sql, &args).await,
        }
    }

    pub async fn fetch_optional(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Option<DbRow>, DbError> {
        Ok(self.fetch_all(sql, args).await?.into_iter().next())
    }

    pub async fn fetch_all(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<DbRow>, DbError> {
        Ok(match &mut self.kind {
            TxKind::Native(tx) => tx.fetch_all(sql, args)?,
            TxKind::Sqlite(tx) => bind_all!(sqlx::query(sql), args, sqlite)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            TxKind::Postgres(tx) => bind_all!(sqlx::query(sql), args, postgres)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
            TxKind::Pipelined(tx) => tx
                .fetch_all(sql, args)
                .await?
                .into_iter()
                .map(DbRow::Pipelined)
                .collect(),
        })
    }

    pub async fn commit(self) -> Result<(), DbError> {
        match self.kind {
            TxKind::Sqlite(tx) => Ok(tx.commit().await?),
            TxKind::Native(tx) => Ok(tx.commit()?),
            TxKind::Postgres(tx) => Ok(tx.commit().await?),
            TxKind::Pipelined(tx) => Ok(tx.commit().await?),
        }
    }

    /// Serialises changes to the read models' tables (creating a projector's tables and
    /// views) with every other process on the same database and schema, until commit: two
    /// processes started at once would otherwise both create them, and one would fail. On
    /// SQLite the transaction already holds the database's write lock.
    pub async fn lock_table_changes(&mut self) -> Result<(), DbError> {
        match &self.kind {
            TxKind::Sqlite(_) | TxKind::Native(_) => Ok(()),
            TxKind::Postgres(_) | TxKind::Pipelined(_) => {
                self.fetch_all(
                    "SELECT pg_advisory_xact_lock(hashtext('chatledger.read-tables:' || current_schema())::bigint)",
                    &[],
                )
                .await?;
                Ok(())
            }
        }
    }

    /// Whether this transaction is on PostgreSQL (else on SQLite): for the few statements whose
    /// text differs between the two.
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self.kind, TxKind::Postgres(_) | TxKind::Pipelined(_))
    }

    /// Locks a projector's registry row until commit (on SQLite the transaction already holds
    /// the database's write lock).
    pub fn lock_suffix(&self) -> &'static str {
        match &self.kind {
            TxKind::Sqlite(_) | TxKind::Native(_) => "",
            TxKind::Postgres(_) | TxKind::Pipelined(_) => " FOR UPDATE",
        }
    }
}

impl DbRow {
    fn all_as_text(&self) -> Vec<Option<String>> {
        let width = match self {
            DbRow::Sqlite(row) => row.len(),
            DbRow::Native(values) => values.len(),
            DbRow::Postgres(row) => row.len(),
            DbRow::Pipelined(row) => row.len(),
        };
        (0..width)
            .map(|i| self.text(i).or_else(|| self.i64(i).map(|n| n.to_string())))
            .collect()
    }

    pub fn i64(&self, index: usize) -> Option<i64> {
        match self {
            DbRow::Sqlite(row) => row.try_get::<Option<i64>, _>(index).ok().flatten(),
            DbRow::Native(values) => match values.get(index) {
                Some(rusqlite::types::Value::Integer(v)) => Some(*v),
                _ => None,
            },
            DbRow::Postgres(row) => row.try_get::<Option<i64>, _>(index).ok().flatten(),
            DbRow::Pipelined(row) => row.try_get::<_, Option<i64>>(index).ok().flatten(),
        }
    }

    pub fn text(&self, index: usize) -> Option<String> {
        match self {
            DbRow::Sqlite(row) => row.try_get::<Option<String>, _>(index).ok().flatten(),
            DbRow::Native(values) => match values.get(index) {
                Some(rusqlite::types::Value::Text(v)) => Some(v.clone()),
                _ => None,
            },
            DbRow::Postgres(row) => row.try_get::<Option<String>, _>(index).ok().flatten(),
            DbRow::Pipelined(row) => row.try_get::<_, Option<String>>(index).ok().flatten(),
        }
    }

    pub fn time(&self, index: usize) -> Option<DateTime<Utc>> {
        self.text(index).as_deref().and_then(parse_time)
    }

    pub fn json(&self, index: usize) -> Option<serde_json::Value> {
        self.text(index).and_then(|t| serde_json::from_str(&t).ok())
    }
}
