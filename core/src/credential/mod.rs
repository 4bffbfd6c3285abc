//! Businesses and their official WhatsApp credentials.
//!
//! A business chooses how its messages leave (`business-{id}`: [`BusinessEvent`]): through
//! Meta's Cloud API with its own credential (official) or through the configured gateway
//! (unofficial). The credential's whole life is its own stream (`credential-{business_id}`:
//! [`CredentialEvent`]): signup started, each onboarding step done or failed, token issued,
//! refreshed, refused, connected, disconnected. Tokens and PINs enter events only sealed
//! ([`SealedSecret`]); a signup `state` only as its SHA-256.
//!
//! [`Credential`] is the fold both the deciders (is this `state` good? what does a failed
//! renewal record?) and the read side use; `decide` holds onboarding's decisions.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::channel::Channel;
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::standing::SuspensionCause;

mod decide;
mod events;
mod fold;
#[cfg(test)]
mod tests;

pub use decide::*;
pub use events::*;
pub use fold::*;

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
    /// Every business event type this release knows.
    pub const TYPES: [&'static str; 2] = ["IntegrationChosen", "ChannelRegistered"];

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
        if !Self::TYPES.contains(&event.event_type.as_str()) {
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
