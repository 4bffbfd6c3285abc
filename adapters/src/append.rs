//! The part of an append that is the same on every backend: filter out events already
//! stored, check the expected version, give each new event its version and chain hash.
//!
//! A backend reads the stream's head and the already-stored ids inside its write transaction,
//! calls [`plan_append`], and inserts the planned rows in that same transaction.

use std::collections::{HashMap, HashSet};

use chatledger_core::canonical::{canonical_parts, chain_hash_with, HashedFields};
use chatledger_core::{
    AppendResult, EventHash, ExpectedVersion, NewEvent, StoreError, StoredEvent,
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The last event of a stream, as an append needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamHead {
    pub version: u64,
    pub hash: EventHash,
}

/// One row to insert, fully computed; its texts are the appended event's own.
#[derive(Debug, Clone)]
pub(crate) struct PlannedRow<'a> {
    pub event_id: Uuid,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub data: &'a str,
    pub metadata: &'a str,
    pub hash: EventHash,
}

#[derive(Debug, Default)]
pub(crate) struct AppendPlan<'a> {
    pub rows: Vec<PlannedRow<'a>>,
    pub duplicates: Vec<Uuid>,
    /// The stream's last version before the append.
    pub current: Option<u64>,
}

/// The longest stream name: a conversation's holds two ids of at most
/// [`chatledger_core::validate::ID_MAX`] characters each.
const STREAM_NAME_MAX: usize = 1_024;

/// Checks a stream name before any IO.
pub(crate) fn validate(stream: &str, events: &[NewEvent]) -> Result<(), StoreError> {
    if stream.is_empty() {
        return Err(StoreError::Invalid("the stream name is empty".into()));
    }
    // Stream names are keys of an index on every backend: bounded, and text any store takes.
    chatledger_core::validate::text("stream", stream, STREAM_NAME_MAX)
        .map_err(|refused| StoreError::Invalid(refused.to_string()))?;
    if let Some(e) = events.iter().find(|e| e.event_type.is_empty()) {
        return Err(StoreError::Invalid(format!(
            "event {} has an empty type",
            e.event_id
        )));
    }
    Ok(())
}

/// Decides what an append writes.
///
/// `existing` holds `(event_id, stream)` for those of the given ids that are already stored.
/// An id stored in this stream is a duplicate and is skipped; an id stored in another stream
/// is an error. When nothing new is left, the append succeeds whatever the expected version:
/// a redelivery must be answered as the first delivery was.
pub(crate) fn plan_append<'a>(
    stream: &str,
    expected: ExpectedVersion,
    events: &'a [PreparedEvent],
    existing: &[(Uuid, String)],
    head: Option<StreamHead>,
    recorded_at: DateTime<Utc>,
) -> Result<AppendPlan<'a>, StoreError> {
    let mut seen: HashSet<Uuid> = HashSet::with_capacity(events.len());
    let mut plan = AppendPlan {
        current: head.map(|h| h.version),
        ..AppendPlan::default()
    };
    let mut fresh: Vec<&PreparedEvent> = Vec::with_capacity(events.len());
    for prepared in events {
        let event = &prepared.event;
        if let Some((_, other)) = existing.iter().find(|(id, _)| *id == event.event_id) {
            if other != stream {
                return Err(StoreError::EventIdInOtherStream {
                    event_id: event.event_id,
                    stream: stream.to_owned(),
                    existing_stream: other.clone(),
                });
            }
            plan.duplicates.push(event.event_id);
        } else if !seen.insert(event.event_id) {
            // The same id twice in one batch: the first is stored, the second is its duplicate.
            plan.duplicates.push(event.event_id);
        } else {
            fresh.push(prepared);
        }
    }
    if fresh.is_empty() {
        return Ok(plan);
    }
    if !expected.admits(plan.current) {
        return Err(StoreError::WrongExpectedVersion {
            stream: stream.to_owned(),
            expected,
            actual: plan.current,
        });
    }
    let mut previous = head.map(|h| h.hash).unwrap_or(EventHash::GENESIS);
    let first_version = head.map(|h| h.version + 1).unwrap_or(0);
    for (version, prepared) in (first_version..).zip(fresh) {
        let event = &prepared.event;
        let fields = HashedFields {
            event_id: event.event_id,
            stream,
            version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data: &event.data,
            metadata: &event.metadata,
            recorded_at,
        };
        let hash = chain_hash_with(&previous, &fields, &prepared.data, &prepared.metadata);
        plan.rows.push(PlannedRow {
            event_id: event.event_id,
            version,
            event_type: &event.event_type,
            schema_version: event.schema_version,
            data: &prepared.data,
            metadata: &prepared.metadata,
            hash,
        });
        previous = hash;
    }
    Ok(plan)
}

/// An event to append with the canonical JSON of its data and metadata, written on the
/// appending caller's task: it depends on nothing the writer learns under the append lock, so
/// the one writer does not write every group's JSON while the lock waits for it.
pub(crate) struct PreparedEvent {
    pub event: NewEvent,
    pub data: String,
    pub metadata: String,
}

/// One append of a group, as both stores queue them for their writer.
pub(crate) struct AppendJob {
    pub stream: String,
    pub expected: ExpectedVersion,
    pub events: Vec<PreparedEvent>,
}

impl PreparedEvent {
    pub(crate) fn new(event: NewEvent) -> Self {
        let (data, metadata) = canonical_parts(&event.data, &event.metadata);
        PreparedEvent {
            event,
            data,
            metadata,
        }
    }
}

impl AppendJob {
    pub(crate) fn new(stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Self {
        AppendJob {
            stream: stream.to_owned(),
            expected,
            events: events.into_iter().map(PreparedEvent::new).collect(),
        }
    }
}

/// A stream's head as the database gave it (its last version and hash), or why it cannot be
/// read.
pub(crate) fn stream_head(
    version: Option<i64>,
    hash: Option<String>,
) -> Result<StreamHead, String> {
    match (version, hash.map(|h| h.parse::<EventHash>())) {
        (Some(version), Some(Ok(hash))) => Ok(StreamHead {
            version: version as u64,
            hash,
        }),
        (_, Some(Err(e))) => Err(e.to_string()),
        _ => Err("the head has no version or hash".to_owned()),
    }
}

/// Plans a group of appends written in one transaction, each against the state the earlier
/// ones leave (so two appends to one stream in one group conflict exactly as they would one
/// after the other). `stored_ids` (the given ids already stored, and where) and `heads` (each
/// named stream's last event, or why it is unreadable) come from the database inside the
/// transaction; both are kept current as appends are planned.
pub(crate) fn plan_group<'a>(
    jobs: &[&'a AppendJob],
    mut stored_ids: HashMap<Uuid, String>,
    mut heads: HashMap<String, Result<StreamHead, String>>,
    recorded_at: DateTime<Utc>,
) -> Vec<Result<AppendPlan<'a>, StoreError>> {
    let mut plans = Vec::with_capacity(jobs.len());
    for job in jobs {
        let existing: Vec<(Uuid, String)> = job
            .events
            .iter()
            .filter_map(|e| {
                stored_ids
                    .get(&e.event.event_id)
                    .map(|s| (e.event.event_id, s.clone()))
            })
            .collect();
        let head = match heads.get(&job.stream) {
            Some(Err(e)) => {
                plans.push(Err(StoreError::Corrupt(format!(
                    "head of stream {}: {e}",
                    job.stream
                ))));
                continue;
            }
            Some(Ok(head)) => Some(*head),
            None => None,
        };
        let plan = plan_append(
            &job.stream,
            job.expected,
            &job.events,
            &existing,
            head,
            recorded_at,
        );
        if let Ok(plan) = &plan {
            for row in &plan.rows {
                stored_ids.insert(row.event_id, job.stream.clone());
            }
            if let Some(last) = plan.rows.last() {
                heads.insert(
                    job.stream.clone(),
                    Ok(StreamHead {
                        version: last.version,
                        hash: last.hash,
                    }),
                );
            }
        }
        plans.push(plan);
    }
    plans
}

/// Each planned append's result, once its rows have the positions the database gave them.
/// An error when a row has no position (the insert did not return it): the group must not
/// commit.
pub(crate) fn results(
    plans: Vec<Result<AppendPlan<'_>, StoreError>>,
    positions: &HashMap<Uuid, u64>,
) -> Result<Vec<Result<AppendResult, StoreError>>, sqlx::Error> {
    let inserted: usize = plans
        .iter()
        .filter_map(|plan| plan.as_ref().ok())
        .map(|plan| plan.rows.len())
        .sum();
    let unreturned = || {
        sqlx::Error::Protocol(format!(
            "{inserted} events inserted but {} positions returned",
            positions.len()
        ))
    };
    let mut results = Vec::with_capacity(plans.len());
    for plan in plans {
        results.push(match plan {
            Ok(plan) => {
                let mut stored = Vec::with_capacity(plan.rows.len());
                for row in &plan.rows {
                    stored.push(StoredEvent {
                        event_id: row.event_id,
                        version: row.version,
                        position: *positions.get(&row.event_id).ok_or_else(unreturned)?,
                    });
                }
                Ok(AppendResult {
                    stream_version: stored.last().map(|s| s.version).or(plan.current),
                    stored,
                    duplicates: plan.duplicates,
                })
            }
            Err(e) => Err(e),
        });
    }
    Ok(results)
}

/// How many times a writer lets other tasks run, at most, for the callers it has just
/// answered to append again before it gathers the next group.
const COMEBACK_TURNS: usize = 8;

/// Gives the callers of a group a writer has just answered a few turns to append again. A
/// caller that appends again at once (one awaiting each append before the next) would
/// otherwise miss the next group by a few microseconds and wait for a whole commit (under the
/// lock, on PostgreSQL); with several callers in a closed loop, groups then alternate between
/// two halves of them. Each turn is a yield to the runtime, returned at once when nothing else
/// is ready, so a writer whose callers do not come back loses microseconds, not a timer's
/// millisecond. It stops as soon as the answered callers are queued again.
pub(crate) async fn wait_for_comebacks<T>(queue: &tokio::sync::mpsc::Receiver<T>, answered: usize) {
    if answered < 2 {
        return;
    }
    let queued = queue.len();
    for _ in 0..COMEBACK_TURNS {
        if queue.len() >= queued + answered {
            break;
        }
        tokio::task::yield_now().await;
    }
}

/// How long, at most, a writer on a thread of its own waits for the callers it has just
/// answered: about what they take to be woken on the runtime's threads and append again.
const COMEBACK_WAIT: std::time::Duration = std::time::Duration::from_micros(100);

/// [`wait_for_comebacks`] for a writer on a thread of its own, whose callers run on other
/// threads meanwhile: it yields its thread until they are queued again, for at most
/// [`COMEBACK_WAIT`].
pub(crate) fn wait_for_comebacks_blocking<T>(
    queue: &tokio::sync::mpsc::Receiver<T>,
    answered: usize,
) {
    if answered < 2 {
        return;
    }
    let back = queue.len() + answered;
    let started = std::time::Instant::now();
    while queue.len() < back && started.elapsed() < COMEBACK_WAIT {
        std::thread::yield_now();
    }
}

/// Counts an append that was answered (`chatledger_events_appended_total`,
/// `chatledger_appends_total` by outcome) and how long it took from the caller's side,
/// waiting for its group included (`chatledger_append_duration_seconds`).
pub(crate) fn measured(
    backend: &'static str,
    started: std::time::Instant,
    result: &Result<AppendResult, StoreError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(StoreError::WrongExpectedVersion { .. }) => "conflict",
        Err(_) => "error",
    };
    metrics::counter!("chatledger_appends_total", "backend" => backend, "outcome" => outcome)
        .increment(1);
    if let Ok(result) = result {
        metrics::counter!("chatledger_events_appended_total", "backend" => backend)
            .increment(result.stored.len() as u64);
    }
    metrics::histogram!("chatledger_append_duration_seconds", "backend" => backend)
        .record(started.elapsed().as_secs_f64());
}

/// How long a write transaction's commit took (`chatledger_commit_duration_seconds`): the
/// disk flush a group of appends waits for.
pub(crate) fn commit_took(backend: &'static str, started: std::time::Instant) {
    metrics::histogram!("chatledger_commit_duration_seconds", "backend" => backend)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatledger_core::Metadata;
    use serde_json::json;

    /// An event as the writer gets it: its canonical JSON already written.
    fn event(n: u128) -> PreparedEvent {
        PreparedEvent::new(NewEvent::new(
            Uuid::from_u128(n),
            "Happened",
            json!({"n": n as u64}),
            Metadata::by("test"),
        ))
    }

    #[test]
    fn versions_continue_from_the_head_and_hashes_chain() {
        let head = StreamHead {
            version: 4,
            hash: EventHash([7; 32]),
        };
        let events = [event(1), event(2)];
        let plan = plan_append(
            "s",
            ExpectedVersion::Exact(4),
            &events,
            &[],
            Some(head),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(
            plan.rows.iter().map(|r| r.version).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_ne!(plan.rows[0].hash, plan.rows[1].hash);
    }

    #[test]
    fn duplicates_are_skipped_even_with_a_stale_expectation() {
        let existing = vec![(Uuid::from_u128(1), "s".to_owned())];
        let events = [event(1)];
        let plan = plan_append(
            "s",
            ExpectedVersion::NoStream,
            &events,
            &existing,
            None,
            Utc::now(),
        )
        .unwrap();
        assert!(plan.rows.is_empty());
        assert_eq!(plan.duplicates, vec![Uuid::from_u128(1)]);
    }

    #[test]
    fn an_id_twice_in_one_batch_is_stored_once() {
        let events = [event(1), event(1)];
        let plan = plan_append("s", ExpectedVersion::Any, &events, &[], None, Utc::now()).unwrap();
        assert_eq!(plan.rows.len(), 1);
        assert_eq!(plan.duplicates, vec![Uuid::from_u128(1)]);
    }

    #[test]
    fn an_id_stored_in_another_stream_is_refused() {
        let existing = vec![(Uuid::from_u128(1), "other".to_owned())];
        let err = plan_append(
            "s",
            ExpectedVersion::Any,
            &[event(1)],
            &existing,
            None,
            Utc::now(),
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::EventIdInOtherStream { .. }));
    }
}
