//! The read models' native SQLite writer: one rusqlite connection in this process that every
//! projector writes through (no thread hop per statement), and its transactions.

use std::path::Path;
use std::time::Duration;

use crate::read_db::DbRow;
use crate::sql::Arg;

/// Opens the native writer on the read-model file at `path`.
pub(crate) fn open_native(path: &Path) -> Result<rusqlite::Connection, rusqlite::Error> {
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(30))?;
    conn.set_prepared_statement_cache_capacity(NATIVE_STATEMENT_CACHE);
    // Temporary storage stays SQLite's default (a file): a statement journal stays in memory
    // up to 64 KiB, which every row's statement fits in; the rebuild's large statements
    // (dropping a generation's tables, whose every page secure_delete overwrites; building an
    // index) spill to disk instead of growing the process by the tables' size.
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA secure_delete = ON;
         PRAGMA cache_size = -{NATIVE_CACHE_KIB};"
    ))?;
    Ok(conn)
}

/// Sets how many pages the write-ahead log may hold before a commit checkpoints it: SQLite's
/// default live, more while a rebuild fills new tables (`filling`). A fill's commits write
/// the same pages (index and table pages being filled) again and again; with the larger log
/// each is copied into the file once per checkpoint instead of several times (replay of
/// 1,000,000 events, SQLite: 56,441 and 59,185 events/s with the default, 70,042 and 70,263
/// with 8,000 pages). Live it stays small: a checkpoint holds up the batch that runs it, and
/// a larger one measured a higher projection lag and SLA alert delay p99 under load.
pub(crate) fn checkpoint_pages(
    conn: &rusqlite::Connection,
    filling: bool,
) -> Result<(), rusqlite::Error> {
    let pages = if filling {
        FILL_CHECKPOINT_PAGES
    } else {
        LIVE_CHECKPOINT_PAGES
    };
    conn.execute_batch(&format!("PRAGMA wal_autocheckpoint = {pages}"))
}

/// While a rebuild fills new tables, copies the write-ahead log into the file from a
/// connection and a thread of its own, so that the writer's commits find little left to copy
/// when they checkpoint (a commit that checkpoints must first copy everything no reader needs;
/// on the writer's thread that was a tenth of a rebuild's time). The writer's own checkpoints
/// still run, at [`FILL_CHECKPOINT_PAGES`]: only one that finds the log wholly copied lets the
/// next commit start the log over from its beginning.
#[derive(Debug)]
pub struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database the writer `conn` writes; `None` when a second
    /// connection or its thread cannot be had (the writer then checkpoints alone, as live).
    pub(crate) fn start(conn: &rusqlite::Connection) -> Option<Self> {
        let own = rusqlite::Connection::open(conn.path()?).ok()?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("read-model checkpoints".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // PASSIVE waits for nobody: it copies what it can and leaves the rest (and
                    // skips a turn while the writer checkpoints).
                    if let Err(e) =
                        own.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::debug!(error = %e, "a background checkpoint failed; the writer's own checkpoints go on");
                    }
                }
            })
            .ok()?;
        Some(Checkpointer { stop, thread })
    }

    /// Stops checkpointing, once the pass under way (if any) is done.
    pub(crate) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// How often the background checkpointer copies the write-ahead log while a rebuild fills.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(50);

/// Pages of write-ahead log between checkpoints live (SQLite's default) and while a rebuild
/// fills new tables.
const LIVE_CHECKPOINT_PAGES: u32 = 1_000;
const FILL_CHECKPOINT_PAGES: u32 = 8_000;
/// Prepared statements the native writer keeps: every projector's, for two generations.
const NATIVE_STATEMENT_CACHE: usize = 512;
/// The native writer's page cache, in KiB (SQLite's default is 2 MiB): read models are read
/// back by key while they are written, all over the file.
const NATIVE_CACHE_KIB: i64 = 65_536;
/// The native writer's page cache while it builds indexes, in KiB: SQLite sorts an index's
/// keys in memory up to the page cache's size before it spills them to a file, so a rebuild's
/// indexes built with the whole cache took as much memory again at its end.
const INDEX_BUILD_CACHE_KIB: i64 = 8_192;

/// A transaction on the native SQLite writer. Dropped without [`ReadTx::commit`], it rolls
/// back.
pub(crate) struct NativeTx {
    conn: tokio::sync::OwnedMutexGuard<rusqlite::Connection>,
    open: bool,
}

impl NativeTx {
    pub(crate) fn begin(
        conn: tokio::sync::OwnedMutexGuard<rusqlite::Connection>,
    ) -> Result<Self, rusqlite::Error> {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(NativeTx { conn, open: true })
    }

    /// `sql` prepared (once) with `args` bound to its `$N` parameters by number, as sqlx does.
    fn bound<'c>(
        conn: &'c rusqlite::Connection,
        sql: &str,
        args: &[Arg],
    ) -> Result<rusqlite::CachedStatement<'c>, rusqlite::Error> {
        let mut statement = conn.prepare_cached(sql)?;
        for index in 1..=statement.parameter_count() {
            let number = statement
                .parameter_name(index)
                .and_then(|name| name.trim_start_matches(['$', '?']).parse::<usize>().ok())
                .unwrap_or(index);
            let arg = args.get(number - 1).unwrap_or(&Arg::Null);
            statement.raw_bind_parameter(index, arg)?;
        }
        Ok(statement)
    }

    pub(crate) fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<(), rusqlite::Error> {
        let mut statement = Self::bound(&self.conn, sql, args)?;
        statement.raw_execute()?;
        Ok(())
    }

    pub(crate) fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<DbRow>, rusqlite::Error> {
        let mut statement = Self::bound(&self.conn, sql, args)?;
        let width = statement.column_count();
        let mut rows = statement.raw_query();
        let mut all = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(row.get::<_, rusqlite::types::Value>(i)?);
            }
            all.push(DbRow::Native(values));
        }
        Ok(all)
    }

    /// Runs `statements` (index builds) with the smaller page cache, and sets it back.
    pub(crate) fn build_indexes(&mut self, statements: &[String]) -> Result<(), rusqlite::Error> {
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{INDEX_BUILD_CACHE_KIB}"))?;
        let built = statements
            .iter()
            .try_for_each(|statement| self.execute(statement, &[]));
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{NATIVE_CACHE_KIB}"))?;
        built
    }

    pub(crate) fn commit(mut self) -> Result<(), rusqlite::Error> {
        self.open = false;
        self.conn.execute_batch("COMMIT")
    }
}

impl Drop for NativeTx {
    fn drop(&mut self) {
        if self.open {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl rusqlite::ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef};
        Ok(match self {
            Arg::Int(v) => ToSqlOutput::Owned(Value::Integer(*v)),
            Arg::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Null => ToSqlOutput::Owned(Value::Null),
            Arg::Ints(v) => ToSqlOutput::Owned(Value::Text(crate::sql::json_array(v))),
            Arg::Texts(v) => ToSqlOutput::Owned(Value::Text(crate::sql::json_array(v))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rows the writer committed reach the database file without the writer checkpointing.
    #[test]
    fn the_checkpointer_copies_the_log_into_the_file_while_the_writer_does_not() {
        let dir = std::env::temp_dir().join(format!("chatledger-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("read-models.db");
        let writer = open_native(&path).unwrap();
        writer
            .execute_batch(
                "PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO t SELECT printf('%.1000c', 'x') FROM n;",
            )
            .unwrap();
        let file_size = || std::fs::metadata(&path).unwrap().len();
        assert!(file_size() < 100_000, "the rows are in the log only");

        let checkpointer = Checkpointer::start(&writer).expect("a second connection");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while file_size() < 2_000_000 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        checkpointer.stop();
        assert!(file_size() >= 2_000_000, "the file holds the 2,000 rows");
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
