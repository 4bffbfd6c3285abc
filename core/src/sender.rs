//! The outbound port: sending a message through a channel's provider.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::conversation::Template;
use crate::media::StoredMedia;

/// A message to send, as the dispatcher hands it to a provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboundMessage {
    /// Our id for it; providers that echo a callback value get this.
    pub message_id: String,
    /// The recipient: E.164, or a business-scoped user id.
    pub to: String,
    /// The text; with `media`, its caption.
    pub text: Option<String>,
    pub template: Option<Template>,
    /// An attachment kept in the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<StoredMedia>,
}

/// The provider accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub provider_message_id: String,
}

/// The provider (or the way to it) refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{message}", code.map(|c| format!("({c}) ")).unwrap_or_default())]
pub struct SendError {
    /// The provider's error code (Meta's `error.code`, Twilio's `code`).
    pub code: Option<i64>,
    pub message: String,
    /// Worth retrying: 5xx, 429, timeouts, rate-limit codes.
    pub transient: bool,
    /// How long the provider asked us to wait, if it said.
    pub retry_after: Option<Duration>,
    /// The failure was on our side (the object store, say), not the provider's answer.
    pub ours: bool,
}

/// Meta's limit on messages to one recipient in a short time (a pair rate limit): the
/// endpoint answers, only this recipient must wait.
const PAIR_RATE_LIMIT: i64 = 131056;

impl SendError {
    /// Whether this failure says the provider's endpoint is down or overloaded (a 5xx, a 429,
    /// a timeout, no connection), as a circuit breaker counts: not a refusal of this message,
    /// not one recipient's limit, not a failure on our side.
    pub fn says_the_endpoint_is_down(&self) -> bool {
        self.transient && !self.ours && self.code != Some(PAIR_RATE_LIMIT)
    }
}

/// Sends messages through the provider of a channel.
#[async_trait]
pub trait MessageSender: Send + Sync + 'static {
    async fn send(&self, channel: &str, message: &OutboundMessage) -> Result<Sent, SendError>;
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn only_the_providers_trouble_says_the_endpoint_is_down() {
        let error = |code, transient, ours| SendError {
            code,
            message: "x".into(),
            transient,
            retry_after: None,
            ours,
        };
        assert!(
            error(None, true, false).says_the_endpoint_is_down(),
            "a 5xx, a timeout"
        );
        assert!(
            error(Some(130429), true, false).says_the_endpoint_is_down(),
            "throughput"
        );
        assert!(
            !error(Some(131056), true, false).says_the_endpoint_is_down(),
            "one recipient's pair limit"
        );
        assert!(
            !error(None, true, true).says_the_endpoint_is_down(),
            "our object store"
        );
        assert!(
            !error(Some(131026), false, false).says_the_endpoint_is_down(),
            "a refusal"
        );
    }
}
