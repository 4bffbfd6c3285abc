//! Businesses and their official WhatsApp credentials.
//!
//! A business chooses how its messages leave (`business-{id}`: [`BusinessEvent`]): through
//! Meta's Cloud API with its own credential (official) or through the configured gateway
//! (unofficial). The credential's whole life is its own stream (`credential-{business_id}`:
//! [`CredentialEvent`]): signup started, each onboarding step done or failed, token issued,
//! refreshed, refused, connected, disconnected. Tokens and PINs enter events only sealed
//! ([`SealedSecret`]); a signup `state` only as its SHA-256.
//!
//! [`Credential`] is the fold both the deciders (is this `state` good?) and the read side use.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::channel::Channel;
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::standing::SuspensionCause;

/// The stream of a business: its integration choice and the channels onboarding gave it.
pub fn business_stream(business_id: &str) -> String {
    format!("business-{business_id}")
}

/// The stream of a business's official credential.
pub fn credential_stream(business_id: &str) -> String {
    format!("credential-{business_id}")
}

/// Whether `id` can name a business: 1–64 letters, digits, `_` or `-`.
pub fn valid_business_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// How a business's messages leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrationKind {
    /// Meta's Cloud API with the business's own token (Embedded Signup).
    Official,
    /// The configured gateway of each channel.
    Unofficial,
}

impl IntegrationKind {
    pub fn parse(kind: &str) -> Option<Self> {
        match kind {
            "official" => Some(IntegrationKind::Official),
            "unofficial" => Some(IntegrationKind::Unofficial),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            IntegrationKind::Official => "official",
            IntegrationKind::Unofficial => "unofficial",
        }
    }
}

/// What is recorded on `business-{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum BusinessEvent {
    IntegrationChosen {
        business_id: String,
        kind: IntegrationKind,
        by: String,
        at: DateTime<Utc>,
    },
    /// A number onboarding connected, now one of the business's channels.
    ChannelRegistered {
        business_id: String,
        channel: Box<Channel>,
        at: DateTime<Utc>,
    },
}

impl BusinessEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            BusinessEvent::IntegrationChosen { .. } => "IntegrationChosen",
            BusinessEvent::ChannelRegistered { .. } => "ChannelRegistered",
        }
    }

    pub fn to_new_event(&self, event_id: Uuid, metadata: Metadata) -> NewEvent {
        NewEvent::new(event_id, self.event_type(), untagged_data(self), metadata)
    }

    /// `None` for an event type this release does not know.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if !matches!(
            event.event_type.as_str(),
            "IntegrationChosen" | "ChannelRegistered"
        ) {
            return Ok(None);
        }
        tagged(event).map(Some)
    }
}

/// A secret sealed with an AEAD under the key `key_id` (XChaCha20-Poly1305, bound to the
/// stream and purpose it was sealed for). Only this form is ever recorded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub key_id: String,
    /// Base64.
    pub nonce: String,
    /// Base64, tag included.
    pub ciphertext: String,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret {{ key_id: {} }}", self.key_id)
    }
}

/// An error the Graph API (or the way to it) answered, as Meta reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Meta's `error.code` (190: the token expired or is invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subcode: Option<i64>,
    /// Meta's `error.type`, e.g. `OAuthException`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

impl GraphError {
    /// An error found on our side (an answer without the expected field, say).
    pub fn local(message: impl Into<String>) -> Self {
        GraphError {
            http_status: None,
            code: None,
            subcode: None,
            kind: None,
            message: message.into(),
            fbtrace_id: None,
        }
    }

    /// The token is expired, revoked or invalid: only a new signup helps.
    pub fn token_rejected(&self) -> bool {
        matches!(self.code, Some(190) | Some(0)) || self.http_status == Some(401)
    }
}

impl std::fmt::Display for GraphError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(code) = self.code {
            write!(f, "({code}) ")?;
        }
        f.write_str(&self.message)
    }
}

/// The steps of the server side of Embedded Signup, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnboardingStep {
    /// `GET /oauth/access_token` with the code.
    ExchangeCode,
    /// `GET /debug_token`: the token's expiry and scopes.
    InspectToken,
    /// `POST /{waba_id}/subscribed_apps`.
    SubscribeApp,
    /// `POST /{phone_number_id}/register`.
    RegisterNumber,
    /// `GET /{phone_number_id}`: the number as WhatsApp shows it.
    ReadNumber,
}

impl OnboardingStep {
    pub fn as_str(&self) -> &'static str {
        match self {
            OnboardingStep::ExchangeCode => "exchange_code",
            OnboardingStep::InspectToken => "inspect_token",
            OnboardingStep::SubscribeApp => "subscribe_app",
            OnboardingStep::RegisterNumber => "register_number",
            OnboardingStep::ReadNumber => "read_number",
        }
    }
}

/// A credential's status as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialStatus {
    /// Signup started or under way; no working token yet.
    Pending,
    /// Onboarded; messages can go out.
    Connected,
    /// The token is gone (refresh failed, or Meta refused it): re-run Embedded Signup.
    Disconnected,
    /// Meta restricted the account.
    Suspended,
}

impl CredentialStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            CredentialStatus::Pending => "pending",
            CredentialStatus::Connected => "connected",
            CredentialStatus::Disconnected => "disconnected",
            CredentialStatus::Suspended => "suspended",
        }
    }
}

/// The SHA-256 (hex) of a signup `state`: what the log keeps instead of the state.
pub fn state_digest(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// A signup `state` carries the business it was issued for before its last `.`, so that a
/// state presented for another business is told apart from one nobody issued.
pub fn state_business(state: &str) -> Option<&str> {
    state.rsplit_once('.').map(|(business, _)| business)
}

/// What is recorded on `credential-{business_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CredentialEvent {
    /// A one-time `state` was issued for the business's Embedded Signup.
    OfficialSignupStarted {
        business_id: String,
        state_sha256: String,
        /// The stakeholder the onboarded number will serve.
        stakeholder: String,
        expires_at: DateTime<Utc>,
        by: String,
        at: DateTime<Utc>,
    },
    /// The frontend posted the signup's result with a good `state`.
    OnboardingAttempted {
        attempt_id: Uuid,
        state_sha256: String,
        waba_id: String,
        phone_number_id: String,
        api_provider: String,
        at: DateTime<Utc>,
    },
    OnboardingStepFailed {
        attempt_id: Uuid,
        step: OnboardingStep,
        error: GraphError,
        at: DateTime<Utc>,
    },
    /// The code was exchanged for a token.
    TokenIssued {
        attempt_id: Uuid,
        token: SealedSecret,
        /// `None`: it never expires (`expires_at: 0` in `debug_token`).
        expires_at: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_type: Option<String>,
        #[serde(default)]
        scopes: Vec<String>,
        at: DateTime<Utc>,
    },
    AppSubscribed {
        attempt_id: Uuid,
        waba_id: String,
        at: DateTime<Utc>,
    },
    NumberRegistered {
        attempt_id: Uuid,
        phone_number_id: String,
        /// The two-step verification PIN the number was registered with.
        pin: SealedSecret,
        at: DateTime<Utc>,
    },
    /// Every step done: messages can go out with this credential.
    CredentialConnected {
        attempt_id: Uuid,
        state_sha256: String,
        waba_id: String,
        phone_number_id: String,
        display_phone_number: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verified_name: Option<String>,
        /// The channel the number routes to.
        channel_key: String,
        at: DateTime<Utc>,
    },
    TokenRefreshed {
        token: SealedSecret,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    TokenRefreshFailed {
        /// 1 for the first failure since the last success.
        attempt: u32,
        error: GraphError,
        at: DateTime<Utc>,
    },
    /// The credential no longer works; the business must sign up again.
    CredentialDisconnected {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<GraphError>,
        at: DateTime<Utc>,
    },
    /// Meta restricted or disabled the account (an `account_update` webhook): messages of
    /// the kinds `restrictions` names are refused while it lasts.
    CredentialSuspended {
        waba_id: String,
        cause: SuspensionCause,
        /// Meta's report in words: what is restricted, and until when.
        reason: String,
        /// Meta's restriction types that stop messages, or `DISABLED`.
        restrictions: Vec<String>,
        /// When Meta said it ends (`None`: until Meta reports otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
        /// The notice (`ProviderNoticeReceived`) it was read from.
        notice: Uuid,
        at: DateTime<Utc>,
    },
    /// Meta reported that what `cause` stopped ended: messages go out again.
    CredentialReinstated {
        waba_id: String,
        cause: SuspensionCause,
        reason: String,
        /// The status the credential returns to.
        status: CredentialStatus,
        notice: Uuid,
        at: DateTime<Utc>,
    },
    /// The live secrets were sealed again under a new key (`chatledger secrets rotate`).
    SecretsResealed {
        token: SealedSecret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<SealedSecret>,
        from_key_id: String,
        at: DateTime<Utc>,
    },
}

impl CredentialEvent {
    /// Every stored type name of a credential stream: the one list folds read by.
    pub const TYPES: [&'static str; 13] = [
        "OfficialSignupStarted",
        "OnboardingAttempted",
        "OnboardingStepFailed",
        "TokenIssued",
        "AppSubscribed",
        "NumberRegistered",
        "CredentialConnected",
        "TokenRefreshed",
        "TokenRefreshFailed",
        "CredentialDisconnected",
        "SecretsResealed",
        "CredentialSuspended",
        "CredentialReinstated",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            CredentialEvent::OfficialSignupStarted { .. } => "OfficialSignupStarted",
            CredentialEvent::OnboardingAttempted { .. } => "OnboardingAttempted",
            CredentialEvent::OnboardingStepFailed { .. } => "OnboardingStepFailed",
            CredentialEvent::TokenIssued { .. } => "TokenIssued",
            CredentialEvent::AppSubscribed { .. } => "AppSubscribed",
            CredentialEvent::NumberRegistered { .. } => "NumberRegistered",
            CredentialEvent::CredentialConnected { .. } => "CredentialConnected",
            CredentialEvent::TokenRefreshed { .. } => "TokenRefreshed",
            CredentialEvent::TokenRefreshFailed { .. } => "TokenRefreshFailed",
            CredentialEvent::CredentialDisconnected { .. } => "CredentialDisconnected",
            CredentialEvent::SecretsResealed { .. } => "SecretsResealed",
            CredentialEvent::CredentialSuspended { .. } => "CredentialSuspended",
            CredentialEvent::CredentialReinstated { .. } => "CredentialReinstated",
        }
    }

    pub fn to_new_event(&self, event_id: Uuid, metadata: Metadata) -> NewEvent {
        NewEvent::new(event_id, self.event_type(), untagged_data(self), metadata)
    }

    /// `None` for an event type this release does not know.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if !Self::TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        tagged(event).map(Some)
    }
}

fn untagged_data(event: &impl Serialize) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn tagged<T: serde::de::DeserializeOwned>(event: &RecordedEvent) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::json!({"type": event.event_type, "data": event.data}))
}

/// Why a presented signup `state` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    #[error("the state was not issued by chatledger")]
    Unknown,
    #[error("the state was issued for another business")]
    OtherBusiness,
    #[error("the state was already used by a completed signup; start a new signup")]
    Used,
    #[error("the state expired at {0}; start a new signup")]
    Expired(DateTime<Utc>),
}

/// A `state` issued for a signup, as the fold keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedState {
    pub sha256: String,
    pub stakeholder: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// The onboarding attempt under way.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub attempt_id: Uuid,
    pub state_sha256: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub api_provider: String,
    pub token: Option<SealedSecret>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A credential folded from its stream.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Credential {
    pub business_id: String,
    /// `None` before anything was recorded.
    pub status: Option<CredentialStatus>,
    pub states: Vec<IssuedState>,
    pub attempt: Option<Attempt>,
    pub waba_id: Option<String>,
    pub phone_number_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub channel_key: Option<String>,
    pub api_provider: Option<String>,
    /// The token messages go out with (the connected one).
    pub token: Option<SealedSecret>,
    pub pin: Option<SealedSecret>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Refresh failures since the last success.
    pub refresh_failures: u32,
    pub last_refresh_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What Meta stopped, while it lasts.
    pub suspension: Option<Suspension>,
    /// The stream's version after the last event folded in.
    pub version: Option<u64>,
}

/// A restriction or disabling Meta reported on the account.
#[derive(Debug, Clone, PartialEq)]
pub struct Suspension {
    pub cause: SuspensionCause,
    pub reason: String,
    pub restrictions: Vec<String>,
    pub until: Option<DateTime<Utc>>,
    /// The status before it, to return to.
    pub status_before: CredentialStatus,
}

impl Credential {
    /// Folds one event of the stream in.
    pub fn apply(&mut self, event: &CredentialEvent) {
        use CredentialEvent as E;
        match event {
            E::OfficialSignupStarted {
                business_id,
                state_sha256,
                stakeholder,
                expires_at,
                ..
            } => {
                self.business_id = business_id.clone();
                self.states.push(IssuedState {
                    sha256: state_sha256.clone(),
                    stakeholder: stakeholder.clone(),
                    expires_at: *expires_at,
                    used: false,
                });
                self.status.get_or_insert(CredentialStatus::Pending);
            }
            E::OnboardingAttempted {
                attempt_id,
                state_sha256,
                waba_id,
                phone_number_id,
                api_provider,
                ..
            } => {
                self.attempt = Some(Attempt {
                    attempt_id: *attempt_id,
                    state_sha256: state_sha256.clone(),
                    waba_id: waba_id.clone(),
                    phone_number_id: phone_number_id.clone(),
                    api_provider: api_provider.clone(),
                    token: None,
                    expires_at: None,
                });
                self.status.get_or_insert(CredentialStatus::Pending);
            }
            E::OnboardingStepFailed { step, error, .. } => {
                self.last_error = Some(format!("{} failed: {error}", step.as_str()));
            }
            E::TokenIssued {
                attempt_id,
                token,
                expires_at,
                ..
            } => {
                if let Some(attempt) = self
                    .attempt
                    .as_mut()
                    .filter(|a| a.attempt_id == *attempt_id)
                {
                    attempt.token = Some(token.clone());
                    attempt.expires_at = *expires_at;
                }
            }
            E::AppSubscribed { .. } => {}
            E::NumberRegistered { pin, .. } => self.pin = Some(pin.clone()),
            E::CredentialConnected {
                attempt_id,
                state_sha256,
                waba_id,
                phone_number_id,
                display_phone_number,
                channel_key,
                at,
                ..
            } => {
                if let Some(state) = self.states.iter_mut().find(|s| &s.sha256 == state_sha256) {
                    state.used = true;
                }
                if let Some(attempt) = self.attempt.take().filter(|a| a.attempt_id == *attempt_id) {
                    self.token = attempt.token;
                    self.token_expires_at = attempt.expires_at;
                    self.api_provider = Some(attempt.api_provider);
                }
                self.waba_id = Some(waba_id.clone());
                self.phone_number_id = Some(phone_number_id.clone());
                self.display_phone_number = Some(display_phone_number.clone());
                self.channel_key = Some(channel_key.clone());
                self.status = Some(CredentialStatus::Connected);
                self.connected_at = Some(*at);
                self.refresh_failures = 0;
                self.last_refresh_failure_at = None;
                self.last_error = None;
                // Meta's suspension is of the account, not of the token: it stands.
                if let Some(suspension) = &mut self.suspension {
                    suspension.status_before = CredentialStatus::Connected;
                    self.status = Some(CredentialStatus::Suspended);
                    self.last_error = Some(suspension.reason.clone());
                }
            }
            E::TokenRefreshed {
                token,
                expires_at,
                at,
            } => {
                self.token = Some(token.clone());
                self.token_expires_at = *expires_at;
                self.last_refresh_at = Some(*at);
                self.refresh_failures = 0;
                self.last_refresh_failure_at = None;
                self.last_error = None;
            }
            E::TokenRefreshFailed { attempt, error, at } => {
                self.refresh_failures = *attempt;
                self.last_refresh_failure_at = Some(*at);
                self.last_error = Some(format!("token refresh failed: {error}"));
            }
            E::CredentialDisconnected { reason, .. } => {
                self.status = Some(CredentialStatus::Disconnected);
                self.last_error = Some(reason.clone());
                // A suspension still stands, over a credential that must sign up again.
                if let Some(suspension) = &mut self.suspension {
                    suspension.status_before = CredentialStatus::Disconnected;
                }
            }
            E::CredentialSuspended {
                cause,
                reason,
                restrictions,
                until,
                ..
            } => {
                let status_before = match &self.suspension {
                    Some(earlier) => earlier.status_before,
                    None => self.status.unwrap_or(CredentialStatus::Pending),
                };
                self.suspension = Some(Suspension {
                    cause: *cause,
                    reason: reason.clone(),
                    restrictions: restrictions.clone(),
                    until: *until,
                    status_before,
                });
                self.status = Some(CredentialStatus::Suspended);
                self.last_error = Some(reason.clone());
            }
            E::CredentialReinstated { cause, status, .. } => {
                if self.suspension.as_ref().is_some_and(|s| s.cause == *cause) {
                    self.suspension = None;
                    self.status = Some(*status);
                    self.last_error = None;
                }
            }
            E::SecretsResealed { token, pin, .. } => {
                self.token = Some(token.clone());
                if let Some(pin) = pin {
                    self.pin = Some(pin.clone());
                }
            }
        }
    }

    /// Folds a recorded event of the stream in (others are ignored).
    pub fn apply_recorded(&mut self, event: &RecordedEvent) {
        if let Ok(Some(credential)) = CredentialEvent::from_recorded(event) {
            self.apply(&credential);
        }
        self.version = Some(event.version);
    }

    /// Checks a `state` presented with a signup's result for this business at `now`, and
    /// returns what it was issued with.
    pub fn check_state(
        &self,
        business_id: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<&IssuedState, StateRefusal> {
        if state_business(state).is_some_and(|b| b != business_id) {
            return Err(StateRefusal::OtherBusiness);
        }
        let digest = state_digest(state);
        let issued = self
            .states
            .iter()
            .find(|s| s.sha256 == digest)
            .ok_or(StateRefusal::Unknown)?;
        if issued.used {
            return Err(StateRefusal::Used);
        }
        if now >= issued.expires_at {
            return Err(StateRefusal::Expired(issued.expires_at));
        }
        Ok(issued)
    }

    /// Whether the credential is connected: onboarded and not disconnected, whether or not
    /// Meta suspended some kinds of messages (its token is kept fresh all the same).
    pub fn is_connected(&self) -> bool {
        match self.status {
            Some(CredentialStatus::Connected) => true,
            Some(CredentialStatus::Suspended) => self
                .suspension
                .as_ref()
                .is_some_and(|s| s.status_before == CredentialStatus::Connected),
            _ => false,
        }
    }

    /// Why a message (a template, or not) may not go out through this credential at `now`:
    /// Meta restricted or disabled the account. `None` when nothing stops it here.
    pub fn refuses(&self, template: bool, now: DateTime<Utc>) -> Option<String> {
        let suspension = self.suspension.as_ref()?;
        crate::standing::stops(&suspension.restrictions, suspension.until, template, now).then(
            || {
                format!(
                    "not sent: {}; the {} cannot go out through this account until Meta lifts it",
                    suspension.reason,
                    if template { "template" } else { "reply" }
                )
            },
        )
    }

    /// What an `account_update` that reports `standing` changes, as the event to record:
    /// nothing when the credential already stands so, when a restriction already ended, or
    /// when a restriction would hide a disabling (which only its reinstatement lifts).
    pub fn standing_change(
        &self,
        waba_id: &str,
        standing: crate::standing::AccountStanding,
        notice: Uuid,
        at: DateTime<Utc>,
    ) -> Option<CredentialEvent> {
        use crate::standing::AccountStanding;
        match standing {
            AccountStanding::Suspended {
                cause,
                reason,
                restrictions,
                until,
            } => {
                if until.is_some_and(|until| until <= at) {
                    return None;
                }
                if let Some(current) = &self.suspension {
                    let same = current.cause == cause
                        && current.restrictions == restrictions
                        && current.until == until;
                    let hides_disabling = current.cause == SuspensionCause::Disabled
                        && cause == SuspensionCause::Restriction;
                    if same || hides_disabling {
                        return None;
                    }
                }
                Some(CredentialEvent::CredentialSuspended {
                    waba_id: waba_id.to_owned(),
                    cause,
                    reason,
                    restrictions,
                    until,
                    notice,
                    at,
                })
            }
            AccountStanding::Lifted { cause, reason } => {
                let current = self.suspension.as_ref().filter(|s| s.cause == cause)?;
                Some(CredentialEvent::CredentialReinstated {
                    waba_id: waba_id.to_owned(),
                    cause,
                    reason,
                    status: current.status_before,
                    notice,
                    at,
                })
            }
        }
    }

    /// When the token should be refreshed, given the margin before expiry and the wait
    /// between failed attempts; `None` when it never expires or is not in use.
    pub fn refresh_due(
        &self,
        margin: chrono::Duration,
        retry_every: chrono::Duration,
    ) -> Option<DateTime<Utc>> {
        if !self.is_connected() || self.token.is_none() {
            return None;
        }
        use crate::time::{earlier, later};
        let mut due = earlier(self.token_expires_at?, margin);
        // A renewal that came back still inside the margin is not repeated at once.
        if let Some(last) = self.last_refresh_at {
            due = due.max(later(last, retry_every));
        }
        if let Some(failed) = self.last_refresh_failure_at {
            due = due.max(later(failed, retry_every));
        }
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(tag: &str) -> SealedSecret {
        SealedSecret {
            key_id: "k1".into(),
            nonce: "n".into(),
            ciphertext: tag.into(),
        }
    }

    fn started(at: DateTime<Utc>, state: &str) -> CredentialEvent {
        CredentialEvent::OfficialSignupStarted {
            business_id: "acme".into(),
            state_sha256: state_digest(state),
            stakeholder: "customer".into(),
            expires_at: at + chrono::Duration::minutes(30),
            by: "admin".into(),
            at,
        }
    }

    #[test]
    fn a_state_is_good_once_for_its_business_until_it_expires() {
        let now = Utc::now();
        let mut credential = Credential::default();
        credential.apply(&started(now, "acme.s1"));
        assert_eq!(credential.status, Some(CredentialStatus::Pending));
        assert!(credential.check_state("acme", "acme.s1", now).is_ok());
        assert_eq!(
            credential.check_state("acme", "acme.nope", now),
            Err(StateRefusal::Unknown)
        );
        assert_eq!(
            credential.check_state("acme", "other.s1", now),
            Err(StateRefusal::OtherBusiness)
        );
        assert!(matches!(
            credential.check_state("acme", "acme.s1", now + chrono::Duration::minutes(31)),
            Err(StateRefusal::Expired(_))
        ));
        let attempt_id = Uuid::new_v4();
        for event in [
            CredentialEvent::OnboardingAttempted {
                attempt_id,
                state_sha256: state_digest("acme.s1"),
                waba_id: "w".into(),
                phone_number_id: "p".into(),
                api_provider: "meta".into(),
                at: now,
            },
            CredentialEvent::TokenIssued {
                attempt_id,
                token: sealed("t1"),
                expires_at: Some(now + chrono::Duration::days(60)),
                token_type: None,
                scopes: vec![],
                at: now,
            },
        ] {
            credential.apply(&event);
        }
        // A failed step leaves the state usable for a retry.
        assert!(credential.check_state("acme", "acme.s1", now).is_ok());
        assert_eq!(
            credential.token, None,
            "no token before the signup completes"
        );
        credential.apply(&CredentialEvent::CredentialConnected {
            attempt_id,
            state_sha256: state_digest("acme.s1"),
            waba_id: "w".into(),
            phone_number_id: "p".into(),
            display_phone_number: "15550001111".into(),
            verified_name: None,
            channel_key: "15550001111".into(),
            at: now,
        });
        assert_eq!(credential.status, Some(CredentialStatus::Connected));
        assert_eq!(credential.token, Some(sealed("t1")));
        assert_eq!(
            credential.check_state("acme", "acme.s1", now),
            Err(StateRefusal::Used)
        );
    }

    #[test]
    fn refresh_is_due_inside_the_margin_and_waits_after_a_failure() {
        let now = Utc::now();
        let day = chrono::Duration::days(1);
        let hour = chrono::Duration::hours(1);
        let mut credential = Credential {
            status: Some(CredentialStatus::Connected),
            token: Some(sealed("t")),
            token_expires_at: Some(now + day * 10),
            ..Credential::default()
        };
        assert_eq!(credential.refresh_due(day * 7, hour), Some(now + day * 3));
        credential.apply(&CredentialEvent::TokenRefreshFailed {
            attempt: 1,
            error: GraphError::local("down"),
            at: now + day * 4,
        });
        assert_eq!(
            credential.refresh_due(day * 7, hour),
            Some(now + day * 4 + hour)
        );
        credential.token_expires_at = None;
        assert_eq!(credential.refresh_due(day * 7, hour), None, "never expires");
        credential.token_expires_at = Some(now);
        credential.apply(&CredentialEvent::CredentialDisconnected {
            reason: "gone".into(),
            error: None,
            at: now,
        });
        assert_eq!(credential.refresh_due(day * 7, hour), None);
    }

    #[test]
    fn suspensions_round_trip_and_every_type_is_listed() {
        use crate::standing::SuspensionCause;
        let at = Utc::now();
        let events = [
            started(at, "acme.s1"),
            CredentialEvent::CredentialSuspended {
                waba_id: "1".into(),
                cause: SuspensionCause::Restriction,
                reason: "Meta restricted the account".into(),
                restrictions: vec![crate::standing::CUSTOMER_INITIATED.into()],
                until: Some(at),
                notice: Uuid::from_u128(1),
                at,
            },
            CredentialEvent::CredentialReinstated {
                waba_id: "1".into(),
                cause: SuspensionCause::Restriction,
                reason: "lifted".into(),
                status: CredentialStatus::Connected,
                notice: Uuid::from_u128(2),
                at,
            },
        ];
        for event in events {
            assert!(CredentialEvent::TYPES.contains(&event.event_type()));
            let new = event.to_new_event(Uuid::new_v4(), Metadata::by("test"));
            let recorded = RecordedEvent {
                event_id: new.event_id,
                stream: credential_stream("acme"),
                version: 0,
                position: 1,
                event_type: new.event_type,
                schema_version: 1,
                data: new.data,
                metadata: new.metadata,
                recorded_at: at,
                hash: crate::canonical::EventHash::GENESIS,
            };
            assert_eq!(
                CredentialEvent::from_recorded(&recorded).unwrap(),
                Some(event)
            );
        }
    }

    #[test]
    fn events_round_trip_through_the_log_form() {
        let event = started(Utc::now(), "acme.s1");
        let new = event.to_new_event(Uuid::new_v4(), Metadata::by("test"));
        assert_eq!(new.event_type, "OfficialSignupStarted");
        assert!(new.data.get("type").is_none());
        let recorded = RecordedEvent {
            event_id: new.event_id,
            stream: credential_stream("acme"),
            version: 0,
            position: 1,
            event_type: new.event_type,
            schema_version: 1,
            data: new.data,
            metadata: new.metadata,
            recorded_at: Utc::now(),
            hash: crate::canonical::EventHash::GENESIS,
        };
        assert_eq!(
            CredentialEvent::from_recorded(&recorded).unwrap(),
            Some(event)
        );
    }
}
