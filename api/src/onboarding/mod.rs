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
use chatledger_adapters::media::{MediaApi, MediaApis};
use chatledger_adapters::secrets::{Keyring, Secret, SecretsError};
use chatledger_adapters::whatsapp::graph::{ApiProvider, App, GraphApi};
use chatledger_adapters::whatsapp::send::{Endpoint, HttpSender};
use chatledger_core::channel::{Channel, ChannelAuth, MediaDelivery, Provider};
pub use chatledger_core::credential::SignupResult;
use chatledger_core::credential::{
    business_stream, check_business_id, choose_integration, credential_stream, BusinessEvent,
    Credential, CredentialEvent, CredentialStatus, GraphError, IntegrationKind, OnboardingRefusal,
    OnboardingStep, SealedSecret, StateRefusal,
};
use chatledger_core::media::MediaError;
use chatledger_core::sender::{MessageSender, OutboundMessage, SendError, Sent};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, Position, StoreError};
use chatledger_projections::clock::Clock;
use chatledger_projections::credentials::Integrations;
use chatledger_projections::ownership::Ownership;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{ConfigError, WhatsAppSettings};

mod refresh;
mod rotate;
mod send;
mod signup;
mod standing;

pub use refresh::Refresher;
pub use rotate::{rotate_secrets, Rotation};
pub use send::RoutingSender;

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

impl From<OnboardingRefusal> for OnboardingError {
    fn from(refusal: OnboardingRefusal) -> Self {
        match refusal {
            OnboardingRefusal::Invalid(why) => OnboardingError::Invalid(why),
            OnboardingRefusal::State(refusal) => OnboardingError::State(refusal),
        }
    }
}

impl From<StoreError> for OnboardingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongExpectedVersion { .. } => OnboardingError::Conflict,
            other => OnboardingError::Store(other),
        }
    }
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
}
