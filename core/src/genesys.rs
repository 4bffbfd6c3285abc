//! The Genesys Cloud bridge's domain (Open Messaging, GENESYS.md): each business's
//! integration as recorded configuration, how a WhatsApp customer is addressed to Genesys,
//! what an inbound message says to an agent, and the port the bridge sends through.
//!
//! A customer is addressed to Genesys by an opaque id naming both our channel and the
//! customer ([`address`]): the agent's replies come back to that id, so the webhook knows
//! which conversation they belong to without a lookup. The Genesys conversation id is
//! recorded on the conversation the first time Genesys names it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::conversation::{CustomerKey, InboundMessage};

/// The stream of the Genesys configuration's history.
pub const GENESYS_CONFIG_STREAM: &str = "config-genesys-all";

/// One business's Open Messaging integration. Secrets are named by the environment variables
/// that hold them; their values are never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesysIntegration {
    /// The business (tenant) it belongs to: its channels' `business`.
    pub tenant: String,
    /// `mypurecloud.com`, `mypurecloud.ie`, `usw2.pure.cloud`, …
    pub region: String,
    /// The OAuth client (client credentials).
    pub client_id: String,
    /// The environment variable holding the OAuth client's secret.
    pub client_secret_env: String,
    /// The Open Messaging integration's id.
    pub integration_id: String,
    /// The environment variable holding the webhook's secret token.
    pub webhook_secret_env: String,
    /// The business's channels whose conversations go to Genesys instead of chatledger's desk.
    pub channels: Vec<String>,
    /// Where the API is (default `https://api.{region}`): a proxy, a sandbox, a test's fake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Where tokens come from (default `https://login.{region}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_url: Option<String>,
}

impl GenesysIntegration {
    pub fn api_base(&self) -> String {
        self.api_url
            .clone()
            .unwrap_or_else(|| format!("https://api.{}", self.region))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn login_base(&self) -> String {
        self.login_url
            .clone()
            .unwrap_or_else(|| format!("https://login.{}", self.region))
            .trim_end_matches('/')
            .to_owned()
    }
}

/// The Genesys configuration as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesysConfigured {
    pub integrations: Vec<GenesysIntegration>,
    /// Where it was read from (a file name).
    pub source: String,
}

impl GenesysConfigured {
    pub const EVENT_TYPE: &'static str = "GenesysConfigured";

    /// The integration a channel routes to, if it does.
    pub fn routing(&self, channel: &str) -> Option<&GenesysIntegration> {
        self.integrations
            .iter()
            .find(|i| i.channels.iter().any(|c| c == channel))
    }

    pub fn tenant(&self, tenant: &str) -> Option<&GenesysIntegration> {
        self.integrations.iter().find(|i| i.tenant == tenant)
    }
}

/// The id a customer of `channel` goes by in Genesys: `{channel}|{customer}`.
pub fn address(channel: &str, customer: &CustomerKey) -> String {
    format!("{channel}|{customer}")
}

/// The channel and customer an address names (a customer's number, or a user id).
pub fn parse_address(address: &str) -> Option<(String, CustomerKey)> {
    let (channel, customer) = address.split_once('|')?;
    if channel.is_empty() || customer.is_empty() {
        return None;
    }
    let customer = if customer.starts_with('+') {
        CustomerKey::Phone(customer.to_owned())
    } else {
        CustomerKey::UserId(customer.to_owned())
    };
    Some((channel.to_owned(), customer))
}

/// What an inbound WhatsApp message says to an agent, as text: the text or caption, an
/// interactive reply's title, a location's place and coordinates, or the kind in brackets.
/// Never empty (Genesys refuses a message with neither text nor content).
pub fn text_for_agent(message: &InboundMessage) -> String {
    let details = message.details.as_ref();
    let field = |path: &[&str]| -> Option<String> {
        let mut value = details?;
        for key in path {
            value = value.get(key)?;
        }
        match value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let text = match message.kind.as_str() {
        "interactive" => field(&["button_reply", "title"])
            .or_else(|| field(&["list_reply", "title"]))
            .or_else(|| field(&["nfm_reply", "body"])),
        "location" => {
            let place = [field(&["name"]), field(&["address"])]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ");
            match (field(&["latitude"]), field(&["longitude"])) {
                (Some(lat), Some(lon)) if place.is_empty() => {
                    Some(format!("Location: {lat}, {lon}"))
                }
                (Some(lat), Some(lon)) => Some(format!("Location: {place} ({lat}, {lon})")),
                _ => (!place.is_empty()).then(|| format!("Location: {place}")),
            }
        }
        _ => None,
    };
    text.or_else(|| message.text.clone().filter(|t| !t.trim().is_empty()))
        .unwrap_or_else(|| format!("[{}]", message.kind))
}

/// A customer's message on its way to Genesys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToAgent {
    pub tenant: String,
    /// [`address`] of the customer.
    pub from: String,
    pub nickname: Option<String>,
    /// Our id for it (the WhatsApp message id): Genesys's `channel.messageId`.
    pub message_id: String,
    pub time: DateTime<Utc>,
    pub text: String,
    /// Its attachments, kept: Genesys gets links it fetches itself.
    pub attachments: Vec<crate::media::StoredMedia>,
}

/// What Genesys answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Genesys's id for the message.
    pub id: Option<String>,
    pub conversation_id: Option<String>,
}

/// Genesys refused or could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", code.as_deref().map(|c| format!("({c}) ")).unwrap_or_default())]
pub struct BridgeError {
    pub code: Option<String>,
    pub message: String,
    /// Worth trying again (unreachable, 5xx, 429, an expired token).
    pub transient: bool,
}

/// What became of an agent's message on WhatsApp, on its way back to Genesys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptToAgent {
    pub tenant: String,
    /// Genesys's id of the agent's message.
    pub genesys_message_id: String,
    /// [`address`] of the customer.
    pub to: String,
    pub time: DateTime<Utc>,
    /// `Delivered`, `Read` or `Failed`.
    pub status: String,
    /// For `Failed`: Genesys's reason code and the text.
    pub reason: Option<(String, String)>,
}

/// The receipt status Genesys takes for a WhatsApp status, if it takes one: `Delivered` and
/// `Failed` (documented), `Read` (in the SDK's enum; tried, and kept in our log either way).
pub fn receipt_status(whatsapp: &str) -> Option<&'static str> {
    match whatsapp {
        "delivered" => Some("Delivered"),
        "read" => Some("Read"),
        "failed" | "undelivered" => Some("Failed"),
        _ => None,
    }
}

/// Genesys's reason code for a WhatsApp error code (GENESYS.md §5, our mapping).
pub fn reason_code(whatsapp_code: Option<i64>) -> &'static str {
    match whatsapp_code {
        Some(131047) => "MessageExpired",
        Some(131056) | Some(130429) | Some(131048) => "RateLimited",
        Some(131052) | Some(131053) => "MediaTypeNotAllowed",
        Some(131051) => "UnsupportedMessage",
        Some(131026) => "InvalidDestination",
        Some(131050) => "RecipientOptedOut",
        _ => "GeneralError",
    }
}

/// Open Messaging, as the bridge uses it.
#[async_trait]
pub trait OpenMessaging: Send + Sync + 'static {
    /// Sends a customer's message to the tenant's integration.
    async fn send_to_agent(&self, message: &ToAgent) -> Result<Delivered, BridgeError>;
    /// Tells the integration what became of an agent's message.
    async fn send_receipt(&self, receipt: &ReceiptToAgent) -> Result<(), BridgeError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbound(kind: &str, text: Option<&str>, details: Option<Value>) -> InboundMessage {
        InboundMessage {
            provider: "meta".into(),
            provider_message_id: "wamid.1".into(),
            kind: kind.into(),
            text: text.map(str::to_owned),
            media: None,
            details,
            context: None,
            referral: None,
            customer: Default::default(),
            sent_at: None,
            errors: vec![],
            raw: Value::Null,
        }
    }

    #[test]
    fn agents_get_text_never_an_empty_body() {
        assert_eq!(text_for_agent(&inbound("text", Some("hi"), None)), "hi");
        assert_eq!(
            text_for_agent(&inbound(
                "interactive",
                None,
                Some(
                    json!({"type": "button_reply", "button_reply": {"id": "b1", "title": "Yes, book it"}})
                )
            )),
            "Yes, book it"
        );
        assert_eq!(
            text_for_agent(&inbound(
                "location",
                None,
                Some(json!({"latitude": 23.03, "longitude": 72.58, "name": "Office"}))
            )),
            "Location: Office (23.03, 72.58)"
        );
        assert_eq!(text_for_agent(&inbound("image", None, None)), "[image]");
        assert_eq!(text_for_agent(&inbound("text", Some("  "), None)), "[text]");
    }

    #[test]
    fn an_address_names_channel_and_customer() {
        let phone = CustomerKey::Phone("+919638120888".into());
        let id = address("9099039188", &phone);
        assert_eq!(parse_address(&id), Some(("9099039188".into(), phone)));
        assert_eq!(parse_address("abcdef12345@socialmedia"), None);
    }
}
