//! WhatsApp providers: inbound payloads into normalised items, signatures, phone numbers.
//!
//! # Layout
//!
//! - [`meta`]: Meta's Cloud API webhook envelope (also what 360dialog and Pinbot forward,
//!   including 360dialog's legacy on-premises shape).
//! - [`twilio`]: Twilio's form-encoded inbound and status callbacks.
//! - [`signature`]: `X-Hub-Signature-256`, `X-Twilio-Signature` and shared-secret headers,
//!   all compared in constant time.
//! - [`graph`]: the Graph API calls of Embedded Signup and token upkeep.
//! - [`send`]: sending through providers over HTTP (Cloud API shape, Twilio).
//! - [`phone`]: customer numbers to E.164 with a default country.
//!
//! Parsers never fail on a shape they do not know: what they cannot read as a message or a
//! receipt becomes a [`ChannelNotice`] holding the raw JSON, so nothing a provider sent is
//! dropped.

pub mod graph;
pub mod meta;
pub mod phone;
pub mod send;
pub mod signature;
pub mod twilio;

use chatledger_core::conversation::{InboundMessage, ProviderError, Receipt};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Something a provider told us that belongs to the channel rather than to one customer:
/// errors without a message, notifications of other webhook fields, shapes we do not know.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelNotice {
    /// `errors`, `field:account_update`, `unrecognized`, `receipt_without_recipient`, …
    pub kind: String,
    pub errors: Vec<ProviderError>,
    pub raw: Value,
    /// The business account it is about, where the provider says (Meta's `entry.id`, the
    /// WhatsApp Business Account id).
    pub account_id: Option<String>,
}

/// One normalised item of a webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundItem {
    Message(Box<InboundMessage>),
    Receipt(Box<Receipt>),
    Notice(ChannelNotice),
}

/// An item with what the payload said about which of our numbers it is for.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    /// Meta's `metadata.phone_number_id`, when the payload has one.
    pub phone_number_id: Option<String>,
    pub item: InboundItem,
}

/// A provider timestamp: unix seconds as a string or a number.
pub(crate) fn unix_seconds(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let seconds = match value? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        _ => return None,
    };
    DateTime::from_timestamp(seconds, 0)
}

/// A string field, accepting numbers too (providers are loose about ids).
pub(crate) fn string_field(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A provider error object; `None` without a usable `code`.
pub fn provider_error(value: &Value) -> Option<ProviderError> {
    let code = match value.get("code")? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some(ProviderError {
        code,
        title: string_field(value, "title"),
        message: string_field(value, "message"),
        details: value
            .get("error_data")
            .and_then(|d| string_field(d, "details")),
    })
}

pub(crate) fn provider_errors(value: Option<&Value>) -> Vec<ProviderError> {
    value
        .and_then(Value::as_array)
        .map(|errors| errors.iter().filter_map(provider_error).collect())
        .unwrap_or_default()
}
