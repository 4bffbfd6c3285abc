//! The event-store contract: what every [`EventStore`] implementation must do.
//!
//! Each case takes a fresh, empty store. A backend's test file runs them all with
//! [`event_store_contract!`](crate::event_store_contract).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chatledger_core::{
    chain_hash, EventHash, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent,
    StoreError,
};
use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

use crate::load::{self, LoadPlan};

/// Generates one `#[tokio::test]` per contract case. `$setup` is an async fn returning
/// `(guard, Arc<dyn EventStore>)`; the guard keeps the test's database alive.
#[macro_export]
macro_rules! event_store_contract {
    ($setup:path) => {
        $crate::event_store_contract!(@cases $setup;
            append_and_read_back,
            expected_version_conflicts,
            idempotent_append,
            invalid_appends_are_refused,
            global_order_across_streams,
            follow_starts_after_the_given_position,
            follower_sees_concurrent_appends_exactly_once,
            concurrent_appends_are_told_where_their_events_went,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (_guard, store) = $setup().await;
                $crate::contract::$case(store).await;
            }
        )*
    };
}

/// Events appended by one writer in the follower test.
pub const CONCURRENT_TASKS: usize = 16;
pub const EVENTS_PER_TASK: usize = 1_250;

/// How long a follower may take to deliver what was appended before the test fails (a guard
/// against hanging, not a speed requirement).
const DELIVERY_GUARD: Duration = Duration::from_secs(120);

fn event(kind: &str, data: serde_json::Value) -> NewEvent {
    NewEvent::new(Uuid::new_v4(), kind, data, Metadata::by("contract-test"))
}

/// Recomputes every stream's hash chain from what was read back.
pub fn assert_hash_chains(events: &[RecordedEvent]) {
    let mut previous: HashMap<&str, EventHash> = HashMap::new();
    for event in events {
        let prev = previous
            .get(event.stream.as_str())
            .copied()
            .unwrap_or(EventHash::GENESIS);
        let expected = chain_hash(&prev, &event.hashed_fields());
        assert_eq!(
            event.hash, expected,
            "hash chain broken at position {}",
            event.position
        );
        previous.insert(&event.stream, event.hash);
    }
}

/// Checks what a follower delivered: every expected event exactly once, positions strictly
/// increasing, each stream's versions 0, 1, 2, … in order, and intact hash chains.
pub fn assert_complete_and_ordered(seen: &[RecordedEvent], expected: &HashSet<Uuid>) {
    let ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len(), seen.len(), "an event was delivered twice");
    assert_eq!(
        seen.len(),
        expected.len(),
        "delivered {} events, expected {}",
        seen.len(),
        expected.len()
    );
    assert_eq!(
        &ids, expected,
        "delivered events differ from the appended ones"
    );
    for pair in seen.windows(2) {
        assert!(
            pair[0].position < pair[1].position,
            "positions out of order: {} then {}",
            pair[0].position,
            pair[1].position
        );
    }
    let mut next_version: HashMap<&str, u64> = HashMap::new();
    for event in seen {
        let next = next_version.entry(&event.stream).or_insert(0);
        assert_eq!(
            event.version, *next,
            "stream {} skipped or repeated a version",
            event.stream
        );
        *next += 1;
    }
    assert_hash_chains(seen);
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.read_all(after, 1000).await.expect("read_all");
        match batch.last() {
            Some(last) => after = last.position,
            None => return all,
        }
        all.extend(batch);
    }
}

pub async fn append_and_read_back(store: Arc<dyn EventStore>) {
    let mut metadata = Metadata::by("provider:meta");
    metadata.correlation_id = Some(Uuid::new_v4());
    metadata.received_at = Some("2026-11-22T10:00:00.250Z".parse().unwrap());
    metadata.extra.insert("channel".into(), json!("9099039188"));
    let events = vec![
        NewEvent::new(
            Uuid::new_v4(),
            "ChatOpened",
            json!({"chat_id": "c1", "reason": "FirstMessage"}),
            metadata.clone(),
        ),
        NewEvent::new(
            Uuid::new_v4(),
            "MessageReceived",
            json!({"text": "namaste 🙏", "n": 1.5, "nested": {"b": 1, "a": [null, true]}}),
            metadata.clone(),
        ),
        NewEvent {
            schema_version: 3,
            ..event("ReceiptRecorded", json!({"status": "read"}))
        },
    ];
    let result = store
        .append("conversation-a", ExpectedVersion::NoStream, events.clone())
        .await
        .expect("append to a new stream");
    assert_eq!(
        result.stored.iter().map(|s| s.version).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert!(result
        .stored
        .windows(2)
        .all(|w| w[0].position < w[1].position));
    assert_eq!(result.stream_version, Some(2));
    assert!(result.duplicates.is_empty() && !result.is_duplicate());

    let read = store
        .read_stream("conversation-a", 0, 100)
        .await
        .expect("read_stream");
    assert_eq!(read.len(), 3);
    for ((given, got), stored) in events.iter().zip(&read).zip(&result.stored) {
        assert_eq!(got.event_id, given.event_id);
        assert_eq!(got.stream, "conversation-a");
        assert_eq!(got.event_type, given.event_type);
        assert_eq!(got.schema_version, given.schema_version);
        assert_eq!(got.data, given.data);
        assert_eq!(got.metadata, given.metadata);
        assert_eq!(got.version, stored.version);
        assert_eq!(got.position, stored.position);
    }
    assert_hash_chains(&read);
    assert_ne!(read[0].hash, EventHash::GENESIS);

    let tail = store
        .read_stream("conversation-a", 1, 100)
        .await
        .expect("read_stream from 1");
    assert_eq!(
        tail.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let limited = store
        .read_stream("conversation-a", 0, 2)
        .await
        .expect("read_stream limited");
    assert_eq!(limited.len(), 2);
    // "No limit" reads the whole stream (and the whole log), on every backend.
    let unlimited = store
        .read_stream("conversation-a", 0, usize::MAX)
        .await
        .expect("read_stream without a limit");
    assert_eq!(unlimited.len(), 3);
    assert_eq!(
        store
            .read_all(0, usize::MAX)
            .await
            .expect("read_all without a limit")
            .len(),
        3
    );
    assert!(store
        .read_stream("conversation-nobody", 0, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(read_everything(store.as_ref()).await, read);
    assert_eq!(store.head_position().await.unwrap(), read[2].position);
}

pub async fn expected_version_conflicts(store: Arc<dyn EventStore>) {
    let s = "executive-1";
    store
        .append(s, ExpectedVersion::NoStream, vec![event("A", json!({}))])
        .await
        .expect("first append");
    let head = store.head_position().await.unwrap();

    let conflict = |e: StoreError, expected, actual| {
        assert_eq!(
            e,
            StoreError::WrongExpectedVersion {
                stream: s.into(),
                expected,
                actual
            }
        )
    };
    let e = store
        .append(s, ExpectedVersion::NoStream, vec![event("B", json!({}))])
        .await
        .unwrap_err();
    conflict(e, ExpectedVersion::NoStream, Some(0));
    let e = store
        .append(s, ExpectedVersion::Exact(5), vec![event("B", json!({}))])
        .await
        .unwrap_err();
    conflict(e, ExpectedVersion::Exact(5), Some(0));
    let e = store
        .append(
            "executive-2",
            ExpectedVersion::Exact(0),
            vec![event("B", json!({}))],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e,
        StoreError::WrongExpectedVersion {
            stream: "executive-2".into(),
            expected: ExpectedVersion::Exact(0),
            actual: None
        }
    );
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "a refused append wrote nothing"
    );

    let ok = store
        .append(s, ExpectedVersion::Exact(0), vec![event("B", json!({}))])
        .await
        .unwrap();
    assert_eq!(ok.stream_version, Some(1));
    let ok = store
        .append(s, ExpectedVersion::Any, vec![event("C", json!({}))])
        .await
        .unwrap();
    assert_eq!(ok.stream_version, Some(2));
    let ok = store
        .append(
            "executive-3",
            ExpectedVersion::Any,
            vec![event("A", json!({}))],
        )
        .await
        .unwrap();
    assert_eq!(ok.stream_version, Some(0));
    let stale = store
        .append(s, ExpectedVersion::Exact(1), vec![event("D", json!({}))])
        .await
        .unwrap_err();
    conflict(stale, ExpectedVersion::Exact(1), Some(2));
    let types: Vec<String> = store
        .read_stream(s, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(types, vec!["A", "B", "C"]);
}

pub async fn idempotent_append(store: Arc<dyn EventStore>) {
    let s = "conversation-b";
    let first = event("MessageReceived", json!({"wamid": "wamid.1"}));
    let r1 = store
        .append(s, ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    assert_eq!(r1.stored.len(), 1);
    let head = store.head_position().await.unwrap();

    // The same event again (a redelivered webhook), even with a now-stale expectation.
    let r2 = store
        .append(s, ExpectedVersion::NoStream, vec![first.clone()])
        .await
        .unwrap();
    assert!(r2.is_duplicate(), "{r2:?}");
    assert_eq!(r2.duplicates, vec![first.event_id]);
    assert_eq!(r2.stream_version, Some(0));
    assert_eq!(
        store.head_position().await.unwrap(),
        head,
        "a duplicate wrote nothing"
    );
    assert_eq!(store.read_stream(s, 0, 10).await.unwrap().len(), 1);

    // A batch holding an old and a new event stores only the new one.
    let second = event("MessageReceived", json!({"wamid": "wamid.2"}));
    let r3 = store
        .append(
            s,
            ExpectedVersion::Exact(0),
            vec![first.clone(), second.clone()],
        )
        .await
        .unwrap();
    assert_eq!(
        r3.stored.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![second.event_id]
    );
    assert_eq!(r3.duplicates, vec![first.event_id]);
    assert_eq!(r3.stream_version, Some(1));

    // The same id twice in one batch is stored once.
    let third = event("MessageReceived", json!({"wamid": "wamid.3"}));
    let r4 = store
        .append(s, ExpectedVersion::Any, vec![third.clone(), third.clone()])
        .await
        .unwrap();
    assert_eq!(r4.stored.len(), 1);
    assert_eq!(r4.duplicates, vec![third.event_id]);

    // An id already stored in another stream is an error, not a silent duplicate.
    let e = store
        .append("conversation-c", ExpectedVersion::Any, vec![first.clone()])
        .await
        .unwrap_err();
    assert!(
        matches!(e, StoreError::EventIdInOtherStream { .. }),
        "{e:?}"
    );
    assert_eq!(store.read_stream(s, 0, 10).await.unwrap().len(), 3);
    assert!(store
        .read_stream("conversation-c", 0, 10)
        .await
        .unwrap()
        .is_empty());

    // Concurrent redeliveries of one event: exactly one of them stores it.
    let racing = event("MessageReceived", json!({"wamid": "wamid.race"}));
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        let racing = racing.clone();
        tokio::spawn(async move {
            store
                .append("conversation-d", ExpectedVersion::Any, vec![racing])
                .await
        })
    });
    let mut stored = 0;
    for attempt in attempts {
        let result = attempt.await.unwrap().expect("a redelivery succeeds");
        stored += result.stored.len();
    }
    assert_eq!(stored, 1);
    assert_eq!(
        store
            .read_stream("conversation-d", 0, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn invalid_appends_are_refused(store: Arc<dyn EventStore>) {
    let e = store
        .append("", ExpectedVersion::Any, vec![event("A", json!({}))])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    let e = store
        .append("s", ExpectedVersion::Any, vec![event("", json!({}))])
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Invalid(_)), "{e:?}");
    assert_eq!(store.head_position().await.unwrap(), 0);
    let empty = store
        .append("s", ExpectedVersion::Any, vec![])
        .await
        .unwrap();
    assert!(empty.stored.is_empty() && empty.stream_version.is_none());
}

pub async fn global_order_across_streams(store: Arc<dyn EventStore>) {
    let streams = ["s-1", "s-2", "s-3"];
    let mut appended = Vec::new();
    for round in 0..10 {
        for s in streams {
            let e = event("Step", json!({"round": round, "stream": s}));
            appended.push(e.event_id);
            store
                .append(s, ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    }
    let all = read_everything(store.as_ref()).await;
    assert_eq!(
        all.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        appended,
        "read_all returns append order"
    );
    assert_complete_and_ordered(&all, &appended.iter().copied().collect());

    // Paging with `after` neither skips nor repeats.
    let mut paged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.read_all(after, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        paged.extend(page);
    }
    assert_eq!(paged, all);
}

pub async fn follow_starts_after_the_given_position(store: Arc<dyn EventStore>) {
    for i in 0..5 {
        store
            .append(
                "s",
                ExpectedVersion::Any,
                vec![event("Before", json!({"i": i}))],
            )
            .await
            .unwrap();
    }
    let all = read_everything(store.as_ref()).await;
    let from = all[2].position;
    let mut follower = store.follow(from);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(DELIVERY_GUARD, follower.next())
            .await
            .expect("caught-up events arrive");
        seen.push(next.unwrap().unwrap());
    }
    assert_eq!(seen, all[3..].to_vec());

    // Then it waits, and wakes for a commit made after it caught up.
    let later = event("After", json!({}));
    let writer = store.clone();
    let later_id = later.event_id;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer
            .append("s", ExpectedVersion::Any, vec![later])
            .await
            .unwrap();
    });
    let next = tokio::time::timeout(DELIVERY_GUARD, follower.next())
        .await
        .expect("the live event arrives");
    assert_eq!(next.unwrap().unwrap().event_id, later_id);
}

/// 16 tasks append 20,000 events to their own and to shared streams while a follower that
/// started first reads along; it must see each event exactly once, in order.
pub async fn follower_sees_concurrent_appends_exactly_once(store: Arc<dyn EventStore>) {
    let plan = LoadPlan {
        writer: "in-process".into(),
        tasks: CONCURRENT_TASKS,
        events_per_task: EVENTS_PER_TASK,
        shared_streams: 4,
    };
    let total = plan.tasks * plan.events_per_task;
    let follower = tokio::spawn(collect(store.follow(0), total));
    let appended: HashSet<Uuid> = load::run(store.clone(), &plan).await.into_iter().collect();
    assert_eq!(appended.len(), total);
    let seen = follower.await.expect("the follower task");
    assert_complete_and_ordered(&seen, &appended);
    assert_eq!(
        read_everything(store.as_ref()).await,
        seen,
        "the follower saw exactly what read_all sees"
    );
}

/// 16 tasks append two events at a time, each to its own stream and to one they share, so
/// that the store writes many appends in one transaction: each append must be answered with
/// the versions and positions its own events were given, as read back.
pub async fn concurrent_appends_are_told_where_their_events_went(store: Arc<dyn EventStore>) {
    let mut tasks = Vec::new();
    for task in 0..CONCURRENT_TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut told = Vec::new();
            for round in 0..25 {
                let stream = if round % 5 == 0 {
                    "shared".to_owned()
                } else {
                    format!("own-{task}")
                };
                let events = vec![
                    event("Told", json!({"task": task, "round": round})),
                    event(
                        "Told",
                        json!({"task": task, "round": round, "second": true}),
                    ),
                ];
                let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
                let result = store
                    .append(&stream, ExpectedVersion::Any, events)
                    .await
                    .expect("append");
                assert_eq!(result.stored.len(), 2, "both events stored");
                for (id, stored) in ids.iter().zip(&result.stored) {
                    assert_eq!(stored.event_id, *id, "answered in the order given");
                    told.push((*id, stream.clone(), stored.version, stored.position));
                }
            }
            told
        }));
    }
    let mut told = Vec::new();
    for task in tasks {
        told.extend(task.await.expect("an appending task"));
    }
    let read: HashMap<Uuid, (String, u64, u64)> = read_everything(store.as_ref())
        .await
        .into_iter()
        .map(|e| (e.event_id, (e.stream, e.version, e.position)))
        .collect();
    assert_eq!(read.len(), told.len());
    for (id, stream, version, position) in told {
        assert_eq!(
            read.get(&id),
            Some(&(stream, version, position)),
            "event {id} was told another place than it has"
        );
    }
}

/// Collects `count` events from a follower, failing the test if they do not come.
pub async fn collect(
    mut follower: futures_util::stream::BoxStream<'static, Result<RecordedEvent, StoreError>>,
    count: usize,
) -> Vec<RecordedEvent> {
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        match tokio::time::timeout(DELIVERY_GUARD, follower.next()).await {
            Ok(Some(Ok(event))) => seen.push(event),
            Ok(Some(Err(e))) => panic!("the follower failed: {e}"),
            Ok(None) => panic!("the follower ended after {} events", seen.len()),
            Err(_) => panic!(
                "the follower delivered {} of {count} events and then nothing",
                seen.len()
            ),
        }
    }
    seen
}
