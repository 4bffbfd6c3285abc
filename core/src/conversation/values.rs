//! The values a conversation is made of: customers, messages, receipts, media, templates,
//! and the small enums events name.

use super::*;

/// Who the customer is: an E.164 phone number, or, for a WhatsApp user who shows only a
/// business-scoped user id, that id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum CustomerKey {
    Phone(String),
    UserId(String),
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CustomerKey::Phone(p) => f.write_str(p),
            CustomerKey::UserId(u) => f.write_str(u),
        }
    }
}

/// A new chat's or outgoing message's id: time-ordered (UUID version 7), so that the read
/// models' keys on it grow at one end of their indexes; a random id puts each new row on a
/// page of its own anywhere in them, and every batch writes those pages out again.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// The conversation stream of `customer` on `channel`. Stored data: never changes.
pub fn stream_name(channel: &str, customer: &CustomerKey) -> String {
    format!("conversation-{channel}-{customer}")
}

/// What we know of the customer from one inbound payload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// E.164, when the payload shows a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Business-scoped user id, when the payload shows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The profile name the customer gave WhatsApp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A media attachment, as the provider described it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Media {
    /// Meta's media id (resolved through the Graph API when downloaded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A direct URL (Twilio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// A voice note (audio recorded in WhatsApp).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub voice: bool,
    /// An animated sticker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub animated: bool,
}

/// An error a provider attached to a message, a receipt or a whole notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderError {
    pub code: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// An inbound message, normalised from any provider's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// `meta`, `pinbot`, `360dialog`, `twilio`.
    pub provider: String,
    /// The provider's id (a `wamid`, a Twilio `MessageSid`).
    pub provider_message_id: String,
    /// text, image, document, video, audio, sticker, location, contacts, interactive, button,
    /// reaction, order, system, request_welcome, edit, revoke, unsupported, or the provider's
    /// own word for a type we do not know yet.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Media>,
    /// The type-specific content (location, contacts, interactive reply, reaction, order,
    /// system notice, …) as the provider sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Reply, forward or product-enquiry context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Click-to-WhatsApp ad referral.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referral: Option<Value>,
    pub customer: Customer,
    /// When the customer sent it, by the provider's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime<Utc>>,
    /// Errors the provider attached (e.g. 131051 for an unsupported type).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProviderError>,
    /// The provider's original JSON for this message (or its form fields).
    pub raw: Value,
}

/// A delivery receipt from a provider, about a message we sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub provider: String,
    /// The id the provider gave our message when it was sent.
    pub provider_message_id: String,
    /// sent, delivered, read, failed (Meta); also queued, undelivered (Twilio).
    pub status: String,
    /// When the status happened, by the provider's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<DateTime<Utc>>,
    pub recipient: Customer,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProviderError>,
    /// What we gave the provider to echo back with the message's receipts (Meta's
    /// `biz_opaque_callback_data`: our message id), when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// The provider's original JSON for this receipt (or its form fields).
    pub raw: Value,
}

/// Why a chat was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpenReason {
    /// The customer's first message on this number.
    FirstMessage,
    /// A message after the previous chat was resolved.
    AfterResolution,
    /// A change of a context field that decides chat identity.
    ContextChanged,
}

/// Why a chat was closed without being resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CloseReason {
    /// A context field that decides chat identity changed: a new chat took over.
    ContextChanged,
}

/// How an assignment was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentRule {
    /// The next online executive of the stakeholder, in a stable rotation.
    RoundRobin,
    /// The assignee went offline; the chat went to the next online executive (or back to
    /// waiting when nobody is online).
    AssigneeWentOffline,
    /// The assignee was deactivated or no longer works the chat's stakeholder; the chat went
    /// to the next online executive (or back to waiting).
    AssigneeLeft,
    /// A lead chose.
    Manual,
}

/// An executive as an assignment names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutiveRef {
    pub id: Uuid,
    pub name: String,
}

/// How long after the customer's last message free-form replies are allowed (WhatsApp's
/// customer service window).
pub const SERVICE_WINDOW_HOURS: u64 = 24;

/// When the customer service window opened by a customer message at `last_incoming` closes.
pub fn service_window_end(last_incoming: DateTime<Utc>) -> DateTime<Utc> {
    crate::time::later(last_incoming, crate::time::hours(SERVICE_WINDOW_HOURS))
}

/// A WhatsApp template message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub name: String,
    pub language: String,
    #[serde(default)]
    pub params: Vec<String>,
}

/// What a queued outbound message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboundPurpose {
    /// An executive's reply or template.
    Reply,
    /// The rating request sent when a chat is resolved.
    RatingRequest,
}

/// A message sent to our own people (not the customer): an SLA alert to the alert group, an
/// escalation to the shift lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub message_id: Uuid,
    /// The recipient's number, E.164.
    pub to: String,
    pub template: Template,
}

/// A customer message left unanswered past a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaBreach {
    pub chat_id: Uuid,
    /// The provider id of the customer message that started the clock.
    pub customer_message: String,
    pub clock_started_at: DateTime<Utc>,
    /// When the threshold was crossed.
    pub due_at: DateTime<Utc>,
    /// When the alert was actually raised (later than `due_at` only after a restart).
    pub fired_at: DateTime<Utc>,
    /// The version of the SLA policy it was measured against, and the threshold it used.
    pub policy_version: u64,
    pub threshold_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// Why an SLA clock stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlaStop {
    Answered,
    Resolved,
    Closed,
}

/// The SLA clock of the open chat: running from the first customer message with no reply
/// after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    pub chat_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub customer_message: String,
    pub alerted: bool,
    pub escalated: bool,
}

/// What a resolved chat asks the customer, as free text inside the 24-hour window.
pub const RATING_REQUEST_TEXT: &str = "Hope we resolved your query. Rate 1-5.";

/// The system tag derived from the direction of a chat's last message; never set by hand.
pub const AWAITING_CUSTOMER_TAG: &str = "Awaiting Customer Response";

impl Customer {
    /// The key of the customer's conversations: the number if known, else the user id.
    pub fn key(&self) -> Option<CustomerKey> {
        match (&self.phone, &self.user_id) {
            (Some(phone), _) => Some(CustomerKey::Phone(phone.clone())),
            (None, Some(user_id)) => Some(CustomerKey::UserId(user_id.clone())),
            (None, None) => None,
        }
    }
}

/// Which conversation a command is for: the channel (and the stakeholder it serves) and the
/// customer. Recorded in `ChatOpened`, so that read models need nothing but the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRef {
    /// The channel's key.
    pub channel: String,
    /// Our WhatsApp number on that channel.
    pub channel_number: String,
    pub stakeholder: String,
    pub customer: CustomerKey,
}

impl ConversationRef {
    pub fn stream(&self) -> String {
        stream_name(&self.channel, &self.customer)
    }
}

impl InboundMessage {
    /// The message's attachments, in order: its media, then (Twilio) the further attachments
    /// listed in its details.
    pub fn media_sources(&self) -> Vec<MediaSource> {
        let Some(media) = &self.media else {
            return vec![];
        };
        if media.id.is_none() && media.url.is_none() {
            return vec![];
        }
        let account = self
            .raw
            .get("AccountSid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut all = vec![MediaSource {
            index: 0,
            kind: self.kind.clone(),
            id: media.id.clone(),
            url: media.url.clone(),
            mime_type: media.mime_type.clone(),
            sha256: media.sha256.clone(),
            account: account.clone(),
            animated: media.animated.then_some(true),
        }];
        let more = self
            .details
            .as_ref()
            .and_then(|d| d.get("attachments"))
            .and_then(Value::as_array);
        for (i, attachment) in more.into_iter().flatten().enumerate().skip(1) {
            let Some(url) = attachment.get("url").and_then(Value::as_str) else {
                continue;
            };
            let mime_type = attachment
                .get("content_type")
                .and_then(Value::as_str)
                .map(str::to_owned);
            all.push(MediaSource {
                index: i as u32,
                kind: kind_of_mime(mime_type.as_deref()).to_owned(),
                id: None,
                url: Some(url.to_owned()),
                mime_type,
                sha256: None,
                account: account.clone(),
                animated: None,
            });
        }
        all
    }
}

impl Media {
    /// How an attachment we send is described beside its message (as a provider describes one it
    /// delivers): its type, name and caption.
    pub fn described(media: &StoredMedia, caption: Option<String>) -> Media {
        Media {
            mime_type: Some(media.mime.clone()),
            sha256: Some(media.sha256.clone()),
            filename: media.filename.clone(),
            caption,
            ..Media::default()
        }
    }
}
