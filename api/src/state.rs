//! What every request handler and background task can reach, and starting the tasks that run
//! beside the HTTP server.

use std::future::Future;
use std::sync::Arc;

use chatledger_application::conversations::Conversations;
use chatledger_core::EventStore;
use chatledger_projections::read_side::ReadSide;

use crate::auth::{AuthError, AuthSettings, TokenFacts, Viewer};
use crate::config::{SlaSettings, TagCatalog, TransactionSettings, WhatsAppSettings};
use crate::limits::Limits;
use crate::live::LiveEvents;
use crate::login::LoginGuard;
use crate::onboarding::{Onboarding, Refresher, RoutingSender};
use crate::readiness::Readiness;
use crate::sessions::Sessions;
use chatledger_adapters::personal::PersonalData;
use chatledger_core::conversation::Template;
use chatledger_projections::audit::{AuditHead, SealPolicy};
use chatledger_projections::reactor::supervise;
use chatledger_projections::tail::LogTail;

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
use crate::settings::Settings;
use chatledger_projections::snapshots::Snapshots;

/// What every request handler can reach: one shared [`Shared`], so that the clone each
/// request and task takes is one reference count, not one per field (they were about 2 % of
/// ingest's samples, cloned and dropped per request).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Clone)]
pub struct Shared {
    /// The log as everything reads and writes it: customers' personal data sealed on the
    /// way in and opened on the way out.
    pub store: Arc<dyn EventStore>,
    /// The same log, with personal data sealed as stored and hashed (for auditors), and
    /// `forget`.
    pub personal: PersonalData,
    /// `sqlite` or `postgres`, as health checks report it.
    pub store_kind: &'static str,
    pub readiness: Readiness,
    pub whatsapp: Arc<WhatsAppSettings>,
    pub conversations: Arc<Conversations>,
    pub read_side: Arc<ReadSide>,
    pub auth: Arc<AuthSettings>,
    pub transaction: Arc<TransactionSettings>,
    pub tags: Arc<TagCatalog>,
    /// Sends through the channels' providers (the dispatcher's way out).
    pub sender: Arc<dyn chatledger_core::sender::MessageSender>,
    /// Where media is kept, and how the media reactor tries.
    pub media: Arc<crate::config::MediaSettings>,
    /// Fetches inbound attachments from the channels' providers into the store.
    pub fetcher: Arc<dyn chatledger_core::media::MediaFetcher>,
    /// The keywords customers change their consent with, and the answers they get.
    pub consent: chatledger_projections::consent::ConsentSettings,
    /// Businesses' Genesys integrations, and Open Messaging to reach them.
    pub genesys: Arc<crate::config::GenesysSettings>,
    pub open_messaging: Arc<chatledger_adapters::genesys::GenesysClient>,
    pub dispatch_limits: chatledger_projections::dispatch::DispatchLimits,
    pub rating_template: Arc<Template>,
    pub sla: Arc<SlaSettings>,
    /// The clock SLA timers keep (tests drive their own).
    pub clock: Arc<dyn chatledger_projections::clock::Clock>,
    /// New events as they commit, for subscriptions.
    pub live: LiveEvents,
    pub seal_policy: SealPolicy,
    /// The running digest over the log, as far as the sealer has followed it.
    pub audit_head: AuditHead,
    /// Businesses' integration choice and official credentials.
    pub onboarding: Arc<Onboarding>,
    pub limits: Arc<Limits>,
    /// Password checks and failed-login counts.
    pub logins: LoginGuard,
    /// Which login tokens still stand.
    pub sessions: Sessions,
    /// Which partitions of the streams this process's reactors act on: all of them unless
    /// `serve` shares the work with other processes on PostgreSQL.
    pub ownership: chatledger_projections::ownership::Ownership,
    /// Requests per account (GraphQL, media).
    pub rates: crate::rate::Rates,
    /// Circuit breakers of the providers' endpoints and Genesys tenants (the dispatcher's
    /// and the bridge's), shown by readiness and `/metrics`.
    pub circuits: chatledger_projections::breaker::Circuits,
    /// The reactors [`AppState::start_background`] started, for [`AppState::stopped`].
    reactors: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl AppState {
    pub fn new(
        store: Arc<dyn EventStore>,
        store_kind: &'static str,
        readiness: Readiness,
        read_side: Arc<ReadSide>,
        settings: Settings,
    ) -> Self {
        crate::metrics::install();
        let (live, _) = tokio::sync::broadcast::channel(crate::live::CAPACITY);
        let personal = PersonalData::new(store);
        let store: Arc<dyn EventStore> = Arc::new(personal.clone());
        let whatsapp = Arc::new(settings.whatsapp);
        let onboarding = Arc::new(Onboarding::new(
            store.clone(),
            settings.onboarding,
            whatsapp.clone(),
        ));
        let router = Arc::new(RoutingSender::new(
            chatledger_adapters::whatsapp::send::HttpSender::new(
                settings.dispatch.endpoints,
                std::time::Duration::from_secs(15),
            )
            .with_missing(settings.dispatch.unable)
            .with_media(
                settings.media.store.clone(),
                whatsapp.public_base_url.clone(),
            ),
            whatsapp.clone(),
            onboarding.clone(),
            settings.media.apis.clone(),
        ));
        AppState(Arc::new(Shared {
            sessions: Sessions::default(),
            ownership: chatledger_projections::ownership::Ownership::local(),
            reactors: Arc::default(),
            logins: LoginGuard::new(&settings.limits),
            rates: crate::rate::Rates::new(&settings.limits),
            circuits: chatledger_projections::breaker::Circuits::new(settings.limits.breaker),
            limits: Arc::new(settings.limits),
            personal,
            auth: Arc::new(settings.auth),
            transaction: Arc::new(settings.transaction),
            tags: Arc::new(settings.tags),
            sender: router.clone(),
            fetcher: Arc::new(chatledger_adapters::media::HttpMediaFetcher::new(
                settings.media.store.clone(),
                router,
                std::time::Duration::from_secs(60),
            )),
            open_messaging: Arc::new(
                chatledger_adapters::genesys::GenesysClient::new(
                    settings.genesys.tenants(),
                    std::time::Duration::from_secs(15),
                )
                .with_media(
                    settings.media.store.clone(),
                    whatsapp.public_base_url.clone(),
                ),
            ),
            genesys: Arc::new(settings.genesys),
            consent: settings.consent,
            media: Arc::new(settings.media),
            dispatch_limits: settings.dispatch.limits,
            rating_template: Arc::new(settings.rating_template),
            sla: Arc::new(settings.sla),
            clock: Arc::new(chatledger_projections::clock::SystemClock),
            whatsapp,
            onboarding,
            live,
            seal_policy: settings.seal,
            audit_head: AuditHead::default(),
            conversations: Arc::new(Conversations::new(store.clone())),
            store,
            store_kind,
            readiness,
            read_side,
        }))
    }

    /// What this state holds, to change before it is shared: the change is this handle's
    /// alone if it is shared already (the others keep what they had).
    pub fn make_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

impl AppState {
    /// Whom an `Authorization` header's token names, if it still stands (not expired, not
    /// logged out or otherwise ended), with the token's facts (`None` for the admin token).
    pub async fn viewer(
        &self,
        authorization: Option<&str>,
    ) -> Result<(Viewer, Option<TokenFacts>), AuthError> {
        let (viewer, facts) = self.auth.read_header(authorization)?;
        self.standing(viewer, facts).await
    }

    /// The same for a bare token (a WebSocket's).
    pub async fn viewer_from_token(
        &self,
        token: &str,
    ) -> Result<(Viewer, Option<TokenFacts>), AuthError> {
        let (viewer, facts) = self.auth.read_token(token)?;
        self.standing(viewer, facts).await
    }

    async fn standing(
        &self,
        viewer: Viewer,
        facts: Option<TokenFacts>,
    ) -> Result<(Viewer, Option<TokenFacts>), AuthError> {
        if facts.is_some() {
            self.sessions.ready().await?;
        }
        self.sessions.standing(&viewer, facts.as_ref())?;
        Ok((viewer, facts))
    }

    /// A customer's consent as the log holds it now (not a read model that may lag): what
    /// decisions about what to send them are taken on.
    pub async fn consent_of(
        &self,
        customer: &chatledger_core::conversation::CustomerKey,
    ) -> Result<chatledger_core::consent::Consent, chatledger_core::StoreError> {
        use chatledger_core::consent::{consent_stream, Consent, ConsentEvent};
        let events = self
            .store
            .read_stream(&consent_stream(customer), 0, usize::MAX)
            .await?;
        let mut consent = Consent::default();
        for event in &events {
            if let Some(Ok(change)) = ConsentEvent::from_recorded(event) {
                consent.evolve(&change);
            }
        }
        Ok(consent)
    }

    /// One of our numbers by its key: configured, or registered by official onboarding.
    pub fn channel(&self, key: &str) -> Option<chatledger_core::channel::Channel> {
        self.whatsapp
            .channel(key)
            .cloned()
            .or_else(|| self.onboarding.integrations.channel(key))
    }

    /// One of our numbers by Meta's phone number id.
    pub fn channel_by_phone_number_id(
        &self,
        id: &str,
    ) -> Option<chatledger_core::channel::Channel> {
        self.whatsapp
            .channel_by_phone_number_id(id)
            .cloned()
            .or_else(|| self.onboarding.integrations.channel_by_phone_number_id(id))
    }

    /// Records configuration that changed since it was last recorded (channels, context
    /// fields) and returns the streams that got a new version.
    pub async fn record_configuration(&self) -> Result<Vec<String>, chatledger_core::StoreError> {
        let mut recorded = Vec::new();
        if crate::config::record_channels(self.store.as_ref(), &self.whatsapp.configured).await? {
            recorded.push(chatledger_core::channel::CHANNELS_CONFIG_STREAM.to_owned());
        }
        recorded.extend(self.transaction.record(self.store.as_ref()).await?);
        recorded.extend(self.tags.record(self.store.as_ref()).await?);
        if self.sla.record(self.store.as_ref()).await? {
            recorded.push(chatledger_core::sla::SLA_POLICY_STREAM.to_owned());
        }
        if self.genesys.record(self.store.as_ref()).await? {
            recorded.push(chatledger_core::genesys::GENESYS_CONFIG_STREAM.to_owned());
        }
        Ok(recorded)
    }

    /// Creates the read models' tables, then starts what runs beside the HTTP server: the
    /// projectors, the live feed and the assignment reactor. They stop when `shutdown` turns true. (With PostgreSQL,
    /// call it once the database is migrated.)
    pub async fn start_background(
        &self,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), chatledger_projections::runner::ProjectionError> {
        self.read_side.prepare().await?;
        let tail = LogTail::new(self.store.clone());
        self.read_side.start(tail.clone(), shutdown.clone());
        crate::live::spawn_feed(tail.clone(), self.live.clone(), shutdown.clone());
        // Each reactor runs under supervision: one that stops on a panic starts again.
        let spawn = |name: &'static str, start: Box<dyn Fn() -> BoxFuture + Send>| {
            let reactor = tokio::spawn(supervise(name, shutdown.clone(), start));
            self.reactors
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(reactor);
        };
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "integrations",
            Box::new(move || {
                Box::pin(state.onboarding.integrations.clone().run(
                    tail_.clone(),
                    stop.clone(),
                    Some(Snapshots::new(state.read_side.db.clone())),
                ))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "sessions",
            Box::new(move || {
                Box::pin(state.sessions.clone().run(
                    tail_.clone(),
                    stop.clone(),
                    Some(Snapshots::new(state.read_side.db.clone())),
                ))
            }),
        );
        let (state, stop) = (self.clone(), shutdown.clone());
        spawn(
            "token refresher",
            Box::new(move || {
                Box::pin(
                    Refresher::new(state.onboarding.clone(), state.clock.clone())
                        .owned_by(state.ownership.clone())
                        .run(stop.clone()),
                )
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "assigner",
            Box::new(move || {
                let assigner = chatledger_projections::assignment::Assigner::new(
                    state.store.clone(),
                    state.conversations.clone(),
                )
                .not_for(
                    state
                        .genesys
                        .configured
                        .integrations
                        .iter()
                        .flat_map(|i| i.channels.clone()),
                )
                .owned_by(state.ownership.clone())
                .remembered_in(Snapshots::new(state.read_side.db.clone()));
                Box::pin(assigner.run(tail_.clone(), stop.clone()))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "dispatcher",
            Box::new(move || {
                let dispatcher = chatledger_projections::dispatch::Dispatcher::new(
                    state.store.clone(),
                    state.conversations.clone(),
                    state.sender.clone(),
                    state.dispatch_limits.clone(),
                )
                .with_circuits(state.circuits.clone())
                .owned_by(state.ownership.clone())
                .remembered_in(Snapshots::new(state.read_side.db.clone()));
                Box::pin(dispatcher.run(tail_.clone(), stop.clone()))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "media",
            Box::new(move || {
                let reactor = chatledger_projections::media::MediaReactor::new(
                    state.store.clone(),
                    state.conversations.clone(),
                    state.fetcher.clone(),
                    state.media.limits.clone(),
                )
                .owned_by(state.ownership.clone())
                .remembered_in(Snapshots::new(state.read_side.db.clone()));
                Box::pin(reactor.run(tail_.clone(), stop.clone()))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "genesys bridge",
            Box::new(move || {
                let bridge = chatledger_projections::bridge::Bridge::new(
                    state.store.clone(),
                    state.conversations.clone(),
                    state.open_messaging.clone(),
                    state.genesys.configured.clone(),
                    state.genesys.limits.clone(),
                )
                .with_circuits(state.circuits.clone())
                .owned_by(state.ownership.clone());
                Box::pin(bridge.run(tail_.clone(), stop.clone()))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "consent keeper",
            Box::new(move || {
                let keeper = chatledger_projections::consent::ConsentKeeper::new(
                    state.store.clone(),
                    state.conversations.clone(),
                    state.consent.clone(),
                )
                .answering_at_most_every(state.limits.auto_answer_window)
                .owned_by(state.ownership.clone());
                Box::pin(keeper.run(tail_.clone(), stop.clone()))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail.clone(), shutdown.clone());
        spawn(
            "SLA timers",
            Box::new(move || {
                let timers = chatledger_projections::sla::SlaTimers::new(
                    state.store.clone(),
                    state.conversations.clone(),
                    state.clock.clone(),
                    state.sla.notifications.clone(),
                )
                .owned_by(state.ownership.clone())
                .remembered_in(Snapshots::new(state.read_side.db.clone()));
                Box::pin(timers.run(tail_.clone(), stop.clone()))
            }),
        );
        let (state, tail_, stop) = (self.clone(), tail, shutdown.clone());
        spawn(
            "sealer",
            Box::new(move || {
                // Seals cover the log as stored: hashes, not opened personal data.
                let sealer = chatledger_projections::audit::Sealer::new(
                    state.personal.stored(),
                    state.clock.clone(),
                    state.seal_policy,
                    state.audit_head.clone(),
                )
                .owned_by(state.ownership.clone());
                Box::pin(sealer.run(tail_.clone(), stop.clone()))
            }),
        );
        Ok(())
    }

    /// Waits, up to `limit`, for the reactors to stop once their shutdown was signalled: they
    /// keep their snapshots as they stop, which a process that exits at once would cut short.
    pub async fn stopped(&self, limit: std::time::Duration) {
        let reactors =
            std::mem::take(&mut *self.reactors.lock().unwrap_or_else(|e| e.into_inner()));
        let all = futures_util::future::join_all(reactors);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(
                limit_s = limit.as_secs(),
                "the reactors did not stop in time; their next start folds more of the log"
            );
        }
    }
}
