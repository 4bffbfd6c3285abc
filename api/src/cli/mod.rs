//! The `chatledger` command line.
//!
//! Every failure ends here as one line on stderr and a non-zero exit code: no panic, no
//! backtrace, no secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chatledger_adapters::{OpenError, PostgresStore, SqliteStore, StoreLocation};
use chatledger_core::EventStore;
use chatledger_projections::personal::PersonalData;
use chatledger_projections::read_db::ReadDb;
use chatledger_projections::read_side::ReadSide;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

mod executive;
mod quarantine;

use executive::ExecutiveCommand;

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

fn check_config(dir: &Path) -> Result<(), CliError> {
    use std::io::Write;
    let report = crate::config::check::check(dir);
    let mut out = std::io::stdout().lock();
    let io = |e: std::io::Error| CliError::Io(e.to_string());
    for found in &report.problems {
        writeln!(out, "{found}").map_err(io)?;
    }
    if report.problems.is_empty() {
        writeln!(
            out,
            "{}: {} files, {} channels, no problems",
            dir.display(),
            report.files,
            report.channels
        )
        .map_err(io)?;
        Ok(())
    } else {
        Err(CliError::Config(format!(
            "{} problems in {}",
            report.problems.len(),
            dir.display()
        )))
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

fn listen_address(listen: Option<SocketAddr>) -> Result<SocketAddr, CliError> {
    if let Some(address) = listen {
        return Ok(address);
    }
    let port = match std::env::var("PORT") {
        Ok(port) => port
            .trim()
            .parse::<u16>()
            .map_err(|_| CliError::Config(format!("PORT must be a port number, not {port:?}")))?,
        Err(_) => 8080,
    };
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

async fn serve(
    database_url: Option<&str>,
    config_dir: &Path,
    listen: Option<SocketAddr>,
) -> Result<(), CliError> {
    let location = StoreLocation::from_database_url(database_url)?;
    let address = listen_address(listen)?;
    let settings =
        Settings::load(config_dir, &|name| std::env::var(name).ok()).map_err(CliError::Config)?;
    let whatsapp = &settings.whatsapp;
    tracing::info!(channels = whatsapp.configured.channels.len(), source = %whatsapp.configured.source, "channels configured");
    for (channel, needed) in whatsapp.closed_channels() {
        tracing::warn!(channel, needs = %needed,
            "this channel's webhooks are refused: no secret of its authentication checks is set");
    }
    for channel in &whatsapp.configured.channels {
        match settings.dispatch.unable.get(&channel.key) {
            Some(missing) => {
                tracing::warn!(channel = %channel.key, provider = channel.provider.as_str(), missing = %missing,
                "this channel cannot send (replies, templates, alerts) until the missing setting is given")
            }
            None if channel
                .phone_number_id
                .as_deref()
                .is_some_and(|id| id.contains("PLACEHOLDER")) =>
            {
                tracing::warn!(channel = %channel.key, provider = channel.provider.as_str(),
                    "this channel can send, but its phone_number_id is still the example's placeholder")
            }
            None => {
                tracing::info!(channel = %channel.key, provider = channel.provider.as_str(), "this channel can send")
            }
        }
    }
    let open = whatsapp.open_channels();
    if !open.is_empty() {
        tracing::warn!(channels = %open.join(","),
            "these channels take webhooks without authentication, as channels.yaml says (auth: none)");
    }
    if whatsapp.meta_app_secret.is_none() {
        tracing::info!(
            "the app-level webhook (/api/webhooks/whatsapp) is refused: META_APP_SECRET is not set"
        );
    }
    let onboarding = &settings.onboarding;
    match (&onboarding.keyring, &onboarding.app) {
        (Some(keyring), Some(_)) => tracing::info!(
            key = %keyring.current_key_id(),
            api_provider = %onboarding.provider.name,
            "official onboarding is enabled"
        ),
        (None, _) => tracing::info!(
            "official onboarding is off: CHATLEDGER_SECRETS_KEY is not set (tokens are never kept in the clear)"
        ),
        (_, None) => tracing::info!("official onboarding is off: META_APP_ID or META_APP_SECRET is not set"),
    }
    if settings.transaction.token.is_none() {
        tracing::warn!(
            "TRANSACTION_API_TOKEN is not set: the transaction system's webhooks refuse every post"
        );
    }
    tracing::info!(store = %location.describe(), "opening the event store");
    let (fatal_tx, fatal_rx) = oneshot::channel::<CliError>();
    let (stop_background, background_stopped) = watch::channel(false);
    let state = match location {
        StoreLocation::Sqlite(path) => {
            let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).await?);
            let read_side = Arc::new(ReadSide::new(read_db_sqlite(&path).await?));
            let state = AppState::new(store, "sqlite", Readiness::ready(), read_side, settings);
            record_configuration(&state).await?;
            state
                .start_background(background_stopped)
                .await
                .map_err(|e| CliError::Io(format!("preparing the read models failed: {e}")))?;
            state
        }
        StoreLocation::Postgres(url) => {
            let store = Arc::new(PostgresStore::connect_lazy(&url, None)?);
            let read_db = ReadDb::connect_postgres_lazy(&url, None)
                .map_err(|e| CliError::Config(e.to_string()))?;
            let read_side = Arc::new(ReadSide::new(read_db));
            let readiness = Readiness::waiting(format!("connecting to {}", store.location()));
            let state = AppState::new(store.clone(), "postgres", readiness, read_side, settings);
            tokio::spawn(prepare_postgres(
                store,
                state.clone(),
                background_stopped,
                fatal_tx,
            ));
            state
        }
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| CliError::Io(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::Io(e.to_string()))?;
    tracing::info!(address = %bound, "listening");

    let (fatal_seen_tx, fatal_seen_rx) = oneshot::channel();
    let shutdown = async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutting down: finishing requests in flight"),
            Ok(fatal) = fatal_rx => { let _ = fatal_seen_tx.send(fatal); }
        }
    };
    let served = run(listener, state, shutdown).await;
    stop_background.send_replace(true);
    served.map_err(|e| CliError::Io(format!("the server failed: {e}")))?;
    match fatal_seen_rx.await {
        Ok(fatal) => Err(fatal),
        Err(_) => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Connects to PostgreSQL and applies migrations, waiting for the server as long as it takes
/// while readiness says why. A database that is reachable but unusable ends the process.
async fn prepare_postgres(
    store: Arc<PostgresStore>,
    state: AppState,
    shutdown: watch::Receiver<bool>,
    fatal: oneshot::Sender<CliError>,
) {
    let readiness = state.readiness.clone();
    let mut delay = Duration::from_millis(500);
    let mut last_reason = String::new();
    loop {
        match store.migrate().await {
            Ok(()) => {
                if let Err(e) = record_configuration(&state).await {
                    let _ = fatal.send(e);
                    return;
                }
                if let Err(e) = state.start_background(shutdown).await {
                    let _ = fatal.send(CliError::Io(format!(
                        "preparing the read models failed: {e}"
                    )));
                    return;
                }
                readiness.set_ready();
                tracing::info!(store = %store.location(), "event store ready");
                return;
            }
            Err(e @ OpenError::Unreachable { .. }) => {
                let reason = e.to_string();
                if reason != last_reason {
                    tracing::warn!(reason = %reason, "PostgreSQL is not reachable yet; retrying");
                    last_reason = reason.clone();
                }
                readiness.set_waiting(reason);
            }
            Err(e) => {
                let _ = fatal.send(e.into());
                return;
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(10));
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

/// Records configuration files that changed since they were last recorded.
async fn record_configuration(state: &AppState) -> Result<(), CliError> {
    let recorded = state
        .record_configuration()
        .await
        .map_err(|e| CliError::Io(format!("recording the configuration failed: {e}")))?;
    for stream in recorded {
        tracing::info!(stream = %stream, "recorded a new version of the configuration");
    }
    Ok(())
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

async fn rotate_secrets(database_url: Option<&str>) -> Result<(), CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let keyring = chatledger_projections::secrets::Keyring::from_env(&env)
        .map_err(|e| CliError::Config(e.to_string()))?
        .ok_or_else(|| {
            CliError::Config(
                "set CHATLEDGER_SECRETS_KEY to the new key and CHATLEDGER_SECRETS_OLD_KEYS to the old ones".into(),
            )
        })?;
    let (store, _) = open_for_command(database_url).await?;
    let rotation = crate::onboarding::rotate_secrets(store, &keyring, chrono::Utc::now())
        .await
        .map_err(CliError::Io)?;
    println!(
        "resealed the secrets of {} credential(s) under key {}; {} already were",
        rotation.resealed,
        keyring.current_key_id(),
        rotation.already_current
    );
    Ok(())
}

async fn forget(
    database_url: Option<&str>,
    config_dir: &Path,
    customer: &str,
    by: &str,
) -> Result<(), CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let whatsapp = crate::config::WhatsAppSettings::load(&config_dir.join("channels.yaml"), &env)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let key = match whatsapp.phones.any(customer) {
        Some(phone) => chatledger_core::conversation::CustomerKey::Phone(phone),
        None => chatledger_core::conversation::CustomerKey::UserId(customer.trim().to_owned()),
    };
    let (store, _) = open_personal(database_url).await?;
    let erased = store
        .forget(&key, by, chrono::Utc::now())
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    if erased.is_empty() {
        println!("nothing to erase: no conversation of {key} holds sealed personal data");
    } else {
        println!(
            "erased the personal data of {key} in {} conversation(s): {}",
            erased.len(),
            erased.join(", ")
        );
    }
    Ok(())
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

/// The store a read-only command uses.
async fn open_store(database_url: Option<&str>) -> Result<Arc<dyn EventStore>, CliError> {
    Ok(match StoreLocation::from_database_url(database_url)? {
        StoreLocation::Sqlite(path) => Arc::new(SqliteStore::open(&path).await?),
        StoreLocation::Postgres(url) => Arc::new(PostgresStore::connect_lazy(&url, None)?),
    })
}

async fn verify(database_url: Option<&str>, expect: &[String]) -> Result<(), CliError> {
    let noted = expect
        .iter()
        .map(|noted| {
            noted
                .split_once(':')
                .and_then(|(p, h)| Some((p.trim().parse::<u64>().ok()?, h.trim().parse().ok()?)))
                .ok_or_else(|| {
                    CliError::Config(format!(
                        "--expect takes POSITION:HASH (a position and 64 hex digits), not {noted:?}"
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let store = open_store(database_url).await?;
    let head = store
        .head_position()
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying [{bar:40}] {pos}/{len} positions ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let noted_count = noted.len();
    let report = chatledger_projections::audit::audit_log(store.as_ref(), noted, |position| {
        bar.set_position(position.min(head))
    })
    .await;
    bar.finish_and_clear();
    let report = report.map_err(|e| CliError::Io(e.to_string()))?;
    let seals = match report.seals_checked {
        0 => "no seals yet".to_owned(),
        n => format!(
            "{n} seals match, the last up to position {}",
            report.sealed_up_to
        ),
    };
    let noted = match noted_count {
        0 => String::new(),
        n => format!("; {n} noted heads match"),
    };
    println!(
        "verified {} events up to position {}, head hash {}; {seals}{noted}",
        report.head.events,
        report.head.position,
        report.head.head(),
    );
    Ok(())
}

async fn events(
    database_url: Option<&str>,
    stream: Option<&str>,
    event_type: Option<&str>,
    from: Option<u64>,
    to: Option<u64>,
) -> Result<(), CliError> {
    use std::io::Write;
    let store = open_store(database_url).await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut next = 0u64;
    let mut after = from.map_or(0, |f| f.saturating_sub(1));
    loop {
        let batch = match stream {
            Some(stream) => {
                let batch = store.read_stream(stream, next, 5_000).await;
                if let Ok(Some(last)) = batch.as_ref().map(|b| b.last()) {
                    next = last.version + 1;
                }
                batch
            }
            None => {
                let batch = store.read_all(after, 5_000).await;
                if let Ok(Some(last)) = batch.as_ref().map(|b| b.last()) {
                    after = last.position;
                }
                batch
            }
        }
        .map_err(|e| CliError::Io(e.to_string()))?;
        if batch.is_empty() {
            break;
        }
        for event in batch {
            if from.is_some_and(|f| event.position < f)
                || event_type.is_some_and(|t| event.event_type != t)
            {
                continue;
            }
            if to.is_some_and(|t| event.position > t) {
                return Ok(());
            }
            let line = serde_json::to_string(&event).map_err(|e| CliError::Io(e.to_string()))?;
            // A closed pipe (`| head`) just ends the listing.
            if writeln!(out, "{line}").is_err() {
                return Ok(());
            }
        }
    }
    let _ = out.flush();
    Ok(())
}

fn parse_day_or_time(text: &str, what: &str) -> Result<chrono::DateTime<chrono::Utc>, CliError> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            CliError::Config(format!(
                "--{what} {text:?} is neither RFC 3339 nor YYYY-MM-DD"
            ))
        })
}

async fn sla_recompute(
    database_url: Option<&str>,
    policy: &Path,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<(), CliError> {
    let text = std::fs::read_to_string(policy)
        .map_err(|e| CliError::Config(format!("{}: {e}", policy.display())))?;
    let policy: chatledger_core::sla::SlaPolicy = serde_yaml_ng::from_str(&text)
        .map_err(|e| CliError::Config(format!("{}: {e}", policy.display())))?;
    policy.validate().map_err(CliError::Config)?;
    let from = from.map(|f| parse_day_or_time(f, "from")).transpose()?;
    let to = match to {
        Some(t) => parse_day_or_time(t, "to")?,
        None => chrono::Utc::now(),
    };
    let store = open_store(database_url).await?;
    let mut fold = chatledger_projections::sla::WhatIfFold::new(policy, from, to);
    let mut after = 0;
    loop {
        let batch = store
            .read_all(after, 5_000)
            .await
            .map_err(|e| CliError::Io(e.to_string()))?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        for event in &batch {
            fold.apply(event);
        }
    }
    let report = fold.finish();
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}",
        "stakeholder", "alerts", "escalations", "what-if", "what-if"
    );
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12}",
        "", "(recorded)", "(recorded)", "alerts", "escalations"
    );
    for (stakeholder, c) in &report.by_stakeholder {
        println!(
            "{:<12} {:>12} {:>12} {:>12} {:>12}",
            stakeholder, c.live_alerts, c.live_escalations, c.alerts, c.escalations
        );
    }
    if report.differences.is_empty() {
        println!("\nno chat would have been treated differently");
    } else {
        println!("\nchats treated differently (alert, escalation: recorded -> what-if):");
        let yn = |(a, e): (bool, bool)| {
            format!(
                "{}/{}",
                if a { "alert" } else { "-" },
                if e { "escalation" } else { "-" }
            )
        };
        for d in &report.differences {
            println!(
                "  chat {} ({}), message {} waited {}s: {} -> {}",
                d.chat_id,
                d.stream,
                d.customer_message,
                d.waited_seconds,
                yn(d.live),
                yn(d.what_if)
            );
        }
    }
    Ok(())
}

async fn replay(database_url: Option<&str>, only: Option<&str>) -> Result<(), CliError> {
    let projectors: Vec<_> = chatledger_projections::read_models::all()
        .into_iter()
        .filter(|p| only.is_none_or(|name| p.name() == name))
        .collect();
    if projectors.is_empty() {
        let names: Vec<&str> = chatledger_projections::read_models::all()
            .iter()
            .map(|p| p.name())
            .collect();
        return Err(CliError::Config(format!(
            "there is no read model {:?}; there are: {}",
            only.unwrap_or_default(),
            names.join(", ")
        )));
    }
    let (store, db) = open_for_command(database_url).await?;
    let head = store
        .head_position()
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let names: Vec<&str> = projectors.iter().map(|p| p.name()).collect();
    let bar = indicatif::ProgressBar::new(head);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} positions, {msg} ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(names.join(", "));
    let started = std::time::Instant::now();
    let rebuilt = chatledger_projections::runner::rebuild(
        store.clone(),
        &db,
        &projectors,
        |position, events| {
            bar.set_position(position.min(head));
            let rate = events as f64 / started.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!("{rate:.0} events/s"));
        },
    )
    .await
    .map_err(|e| CliError::Io(format!("rebuilding {} failed: {e}", names.join(", "))))?;
    bar.finish_and_clear();
    for (name, generation) in &rebuilt.generations {
        println!(
            "{name:<12} generation {generation}, up to position {}",
            rebuilt.checkpoint
        );
    }
    let seconds = rebuilt.elapsed.as_secs_f64();
    println!(
        "replayed {} events into {} fresh read models in {seconds:.2}s ({:.0} events/s)",
        rebuilt.events,
        rebuilt.generations.len(),
        rebuilt.events as f64 / seconds.max(0.001)
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
