//! A fresh database for each measurement: a SQLite file in a temporary directory, or a
//! PostgreSQL database created on the server given and dropped afterwards.

use crate::*;

/// A fresh database for one measurement.
pub(crate) struct Db {
    /// For SQLite, the file; for PostgreSQL, the server URL and database name.
    pub(crate) kind: DbKind,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

pub(crate) enum DbKind {
    Sqlite(PathBuf),
    Postgres { server: String, name: String },
}

impl Db {
    pub(crate) async fn fresh(server: Option<&str>) -> Result<Db, String> {
        match server {
            None => {
                let mut dir = tempfile::tempdir().map_err(|e| e.to_string())?;
                if std::env::var_os("CHATLEDGER_BENCH_KEEP").is_some() {
                    dir.disable_cleanup(true);
                    eprintln!("keeping {}", dir.path().display());
                }
                let path = dir.path().join("chatledger.db");
                Ok(Db {
                    kind: DbKind::Sqlite(path),
                    _dir: Some(dir),
                })
            }
            Some(server) => {
                let name = format!(
                    "chatledger_bench_{}",
                    &Uuid::new_v4().simple().to_string()[..12]
                );
                let mut conn = sqlx::PgConnection::connect(server)
                    .await
                    .map_err(|e| format!("cannot reach PostgreSQL: {e}"))?;
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                // What an earlier measurement wrote is flushed now, not by a checkpoint that
                // falls in the middle of this one (a role that may not is measured as it is).
                let _ = sqlx::query("CHECKPOINT").execute(&mut conn).await;
                Ok(Db {
                    kind: DbKind::Postgres {
                        server: server.to_owned(),
                        name,
                    },
                    _dir: None,
                })
            }
        }
    }

    pub(crate) fn url(&self) -> String {
        match &self.kind {
            DbKind::Sqlite(path) => format!("sqlite://{}", path.display()),
            DbKind::Postgres { server, name } => match server.rsplit_once('/') {
                Some((base, _)) => format!("{base}/{name}"),
                None => format!("{server}/{name}"),
            },
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self.kind {
            DbKind::Sqlite(_) => "sqlite",
            DbKind::Postgres { .. } => "postgres",
        }
    }

    pub(crate) async fn open(&self) -> Result<(Arc<dyn EventStore>, ReadDb), String> {
        let e = |e: &dyn std::fmt::Display| e.to_string();
        match &self.kind {
            DbKind::Sqlite(path) => Ok((
                Arc::new(SqliteStore::open(path).await.map_err(|x| e(&x))?),
                ReadDb::open_sqlite(path).await.map_err(|x| e(&x))?,
            )),
            DbKind::Postgres { .. } => {
                let url = self.url();
                let store = PostgresStore::connect_lazy(&url, None).map_err(|x| e(&x))?;
                store.migrate().await.map_err(|x| e(&x))?;
                Ok((
                    Arc::new(store),
                    ReadDb::connect_postgres_lazy(&url, None).map_err(|x| e(&x))?,
                ))
            }
        }
    }

    pub(crate) async fn drop_database(&self) {
        if let DbKind::Postgres { server, name } = &self.kind {
            if std::env::var_os("CHATLEDGER_BENCH_KEEP").is_some() {
                eprintln!("keeping the database {name}");
                return;
            }
            if let Ok(mut conn) = sqlx::PgConnection::connect(server).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
    }
}
