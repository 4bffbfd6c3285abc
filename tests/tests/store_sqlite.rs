//! The event-store contract on SQLite, and what is particular to the SQLite store.

use std::sync::Arc;

use chatledger_adapters::{OpenError, SqliteStore};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent};
use chatledger_tests::contract::collect;
use chatledger_tests::db::TempSqlite;
use serde_json::json;
use uuid::Uuid;

async fn sqlite() -> (TempSqlite, Arc<dyn EventStore>) {
    let db = TempSqlite::new();
    let store = db.store().await;
    (db, Arc::new(store))
}

chatledger_tests::event_store_contract!(sqlite);

fn event(n: u32) -> NewEvent {
    NewEvent::new(
        Uuid::new_v4(),
        "Happened",
        json!({"n": n}),
        Metadata::by("test"),
    )
}

#[tokio::test]
async fn the_log_survives_reopening_and_migrations_are_not_reapplied() {
    let db = TempSqlite::new();
    let first = db.store().await;
    first
        .append("s", ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    drop(first);
    let again = db.store().await;
    let events = again.read_stream("s", 0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    let next = again
        .append("s", ExpectedVersion::Exact(1), vec![event(3)])
        .await
        .unwrap();
    assert_eq!(next.stream_version, Some(2));
    chatledger_tests::contract::assert_hash_chains(&again.read_stream("s", 0, 10).await.unwrap());
}

#[tokio::test]
async fn a_follower_sees_appends_made_through_another_connection() {
    // Two stores on one file stand for two processes: the second cannot signal the first's
    // followers, which must still pick its events up.
    let db = TempSqlite::new();
    let reader = db.store().await;
    let other_process = SqliteStore::open(&db.path).await.unwrap();
    let follower = tokio::spawn(collect(reader.follow(0), 3));
    for n in 0..3 {
        other_process
            .append("s", ExpectedVersion::Any, vec![event(n)])
            .await
            .unwrap();
    }
    let seen = follower.await.unwrap();
    assert_eq!(
        seen.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_untouched() {
    let db = TempSqlite::new();
    let garbage = b"this is a text file, not a database\n".repeat(200);
    std::fs::write(&db.path, &garbage).unwrap();
    let err = SqliteStore::open(&db.path)
        .await
        .err()
        .expect("opening garbage fails");
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert!(
        err.to_string().contains("is not a usable SQLite database"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&db.path).unwrap(),
        garbage,
        "the file was left as it was"
    );
}

#[tokio::test]
async fn another_applications_database_is_refused_untouched() {
    let db = TempSqlite::new();
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=rwc", db.path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let err = SqliteStore::open(&db.path)
        .await
        .err()
        .expect("a foreign database is refused");
    assert!(
        matches!(&err, OpenError::Foreign { tables, .. } if tables == &vec!["invoices".to_owned()]),
        "{err:?}"
    );
    use sqlx::Connection;
    let url = format!("sqlite://{}", db.path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        tables,
        vec!["invoices"],
        "no chatledger table was created in it"
    );
}

#[tokio::test]
async fn read_models_an_earlier_release_kept_in_the_log_file_are_dropped() {
    use sqlx::Connection;
    let db = TempSqlite::new();
    let store = db.store().await;
    store
        .append("s", ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    // As an earlier release left it: a generation of `chats` in the log's file, its view and
    // its registry row, holding a customer's name.
    let url = format!("sqlite://{}", db.path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for statement in [
        "CREATE TABLE chats_g2 (chat_id TEXT PRIMARY KEY, customer_name TEXT)",
        "INSERT INTO chats_g2 VALUES ('c1', 'Asha Customer')",
        "CREATE TABLE chat_tags_g2 (chat_id TEXT, tag TEXT)",
        "CREATE VIEW chats AS SELECT * FROM chats_g2",
        "INSERT INTO projections (name, generation, checkpoint, updated_at) VALUES ('chats', 2, 1, 'x')",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }

    let read = chatledger_projections::read_db::ReadDb::open_sqlite(&db.path)
        .await
        .unwrap();
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE name LIKE 'chat%' OR name = 'chats' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(left.is_empty(), "still in the log's file: {left:?}");
    let registered: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM projections")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(registered, 0);
    // The log itself is untouched, and the read models start afresh in their own file.
    assert_eq!(store.read_stream("s", 0, 10).await.unwrap().len(), 1);
    assert!(read
        .fetch_all("SELECT name FROM projections", &[])
        .await
        .unwrap()
        .is_empty());
}

/// Appends reach the database file while the store is open, though too few for a commit to
/// checkpoint them (SQLite's writer does at 1,000 pages): a connection of the store's own
/// copies the write-ahead log into the file, beside the writer.
#[tokio::test]
async fn the_write_ahead_log_is_copied_into_the_file_beside_the_writer() {
    let db = TempSqlite::new();
    let store = db.store().await;
    let file_size = || std::fs::metadata(&db.path).unwrap().len();
    let before = file_size();
    let text = "x".repeat(4_000);
    for n in 0..50 {
        let events = (0..4)
            .map(|i| {
                NewEvent::new(
                    Uuid::new_v4(),
                    "Happened",
                    json!({"n": n * 4 + i, "text": text}),
                    Metadata::by("test"),
                )
            })
            .collect();
        store
            .append(&format!("s-{n}"), ExpectedVersion::NoStream, events)
            .await
            .unwrap();
    }
    // 200 events of 4 KB: about 200 pages of 4 KiB, a fifth of the writer's threshold.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while file_size() < before + 700_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        file_size() >= before + 700_000,
        "the file grew by {} bytes, not by the events' 800 KB",
        file_size() - before
    );
    assert_eq!(store.read_all(0, 1_000).await.unwrap().len(), 200);
}
