//! Official onboarding (Embedded Signup's server side), the credential's upkeep, and how a
//! business's messages find their way out.
//!
//! - [`Onboarding`]: the integration choice, the signup `state`, the callback's steps (each
//!   recorded on `credential-{business_id}` as it happens), token refresh and refusal.
//! - [`Refresher`]: the reactor that renews tokens a margin before they expire.
//! - [`RoutingSender`]: sends each message the way its business chose: the Cloud API with
//!   the business's own token, or the channel's configured gateway.
//! - [`rotate_secrets`]: `chatledger secrets rotate`.
//!
//! Tokens exist in the clear only in memory, between the Graph API's answer and the AEAD;
//! every event holds them sealed (`projections::secrets`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatledger_adapters::whatsapp::graph::{ApiProvider, App, GraphApi};
use chatledger_adapters::whatsapp::send::{Endpoint, HttpSender};
use chatledger_core::channel::{Channel, ChannelAuth, Provider};
use chatledger_core::credential::{
    business_stream, credential_stream, valid_business_id, BusinessEvent, Credential,
    CredentialEvent, CredentialStatus, GraphError, IntegrationKind, OnboardingStep, SealedSecret,
    StateRefusal,
};
use chatledger_core::sender::{MessageSender, OutboundMessage, SendError, Sent};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, StoreError};
use chatledger_projections::clock::Clock;
use chatledger_projections::credentials::Integrations;
use chatledger_projections::secrets::{Keyring, Secret, SecretsError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{ConfigError, WhatsAppSettings};

/// Onboarding's configuration, from the environment.
#[derive(Debug, Clone)]
pub struct OnboardingSettings {
    /// `META_APP_ID` and `META_APP_SECRET`.
    pub app: Option<App>,
    /// `CHATLEDGER_SECRETS_KEY` (and `CHATLEDGER_SECRETS_OLD_KEYS`).
    pub keyring: Option<Keyring>,
    /// Meta directly, or a BSP (`WHATSAPP_API_PROVIDER`, `WHATSAPP_API_BASE_URL`,
    /// `WHATSAPP_API_AUTH_HEADER`, `WHATSAPP_API_AUTH_VALUE`).
    pub provider: ApiProvider,
    /// How long a signup `state` is good for (`SIGNUP_STATE_TTL_SECONDS`).
    pub state_ttl: chrono::Duration,
    pub refresh: RefreshPolicy,
}

/// When and how often tokens are renewed.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Renew this long before expiry (`TOKEN_REFRESH_MARGIN_SECONDS`).
    pub margin: chrono::Duration,
    /// Failed renewals before the credential is disconnected (`TOKEN_REFRESH_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Between two attempts (`TOKEN_REFRESH_RETRY_SECONDS`).
    pub retry_every: chrono::Duration,
}

impl OnboardingSettings {
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let error = |name: &str, message: String| ConfigError {
            source_name: name.to_owned(),
            message,
        };
        let seconds = |name: &str, default: u64| -> Result<chrono::Duration, ConfigError> {
            match set(name) {
                None => Ok(chatledger_core::time::seconds(default)),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(chatledger_core::time::seconds)
                    .ok_or_else(|| {
                        error(
                            name,
                            format!("must be a number of seconds above 0, not {v:?}"),
                        )
                    }),
            }
        };
        let keyring =
            Keyring::from_env(env).map_err(|e| error("CHATLEDGER_SECRETS_KEY", e.to_string()))?;
        let base_url = set("WHATSAPP_API_BASE_URL")
            .or_else(|| set("GRAPH_API_BASE_URL"))
            .unwrap_or_else(|| "https://graph.facebook.com/v21.0".into());
        let header = match (
            set("WHATSAPP_API_AUTH_HEADER"),
            set("WHATSAPP_API_AUTH_VALUE"),
        ) {
            (Some(name), Some(value)) => Some((name, value)),
            (None, None) => None,
            _ => {
                return Err(error(
                    "WHATSAPP_API_AUTH_HEADER",
                    "WHATSAPP_API_AUTH_HEADER and WHATSAPP_API_AUTH_VALUE go together".into(),
                ))
            }
        };
        let max_attempts = match set("TOKEN_REFRESH_MAX_ATTEMPTS") {
            None => 3,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    error(
                        "TOKEN_REFRESH_MAX_ATTEMPTS",
                        format!("must be a whole number above 0, not {v:?}"),
                    )
                })?,
        };
        Ok(OnboardingSettings {
            app: match (set("META_APP_ID"), set("META_APP_SECRET")) {
                (Some(id), Some(secret)) => Some(App { id, secret }),
                _ => None,
            },
            keyring,
            provider: ApiProvider {
                name: set("WHATSAPP_API_PROVIDER").unwrap_or_else(|| "meta".into()),
                base_url: base_url.trim_end_matches('/').to_owned(),
                header,
            },
            state_ttl: seconds("SIGNUP_STATE_TTL_SECONDS", 30 * 60)?,
            refresh: RefreshPolicy {
                margin: seconds("TOKEN_REFRESH_MARGIN_SECONDS", 7 * 24 * 3600)?,
                max_attempts,
                retry_every: seconds("TOKEN_REFRESH_RETRY_SECONDS", 3600)?,
            },
        })
    }
}

/// Why an onboarding request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum OnboardingError {
    #[error("{0}")]
    Invalid(String),
    #[error("official onboarding is not configured: {0}")]
    Unavailable(String),
    #[error(transparent)]
    State(#[from] StateRefusal),
    #[error("{} failed: {error}; the credential stays {status}, and a retry with a fresh code can complete it", step.as_str())]
    Step {
        step: OnboardingStep,
        error: Box<GraphError>,
        status: &'static str,
    },
    #[error("another onboarding of this business changed its credential meanwhile; retry")]
    Conflict,
    #[error("the log could not be written: {0}")]
    Store(StoreError),
}

impl From<StoreError> for OnboardingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongExpectedVersion { .. } => OnboardingError::Conflict,
            other => OnboardingError::Store(other),
        }
    }
}

/// What the frontend posts after Embedded Signup.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SignupResult {
    pub business_id: String,
    pub code: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub state: String,
}

/// A signup that was started: the frontend passes `state` through Embedded Signup.
#[derive(Debug, Clone)]
pub struct StartedSignup {
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub app_id: String,
}

/// A completed onboarding, as the callback answers it.
#[derive(Debug, Clone, Serialize)]
pub struct Connected {
    pub status: &'static str,
    pub business_id: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub channel: String,
    pub api_provider: String,
    pub token_expires_at: Option<DateTime<Utc>>,
}

fn check_business_id(business_id: &str) -> Result<(), OnboardingError> {
    if valid_business_id(business_id) {
        Ok(())
    } else {
        Err(OnboardingError::Invalid(format!(
            "{business_id:?} is not a business id (1–64 letters, digits, _ or -)"
        )))
    }
}

fn token_context(business_id: &str) -> String {
    format!("{}/access_token", credential_stream(business_id))
}

fn pin_context(business_id: &str) -> String {
    format!("{}/pin", credential_stream(business_id))
}

/// Why the callback's steps stopped.
enum Failed {
    /// A Graph API call failed: recorded as `OnboardingStepFailed`.
    Step(OnboardingStep, GraphError),
    /// The log could not be written.
    Store(StoreError),
}

/// Official onboarding and the credentials' upkeep.
pub struct Onboarding {
    store: Arc<dyn EventStore>,
    pub integrations: Integrations,
    pub settings: OnboardingSettings,
    graph: GraphApi,
    whatsapp: Arc<WhatsAppSettings>,
}

/// Appends to one credential stream, keeping the expected version.
struct Recorder<'a> {
    store: &'a dyn EventStore,
    stream: String,
    version: Option<u64>,
    metadata: Metadata,
    position: u64,
}

impl Recorder<'_> {
    async fn record(&mut self, event: CredentialEvent) -> Result<(), StoreError> {
        let result = self
            .store
            .append(
                &self.stream,
                ExpectedVersion::from_current(self.version),
                vec![event.to_new_event(Uuid::new_v4(), self.metadata.clone())],
            )
            .await?;
        self.version = result.stream_version;
        if let Some(stored) = result.stored.last() {
            self.position = stored.position;
        }
        Ok(())
    }
}

impl Onboarding {
    pub fn new(
        store: Arc<dyn EventStore>,
        settings: OnboardingSettings,
        whatsapp: Arc<WhatsAppSettings>,
    ) -> Self {
        Onboarding {
            graph: GraphApi::new(settings.provider.clone(), Duration::from_secs(20)),
            integrations: Integrations::default(),
            store,
            settings,
            whatsapp,
        }
    }

    fn ready(&self) -> Result<(&Keyring, &App), OnboardingError> {
        let keyring = self.settings.keyring.as_ref().ok_or_else(|| {
            OnboardingError::Unavailable(
                "CHATLEDGER_SECRETS_KEY is not set, and tokens are never kept in the clear".into(),
            )
        })?;
        let app = self.settings.app.as_ref().ok_or_else(|| {
            OnboardingError::Unavailable("META_APP_ID and META_APP_SECRET must be set".into())
        })?;
        Ok((keyring, app))
    }

    /// Appends to the business's credential stream after `credential`'s last event.
    fn recorder(
        &self,
        business_id: &str,
        credential: &Credential,
        metadata: Metadata,
    ) -> Recorder<'_> {
        Recorder {
            store: self.store.as_ref(),
            stream: credential_stream(business_id),
            version: credential.version,
            metadata,
            position: 0,
        }
    }

    /// The credential as its stream holds it now (not as this process last saw it).
    pub async fn load(&self, business_id: &str) -> Result<Credential, StoreError> {
        let stream = credential_stream(business_id);
        let mut credential = Credential::default();
        let mut from = 0;
        loop {
            let batch = self.store.read_stream(&stream, from, 500).await?;
            let Some(last) = batch.last() else { break };
            from = last.version + 1;
            for event in &batch {
                credential.apply_recorded(event);
            }
        }
        Ok(credential)
    }

    /// Waits (a little) for this process's view to include `position`.
    async fn settle(&self, position: u64) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.integrations.wait_for(position))
            .await;
    }

    /// Records what Meta's reports on business accounts change for the credentials of those
    /// accounts: a restriction of messaging or a disabling suspends sends through it
    /// (`CredentialSuspended`), its end reinstates them (`CredentialReinstated`). Each event's
    /// id derives from the notice it was read from, so a redelivered webhook records nothing
    /// new. An account no credential has stays the notice it is.
    pub async fn note_account_updates(
        &self,
        updates: &[crate::ingest::AccountUpdate],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for update in updates {
            let Some(standing) = chatledger_core::standing::account_standing(&update.value) else {
                continue;
            };
            let businesses: Vec<String> = self
                .integrations
                .credentials()
                .into_iter()
                .filter(|(_, c)| c.waba_id.as_deref() == Some(update.account_id.as_str()))
                .map(|(business, _)| business)
                .collect();
            if businesses.is_empty() {
                tracing::info!(waba = %update.account_id,
                    "Meta reported on an account no credential has; kept as a notice");
            }
            for business in businesses {
                let event_id = Uuid::new_v5(
                    &chatledger_core::conversation::EVENT_ID_NAMESPACE,
                    format!("standing/{}/{business}", update.notice).as_bytes(),
                );
                let mut metadata = Metadata::by("meta:account_update");
                metadata.causation_id = Some(update.notice);
                // Decided on the stream as it stands; decided again if it moved meanwhile.
                for _ in 0..3 {
                    let credential = self.load(&business).await?;
                    let Some(event) = credential.standing_change(
                        &update.account_id,
                        standing.clone(),
                        update.notice,
                        at,
                    ) else {
                        break;
                    };
                    match self
                        .store
                        .append(
                            &credential_stream(&business),
                            ExpectedVersion::from_current(credential.version),
                            vec![event.to_new_event(event_id, metadata.clone())],
                        )
                        .await
                    {
                        Ok(result) => {
                            match &event {
                                CredentialEvent::CredentialSuspended { reason, .. } => {
                                    tracing::warn!(business = %business, reason = %reason, "credential suspended by Meta")
                                }
                                _ => {
                                    tracing::info!(business = %business, "credential reinstated by Meta")
                                }
                            }
                            if let Some(stored) = result.stored.last() {
                                self.settle(stored.position).await;
                            }
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Records `kind` as the business's integration; `false` when it already was.
    pub async fn choose_integration(
        &self,
        business_id: &str,
        kind: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, OnboardingError> {
        check_business_id(business_id)?;
        let kind = IntegrationKind::parse(kind).ok_or_else(|| {
            OnboardingError::Invalid(format!(
                "kind must be \"official\" or \"unofficial\", not {kind:?}"
            ))
        })?;
        if self.integrations.business(business_id).integration == Some(kind) {
            return Ok(false);
        }
        let event = BusinessEvent::IntegrationChosen {
            business_id: business_id.to_owned(),
            kind,
            by: by.to_owned(),
            at: now,
        };
        let result = self
            .store
            .append(
                &business_stream(business_id),
                ExpectedVersion::Any,
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by(by))],
            )
            .await?;
        if let Some(stored) = result.stored.last() {
            self.settle(stored.position).await;
        }
        Ok(true)
    }

    /// Issues a one-time `state` for the business's Embedded Signup.
    pub async fn start_signup(
        &self,
        business_id: &str,
        stakeholder: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<StartedSignup, OnboardingError> {
        let (_, app) = self.ready()?;
        check_business_id(business_id)?;
        if stakeholder.trim().is_empty() {
            return Err(OnboardingError::Invalid(
                "stakeholder must not be empty".into(),
            ));
        }
        let state = format!(
            "{business_id}.{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        let expires_at = chatledger_core::time::later(now, self.settings.state_ttl);
        let event = CredentialEvent::OfficialSignupStarted {
            business_id: business_id.to_owned(),
            state_sha256: chatledger_core::credential::state_digest(&state),
            stakeholder: stakeholder.trim().to_owned(),
            expires_at,
            by: by.to_owned(),
            at: now,
        };
        let result = self
            .store
            .append(
                &credential_stream(business_id),
                ExpectedVersion::Any,
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by(by))],
            )
            .await?;
        if let Some(stored) = result.stored.last() {
            self.settle(stored.position).await;
        }
        Ok(StartedSignup {
            state,
            expires_at,
            app_id: app.id.clone(),
        })
    }

    /// The callback: checks `state`, then exchanges, inspects, subscribes, registers and
    /// connects, recording each step. Nothing is recorded when the request itself is refused.
    pub async fn complete(
        &self,
        result: &SignupResult,
        now: DateTime<Utc>,
    ) -> Result<Connected, OnboardingError> {
        let (keyring, app) = self.ready()?;
        let business_id = result.business_id.as_str();
        check_business_id(business_id)?;
        for (name, value) in [
            ("code", &result.code),
            ("waba_id", &result.waba_id),
            ("phone_number_id", &result.phone_number_id),
            ("state", &result.state),
        ] {
            if value.trim().is_empty() {
                return Err(OnboardingError::Invalid(format!(
                    "{name} must not be empty"
                )));
            }
        }
        for (name, value) in [
            ("waba_id", &result.waba_id),
            ("phone_number_id", &result.phone_number_id),
        ] {
            if !value.chars().all(|c| c.is_ascii_digit()) || value.len() > 32 {
                return Err(OnboardingError::Invalid(format!(
                    "{name} must be Meta's numeric id, not {value:?}"
                )));
            }
        }
        let credential = self.load(business_id).await?;
        let issued = credential
            .check_state(business_id, &result.state, now)?
            .clone();
        let status = credential.status.map_or("pending", |s| s.as_str());
        let attempt_id = Uuid::new_v4();
        let mut metadata = Metadata::by("onboarding");
        metadata.correlation_id = Some(attempt_id);
        metadata.received_at = Some(now);
        let mut recorder = self.recorder(business_id, &credential, metadata);
        recorder
            .record(CredentialEvent::OnboardingAttempted {
                attempt_id,
                state_sha256: issued.sha256.clone(),
                waba_id: result.waba_id.clone(),
                phone_number_id: result.phone_number_id.clone(),
                api_provider: self.settings.provider.name.clone(),
                at: now,
            })
            .await?;
        let outcome = self
            .steps(
                keyring,
                app,
                result,
                &issued.stakeholder,
                attempt_id,
                &mut recorder,
                now,
            )
            .await;
        let connected = match outcome {
            Ok(connected) => connected,
            Err(Failed::Store(e)) => return Err(e.into()),
            Err(Failed::Step(step, error)) => {
                tracing::warn!(business = %business_id, step = step.as_str(), error = %error, "official onboarding failed");
                recorder
                    .record(CredentialEvent::OnboardingStepFailed {
                        attempt_id,
                        step,
                        error: error.clone(),
                        at: now,
                    })
                    .await?;
                self.settle(recorder.position).await;
                return Err(OnboardingError::Step {
                    step,
                    error: Box::new(error),
                    status,
                });
            }
        };
        self.settle(recorder.position).await;
        tracing::info!(business = %business_id, phone_number_id = %connected.phone_number_id,
            channel = %connected.channel, "official onboarding completed");
        Ok(connected)
    }

    #[allow(clippy::too_many_arguments)]
    async fn steps(
        &self,
        keyring: &Keyring,
        app: &App,
        result: &SignupResult,
        stakeholder: &str,
        attempt_id: Uuid,
        recorder: &mut Recorder<'_>,
        now: DateTime<Utc>,
    ) -> Result<Connected, Failed> {
        let business_id = result.business_id.as_str();
        let stored = Failed::Store;
        let token = Secret::new(
            self.graph
                .exchange_code(app, &result.code)
                .await
                .map_err(|e| Failed::Step(OnboardingStep::ExchangeCode, e))?,
        );
        let info = self
            .graph
            .debug_token(app, token.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::InspectToken, e))?;
        if !info.is_valid {
            return Err(Failed::Step(
                OnboardingStep::InspectToken,
                GraphError::local("debug_token says the issued token is not valid"),
            ));
        }
        recorder
            .record(CredentialEvent::TokenIssued {
                attempt_id,
                token: keyring.seal(&token, &token_context(business_id)),
                expires_at: info.expires_at,
                token_type: info.token_type,
                scopes: info.scopes,
                at: now,
            })
            .await
            .map_err(stored)?;
        self.graph
            .subscribe_app(&result.waba_id, token.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::SubscribeApp, e))?;
        recorder
            .record(CredentialEvent::AppSubscribed {
                attempt_id,
                waba_id: result.waba_id.clone(),
                at: now,
            })
            .await
            .map_err(stored)?;
        let pin = Secret::new(format!("{:06}", Uuid::new_v4().as_u128() % 1_000_000));
        self.graph
            .register(&result.phone_number_id, token.expose(), pin.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::RegisterNumber, e))?;
        recorder
            .record(CredentialEvent::NumberRegistered {
                attempt_id,
                phone_number_id: result.phone_number_id.clone(),
                pin: keyring.seal(&pin, &pin_context(business_id)),
                at: now,
            })
            .await
            .map_err(stored)?;
        let number = self
            .graph
            .phone_number(&result.phone_number_id, token.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::ReadNumber, e))?;
        let channel_key = self
            .register_channel(
                business_id,
                stakeholder,
                result,
                &number.display_phone_number,
                now,
            )
            .await
            .map_err(stored)?;
        recorder
            .record(CredentialEvent::CredentialConnected {
                attempt_id,
                state_sha256: chatledger_core::credential::state_digest(&result.state),
                waba_id: result.waba_id.clone(),
                phone_number_id: result.phone_number_id.clone(),
                display_phone_number: number.display_phone_number.clone(),
                verified_name: number.verified_name,
                channel_key: channel_key.clone(),
                at: now,
            })
            .await
            .map_err(stored)?;
        Ok(Connected {
            status: CredentialStatus::Connected.as_str(),
            business_id: business_id.to_owned(),
            waba_id: result.waba_id.clone(),
            phone_number_id: result.phone_number_id.clone(),
            display_phone_number: number.display_phone_number,
            channel: channel_key,
            api_provider: self.settings.provider.name.clone(),
            token_expires_at: info.expires_at,
        })
    }

    /// The channel the onboarded number routes to: a configured channel with this phone
    /// number id, one onboarding registered before, or a new one keyed by the number.
    async fn register_channel(
        &self,
        business_id: &str,
        stakeholder: &str,
        result: &SignupResult,
        number: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let id = result.phone_number_id.as_str();
        if let Some(configured) = self.whatsapp.channel_by_phone_number_id(id) {
            return Ok(configured.key.clone());
        }
        if let Some(onboarded) = self
            .integrations
            .channel_by_phone_number_id(id)
            .filter(|c| c.business == business_id)
        {
            return Ok(onboarded.key);
        }
        let taken = |key: &str| {
            self.whatsapp.channel(key).is_some() || self.integrations.channel(key).is_some()
        };
        let key = if taken(number) {
            id.to_owned()
        } else {
            number.to_owned()
        };
        let event = BusinessEvent::ChannelRegistered {
            business_id: business_id.to_owned(),
            channel: Box::new(Channel {
                key: key.clone(),
                number: number.to_owned(),
                stakeholder: stakeholder.to_owned(),
                business: business_id.to_owned(),
                provider: Provider::Meta,
                phone_number_id: Some(id.to_owned()),
                auth: ChannelAuth {
                    meta_signature: true,
                    ..ChannelAuth::default()
                },
                send: Default::default(),
            }),
            at: now,
        };
        let appended = self
            .store
            .append(
                &business_stream(business_id),
                ExpectedVersion::Any,
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by("onboarding"))],
            )
            .await?;
        if let Some(stored) = appended.stored.last() {
            self.settle(stored.position).await;
        }
        Ok(key)
    }

    /// Renews the business's token (`fb_exchange_token`, then `debug_token` for its expiry)
    /// and records the outcome; after the configured failures, disconnects the credential.
    /// `Ok(false)`: nothing to do, or another process did it first.
    pub async fn refresh(
        &self,
        business_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, OnboardingError> {
        let (keyring, app) = self.ready()?;
        let credential = self.load(business_id).await?;
        let Some(sealed) = credential
            .token
            .as_ref()
            .filter(|_| credential.is_connected())
        else {
            return Ok(false);
        };
        let token = keyring
            .open(sealed, &token_context(business_id))
            .map_err(|e| OnboardingError::Unavailable(e.to_string()))?;
        let renewed = async {
            let token = Secret::new(self.graph.extend_token(app, token.expose()).await?);
            let info = self.graph.debug_token(app, token.expose()).await?;
            if !info.is_valid {
                return Err(GraphError::local(
                    "debug_token says the renewed token is not valid",
                ));
            }
            Ok((token, info.expires_at))
        }
        .await;
        let mut recorder = self.recorder(
            business_id,
            &credential,
            Metadata::by("reactor:token-refresher"),
        );
        let outcome = match renewed {
            Ok((token, expires_at)) => {
                tracing::info!(business = %business_id, "token renewed");
                recorder
                    .record(CredentialEvent::TokenRefreshed {
                        token: keyring.seal(&token, &token_context(business_id)),
                        expires_at,
                        at: now,
                    })
                    .await
            }
            Err(error) => {
                let attempt = credential.refresh_failures + 1;
                tracing::warn!(business = %business_id, attempt, error = %error, "token renewal failed");
                let failed = recorder
                    .record(CredentialEvent::TokenRefreshFailed {
                        attempt,
                        error: error.clone(),
                        at: now,
                    })
                    .await;
                match failed {
                    Ok(()) if attempt >= self.settings.refresh.max_attempts => {
                        recorder
                            .record(CredentialEvent::CredentialDisconnected {
                                reason: format!(
                                    "the token could not be renewed in {attempt} attempts (last: {error}); re-run Embedded Signup"
                                ),
                                error: Some(error),
                                at: now,
                            })
                            .await
                    }
                    other => other,
                }
            }
        };
        match outcome {
            Ok(()) => {
                self.settle(recorder.position).await;
                Ok(true)
            }
            Err(StoreError::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(OnboardingError::Store(e)),
        }
    }

    /// Meta refused the business's token on a send: the credential needs a new signup.
    pub async fn token_refused(&self, business_id: &str, error: GraphError, now: DateTime<Utc>) {
        let credential = match self.load(business_id).await {
            Ok(credential) => credential,
            Err(e) => {
                tracing::error!(business = %business_id, error = %e, "cannot read the credential to mark it");
                return;
            }
        };
        if !credential.is_connected() {
            return;
        }
        let mut recorder = self.recorder(business_id, &credential, Metadata::by("sender"));
        let event = CredentialEvent::CredentialDisconnected {
            reason: format!(
                "Meta refused the token when sending ({error}); re-run Embedded Signup to re-authorise"
            ),
            error: Some(error),
            at: now,
        };
        match recorder.record(event).await {
            Ok(()) => {
                tracing::warn!(business = %business_id, "credential disconnected: the token was refused");
                self.settle(recorder.position).await;
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(e) => {
                tracing::error!(business = %business_id, error = %e, "recording a refused token failed")
            }
        }
    }

    /// The business's token in the clear, for one send.
    fn token(&self, business_id: &str, credential: &Credential) -> Result<Secret, SendError> {
        let permanent = |message: String| SendError {
            code: None,
            message,
            transient: false,
            retry_after: None,
        };
        if !credential.is_connected() {
            return Err(permanent(format!(
                "business {business_id} chose the official integration but its credential is {}{}; complete Embedded Signup",
                credential.status.map_or("missing", |s| s.as_str()),
                credential
                    .last_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )));
        }
        let keyring = self.settings.keyring.as_ref().ok_or_else(|| {
            permanent(
                "CHATLEDGER_SECRETS_KEY is not set: the business's token cannot be opened".into(),
            )
        })?;
        let sealed: &SealedSecret = credential
            .token
            .as_ref()
            .ok_or_else(|| permanent(format!("business {business_id} has no token")))?;
        keyring
            .open(sealed, &token_context(business_id))
            .map_err(|e: SecretsError| permanent(e.to_string()))
    }
}

/// The reactor that renews tokens `margin` before they expire.
pub struct Refresher {
    onboarding: Arc<Onboarding>,
    clock: Arc<dyn Clock>,
}

impl Refresher {
    pub fn new(onboarding: Arc<Onboarding>, clock: Arc<dyn Clock>) -> Self {
        Refresher { onboarding, clock }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let policy = self.onboarding.settings.refresh;
        let mut changes = self.onboarding.integrations.subscribe();
        // Businesses whose renewal could not even be tried, and when to look again.
        let mut held: HashMap<String, DateTime<Utc>> = HashMap::new();
        loop {
            let next = self
                .onboarding
                .integrations
                .credentials()
                .into_iter()
                .filter_map(|(business, credential)| {
                    let due = credential.refresh_due(policy.margin, policy.retry_every)?;
                    let due = held.get(&business).map_or(due, |h| due.max(*h));
                    Some((due, business))
                })
                .min();
            let wake = async {
                match &next {
                    Some((due, _)) => self.clock.sleep_until(*due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake => {
                    let Some((_, business)) = next else { continue };
                    let now = self.clock.now();
                    match self.onboarding.refresh(&business, now).await {
                        Ok(true) => {
                            held.remove(&business);
                        }
                        // Another process renewed it, or this view is behind the log: look
                        // again once the view has caught up, not in a tight loop.
                        Ok(false) => {
                            held.insert(business, chatledger_core::time::later(now, policy.retry_every));
                        }
                        Err(e) => {
                            tracing::error!(business = %business, error = %e, "token renewal could not be tried");
                            held.insert(business, chatledger_core::time::later(now, policy.retry_every));
                        }
                    }
                }
                changed = changes.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Sends each message the way its business chose.
pub struct RoutingSender {
    http: HttpSender,
    whatsapp: Arc<WhatsAppSettings>,
    onboarding: Arc<Onboarding>,
}

impl RoutingSender {
    pub fn new(
        http: HttpSender,
        whatsapp: Arc<WhatsAppSettings>,
        onboarding: Arc<Onboarding>,
    ) -> Self {
        RoutingSender {
            http,
            whatsapp,
            onboarding,
        }
    }
}

#[async_trait]
impl MessageSender for RoutingSender {
    async fn send(&self, channel: &str, message: &OutboundMessage) -> Result<Sent, SendError> {
        let integrations = &self.onboarding.integrations;
        let Some(found) = self
            .whatsapp
            .channel(channel)
            .cloned()
            .or_else(|| integrations.channel(channel))
        else {
            return self.http.send(channel, message).await;
        };
        let business = integrations.business(&found.business);
        let onboarded = business.channels.iter().any(|c| c.key == channel)
            || business.credential.channel_key.as_deref() == Some(channel);
        let official = match business.integration {
            Some(kind) => kind == IntegrationKind::Official,
            None => onboarded,
        };
        if !official {
            return self.http.send(channel, message).await;
        }
        let credential = &business.credential;
        if let Some(reason) = credential.refuses(message.template.is_some(), Utc::now()) {
            return Err(SendError {
                code: None,
                message: reason,
                transient: false,
                retry_after: None,
            });
        }
        let token = self.onboarding.token(&found.business, credential)?;
        let Some(phone_number_id) = found
            .phone_number_id
            .clone()
            .or_else(|| credential.phone_number_id.clone())
        else {
            return Err(SendError {
                code: None,
                message: format!("channel {channel} has no phone_number_id for the Cloud API"),
                transient: false,
                retry_after: None,
            });
        };
        let provider = &self.onboarding.settings.provider;
        let mut headers = vec![(
            "Authorization".to_owned(),
            format!("Bearer {}", token.expose()),
        )];
        headers.extend(provider.header.clone());
        let endpoint = Endpoint::CloudApi {
            url: format!("{}/{phone_number_id}/messages", provider.base_url),
            headers,
        };
        let sent = self.http.send_to(&endpoint, message).await;
        if let Err(e) = &sent {
            if matches!(e.code, Some(190) | Some(0)) {
                let error = GraphError {
                    http_status: None,
                    code: e.code,
                    subcode: None,
                    kind: None,
                    message: e.message.clone(),
                    fbtrace_id: None,
                };
                self.onboarding
                    .token_refused(&found.business, error, Utc::now())
                    .await;
            }
        }
        sent
    }
}

/// What `chatledger secrets rotate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub resealed: usize,
    pub already_current: usize,
}

/// Seals every live token and PIN again under the current key, reading with the old keys.
pub async fn rotate_secrets(
    store: Arc<dyn EventStore>,
    keyring: &Keyring,
    now: DateTime<Utc>,
) -> Result<Rotation, String> {
    let integrations = Integrations::default();
    let (_never, mut shutdown) = watch::channel(false);
    chatledger_projections::reactor::fold_log(
        store.as_ref(),
        |e| integrations.apply(e),
        &mut shutdown,
        "secrets rotate",
    )
    .await;
    let mut rotation = Rotation::default();
    for (business_id, credential) in integrations.credentials() {
        let Some(token) = &credential.token else {
            continue;
        };
        let current = keyring.current_key_id();
        let pin_current = credential.pin.as_ref().is_none_or(|p| p.key_id == current);
        if token.key_id == current && pin_current {
            rotation.already_current += 1;
            continue;
        }
        let reseal = |sealed: &SealedSecret, context: &str| {
            keyring
                .open(sealed, context)
                .map(|plain| keyring.seal(&plain, context))
                .map_err(|e| format!("business {business_id}: {e}"))
        };
        let event = CredentialEvent::SecretsResealed {
            token: reseal(token, &token_context(&business_id))?,
            pin: credential
                .pin
                .as_ref()
                .map(|p| reseal(p, &pin_context(&business_id)))
                .transpose()?,
            from_key_id: token.key_id.clone(),
            at: now,
        };
        store
            .append(
                &credential_stream(&business_id),
                ExpectedVersion::from_current(credential.version),
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by("cli:secrets rotate"))],
            )
            .await
            .map_err(|e| format!("business {business_id}: {e}"))?;
        rotation.resealed += 1;
    }
    Ok(rotation)
}
