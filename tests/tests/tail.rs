//! The log's tail: every subscriber sees every event once, in the global order, whether it
//! starts inside the in-memory window, behind it, or before the tail has found the log's end.

use std::sync::Arc;
use std::time::Duration;

use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent, Position};
use chatledger_projections::tail::{LogTail, WINDOW};
use chatledger_tests::db::Backend;
use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::new(
                Uuid::new_v4(),
                "Happened",
                json!({"i": i}),
                Metadata::by("test"),
            )
        })
        .collect()
}

/// Appends `batches` appends of `per` events, spread over a few streams.
async fn append(store: &dyn EventStore, batches: usize, per: usize) {
    for b in 0..batches {
        store
            .append(&format!("s-{}", b % 7), ExpectedVersion::Any, events(per))
            .await
            .unwrap();
    }
}

/// Takes `count` events from `subscriber` and checks they are exactly the log's events after
/// `after`, in order.
async fn check(
    store: &dyn EventStore,
    tail: &LogTail,
    after: Position,
    count: usize,
) -> Vec<Position> {
    let mut subscriber = tail.subscribe(after);
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(30), subscriber.next())
            .await
            .expect("the subscriber keeps up")
            .expect("the stream never ends")
            .expect("reads succeed");
        seen.push(event.position);
    }
    let mut expected = Vec::with_capacity(count);
    let mut at = after;
    while expected.len() < count {
        let batch = store.read_all(at, 1_000).await.unwrap();
        assert!(
            !batch.is_empty(),
            "the log holds {count} events after {after}"
        );
        at = batch.last().unwrap().position;
        expected.extend(batch.iter().map(|e| e.position));
    }
    expected.truncate(count);
    assert_eq!(seen, expected, "every event once, in the global order");
    seen
}

async fn subscribers_at_any_position_see_every_event_once_in_order(backend: Backend) {
    let (_db, store) = backend.open().await;
    // Before the tail starts: these are read from the log, not the window.
    append(store.as_ref(), 30, 1).await;
    let tail = LogTail::new(store.clone());

    // Subscribed before the rest is written: follows the window as it grows past its size.
    let written = (2 * WINDOW / 100 + 1) * 100;
    let early = {
        let (store, tail) = (store.clone(), tail.clone());
        tokio::spawn(async move { check(store.as_ref(), &tail, 10, 20 + written).await })
    };
    append(store.as_ref(), written / 100, 100).await;
    early.await.unwrap();

    // Started from the beginning once the window has moved on: the log first, then the window.
    let total = 30 + written;
    check(store.as_ref(), &tail, 0, total).await;
    // Started from the end: nothing until the next event, then exactly that.
    let head = store.head_position().await.unwrap();
    let late = {
        let (store, tail) = (store.clone(), tail.clone());
        tokio::spawn(async move { check(store.as_ref(), &tail, head, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    append(store.as_ref(), 1, 1).await;
    late.await.unwrap();
}

async fn the_reader_stops_with_its_last_handle(backend: Backend) {
    let (_db, store) = backend.open().await;
    let tail = LogTail::new(store.clone());
    let weak = Arc::downgrade(&store);
    let mut subscriber = tail.subscribe(0);
    append(store.as_ref(), 1, 1).await;
    subscriber.next().await.unwrap().unwrap();
    drop((subscriber, tail, store));
    // The reader held the store; once it has stopped, nothing does.
    for _ in 0..100 {
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the tail's reader outlived every handle");
}

chatledger_tests::on_both_backends!(
    subscribers_at_any_position_see_every_event_once_in_order,
    the_reader_stops_with_its_last_handle,
);
