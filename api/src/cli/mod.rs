//! The `chatledger` command line.
//!
//! Every failure ends here as one line on stderr and a non-zero exit code: no panic, no
//! backtrace, no secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatledger_adapters::personal::PersonalData;
use chatledger_adapters::{OpenError, PostgresStore, SqliteStore, StoreLocation};
use chatledger_core::EventStore;
use chatledger_projections::ownership::{self, Ownership};
use chatledger_projections::read_db::ReadDb;
use chatledger_projections::read_side::ReadSide;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

mod cluster;
mod config;
mod consent;
mod executive;
mod forget;
mod log;
mod quarantine;
mod replay;
mod secrets;
mod serve;
mod sla;

use cluster::cluster;
use config::check_config;
use consent::consent_record;
use executive::ExecutiveCommand;
use forget::forget;
use log::{events, verify};
use replay::replay;
use secrets::rotate_secrets;
use serve::serve;
use sla::sla_recompute;

use crate::readiness::Readiness;
use crate::server::run;
use crate::settings::Settings;
use crate::state::AppState;

/// chatledger: an event-sourced conversation engine for WhatsApp customer service.
#[derive(Debug, Parser)]
#[command(name = "chatledger", version, about)]
pub struct Cli {
    /// Where the log lives: sqlite://PATH or postgres://USER@HOST:PORT/DATABASE.
    /// Without it, the SQLite file ./chatledger.db.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,

    /// The directory holding channels.yaml and the other configuration files.
    #[arg(
        long,
        env = "CHATLEDGER_CONFIG_DIR",
        default_value = "config",
        global = true
    )]
    config_dir: PathBuf,

    /// Log lines as human-readable text or as JSON objects.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending migrations first).
    Serve {
        /// Address to listen on [default: 0.0.0.0:$PORT, or 0.0.0.0:8080].
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) the server serves.
    Schema,
    /// Manage the executives who use the dashboard.
    #[command(subcommand)]
    Executive(ExecutiveCommand),
    /// Walk the log and check every stream's hash chain and every seal; prints the verified
    /// head, or the first position where the record breaks (exit code 1).
    Verify {
        /// A head noted earlier (`GET /api/audit/head`), as POSITION:HASH: the log up to
        /// that position must still digest to that hash. Repeat for several.
        #[arg(long = "expect", value_name = "POSITION:HASH")]
        expect: Vec<String>,
    },
    /// The log as JSON lines, for auditors (pipe it to jq).
    Events {
        /// Only this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Only events of this type.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// From this position on (inclusive).
        #[arg(long)]
        from: Option<u64>,
        /// Up to this position (inclusive).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Erase a customer's personal data on request: the keys their message text, names and
    /// raw payloads were sealed with are destroyed, read models show "[erased]", and the log
    /// still verifies.
    Forget {
        /// The customer's number in any common shape (or their WhatsApp user id).
        #[arg(long)]
        customer: String,
        /// Who asked, or the request's reference; recorded with the erasure.
        #[arg(long, default_value = "erasure request")]
        by: String,
    },
    /// A customer's consent record as JSON lines, for auditors: every change with its
    /// categories, method, wording, evidence, actor and time, its place in the log and its
    /// hash, and what it did in words.
    Consent {
        /// The customer's number in any common shape (or their WhatsApp user id).
        #[arg(long)]
        customer: String,
    },
    /// SLA tools.
    #[command(subcommand)]
    Sla(SlaCommand),
    /// The key that seals credentials.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Events read models could not apply and set aside (quarantined), and applying them
    /// again after a fix.
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
    /// The configuration directory (`--config-dir`).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Which processes share this database's work and which partitions of the streams each
    /// owns, the partitions nobody owns, and each read model's checkpoint and lag (JSON).
    Cluster,
    /// Rebuild read models from the whole log into fresh tables and switch to them.
    /// A running server keeps answering from the old tables until the switch.
    Replay {
        /// Only this read model (chats, messages, customers); all when omitted.
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Check channels.yaml, context/*.yaml, tags.yaml and sla.yaml: print every problem as
    /// FILE:LINE: what is wrong, exit code 1 on any.
    Check,
}

#[derive(Debug, Subcommand)]
enum QuarantineCommand {
    /// Every quarantined event as a JSON line: read model, position, stream, type, error.
    List {
        /// Only this read model's.
        #[arg(long = "read-model")]
        read_model: Option<String>,
    },
    /// Apply every quarantined event again, in log order; those that apply now leave the
    /// quarantine. Exit code 1 while any still fails.
    Retry,
}

#[derive(Debug, Subcommand)]
enum SecretsCommand {
    /// Seal every live token and PIN again under CHATLEDGER_SECRETS_KEY, opening them with
    /// the keys in CHATLEDGER_SECRETS_OLD_KEYS. Afterwards the old keys can be dropped.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum SlaCommand {
    /// Fold the recorded history under another SLA policy and report, per stakeholder, how
    /// many alerts and escalations there would have been, and which chats differ. Reads the
    /// log only; writes nothing.
    Recompute {
        /// An SLA policy file, as config/sla.yaml.
        #[arg(long)]
        policy: PathBuf,
        /// Only waits that started at or after this time (RFC 3339, or YYYY-MM-DD).
        #[arg(long)]
        from: Option<String>,
        /// Only waits that started before this time; waits still open are judged up to it.
        #[arg(long)]
        to: Option<String>,
    },
}

/// A failure that ends the command.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
}

/// Runs the command line; the binary's whole `main`.
pub fn main() -> ExitCode {
    main_from(std::env::args())
}

/// Runs the command line on `args` (the program name first), as the binary would.
pub fn main_from(args: impl IntoIterator<Item = String>) -> ExitCode {
    let cli = Cli::parse_from(args);
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chatledger: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve { listen } => {
                serve(cli.database_url.as_deref(), &cli.config_dir, listen).await
            }
            Command::Migrate => migrate(cli.database_url.as_deref()).await,
            Command::Schema => {
                print!("{}", crate::graphql::build(None).sdl());
                Ok(())
            }
            Command::Executive(command) => {
                executive::run(cli.database_url.as_deref(), command).await
            }
            Command::Verify { expect } => verify(cli.database_url.as_deref(), &expect).await,
            Command::Events {
                stream,
                event_type,
                from,
                to,
            } => {
                events(
                    cli.database_url.as_deref(),
                    stream.as_deref(),
                    event_type.as_deref(),
                    from,
                    to,
                )
                .await
            }
            Command::Sla(SlaCommand::Recompute { policy, from, to }) => {
                sla_recompute(
                    cli.database_url.as_deref(),
                    &policy,
                    from.as_deref(),
                    to.as_deref(),
                )
                .await
            }
            Command::Cluster => cluster(cli.database_url.as_deref()).await,
            Command::Replay { name } => replay(cli.database_url.as_deref(), name.as_deref()).await,
            Command::Config(ConfigCommand::Check) => check_config(&cli.config_dir),
            Command::Quarantine(QuarantineCommand::List { read_model }) => {
                let (_, db) = open_for_command(cli.database_url.as_deref()).await?;
                quarantine::list(&db, read_model.as_deref()).await
            }
            Command::Quarantine(QuarantineCommand::Retry) => {
                let (store, db) = open_for_command(cli.database_url.as_deref()).await?;
                quarantine::retry(store, &db).await
            }
            Command::Consent { customer } => {
                consent_record(cli.database_url.as_deref(), &cli.config_dir, &customer).await
            }
            Command::Forget { customer, by } => {
                forget(cli.database_url.as_deref(), &cli.config_dir, &customer, &by).await
            }
            Command::Secrets(SecretsCommand::Rotate) => {
                rotate_secrets(cli.database_url.as_deref()).await
            }
        }
    });
    // Background tasks (a reconnecting listener, say) must not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatledger: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Logs go to stderr, what a command prints to stdout: `chatledger events | jq` gets
        // only events, and a listing never waits on the log's lock of the same stream.
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn read_db_sqlite(path: &Path) -> Result<ReadDb, CliError> {
    ReadDb::open_sqlite(path).await.map_err(|e| {
        CliError::Store(OpenError::NotADatabase {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    })
}

async fn migrate(database_url: Option<&str>) -> Result<(), CliError> {
    let location = StoreLocation::from_database_url(database_url)?;
    match &location {
        StoreLocation::Sqlite(path) => {
            SqliteStore::open(Path::new(path)).await?;
        }
        StoreLocation::Postgres(url) => PostgresStore::connect_lazy(url, None)?.migrate().await?,
    }
    println!("migrations applied to {}", location.describe());
    Ok(())
}

/// Opens the store and its read-model database, migrated, for a command.
async fn open_for_command(
    database_url: Option<&str>,
) -> Result<(Arc<dyn EventStore>, ReadDb), CliError> {
    let (store, db) = open_personal(database_url).await?;
    Ok((Arc::new(store), db))
}

/// The log with personal data opened, and the database beside it.
async fn open_personal(database_url: Option<&str>) -> Result<(PersonalData, ReadDb), CliError> {
    match StoreLocation::from_database_url(database_url)? {
        StoreLocation::Sqlite(path) => {
            let store = SqliteStore::open(&path).await?;
            let db = read_db_sqlite(&path).await?;
            Ok((PersonalData::new(Arc::new(store)), db))
        }
        StoreLocation::Postgres(url) => {
            let store = PostgresStore::connect_lazy(&url, None)?;
            store.migrate().await?;
            let db = ReadDb::connect_postgres_lazy(&url, None)
                .map_err(|e| CliError::Config(e.to_string()))?;
            Ok((PersonalData::new(Arc::new(store)), db))
        }
    }
}

/// The store a read-only command uses.
async fn open_store(database_url: Option<&str>) -> Result<Arc<dyn EventStore>, CliError> {
    Ok(match StoreLocation::from_database_url(database_url)? {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(&path).await?),
        StoreLocation::Postgres(url) => Arc::new(PostgresStore::connect_lazy(&url, None)?),
    })
}

/// A password, asked for twice on a terminal, or read as one line of standard input.
fn read_password() -> Result<String, CliError> {
    use std::io::IsTerminal;
    let io = |e: std::io::Error| CliError::Io(format!("reading the password failed: {e}"));
    if std::io::stdin().is_terminal() {
        let password = rpassword::prompt_password("Password: ").map_err(io)?;
        let again = rpassword::prompt_password("Password again: ").map_err(io)?;
        if password != again {
            return Err(CliError::Config("the two passwords differ".into()));
        }
        Ok(password)
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(io)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// A customer named on the command line, in any common shape of their number (read by the
/// channels' phone rules in `--config-dir`), or by their WhatsApp user id.
fn customer_key(
    config_dir: &Path,
    customer: &str,
) -> Result<chatledger_core::conversation::CustomerKey, CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let whatsapp = crate::config::WhatsAppSettings::load(&config_dir.join("channels.yaml"), &env)
        .map_err(|e| CliError::Config(e.to_string()))?;
    Ok(match whatsapp.phones.any(customer) {
        Some(phone) => chatledger_core::conversation::CustomerKey::Phone(phone),
        None => chatledger_core::conversation::CustomerKey::UserId(customer.trim().to_owned()),
    })
}
