//! The event-store contract on PostgreSQL, and what is particular to it: several writing
//! processes, late commits, an unreachable server.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chatledger_adapters::{OpenError, PostgresStore};
use chatledger_core::canonical::{canonical_json_string, truncate_to_micros, HashedFields};
use chatledger_core::{chain_hash, EventHash, EventStore, ExpectedVersion, Metadata, NewEvent};
use chatledger_tests::contract::{
    assert_complete_and_ordered, collect, CONCURRENT_TASKS, EVENTS_PER_TASK,
};
use chatledger_tests::db::PgSchema;
use futures_util::StreamExt;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

async fn postgres() -> (PgSchema, Arc<dyn EventStore>) {
    let schema = PgSchema::create().await;
    let store = schema.store().await;
    (schema, Arc::new(store))
}

chatledger_tests::event_store_contract!(postgres);

/// Two OS processes, each with 16 appending tasks, write 20,000 events between them (to
/// streams of their own and to streams they share) while a follower here reads along.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_sees_appends_from_two_processes_exactly_once() {
    let schema = PgSchema::create().await;
    let store = schema.store().await;
    let per_process = CONCURRENT_TASKS * EVENTS_PER_TASK / 2;
    let follower = tokio::spawn(collect(store.follow(0), 2 * per_process));

    let events_per_task = (per_process / CONCURRENT_TASKS).to_string();
    let tasks = CONCURRENT_TASKS.to_string();
    let writers: Vec<_> = ["process-a", "process-b"]
        .into_iter()
        .map(|writer| {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_append_load"))
                .args([&schema.url, &schema.name, writer, &tasks, &events_per_task])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the append_load helper starts")
        })
        .collect();
    let mut appended = HashSet::new();
    for writer in writers {
        let output = writer.wait_with_output().await.unwrap();
        assert!(
            output.status.success(),
            "a writer process failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            appended.insert(Uuid::parse_str(line).unwrap());
        }
    }
    assert_eq!(appended.len(), 2 * per_process);
    let seen = follower.await.unwrap();
    assert_complete_and_ordered(&seen, &appended);
}

/// A writer that has drawn a position but not yet committed holds back every later append,
/// so a follower can never pass its position and miss it when it finally commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_that_commits_late_is_not_skipped() {
    let schema = PgSchema::create().await;
    let store = Arc::new(schema.store().await);
    store
        .append("early", ExpectedVersion::NoStream, vec![event("Early")])
        .await
        .unwrap();
    let mut follower = store.follow(0);
    assert_eq!(follower.next().await.unwrap().unwrap().stream, "early");

    // A slow writer: takes the append lock, inserts (drawing its position), then stalls.
    let mut slow = PgConnection::connect(&format!(
        "{}?options=-csearch_path%3D{}",
        schema.url, schema.name
    ))
    .await
    .unwrap();
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(store.append_lock_key())
        .execute(&mut slow)
        .await
        .unwrap();
    let slow_event = event("Slow");
    insert_by_hand(&mut slow, "slow", &slow_event).await;

    // A fast writer appends meanwhile; its append must wait for the slow one.
    let fast = store.clone();
    let fast_append = tokio::spawn(async move {
        fast.append("fast", ExpectedVersion::NoStream, vec![event("Fast")])
            .await
    });
    let nothing_yet = tokio::time::timeout(Duration::from_millis(500), follower.next()).await;
    assert!(
        nothing_yet.is_err(),
        "the follower got an event past an uncommitted one: {nothing_yet:?}"
    );
    assert!(
        !fast_append.is_finished(),
        "an append overtook an uncommitted one"
    );

    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    fast_append.await.unwrap().unwrap();
    let next = follower.next().await.unwrap().unwrap();
    let after = follower.next().await.unwrap().unwrap();
    assert_eq!(
        (next.stream.as_str(), after.stream.as_str()),
        ("slow", "fast")
    );
    assert!(next.position < after.position);
}

#[tokio::test]
async fn an_unreachable_server_is_reported_not_hidden() {
    // Nothing listens on port 1.
    let store =
        PostgresStore::connect_lazy("postgres://postgres:hunter2@127.0.0.1:1/postgres", None)
            .unwrap();
    let err = store.check_connection().await.unwrap_err();
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(
        !message.contains("hunter2"),
        "the password leaked: {message}"
    );
    assert!(store.ping().await.is_err());
    let append = store
        .append("s", ExpectedVersion::Any, vec![event("A")])
        .await
        .unwrap_err();
    assert!(
        matches!(append, chatledger_core::StoreError::Unavailable(_)),
        "{append:?}"
    );
}

#[tokio::test]
async fn another_applications_schema_is_refused() {
    let schema = PgSchema::create().await;
    let mut conn = PgConnection::connect(&schema.url).await.unwrap();
    sqlx::query(&format!("CREATE TABLE {}.invoices (id int)", schema.name))
        .execute(&mut conn)
        .await
        .unwrap();
    let store = PostgresStore::connect_lazy(&schema.url, Some(&schema.name)).unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(&err, OpenError::Foreign { tables, .. } if tables == &vec!["invoices".to_owned()]),
        "{err:?}"
    );
}

fn event(kind: &str) -> NewEvent {
    NewEvent::new(Uuid::new_v4(), kind, json!({}), Metadata::by("test"))
}

async fn insert_by_hand(conn: &mut PgConnection, stream: &str, event: &NewEvent) {
    let recorded_at = truncate_to_micros(chrono::Utc::now());
    let fields = HashedFields {
        event_id: event.event_id,
        stream,
        version: 0,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        data: &event.data,
        metadata: &event.metadata,
        recorded_at,
    };
    let hash = chain_hash(&EventHash::GENESIS, &fields);
    sqlx::query(
        "INSERT INTO events (event_id, stream, version, event_type, schema_version, data, metadata, recorded_at, hash) \
         VALUES ($1, $2, 0, $3, 1, $4, $5, $6, $7)",
    )
    .bind(event.event_id)
    .bind(stream)
    .bind(&event.event_type)
    .bind(canonical_json_string(&event.data))
    .bind(canonical_json_string(&serde_json::to_value(&event.metadata).unwrap()))
    .bind(recorded_at)
    .bind(hash.to_string())
    .execute(conn)
    .await
    .unwrap();
}
