//! A database of its own for every test.

use std::path::PathBuf;

use chatledger_adapters::{PostgresStore, SqliteStore};
use sqlx::{Connection, PgConnection};

/// The environment variable naming the PostgreSQL server tests use.
pub const PG_URL_ENV: &str = "CHATLEDGER_TEST_DATABASE_URL";
/// The server tests use when the variable is unset: the one on this machine.
pub const PG_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The PostgreSQL server URL for tests.
pub fn pg_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| PG_DEFAULT_URL.to_owned())
}

/// A SQLite database file in a temporary directory, removed with it.
pub struct TempSqlite {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl TempSqlite {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("chatledger.db");
        TempSqlite { dir, path }
    }

    pub async fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.path)
            .await
            .expect("the SQLite store opens")
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh schema on the test PostgreSQL server, dropped when this value is dropped.
pub struct PgSchema {
    pub url: String,
    pub name: String,
}

impl PgSchema {
    /// Creates the schema. Fails the test, saying how to start the server, when PostgreSQL
    /// cannot be reached: a PostgreSQL test never passes without PostgreSQL.
    pub async fn create() -> Self {
        let url = pg_url();
        let mut conn = connect_or_explain(&url).await;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("CREATE SCHEMA");
        let _ = conn.close().await;
        PgSchema { url, name }
    }

    /// The store on this schema, migrated.
    pub async fn store(&self) -> PostgresStore {
        let store = PostgresStore::connect_lazy(&self.url, Some(&self.name)).expect("a valid URL");
        store.migrate().await.expect("migrations apply");
        store
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs outside async code (and after a panic too): use a runtime of its own.
        let (url, name) = (self.url.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                // A server still at work after a failed test may hold locks in the schema:
                // give up after a while (leaving it) rather than keep the test waiting.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .ok()?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .ok()?;
                conn.close().await.ok()
            })
        });
        let _ = dropped.join();
    }
}

async fn connect_or_explain(url: &str) -> PgConnection {
    match PgConnection::connect(url).await {
        Ok(conn) => conn,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url}: {e}\n\
             Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
             or point {PG_URL_ENV} at a server where user may create schemas."
        ),
    }
}

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Keeps a test's database alive.
pub enum TestDb {
    Sqlite(TempSqlite),
    Postgres(PgSchema),
}

impl TestDb {
    /// The log's own database, for what only a test may do there (tampering with `events`).
    /// On PostgreSQL the read models share it; beside SQLite they have a file of their own.
    pub async fn log_db(&self) -> chatledger_projections::read_db::ReadDb {
        use chatledger_projections::read_db::ReadDb;
        match self {
            TestDb::Sqlite(db) => ReadDb::sqlite_pool(
                sqlx::SqlitePool::connect(&format!("sqlite://{}", db.path.display()))
                    .await
                    .expect("the log's database opens"),
            ),
            TestDb::Postgres(_) => self.read_db().await,
        }
    }

    /// The read-model database beside this test's log.
    pub async fn read_db(&self) -> chatledger_projections::read_db::ReadDb {
        use chatledger_projections::read_db::ReadDb;
        match self {
            TestDb::Sqlite(db) => ReadDb::open_sqlite(&db.path)
                .await
                .expect("the read-model database opens"),
            TestDb::Postgres(schema) => {
                ReadDb::connect_postgres_lazy(&schema.url, Some(&schema.name)).expect("a valid URL")
            }
        }
    }
}

impl Backend {
    /// A fresh, migrated store of this backend.
    pub async fn open(self) -> (TestDb, std::sync::Arc<dyn chatledger_core::EventStore>) {
        match self {
            Backend::Sqlite => {
                let db = TempSqlite::new();
                let store = db.store().await;
                (TestDb::Sqlite(db), std::sync::Arc::new(store))
            }
            Backend::Postgres => {
                let schema = PgSchema::create().await;
                let store = schema.store().await;
                (TestDb::Postgres(schema), std::sync::Arc::new(store))
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Generates `sqlite_$case` and `postgres_$case` tests calling `$case(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::db::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case($crate::db::Backend::Postgres).await;
                }
            )*
        }
    };
}
