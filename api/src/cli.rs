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
use clap::{Parser, Subcommand, ValueEnum};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use chatledger_core::channel::{ChannelsConfigured, CHANNELS_CONFIG_STREAM};

use crate::config::{record_channels, WhatsAppSettings};
use crate::readiness::Readiness;
use crate::server::{run, AppState};

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
    let cli = Cli::parse();
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
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
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
    let whatsapp = WhatsAppSettings::load(&config_dir.join("channels.yaml"), &|name| {
        std::env::var(name).ok()
    })
    .map_err(|e| CliError::Config(e.to_string()))?;
    tracing::info!(channels = whatsapp.configured.channels.len(), source = %whatsapp.configured.source, "channels configured");
    let unauthenticated = whatsapp.unauthenticated_channels();
    if !unauthenticated.is_empty() {
        tracing::warn!(
            channels = %unauthenticated.join(","),
            "webhooks of these channels are unauthenticated: no secret of their configured checks is set \
             (META_APP_SECRET, TWILIO_AUTH_TOKEN or their secret header's variable)"
        );
    }
    tracing::info!(store = %location.describe(), "opening the event store");
    let (fatal_tx, fatal_rx) = oneshot::channel::<CliError>();
    let channels = whatsapp.configured.clone();
    let state = match location {
        StoreLocation::Sqlite(path) => {
            let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open(&path).await?);
            record_configuration(store.as_ref(), &channels).await?;
            AppState::new(store, "sqlite", Readiness::ready(), whatsapp)
        }
        StoreLocation::Postgres(url) => {
            let store = Arc::new(PostgresStore::connect_lazy(&url, None)?);
            let readiness = Readiness::waiting(format!("connecting to {}", store.location()));
            tokio::spawn(prepare_postgres(
                store.clone(),
                channels,
                readiness.clone(),
                fatal_tx,
            ));
            AppState::new(store, "postgres", readiness, whatsapp)
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
    run(listener, state, shutdown)
        .await
        .map_err(|e| CliError::Io(format!("the server failed: {e}")))?;
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
    channels: ChannelsConfigured,
    readiness: Readiness,
    fatal: oneshot::Sender<CliError>,
) {
    let mut delay = Duration::from_millis(500);
    let mut last_reason = String::new();
    loop {
        match store.migrate().await {
            Ok(()) => {
                if let Err(e) = record_configuration(store.as_ref(), &channels).await {
                    let _ = fatal.send(e);
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

/// Records configuration files that changed since they were last recorded.
async fn record_configuration(
    store: &dyn EventStore,
    channels: &ChannelsConfigured,
) -> Result<(), CliError> {
    let recorded = record_channels(store, channels)
        .await
        .map_err(|e| CliError::Io(format!("recording the channel configuration failed: {e}")))?;
    if recorded {
        tracing::info!(
            stream = CHANNELS_CONFIG_STREAM,
            "recorded a new version of the channel configuration"
        );
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
