//! Turning stored rows back into events, and sqlx errors into store errors, for every backend.

use chatledger_core::{EventHash, Metadata, RecordedEvent, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The columns of one `events` row, already taken out of the backend's row type.
pub(crate) struct RawEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub stream: String,
    pub version: i64,
    pub event_type: String,
    pub schema_version: i64,
    pub data: String,
    pub metadata: String,
    pub recorded_at: DateTime<Utc>,
    pub hash: String,
}

impl RawEvent {
    pub(crate) fn into_recorded(self) -> Result<RecordedEvent, StoreError> {
        let at = self.position;
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("event at position {at}: {what}: {e}"))
        };
        let data = serde_json::from_str(&self.data).map_err(|e| corrupt("data is not JSON", &e))?;
        let metadata: Metadata = serde_json::from_str(&self.metadata)
            .map_err(|e| corrupt("metadata is not valid", &e))?;
        let hash: EventHash = self.hash.parse().map_err(|e| corrupt("hash", &e))?;
        Ok(RecordedEvent {
            event_id: self.event_id,
            stream: self.stream,
            version: u64::try_from(self.version).map_err(|e| corrupt("version", &e))?,
            position: u64::try_from(self.position).map_err(|e| corrupt("position", &e))?,
            event_type: self.event_type,
            schema_version: u32::try_from(self.schema_version)
                .map_err(|e| corrupt("schema version", &e))?,
            data,
            metadata,
            recorded_at: self.recorded_at,
            hash,
        })
    }
}

/// Maps a database error to the store's error: connection trouble is `Unavailable` (worth
/// retrying later), a value the database refuses is `Invalid` (the caller's to fix: a NUL
/// character, a key too long for an index), everything else is `Backend`.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("57P01") => {
            StoreError::Unavailable(e.to_string())
        }
        // SQLSTATE 22 (data exception) and 54 (program limit exceeded); SQLite's TOOBIG (18).
        sqlx::Error::Database(ref db)
            if db
                .code()
                .is_some_and(|c| c.starts_with("22") || c.starts_with("54") || c == "18") =>
        {
            StoreError::Invalid(format!("the database refused a value: {}", db.message()))
        }
        other => StoreError::Backend(other.to_string()),
    }
}

/// The name of the unique constraint a database error violated, if it is one.
pub(crate) fn violated_unique(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Some(db.constraint().unwrap_or_default().to_owned())
        }
        _ => None,
    }
}
