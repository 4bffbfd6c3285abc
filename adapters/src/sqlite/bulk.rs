//! Reading the log (replay, a reactor folding the log at start, followers catching up, a
//! stream loaded for a command) through SQLite's own API on a blocking thread: rows are
//! stepped and turned into events where they are read, instead of each crossing to an async
//! task one by one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chatledger_core::{Position, RecordedEvent, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{native_error, SELECT_EVENT};
use crate::rows::RawEvent;

/// Read-only connections to the log's file, opened as needed and kept for the next read.
pub(super) struct BulkReader {
    path: PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

/// How many idle connections are kept (more readers at once open more, then close them).
const KEPT: usize = 4;

impl BulkReader {
    pub(super) fn new(path: &Path) -> Self {
        BulkReader {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn connection(&self) -> Result<rusqlite::Connection, StoreError> {
        if let Some(conn) = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Ok(conn);
        }
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(native_error)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(native_error)?;
        Ok(conn)
    }

    fn give_back(&self, conn: rusqlite::Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEPT {
            idle.push(conn);
        }
    }

    /// Up to `limit` events after `after`, in order.
    pub(super) fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(
            "WHERE position > ?1 ORDER BY position LIMIT ?2",
            rusqlite::params![after as i64, limit_of(limit)],
        )
    }

    /// Up to `limit` events of `stream` from `from_version`, in order.
    pub(super) fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.read(
            "WHERE stream = ?1 AND version >= ?2 ORDER BY version LIMIT ?3",
            rusqlite::params![stream, from_version as i64, limit_of(limit)],
        )
    }

    fn read(
        &self,
        condition: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let conn = self.connection()?;
        let read = read(&conn, condition, params);
        // A connection that failed is not kept: the next read opens a fresh one.
        if read.is_ok() {
            self.give_back(conn);
        }
        read
    }
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The events `condition` selects, each row turned into an event as it is stepped.
fn read(
    conn: &rusqlite::Connection,
    condition: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut statement = conn
        .prepare_cached(&format!("{SELECT_EVENT} {condition}"))
        .map_err(native_error)?;
    let mut rows = statement.query(params).map_err(native_error)?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(native_error)? {
        let position: i64 = row.get(0).map_err(native_error)?;
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("event at position {position}: {what}"));
        let event_id: String = row.get(1).map_err(native_error)?;
        let recorded_at: String = row.get(8).map_err(native_error)?;
        events.push(
            RawEvent {
                position,
                event_id: Uuid::parse_str(&event_id)
                    .map_err(|_| corrupt("event_id is not a UUID"))?,
                stream: row.get(2).map_err(native_error)?,
                version: row.get(3).map_err(native_error)?,
                event_type: row.get(4).map_err(native_error)?,
                schema_version: row.get(5).map_err(native_error)?,
                data: row.get(6).map_err(native_error)?,
                metadata: row.get(7).map_err(native_error)?,
                recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
                    .map_err(|_| corrupt("recorded_at is not RFC 3339"))?
                    .with_timezone(&Utc),
                hash: row.get(9).map_err(native_error)?,
            }
            .into_recorded()?,
        );
    }
    Ok(events)
}
