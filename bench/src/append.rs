//! Appends through the store port against the plainest SQL inserting the same rows (the
//! ceiling).

use crate::*;

pub(crate) fn small_event(n: usize) -> NewEvent {
    NewEvent::new(
        Uuid::new_v4(),
        "BenchEventAppended",
        json!({"n": n, "text": "a message of an ordinary length, about as long as a customer writes one", "customer": "+919638120888", "status": "delivered"}),
        Metadata::by("bench"),
    )
}

/// The append measurement: the engine, and the ceiling with the rows per transaction the
/// engine's group commit achieved.
pub(crate) struct Appends {
    pub(crate) engine: f64,
    pub(crate) ceiling: f64,
    pub(crate) rows_per_commit: usize,
}

/// 16 appenders, one event per append (as webhooks append), against one connection inserting
/// the same rows with no engine logic, batched the same way: as many rows per transaction as
/// the engine's group commit put in each of its own.
pub(crate) async fn append_against_ceiling(db: &Db, events: usize) -> Result<Appends, String> {
    const WRITERS: usize = 16;
    const ROUNDS: usize = 3;
    let (store, counts): (Arc<dyn EventStore>, Box<dyn Fn() -> WriterCounts>) = match &db.kind {
        DbKind::Sqlite(path) => {
            let store = Arc::new(SqliteStore::open(path).await.map_err(|e| e.to_string())?);
            let counted = store.clone();
            (store, Box::new(move || counted.writer_counts()))
        }
        DbKind::Postgres { .. } => {
            let store = PostgresStore::connect_lazy(&db.url(), None).map_err(|e| e.to_string())?;
            store.migrate().await.map_err(|e| e.to_string())?;
            let store = Arc::new(store);
            let counted = store.clone();
            (store, Box::new(move || counted.writer_counts()))
        }
    };
    // Engine and ceiling take turns, ROUNDS times each, and each reports its best round: the
    // disk's flush time on a virtual machine drifts from second to second, and a ceiling
    // taken in a slow moment (or an engine figure in a fast one) would make the ratio a
    // measure of that drift.
    let mut engine: f64 = 0.0;
    let mut ceiling: f64 = 0.0;
    let mut rows_per_commit = 1;
    let mut ceiling_conn: Option<CeilingConn> = None;
    for round in 0..ROUNDS {
        let before = counts();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..events / WRITERS {
                    let stream = format!("bench-{round}-{writer}-{}", i / 10);
                    store
                        .append(&stream, ExpectedVersion::Any, vec![small_event(i)])
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(())
            }));
        }
        for task in tasks {
            task.await.map_err(|e| e.to_string())??;
        }
        engine = engine.max((events / WRITERS * WRITERS) as f64 / started.elapsed().as_secs_f64());
        let after = counts();
        let commits = (after.commits - before.commits).max(1);
        if round == 0 {
            rows_per_commit = (((after.requests - before.requests) as f64 / commits as f64).round()
                as usize)
                .max(1);
        }

        let rows: Vec<(String, String, String)> = (0..events)
            .map(|i| {
                let e = small_event(i);
                (
                    e.event_id.to_string(),
                    format!("bench-{round}-{}", i / 10),
                    e.data.to_string(),
                )
            })
            .collect();
        if ceiling_conn.is_none() {
            ceiling_conn = Some(CeilingConn::open(db).await?);
        }
        let conn = ceiling_conn.as_mut().expect("opened above");
        let started = Instant::now();
        conn.insert(&rows, rows_per_commit).await?;
        ceiling = ceiling.max(events as f64 / started.elapsed().as_secs_f64());
    }
    Ok(Appends {
        engine,
        ceiling,
        rows_per_commit,
    })
}

/// The plainest way to insert the same rows: one connection, plain SQL, no engine logic.
pub(crate) enum CeilingConn {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl CeilingConn {
    pub(crate) async fn open(db: &Db) -> Result<Self, String> {
        let e = |e: sqlx::Error| e.to_string();
        Ok(match &db.kind {
            DbKind::Sqlite(path) => {
                use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
                let options = SqliteConnectOptions::new()
                    .filename(path.with_file_name("ceiling.db"))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .map_err(e)?;
                sqlx::query("CREATE TABLE ceiling (position INTEGER PRIMARY KEY, event_id TEXT NOT NULL, stream TEXT NOT NULL, data TEXT NOT NULL, recorded_at TEXT NOT NULL)")
                    .execute(&mut conn).await.map_err(e)?;
                CeilingConn::Sqlite(conn)
            }
            DbKind::Postgres { .. } => {
                let mut conn = sqlx::PgConnection::connect(&db.url()).await.map_err(e)?;
                sqlx::query("CREATE TABLE ceiling (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_id TEXT NOT NULL, stream TEXT NOT NULL, data TEXT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL)")
                    .execute(&mut conn).await.map_err(e)?;
                CeilingConn::Postgres(conn)
            }
        })
    }

    /// Inserts `rows`, `per_commit` to a transaction.
    pub(crate) async fn insert(
        &mut self,
        rows: &[(String, String, String)],
        per_commit: usize,
    ) -> Result<(), String> {
        let e = |e: sqlx::Error| e.to_string();
        for chunk in rows.chunks(per_commit) {
            match self {
                CeilingConn::Sqlite(conn) => {
                    let mut tx = conn.begin().await.map_err(e)?;
                    for (id, stream, data) in chunk {
                        sqlx::query("INSERT INTO ceiling (event_id, stream, data, recorded_at) VALUES (?, ?, ?, ?)")
                            .bind(id).bind(stream).bind(data).bind(Utc::now().to_rfc3339())
                            .execute(&mut *tx).await.map_err(e)?;
                    }
                    tx.commit().await.map_err(e)?;
                }
                CeilingConn::Postgres(conn) => {
                    let mut tx = conn.begin().await.map_err(e)?;
                    for (id, stream, data) in chunk {
                        sqlx::query("INSERT INTO ceiling (event_id, stream, data, recorded_at) VALUES ($1, $2, $3, now())")
                            .bind(id).bind(stream).bind(data)
                            .execute(&mut *tx).await.map_err(e)?;
                    }
                    tx.commit().await.map_err(e)?;
                }
            }
        }
        Ok(())
    }
}
