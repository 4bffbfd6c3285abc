//! The `EventStore` port: the one log every backend implements.
//!
//! Every implementation passes the same contract suite (`chatledger-tests`), which pins down
//! the rules below.

use std::fmt;

use async_trait::async_trait;
use futures_core::stream::BoxStream;
use uuid::Uuid;

use crate::event::{NewEvent, RecordedEvent};

/// A place in the global order. Positions start at 1; `0` means "before the first event".
pub type Position = u64;

/// What the caller believes about a stream before appending to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
    /// Append whatever the stream holds.
    Any,
}

impl ExpectedVersion {
    /// The expected version that matches a stream whose last version is `current`
    /// (`None` for a stream with no events).
    pub fn from_current(current: Option<u64>) -> Self {
        match current {
            None => ExpectedVersion::NoStream,
            Some(v) => ExpectedVersion::Exact(v),
        }
    }

    /// Whether a stream whose last version is `current` satisfies this expectation.
    pub fn admits(&self, current: Option<u64>) -> bool {
        match (self, current) {
            (ExpectedVersion::Any, _) => true,
            (ExpectedVersion::NoStream, None) => true,
            (ExpectedVersion::Exact(e), Some(c)) => *e == c,
            _ => false,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
            ExpectedVersion::Any => f.write_str("any version"),
        }
    }
}

/// Where one newly stored event landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub version: u64,
    pub position: Position,
}

/// What an append did.
///
/// Appends are idempotent by event id: an event whose id is already in the stream is not
/// stored again, and is listed in `duplicates` instead. A redelivered webhook therefore
/// yields a result with nothing in `stored`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The events written by this call, in order.
    pub stored: Vec<StoredEvent>,
    /// Ids of events that were already in the stream; nothing was written for them.
    pub duplicates: Vec<Uuid>,
    /// The stream's last version after the append (`None`: the stream is still empty).
    pub stream_version: Option<u64>,
}

impl AppendResult {
    /// True when every given event was already stored and nothing new was written.
    pub fn is_duplicate(&self) -> bool {
        self.stored.is_empty() && !self.duplicates.is_empty()
    }
}

/// A failed store operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The stream was not at the expected version. Re-read, re-decide, retry.
    #[error("stream {stream} was expected at {expected} but is at {}", describe_version(*actual))]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        actual: Option<u64>,
    },
    /// An event id given for one stream is already stored in another.
    #[error("event {event_id} is already stored in stream {existing_stream}, not {stream}")]
    EventIdInOtherStream {
        event_id: Uuid,
        stream: String,
        existing_stream: String,
    },
    /// The append itself is malformed (an empty stream name, say).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The backend could not be reached or did not answer.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back as an event.
    #[error("stored event is unreadable: {0}")]
    Corrupt(String),
    /// Any other backend failure.
    #[error("event store failure: {0}")]
    Backend(String),
}

fn describe_version(v: Option<u64>) -> String {
    match v {
        None => "no stream".to_owned(),
        Some(v) => format!("version {v}"),
    }
}

/// The log. Implementations live in `chatledger-adapters`.
///
/// Rules every implementation keeps:
/// - **Optimistic concurrency**: an append succeeds only if the stream is at `expected`;
///   versions in a stream run 0, 1, 2, … without gaps.
/// - **Idempotence**: an event id is stored at most once (see [`AppendResult`]).
/// - **Global order, nothing skipped**: positions increase in the order events become
///   visible, so a reader that has passed position `p` will never later find an event
///   below `p`, however the appends of concurrent writers commit.
/// - **Hash chain**: each event's hash chains to the previous event of its stream
///   ([`crate::canonical`]), computed inside the append.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream`, all or nothing.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Up to `limit` events of `stream`, from version `from_version` on, in order.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Up to `limit` events after position `after` in the global order.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The position of the last visible event (0 for an empty log).
    async fn head_position(&self) -> Result<Position, StoreError>;

    /// Every event after `after`, then every new one as it commits, forever. The stream wakes
    /// on commit rather than on a polling interval. A failed read yields an error item and
    /// the stream carries on from where it was.
    fn follow(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, StoreError>>;

    /// Whether the store answers at all.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The keys kept beside this log (never in it) that seal customers' personal data, when
    /// the backend keeps them.
    fn keys(&self) -> Option<&dyn KeyStore> {
        None
    }
}

/// A conversation's key for sealing personal data, as kept beside the log.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey {
    /// The id sealed events name.
    pub key_id: String,
    pub key: [u8; 32],
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key itself never appears in a log line.
        f.debug_struct("SubjectKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Where the keys that seal each conversation's personal data live: beside the log, outside
/// it, so that destroying one forgets what it sealed while the log never changes.
///
/// A backend writes keys the way it writes the log (through its one writer, in the same group
/// transactions as appends), so that making a key never waits on, or holds up, an append.
/// Keys by their ids, each `None` when destroyed (or never made).
pub type FoundKeys = Vec<(String, Option<[u8; 32]>)>;

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// The key of `stream`, if it has one that was not destroyed.
    async fn stream_key(&self, stream: &str) -> Result<Option<SubjectKey>, StoreError>;

    /// The key of `stream`, making `fresh` its key when it has none. Callers racing to make one
    /// (in one process or several) all get the one that was stored first.
    async fn create_stream_key(
        &self,
        stream: &str,
        fresh: SubjectKey,
    ) -> Result<SubjectKey, StoreError>;

    /// Makes `key` the new key of `stream` and appends `events` (sealed with it) in one go:
    /// a new conversation's first events cost one write, not two. `Ok(None)` when the stream
    /// already has another key (made meanwhile, here or in another process): nothing is
    /// appended, and the caller seals with that key instead.
    async fn append_with_new_key(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        key: SubjectKey,
    ) -> Result<Option<AppendResult>, StoreError>;

    /// A key by its id; `None` once destroyed (or never made).
    async fn key_by_id(&self, key_id: &str) -> Result<Option<[u8; 32]>, StoreError>;

    /// Several keys by their ids, each `None` once destroyed (or never made): a batch of
    /// events from many conversations opened with one read rather than one per key.
    async fn keys_by_id(&self, key_ids: &[String]) -> Result<FoundKeys, StoreError> {
        let mut found = Vec::with_capacity(key_ids.len());
        for key_id in key_ids {
            found.push((key_id.clone(), self.key_by_id(key_id).await?));
        }
        Ok(found)
    }

    /// The streams whose name ends with `suffix` that have a key, with their key ids, by
    /// stream name.
    async fn keyed_streams_ending(&self, suffix: &str)
        -> Result<Vec<(String, String)>, StoreError>;

    /// Destroys the key of `stream`. Destroying a key that is gone does nothing.
    async fn destroy_stream_key(&self, stream: &str) -> Result<(), StoreError>;

    /// Leaves no copy of destroyed keys where the database itself could still read them
    /// (SQLite's write-ahead log, PostgreSQL's dead row versions).
    async fn purge_destroyed_keys(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_admits() {
        assert!(ExpectedVersion::NoStream.admits(None));
        assert!(!ExpectedVersion::NoStream.admits(Some(0)));
        assert!(ExpectedVersion::Exact(3).admits(Some(3)));
        assert!(!ExpectedVersion::Exact(3).admits(Some(4)));
        assert!(!ExpectedVersion::Exact(0).admits(None));
        assert!(ExpectedVersion::Any.admits(None));
        assert!(ExpectedVersion::Any.admits(Some(9)));
        assert_eq!(
            ExpectedVersion::from_current(None),
            ExpectedVersion::NoStream
        );
        assert_eq!(
            ExpectedVersion::from_current(Some(2)),
            ExpectedVersion::Exact(2)
        );
    }

    #[test]
    fn conflict_message_names_both_versions() {
        let e = StoreError::WrongExpectedVersion {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(1),
            actual: None,
        };
        assert_eq!(
            e.to_string(),
            "stream s was expected at version 1 but is at no stream"
        );
    }
}
