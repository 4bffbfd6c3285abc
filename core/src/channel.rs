//! Channels: our WhatsApp numbers, and what is recorded about them.
//!
//! A channel says which stakeholder a number serves, which business owns it, which provider
//! carries it and how that provider's webhooks are authenticated. The configured set is
//! versioned history: each change is a `ChannelsConfigured` event on
//! [`CHANNELS_CONFIG_STREAM`]. Provider notices that belong to a number rather than to a
//! customer (errors without a message, other webhook fields, shapes we do not know) are kept
//! on `channel-{key}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::canonical::canonical_json_string;
use crate::conversation::{ProviderError, EVENT_ID_NAMESPACE};
use crate::event::{Metadata, NewEvent};

/// The stream of the channel configuration's history.
pub const CHANNELS_CONFIG_STREAM: &str = "config-channels-all";

/// Who carries a number's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Meta's Cloud API, directly.
    Meta,
    /// Pinbot (Pinnacle): forwards Meta's format, unsigned.
    Pinbot,
    /// 360dialog: forwards Meta's format, unsigned.
    #[serde(rename = "360dialog")]
    Dialog360,
    /// Twilio's WhatsApp API: form-encoded callbacks.
    Twilio,
}

impl Provider {
    /// The name used in events and metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::Meta => "meta",
            Provider::Pinbot => "pinbot",
            Provider::Dialog360 => "360dialog",
            Provider::Twilio => "twilio",
        }
    }
}

/// A shared-secret header a BSP sends on every webhook; its value comes from the environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHeader {
    /// The header's name, e.g. `X-Webhook-Secret`.
    pub name: String,
    /// The environment variable holding its value. Only the name is ever recorded.
    pub env: String,
}

/// How a channel's webhooks are authenticated. A request passes when it satisfies any of the
/// checks whose secret is present in the environment; with no such secret, every request is
/// refused, unless the channel is explicitly `open` (`auth: none`, for a private network).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAuth {
    /// Accept webhooks without any check (`auth: none` in `channels.yaml`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    /// Accept a valid `X-Hub-Signature-256` made with `META_APP_SECRET`.
    #[serde(default)]
    pub meta_signature: bool,
    /// Accept a request carrying this header with the configured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_header: Option<SecretHeader>,
    /// Accept a valid `X-Twilio-Signature` made with `TWILIO_AUTH_TOKEN`.
    #[serde(default)]
    pub twilio_signature: bool,
}

/// How messages leave through a channel. Everything has a default per provider; the token's
/// value comes from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSend {
    /// The provider API's base URL (Meta: `GRAPH_API_BASE_URL` or the Graph API; Pinbot:
    /// `https://partnersv1.pinbot.ai/v3`; 360dialog: `https://waba-v2.360dialog.io`; Twilio:
    /// `https://api.twilio.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The environment variable holding the API token (default `WA_API_KEY_1`; Twilio uses
    /// `TWILIO_AUTH_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Twilio's account SID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_sid: Option<String>,
    /// How attachments reach the provider (default: `upload` for Meta's shape; Twilio takes
    /// only links).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaDelivery>,
}

/// How an attachment we send reaches the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaDelivery {
    /// A link it fetches (presigned on S3; chatledger's own signed route on the filesystem,
    /// which needs `PUBLIC_BASE_URL`).
    Link,
    /// Uploaded to the provider's media endpoint first, then sent by its id.
    Upload,
}

/// One of our WhatsApp numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// The webhook path key: `/api/chats/whatsapp_chat/{key}`, `/api/webhooks/twilio/{key}`.
    /// Also the channel part of conversation stream names.
    pub key: String,
    /// The WhatsApp number, international digits without `+`.
    pub number: String,
    /// Who it serves: partner, customer, vendor, srdp, …
    pub stakeholder: String,
    /// The business that owns it.
    pub business: String,
    pub provider: Provider,
    /// Meta's phone number id, for routing the app-level webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number_id: Option<String>,
    pub auth: ChannelAuth,
    #[serde(default)]
    pub send: ChannelSend,
}

/// The configured channels as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelsConfigured {
    /// ISO 3166 country for numbers written without a country code.
    pub default_country: String,
    pub channels: Vec<Channel>,
    /// Where the configuration was read from.
    pub source: String,
}

/// The one form a stakeholder's name is kept and compared in: trimmed and lowercased.
/// Names from outside (the transaction system's `customer_type`, a filter, a configuration
/// file) match whatever their case and surrounding spaces.
pub fn stakeholder_name(given: &str) -> String {
    given.trim().to_lowercase()
}

/// The stream of notices about one channel.
pub fn channel_stream(key: &str) -> String {
    format!("channel-{key}")
}

/// Something a provider sent about a number rather than a customer, kept as it was sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderNoticeReceived {
    pub provider: String,
    /// `errors`, `field:account_update`, `unrecognized`, `receipt_without_recipient`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProviderError>,
    pub raw: Value,
    pub received_at: DateTime<Utc>,
    /// The business account it is about, where the provider says (Meta's WABA id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
}

impl ProviderNoticeReceived {
    pub const EVENT_TYPE: &'static str = "ProviderNoticeReceived";

    /// The envelope; its id is derived from the raw payload (and the account it is about),
    /// so a redelivery is a duplicate.
    pub fn to_new_event(&self, stream: &str, metadata: Metadata) -> NewEvent {
        let account = self
            .account_id
            .as_deref()
            .map_or(String::new(), |a| format!("/{a}"));
        let id = Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!(
                "{}/{stream}/{}{account}/{}",
                Self::EVENT_TYPE,
                self.kind,
                canonical_json_string(&self.raw)
            )
            .as_bytes(),
        );
        NewEvent::new(
            id,
            Self::EVENT_TYPE,
            serde_json::to_value(self).unwrap_or(Value::Null),
            metadata,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(raw: Value, at: &str) -> ProviderNoticeReceived {
        ProviderNoticeReceived {
            provider: "meta".into(),
            kind: "errors".into(),
            errors: vec![],
            raw,
            received_at: at.parse().unwrap(),
            account_id: None,
        }
    }

    #[test]
    fn a_redelivered_notice_has_the_same_id() {
        let a = notice(serde_json::json!({"x": 1, "y": 2}), "2026-11-22T10:00:00Z");
        let b = notice(serde_json::json!({"y": 2, "x": 1}), "2026-11-22T10:05:00Z");
        let m = Metadata::by("t");
        assert_eq!(
            a.to_new_event("channel-1", m.clone()).event_id,
            b.to_new_event("channel-1", m.clone()).event_id
        );
        let c = notice(serde_json::json!({"x": 2}), "2026-11-22T10:00:00Z");
        assert_ne!(
            a.to_new_event("channel-1", m.clone()).event_id,
            c.to_new_event("channel-1", m).event_id
        );
    }

    #[test]
    fn provider_names_are_stable() {
        assert_eq!(
            serde_json::to_value(Provider::Dialog360).unwrap(),
            "360dialog"
        );
        assert_eq!(
            serde_json::from_value::<Provider>("pinbot".into()).unwrap(),
            Provider::Pinbot
        );
    }
}
