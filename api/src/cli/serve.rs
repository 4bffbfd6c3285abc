//! `chatledger serve`: the start-up sequence, then the server until a signal.

use super::*;

pub(super) fn listen_address(listen: Option<SocketAddr>) -> Result<SocketAddr, CliError> {
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

pub(super) async fn serve(
    database_url: Option<&str>,
    config_dir: &Path,
    listen: Option<SocketAddr>,
) -> Result<(), CliError> {
    let location = StoreLocation::from_database_url(database_url)?;
    let address = listen_address(listen)?;
    let settings = Settings::load(
        config_dir,
        &|name| std::env::var(name).ok(),
        &data_dir(&location),
    )
    .map_err(CliError::Config)?;
    tracing::info!(store = %settings.media.store.describe(), "media is kept in this object store");
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
    // Held until the process ends: on SQLite this is the only process.
    let mut _sole_process = None;
    let state = match location {
        StoreLocation::Sqlite(path) => {
            _sole_process = Some(sole_process(&path)?);
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
            let mut state =
                AppState::new(store.clone(), "postgres", readiness, read_side, settings);
            // Other processes may share this database: the reactors act only on this
            // process's share of the streams, which the ownership keeper holds.
            let ownership_connection = ownership::connection_config(&url, None)
                .map_err(|e| CliError::Config(format!("DATABASE_URL: {e}")))?;
            state.make_mut().ownership = Ownership::shared();
            tokio::spawn(prepare_postgres(
                store,
                state.clone(),
                ownership_connection,
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
    let signalled = shutdown_signal();
    tracing::info!(address = %bound, "listening");
    if let Some(address) = metrics_address()? {
        let listener = TcpListener::bind(address).await.map_err(|e| {
            CliError::Io(format!("METRICS_LISTEN: cannot listen on {address}: {e}"))
        })?;
        tracing::info!(address = %address, "serving /metrics without a token on this address (METRICS_LISTEN)");
        let router = crate::http::metrics::open_router(state.clone());
        let limits = state.limits.clone();
        tokio::spawn(async move {
            let served =
                crate::http::listen::serve(listener, router, &limits, std::future::pending()).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        });
    }

    let (fatal_seen_tx, fatal_seen_rx) = oneshot::channel();
    let shutdown = async move {
        tokio::select! {
            () = signalled => tracing::info!("shutting down: finishing requests in flight"),
            Ok(fatal) = fatal_rx => { let _ = fatal_seen_tx.send(fatal); }
        }
    };
    let served = run(listener, state.clone(), shutdown).await;
    stop_background.send_replace(true);
    state.stopped(Duration::from_secs(15)).await;
    served.map_err(|e| CliError::Io(format!("the server failed: {e}")))?;
    match fatal_seen_rx.await {
        Ok(fatal) => Err(fatal),
        Err(_) => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// `METRICS_LISTEN`: an address of its own for `/metrics`, served there without a token.
fn metrics_address() -> Result<Option<SocketAddr>, CliError> {
    match std::env::var("METRICS_LISTEN") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            CliError::Config(format!(
                "METRICS_LISTEN must be an address such as 127.0.0.1:9464, not {v:?}"
            ))
        }),
        _ => Ok(None),
    }
}

/// Where media is kept unless `MEDIA_STORE_URL` says otherwise: beside the SQLite file (in
/// the working directory with PostgreSQL).
pub(super) fn data_dir(location: &StoreLocation) -> PathBuf {
    match location {
        StoreLocation::Sqlite(path) => path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        StoreLocation::Postgres(_) => PathBuf::from("."),
    }
}

/// Connects to PostgreSQL and applies migrations, waiting for the server as long as it takes
/// while readiness says why. A database that is reachable but unusable ends the process.
pub(super) async fn prepare_postgres(
    store: Arc<PostgresStore>,
    state: AppState,
    ownership_connection: ownership::ConnectionConfig,
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
                tokio::spawn(state.ownership.clone().run(
                    ownership_connection,
                    state.store.clone(),
                    ownership::ROUND,
                    shutdown.clone(),
                ));
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

/// Claims the SQLite file for this process, or says that another process serves it. The
/// claim is a lock on `<file>.lock`, which the operating system lets go when the process ends
/// however it ends.
fn sole_process(path: &Path) -> Result<std::fs::File, CliError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| CliError::Io(format!("cannot open {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(CliError::Config(format!(
            "another chatledger process is serving {}: one process per SQLite file (several processes need PostgreSQL)",
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(CliError::Io(format!(
            "cannot lock {}: {e}",
            lock_path.display()
        ))),
    }
}

/// Records configuration files that changed since they were last recorded.
pub(super) async fn record_configuration(state: &AppState) -> Result<(), CliError> {
    let recorded = state
        .record_configuration()
        .await
        .map_err(|e| CliError::Io(format!("recording the configuration failed: {e}")))?;
    for stream in recorded {
        tracing::info!(stream = %stream, "recorded a new version of the configuration");
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a signal that comes right after "listening" is not lost to the
/// default action (which would end the process without a graceful stop).
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        {
            let wait = |signal: std::io::Result<tokio::signal::unix::Signal>| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(terminate) => {}
                () = wait(interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
