//! How PostgreSQL read models are written: one connection per process, its writes pipelined.
//!
//! A projector writes a batch as many small statements (a row each) and reads almost nothing
//! back. Sent one by one, each waits a round trip to the server, and projecting waits on the
//! network, not on work: at 1,000 messages/s it fell behind by seconds. Here a transaction's
//! writes are queued and sent together when it next reads or commits, each statement prepared
//! once per connection; the server answers them in order, and the first failure fails the
//! transaction (PostgreSQL aborts the rest of it).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

use futures_util::FutureExt;
use tokio::sync::OwnedMutexGuard;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

use crate::sql::Arg;

/// Prepared statements kept per connection before the cache starts over: every projector's,
/// for two generations, with room to spare.
const STATEMENT_CACHE: usize = 1_024;

/// The writer's connection settings and, once connected, its connection.
pub struct PgWriter {
    config: tokio_postgres::Config,
    connection: Option<Connection>,
}

impl fmt::Debug for PgWriter {
    // The settings hold the password: never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgWriter")
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

struct Connection {
    client: Client,
    /// By SQL text, then by the types of its arguments.
    statements: HashMap<String, Vec<(Vec<Type>, Statement)>>,
    prepared: usize,
    /// A transaction was begun and neither committed nor rolled back (its `PgTx` was dropped).
    in_transaction: bool,
}

impl PgWriter {
    /// Another writer to the same database, with a connection of its own (made on first use).
    pub fn another(&self) -> Self {
        PgWriter {
            config: self.config.clone(),
            connection: None,
        }
    }

    /// Connects on first use. `url` is the one the pool was given; `None` when this client
    /// cannot read it (then the pool's transactions are used instead).
    pub fn new(url: &str, schema: Option<&str>) -> Option<Self> {
        let mut config: tokio_postgres::Config = url.parse().ok()?;
        if let Some(schema) = schema {
            config.options(format!("-c search_path={schema}"));
        }
        config.application_name("chatledger read models");
        Some(PgWriter {
            config,
            connection: None,
        })
    }
}

/// A transaction on the writer's connection: writes wait in `pending` until the next read or
/// the commit. Dropped without [`PgTx::commit`], it is rolled back when the next one begins.
pub struct PgTx {
    writer: OwnedMutexGuard<PgWriter>,
    pending: Vec<(String, Vec<Arg>)>,
}

type Sent<'a> = Pin<Box<dyn Future<Output = Result<(), tokio_postgres::Error>> + Send + 'a>>;

static NULL: Option<&str> = None;

fn types_of(args: &[Arg]) -> Vec<Type> {
    // As the sqlx binding does: integers as int8, texts and nulls as text.
    args.iter()
        .map(|arg| match arg {
            Arg::Int(_) => Type::INT8,
            Arg::Text(_) | Arg::Null => Type::TEXT,
            Arg::Ints(_) => Type::INT8_ARRAY,
            Arg::Texts(_) => Type::TEXT_ARRAY,
        })
        .collect()
}

fn params(args: &[Arg]) -> Vec<&(dyn ToSql + Sync)> {
    args.iter()
        .map(|arg| match arg {
            Arg::Int(v) => v as &(dyn ToSql + Sync),
            Arg::Text(v) => v as &(dyn ToSql + Sync),
            Arg::Null => &NULL as &(dyn ToSql + Sync),
            Arg::Ints(v) => v as &(dyn ToSql + Sync),
            Arg::Texts(v) => v as &(dyn ToSql + Sync),
        })
        .collect()
}

impl Connection {
    async fn statement(
        &mut self,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(found) = self
            .statements
            .get(sql)
            .and_then(|by_types| by_types.iter().find(|(t, _)| t == types))
        {
            return Ok(found.1.clone());
        }
        if self.prepared >= STATEMENT_CACHE {
            self.statements.clear();
            self.prepared = 0;
        }
        let statement = self.client.prepare_typed(sql, types).await?;
        self.statements
            .entry(sql.to_owned())
            .or_default()
            .push((types.to_vec(), statement.clone()));
        self.prepared += 1;
        Ok(statement)
    }
}

impl PgTx {
    /// Begins a transaction on `writer`, connecting (again) when it has no open connection.
    pub async fn begin(
        mut writer: OwnedMutexGuard<PgWriter>,
    ) -> Result<Self, tokio_postgres::Error> {
        let closed = writer
            .connection
            .as_ref()
            .is_none_or(|connection| connection.client.is_closed());
        if closed {
            writer.connection = None;
            let (client, connection) = writer.config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "the read-model writer's connection to PostgreSQL ended");
                }
            });
            // Read models are rebuilt from the log, and each commits its rows with its
            // checkpoint: a commit lost in a crash is simply applied again. So a commit need
            // not wait for the disk (as `synchronous=NORMAL` on SQLite).
            client.batch_execute("SET synchronous_commit = off").await?;
            writer.connection = Some(Connection {
                client,
                statements: HashMap::new(),
                prepared: 0,
                in_transaction: false,
            });
        }
        let connection = writer.connection.as_mut().expect("connected above");
        let mut pending = Vec::with_capacity(64);
        if connection.in_transaction {
            pending.push(("ROLLBACK".to_owned(), Vec::new()));
        }
        pending.push(("BEGIN".to_owned(), Vec::new()));
        connection.in_transaction = true;
        Ok(PgTx { writer, pending })
    }

    fn connection(&mut self) -> &mut Connection {
        self.writer
            .connection
            .as_mut()
            .expect("a transaction has a connection")
    }

    /// Queues a write, its arguments moved in (a batch's column arrays are not copied).
    pub fn execute(&mut self, sql: &str, args: Vec<Arg>) {
        self.pending.push((sql.to_owned(), args));
    }

    /// Sends every queued write and waits for all their answers.
    async fn flush(&mut self) -> Result<(), tokio_postgres::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        // Statements not yet prepared on this connection, one round trip each, once.
        let mut statements = Vec::with_capacity(pending.len());
        for (sql, args) in &pending {
            statements.push(if args.is_empty() {
                None
            } else {
                Some(self.connection().statement(sql, &types_of(args)).await?)
            });
        }
        let client = &self.connection().client;
        let params: Vec<Vec<&(dyn ToSql + Sync)>> =
            pending.iter().map(|(_, args)| params(args)).collect();
        // Each request goes out when its future is first polled: poll them once, in order,
        // then wait for the answers, in order.
        let mut sent: Vec<Sent<'_>> = Vec::with_capacity(pending.len());
        for (((sql, _), statement), params) in pending.iter().zip(&statements).zip(&params) {
            let mut request: Sent<'_> = match statement {
                Some(statement) => Box::pin(
                    client
                        .execute(statement, params.as_slice())
                        .map(|r| r.map(drop)),
                ),
                None => Box::pin(client.batch_execute(sql.as_str())),
            };
            if let Some(answer) = (&mut request).now_or_never() {
                answer?;
                continue;
            }
            sent.push(request);
        }
        for request in sent {
            request.await?;
        }
        Ok(())
    }

    /// The rows `sql` returns, after every queued write.
    pub async fn fetch_all(
        &mut self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        self.flush().await?;
        let statement = self.connection().statement(sql, &types_of(args)).await?;
        self.connection()
            .client
            .query(&statement, params(args).as_slice())
            .await
    }

    pub async fn commit(mut self) -> Result<(), tokio_postgres::Error> {
        self.pending.push(("COMMIT".to_owned(), Vec::new()));
        self.flush().await?;
        self.connection().in_transaction = false;
        Ok(())
    }
}
