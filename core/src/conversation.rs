//! The conversation between one customer and one of our numbers: its events, its state (the
//! fold), and the decisions taken on it.
//!
//! Stream: `conversation-{channel}-{customer}` ([`stream_name`]). The decider is pure: the
//! command carries the time and any new id, and the decision returns events.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::canonical::canonical_json_string;
use crate::event::{Metadata, NewEvent, RecordedEvent};

/// The namespace of every event id chatledger derives (UUIDv5).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_2b8e_4f0a_5c3d_9e7f_1a2b_3c4d_5e6f);

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
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The events of a conversation stream. Variant names are the stored event types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ConversationEvent {
    ChatOpened {
        chat_id: Uuid,
        #[serde(flatten)]
        conversation: ConversationRef,
        reason: OpenReason,
        /// The customer's context when the chat opened.
        context: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        previous_chat_id: Option<Uuid>,
        opened_at: DateTime<Utc>,
    },
    MessageReceived {
        chat_id: Uuid,
        received_at: DateTime<Utc>,
        #[serde(flatten)]
        message: Box<InboundMessage>,
    },
    ReceiptRecorded {
        /// The chat of the message it is about, when we know that message.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chat_id: Option<Uuid>,
        /// False when the receipt is about a message this conversation has no record of.
        known_message: bool,
        received_at: DateTime<Utc>,
        #[serde(flatten)]
        receipt: Box<Receipt>,
    },
    /// The transaction system changed the customer's context.
    ContextChanged {
        #[serde(flatten)]
        conversation: ConversationRef,
        /// The fields that changed, with their new values.
        changes: serde_json::Map<String, Value>,
        /// Their values before (`null` for a field that was not set).
        previous: serde_json::Map<String, Value>,
        /// The whole context after the change.
        context: Value,
        /// The configured fields that decide chat identity, as they stood.
        identity_fields: Vec<String>,
        /// Whether one of them changed (and so a new chat replaces the open one).
        identity_changed: bool,
        /// The chat that was open when the context changed, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chat_id: Option<Uuid>,
        changed_at: DateTime<Utc>,
    },
    /// A chat that had no assignee got one.
    ChatAssigned {
        chat_id: Uuid,
        executive: ExecutiveRef,
        rule: AssignmentRule,
        /// Who could have had it (for round robin: the online executives, in rotation order).
        candidates: Vec<ExecutiveRef>,
        /// Who decided, for a manual assignment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// The event (or request) that led to it.
        cause: Uuid,
        assigned_at: DateTime<Utc>,
    },
    /// A chat's assignee changed; `executive: None` puts it back to waiting.
    ChatReassigned {
        chat_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        executive: Option<ExecutiveRef>,
        previous: ExecutiveRef,
        rule: AssignmentRule,
        candidates: Vec<ExecutiveRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        cause: Uuid,
        assigned_at: DateTime<Utc>,
    },
    /// An outbound message was recorded as intent; the dispatcher sends it.
    ReplyQueued {
        chat_id: Uuid,
        message_id: Uuid,
        /// The customer it goes to.
        to: CustomerKey,
        /// `text` or `template`.
        kind: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        template: Option<Template>,
        purpose: OutboundPurpose,
        by: String,
        queued_at: DateTime<Utc>,
    },
    /// The provider accepted a queued message.
    MessageDispatched {
        chat_id: Uuid,
        message_id: Uuid,
        provider_message_id: String,
        attempts: u32,
        dispatched_at: DateTime<Utc>,
    },
    /// A queued message could not be sent; `permanent` when retrying cannot help.
    MessageDispatchFailed {
        chat_id: Uuid,
        message_id: Uuid,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i64>,
        error: String,
        permanent: bool,
        attempts: u32,
        failed_at: DateTime<Utc>,
    },
    /// An executive resolved the chat; a rating request follows.
    ChatResolved {
        chat_id: Uuid,
        by: String,
        resolved_at: DateTime<Utc>,
    },
    /// The customer answered the rating request.
    ChatRated {
        chat_id: Uuid,
        rating: u8,
        /// The message that carried the rating.
        provider_message_id: String,
        rated_at: DateTime<Utc>,
    },
    /// A customer message started the SLA clock: nothing answers it yet.
    SlaClockStarted {
        chat_id: Uuid,
        stakeholder: String,
        customer_message: String,
        started_at: DateTime<Utc>,
    },
    /// The SLA clock stopped: an executive answered, or the chat was resolved or closed.
    SlaClockStopped {
        chat_id: Uuid,
        customer_message: String,
        reason: SlaStop,
        stopped_at: DateTime<Utc>,
    },
    /// A customer waited past the alert threshold.
    SlaAlertRaised(SlaBreach),
    /// A customer waited past the escalation threshold.
    SlaEscalated(SlaBreach),
    /// An executive tagged a chat.
    TagApplied {
        chat_id: Uuid,
        tag: String,
        by: String,
        at: DateTime<Utc>,
    },
    /// An executive removed a tag.
    TagRemoved {
        chat_id: Uuid,
        tag: String,
        by: String,
        at: DateTime<Utc>,
    },
    /// A chat ended without resolution, replaced by another.
    ChatClosed {
        chat_id: Uuid,
        reason: CloseReason,
        superseded_by: Uuid,
        closed_at: DateTime<Utc>,
    },
    /// The customer asked to be forgotten: the key their messages were sealed with is
    /// destroyed, and read models show "[erased]" where their text and name were.
    PersonalDataErased {
        customer: CustomerKey,
        /// The key that was destroyed.
        key_id: String,
        by: String,
        erased_at: DateTime<Utc>,
    },
}

impl ConversationEvent {
    /// Every stored type name of a conversation stream: the one list folds read by (a test
    /// checks it against every variant's [`Self::event_type`] and round trip).
    pub const TYPES: [&'static str; 19] = [
        "ChatOpened",
        "MessageReceived",
        "ReceiptRecorded",
        "ContextChanged",
        "ChatClosed",
        "ChatAssigned",
        "ChatReassigned",
        "TagApplied",
        "TagRemoved",
        "ReplyQueued",
        "ChatResolved",
        "SlaClockStarted",
        "SlaClockStopped",
        "SlaAlertRaised",
        "SlaEscalated",
        "ChatRated",
        "MessageDispatched",
        "MessageDispatchFailed",
        "PersonalDataErased",
    ];

    /// The stored type name.
    pub fn event_type(&self) -> &'static str {
        match self {
            ConversationEvent::ChatOpened { .. } => "ChatOpened",
            ConversationEvent::MessageReceived { .. } => "MessageReceived",
            ConversationEvent::ReceiptRecorded { .. } => "ReceiptRecorded",
            ConversationEvent::ContextChanged { .. } => "ContextChanged",
            ConversationEvent::ChatClosed { .. } => "ChatClosed",
            ConversationEvent::ChatAssigned { .. } => "ChatAssigned",
            ConversationEvent::ChatReassigned { .. } => "ChatReassigned",
            ConversationEvent::TagApplied { .. } => "TagApplied",
            ConversationEvent::ReplyQueued { .. } => "ReplyQueued",
            ConversationEvent::ChatResolved { .. } => "ChatResolved",
            ConversationEvent::SlaClockStarted { .. } => "SlaClockStarted",
            ConversationEvent::SlaClockStopped { .. } => "SlaClockStopped",
            ConversationEvent::SlaAlertRaised(_) => "SlaAlertRaised",
            ConversationEvent::SlaEscalated(_) => "SlaEscalated",
            ConversationEvent::ChatRated { .. } => "ChatRated",
            ConversationEvent::MessageDispatched { .. } => "MessageDispatched",
            ConversationEvent::MessageDispatchFailed { .. } => "MessageDispatchFailed",
            ConversationEvent::TagRemoved { .. } => "TagRemoved",
            ConversationEvent::PersonalDataErased { .. } => "PersonalDataErased",
        }
    }

    /// The event's id, derived from what it is about, so that deciding the same thing twice
    /// (a redelivered webhook) yields the same id and the store keeps it once.
    pub fn event_id(&self, stream: &str) -> Uuid {
        let name = match self {
            ConversationEvent::ChatOpened { chat_id, .. } => {
                format!("ChatOpened/{stream}/{chat_id}")
            }
            ConversationEvent::MessageReceived { message, .. } => {
                format!("MessageReceived/{stream}/{}", message.provider_message_id)
            }
            ConversationEvent::ReceiptRecorded { receipt, .. } => {
                format!(
                    "ReceiptRecorded/{stream}/{}/{}",
                    receipt.provider_message_id, receipt.status
                )
            }
            // The same change posted again finds nothing to change and records nothing; the
            // id only has to tell apart changes from different starting points.
            ConversationEvent::ContextChanged {
                changes, previous, ..
            } => format!(
                "ContextChanged/{stream}/{}/{}",
                canonical_json_string(&Value::Object(previous.clone())),
                canonical_json_string(&Value::Object(changes.clone()))
            ),
            ConversationEvent::ChatClosed { chat_id, .. } => {
                format!("ChatClosed/{stream}/{chat_id}")
            }
            // One decision per cause: a reactor that sees the same cause again (after a
            // restart, or in a second process) produces the same id.
            ConversationEvent::ChatAssigned { chat_id, cause, .. } => {
                format!("ChatAssigned/{stream}/{chat_id}/{cause}")
            }
            ConversationEvent::ChatReassigned { chat_id, cause, .. } => {
                format!("ChatReassigned/{stream}/{chat_id}/{cause}")
            }
            ConversationEvent::ReplyQueued { message_id, .. } => {
                format!("ReplyQueued/{stream}/{message_id}")
            }
            ConversationEvent::ChatResolved { chat_id, .. } => {
                format!("ChatResolved/{stream}/{chat_id}")
            }
            ConversationEvent::ChatRated { chat_id, .. } => format!("ChatRated/{stream}/{chat_id}"),
            ConversationEvent::SlaClockStarted {
                customer_message, ..
            } => {
                format!("SlaClockStarted/{stream}/{customer_message}")
            }
            ConversationEvent::SlaClockStopped {
                customer_message, ..
            } => {
                format!("SlaClockStopped/{stream}/{customer_message}")
            }
            // One alert (and one escalation) per unanswered customer message, however many
            // processes or restarts decide it.
            ConversationEvent::SlaAlertRaised(b) => format!(
                "SlaAlertRaised/{stream}/{}/{}",
                b.chat_id, b.customer_message
            ),
            ConversationEvent::SlaEscalated(b) => {
                format!("SlaEscalated/{stream}/{}/{}", b.chat_id, b.customer_message)
            }
            // One outcome per queued message.
            ConversationEvent::MessageDispatched { message_id, .. }
            | ConversationEvent::MessageDispatchFailed { message_id, .. } => {
                format!("MessageDispatchOutcome/{stream}/{message_id}")
            }
            // A tag can come and go several times; what tells the changes apart is when.
            ConversationEvent::TagApplied {
                chat_id, tag, at, ..
            } => {
                format!(
                    "TagApplied/{stream}/{chat_id}/{tag}/{}",
                    at.timestamp_micros()
                )
            }
            ConversationEvent::TagRemoved {
                chat_id, tag, at, ..
            } => {
                format!(
                    "TagRemoved/{stream}/{chat_id}/{tag}/{}",
                    at.timestamp_micros()
                )
            }
            ConversationEvent::PersonalDataErased { key_id, .. } => {
                format!("PersonalDataErased/{stream}/{key_id}")
            }
        };
        Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes())
    }

    /// The envelope to append.
    pub fn to_new_event(&self, stream: &str, metadata: Metadata) -> NewEvent {
        let data = match serde_json::to_value(self) {
            Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        NewEvent::new(self.event_id(stream), self.event_type(), data, metadata)
    }

    /// Reads a stored event back; `None` for a type this fold does not know (a newer
    /// release's event), which the fold then skips. This is the one place old schema
    /// versions would be upcast.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if !Self::TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        // Read straight from the stored data, the tag first, so that nothing is cloned or
        // buffered on the way (an adjacently tagged enum met in the stored key order, data
        // before type, would be).
        let tagged = Tagged {
            event_type: &event.event_type,
            data: &event.data,
            read: 0,
        };
        ConversationEvent::deserialize(serde::de::value::MapAccessDeserializer::new(tagged))
            .map(Some)
    }
}

/// An event read from the log, with its conversation event decoded once, on first use, for
/// every read model and reactor that looks at it.
#[derive(Debug)]
pub struct DecodedEvent {
    recorded: RecordedEvent,
    conversation: std::sync::OnceLock<Result<Option<ConversationEvent>, String>>,
}

impl DecodedEvent {
    pub fn new(recorded: RecordedEvent) -> Self {
        DecodedEvent {
            recorded,
            conversation: std::sync::OnceLock::new(),
        }
    }

    /// The conversation event, if this is one (see [`ConversationEvent::from_recorded`]);
    /// the error says why it could not be read.
    pub fn conversation(&self) -> Result<Option<&ConversationEvent>, &str> {
        match self.conversation.get_or_init(|| {
            ConversationEvent::from_recorded(&self.recorded).map_err(|e| e.to_string())
        }) {
            Ok(event) => Ok(event.as_ref()),
            Err(e) => Err(e.as_str()),
        }
    }

    /// The stored event.
    pub fn recorded(&self) -> &RecordedEvent {
        &self.recorded
    }
}

impl std::ops::Deref for DecodedEvent {
    type Target = RecordedEvent;

    fn deref(&self) -> &RecordedEvent {
        &self.recorded
    }
}

impl From<RecordedEvent> for DecodedEvent {
    fn from(recorded: RecordedEvent) -> Self {
        DecodedEvent::new(recorded)
    }
}

/// A stored event seen as `{"type": …, "data": …}`, in that order, without copying it.
struct Tagged<'a> {
    event_type: &'a str,
    data: &'a serde_json::Value,
    /// Entries handed out so far.
    read: u8,
}

impl<'de> serde::de::MapAccess<'de> for Tagged<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.read {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.read += 1;
        match self.read {
            1 => seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(
                self.event_type,
            )),
            _ => seed.deserialize(self.data),
        }
    }
}

/// A chat's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatStatus {
    Open,
    Assigned,
    AwaitingCustomer,
    Resolved,
    Closed,
}

/// The current chat of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Chat {
    pub chat_id: Uuid,
    pub status: ChatStatus,
    pub opened_at: DateTime<Utc>,
    pub assignee: Option<ExecutiveRef>,
    pub tags: std::collections::BTreeSet<String>,
}

/// A conversation as folded from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    /// The latest chat, open or not.
    pub chat: Option<Chat>,
    pub customer: Customer,
    pub context: Value,
    /// Provider ids of the messages received, with their chat.
    pub received: HashMap<String, Uuid>,
    /// `(provider message id, status)` of every receipt recorded.
    pub receipts: HashSet<(String, String)>,
    /// When the customer's last message was sent (it opens the 24-hour window).
    pub last_incoming_at: Option<DateTime<Utc>>,
    /// Outbound messages by id: their chat, and their provider id once dispatched.
    pub outbound: HashMap<Uuid, Outbound>,
    /// Provider ids of dispatched messages, with their chat.
    pub sent: HashMap<String, Uuid>,
    /// The resolved chat whose rating request has not been answered yet.
    pub awaiting_rating: Option<Uuid>,
    /// The SLA clock, while a customer message waits for an answer.
    pub sla: Option<SlaClock>,
}

/// An outbound message as the conversation knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub chat_id: Uuid,
    pub provider_message_id: Option<String>,
    /// Dispatched or failed: nothing more will be sent for it.
    pub settled: bool,
}

/// What a conversation is asked to do.
#[derive(Debug, Clone)]
pub enum ConversationCommand {
    /// Record a message from the customer. `new_chat_id` is used if this opens a chat.
    ReceiveMessage {
        conversation: ConversationRef,
        message: Box<InboundMessage>,
        new_chat_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Record a delivery receipt.
    RecordReceipt {
        receipt: Box<Receipt>,
        now: DateTime<Utc>,
    },
    /// Give the chat `chat_id` to `executive` (or back to waiting with `None`), because of
    /// `cause` (the event or request that led to it; it makes the decision idempotent).
    Assign {
        chat_id: Uuid,
        executive: Option<ExecutiveRef>,
        rule: AssignmentRule,
        candidates: Vec<ExecutiveRef>,
        by: Option<String>,
        cause: Uuid,
        now: DateTime<Utc>,
    },
    /// Queue a free-form text reply on the open chat: only within 24 hours of the customer's
    /// last message.
    SendReply {
        chat_id: Uuid,
        message_id: Uuid,
        text: String,
        by: String,
        now: DateTime<Utc>,
    },
    /// Queue a template message on the open chat (allowed at any time).
    SendTemplate {
        chat_id: Uuid,
        message_id: Uuid,
        template: Template,
        by: String,
        now: DateTime<Utc>,
    },
    /// Resolve the open chat and ask for a rating: as text inside the 24-hour window, else
    /// as the `rating_template`.
    Resolve {
        chat_id: Uuid,
        rating_message_id: Uuid,
        rating_template: Template,
        by: String,
        now: DateTime<Utc>,
    },
    /// Raise an SLA alert or escalation for the customer message `customer_message`, if the
    /// clock it started is still running (an answer that landed first wins).
    RaiseSla {
        level: crate::sla::SlaLevel,
        breach: SlaBreach,
    },
    /// Record the dispatcher's outcome for a queued message.
    RecordDispatch {
        message_id: Uuid,
        outcome: DispatchOutcome,
        attempts: u32,
        now: DateTime<Utc>,
    },
    /// Tag the open chat with `tag`, which must be in `catalog` (the stakeholder's).
    ApplyTag {
        chat_id: Uuid,
        tag: String,
        catalog: Vec<String>,
        by: String,
        now: DateTime<Utc>,
    },
    /// Remove `tag` from the open chat.
    RemoveTag {
        chat_id: Uuid,
        tag: String,
        by: String,
        now: DateTime<Utc>,
    },
    /// Apply a context change from the transaction system. `identity_fields` are the
    /// stakeholder's configured fields; `new_chat_id` is used if a new chat takes over.
    ChangeContext {
        conversation: ConversationRef,
        changes: serde_json::Map<String, Value>,
        identity_fields: Vec<String>,
        new_chat_id: Uuid,
        now: DateTime<Utc>,
    },
}

/// What happened when the dispatcher sent a message.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchOutcome {
    Sent {
        provider_message_id: String,
    },
    Failed {
        code: Option<i64>,
        error: String,
        permanent: bool,
    },
}

/// A command the conversation refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConversationRejection {
    #[error("the message has no provider id")]
    MissingMessageId,
    #[error("chat {0} is not this conversation's open chat (it was resolved, closed or replaced)")]
    ChatNotOpen(Uuid),
    #[error("{tag:?} is not in the tag catalog; the catalog has: {}", catalog.join(", "))]
    UnknownTag { tag: String, catalog: Vec<String> },
    #[error("{0:?} is a system tag, set from the direction of the last message; it cannot be set by hand")]
    SystemTag(String),
    #[error("the 24-hour customer service window {}; free-form replies are not allowed, send a template instead", match .0 {
        Some(at) => format!("closed at {}", at.to_rfc3339()),
        None => "never opened (the customer has not written)".to_owned(),
    })]
    OutsideServiceWindow(Option<DateTime<Utc>>),
    #[error("a reply must have text")]
    EmptyReply,
    #[error("there is no queued message {0}")]
    UnknownMessage(Uuid),
}

impl ConversationRejection {
    /// A stable name for the rejection, for clients that act on it (the text is for people).
    pub fn code(&self) -> &'static str {
        match self {
            ConversationRejection::MissingMessageId => "MISSING_MESSAGE_ID",
            ConversationRejection::ChatNotOpen(_) => "CHAT_NOT_OPEN",
            ConversationRejection::UnknownTag { .. } => "UNKNOWN_TAG",
            ConversationRejection::SystemTag(_) => "SYSTEM_TAG",
            ConversationRejection::OutsideServiceWindow(_) => "OUTSIDE_SERVICE_WINDOW",
            ConversationRejection::EmptyReply => "EMPTY_REPLY",
            ConversationRejection::UnknownMessage(_) => "UNKNOWN_MESSAGE",
        }
    }
}

impl Conversation {
    /// Folds one event into the state. The same code serves live handling, rebuilds and
    /// time travel.
    pub fn evolve(&mut self, event: &ConversationEvent) {
        match event {
            ConversationEvent::ChatOpened {
                chat_id,
                context,
                opened_at,
                ..
            } => {
                self.awaiting_rating = None;
                self.chat = Some(Chat {
                    chat_id: *chat_id,
                    status: ChatStatus::Open,
                    opened_at: *opened_at,
                    assignee: None,
                    tags: Default::default(),
                });
                if !context.is_null() {
                    self.context = context.clone();
                }
            }
            ConversationEvent::MessageReceived {
                chat_id,
                message,
                received_at,
            } => {
                self.received
                    .insert(message.provider_message_id.clone(), *chat_id);
                merge_customer(&mut self.customer, &message.customer);
                self.last_incoming_at = Some(message.sent_at.unwrap_or(*received_at));
                if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == *chat_id) {
                    if chat.status == ChatStatus::AwaitingCustomer {
                        chat.status = if chat.assignee.is_some() {
                            ChatStatus::Assigned
                        } else {
                            ChatStatus::Open
                        };
                    }
                }
            }
            ConversationEvent::ReplyQueued {
                chat_id,
                message_id,
                ..
            } => {
                self.outbound.insert(
                    *message_id,
                    Outbound {
                        chat_id: *chat_id,
                        provider_message_id: None,
                        settled: false,
                    },
                );
                if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == *chat_id) {
                    if matches!(chat.status, ChatStatus::Open | ChatStatus::Assigned) {
                        chat.status = ChatStatus::AwaitingCustomer;
                    }
                }
            }
            ConversationEvent::MessageDispatched {
                chat_id,
                message_id,
                provider_message_id,
                ..
            } => {
                if let Some(outbound) = self.outbound.get_mut(message_id) {
                    outbound.provider_message_id = Some(provider_message_id.clone());
                    outbound.settled = true;
                }
                self.sent.insert(provider_message_id.clone(), *chat_id);
            }
            ConversationEvent::SlaClockStarted {
                chat_id,
                customer_message,
                started_at,
                ..
            } => {
                self.sla = Some(SlaClock {
                    chat_id: *chat_id,
                    started_at: *started_at,
                    customer_message: customer_message.clone(),
                    alerted: false,
                    escalated: false,
                });
            }
            ConversationEvent::SlaClockStopped { .. } => self.sla = None,
            ConversationEvent::SlaAlertRaised(breach) | ConversationEvent::SlaEscalated(breach) => {
                let escalation = matches!(event, ConversationEvent::SlaEscalated(_));
                if let Some(clock) = self
                    .sla
                    .as_mut()
                    .filter(|c| c.customer_message == breach.customer_message)
                {
                    if escalation {
                        clock.escalated = true;
                    } else {
                        clock.alerted = true;
                    }
                }
                if let Some(notification) = &breach.notification {
                    self.outbound.insert(
                        notification.message_id,
                        Outbound {
                            chat_id: breach.chat_id,
                            provider_message_id: None,
                            settled: false,
                        },
                    );
                }
            }
            ConversationEvent::ChatResolved { chat_id, .. } => {
                if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == *chat_id) {
                    chat.status = ChatStatus::Resolved;
                    self.awaiting_rating = Some(*chat_id);
                }
            }
            ConversationEvent::ChatRated { chat_id, .. } => {
                if self.awaiting_rating == Some(*chat_id) {
                    self.awaiting_rating = None;
                }
            }
            ConversationEvent::MessageDispatchFailed { message_id, .. } => {
                if let Some(outbound) = self.outbound.get_mut(message_id) {
                    outbound.settled = true;
                }
            }
            ConversationEvent::ReceiptRecorded { receipt, .. } => {
                self.receipts
                    .insert((receipt.provider_message_id.clone(), receipt.status.clone()));
            }
            ConversationEvent::ContextChanged { context, .. } => {
                self.context = context.clone();
            }
            ConversationEvent::ChatClosed { chat_id, .. } => {
                if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == *chat_id) {
                    chat.status = ChatStatus::Closed;
                }
            }
            ConversationEvent::ChatAssigned {
                chat_id, executive, ..
            } => self.set_assignee(*chat_id, Some(executive.clone())),
            ConversationEvent::ChatReassigned {
                chat_id, executive, ..
            } => self.set_assignee(*chat_id, executive.clone()),
            ConversationEvent::TagApplied { chat_id, tag, .. } => {
                if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == *chat_id) {
                    chat.tags.insert(tag.clone());
                }
            }
            ConversationEvent::TagRemoved { chat_id, tag, .. } => {
                if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == *chat_id) {
                    chat.tags.remove(tag);
                }
            }
            ConversationEvent::PersonalDataErased { .. } => self.customer.name = None,
        }
    }

    fn set_assignee(&mut self, chat_id: Uuid, executive: Option<ExecutiveRef>) {
        if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == chat_id) {
            chat.status = if executive.is_some() {
                ChatStatus::Assigned
            } else {
                ChatStatus::Open
            };
            chat.assignee = executive;
        }
    }

    /// Folds a whole history.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a ConversationEvent>) -> Self {
        let mut state = Conversation::default();
        for event in events {
            state.evolve(event);
        }
        state
    }

    /// The chat a new customer message belongs to, if one is open.
    pub fn open_chat(&self) -> Option<&Chat> {
        self.chat
            .as_ref()
            .filter(|c| !matches!(c.status, ChatStatus::Resolved | ChatStatus::Closed))
    }

    /// Decides what a command changes. An empty decision means "already recorded".
    pub fn decide(
        &self,
        command: ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        match command {
            ConversationCommand::ReceiveMessage {
                conversation,
                message,
                new_chat_id,
                now,
            } => {
                if message.provider_message_id.is_empty() {
                    return Err(ConversationRejection::MissingMessageId);
                }
                if self.received.contains_key(&message.provider_message_id) {
                    return Ok(vec![]);
                }
                // An answer 1-5 to a pending rating request is the chat's rating.
                if let (Some(rated), Some(rating)) = (self.awaiting_rating, rating_in(&message)) {
                    let provider_message_id = message.provider_message_id.clone();
                    return Ok(vec![
                        ConversationEvent::MessageReceived {
                            chat_id: rated,
                            received_at: now,
                            message,
                        },
                        ConversationEvent::ChatRated {
                            chat_id: rated,
                            rating,
                            provider_message_id,
                            rated_at: now,
                        },
                    ]);
                }
                let conversation_stakeholder = conversation.stakeholder.clone();
                let mut events = Vec::with_capacity(3);
                let chat_id = match self.open_chat() {
                    Some(chat) => chat.chat_id,
                    None => {
                        let previous = self.chat.as_ref().map(|c| c.chat_id);
                        events.push(ConversationEvent::ChatOpened {
                            chat_id: new_chat_id,
                            conversation,
                            reason: if previous.is_some() {
                                OpenReason::AfterResolution
                            } else {
                                OpenReason::FirstMessage
                            },
                            context: if self.context.is_null() {
                                Value::Object(Default::default())
                            } else {
                                self.context.clone()
                            },
                            previous_chat_id: previous,
                            opened_at: now,
                        });
                        new_chat_id
                    }
                };
                let clock_running = self.sla.as_ref().is_some_and(|c| c.chat_id == chat_id);
                let start = (!clock_running).then(|| ConversationEvent::SlaClockStarted {
                    chat_id,
                    stakeholder: conversation_stakeholder.clone(),
                    customer_message: message.provider_message_id.clone(),
                    // From when we received it: we cannot answer before, whatever the
                    // provider's timestamp says (a late delivery is not our wait).
                    started_at: now,
                });
                events.push(ConversationEvent::MessageReceived {
                    chat_id,
                    received_at: now,
                    message,
                });
                events.extend(start);
                Ok(events)
            }
            ConversationCommand::RecordReceipt { receipt, now } => {
                if receipt.provider_message_id.is_empty() {
                    return Err(ConversationRejection::MissingMessageId);
                }
                let key = (receipt.provider_message_id.clone(), receipt.status.clone());
                if self.receipts.contains(&key) {
                    return Ok(vec![]);
                }
                // Receipts are about messages we sent. One for a message this conversation has
                // no record of is still a fact, and is recorded as such.
                let chat_id = self
                    .sent
                    .get(&receipt.provider_message_id)
                    .or_else(|| self.received.get(&receipt.provider_message_id))
                    .copied();
                Ok(vec![ConversationEvent::ReceiptRecorded {
                    chat_id,
                    known_message: chat_id.is_some(),
                    received_at: now,
                    receipt,
                }])
            }
            ConversationCommand::ChangeContext {
                conversation,
                changes,
                identity_fields,
                new_chat_id,
                now,
            } => Ok(self.change_context(conversation, changes, identity_fields, new_chat_id, now)),
            ConversationCommand::SendReply {
                chat_id,
                message_id,
                text,
                by,
                now,
            } => {
                self.the_open_chat(chat_id)?;
                if text.trim().is_empty() {
                    return Err(ConversationRejection::EmptyReply);
                }
                if !self.within_service_window(now) {
                    let closed = self.last_incoming_at.map(service_window_end);
                    return Err(ConversationRejection::OutsideServiceWindow(closed));
                }
                let mut events = self.queue(
                    chat_id,
                    message_id,
                    Some(text),
                    None,
                    OutboundPurpose::Reply,
                    by,
                    now,
                );
                events.extend(self.stop_clock(SlaStop::Answered, now));
                Ok(events)
            }
            ConversationCommand::SendTemplate {
                chat_id,
                message_id,
                template,
                by,
                now,
            } => {
                self.the_open_chat(chat_id)?;
                let mut events = self.queue(
                    chat_id,
                    message_id,
                    None,
                    Some(template),
                    OutboundPurpose::Reply,
                    by,
                    now,
                );
                events.extend(self.stop_clock(SlaStop::Answered, now));
                Ok(events)
            }
            ConversationCommand::Resolve {
                chat_id,
                rating_message_id,
                rating_template,
                by,
                now,
            } => {
                self.the_open_chat(chat_id)?;
                let (text, template) = if self.within_service_window(now) {
                    (Some(RATING_REQUEST_TEXT.to_owned()), None)
                } else {
                    (None, Some(rating_template))
                };
                let mut events: Vec<ConversationEvent> = self
                    .stop_clock(SlaStop::Resolved, now)
                    .into_iter()
                    .collect();
                events.push(ConversationEvent::ChatResolved {
                    chat_id,
                    by: by.clone(),
                    resolved_at: now,
                });
                events.extend(self.queue(
                    chat_id,
                    rating_message_id,
                    text,
                    template,
                    OutboundPurpose::RatingRequest,
                    by,
                    now,
                ));
                Ok(events)
            }
            ConversationCommand::RaiseSla { level, breach } => {
                let Some(clock) = self.sla.as_ref().filter(|c| {
                    c.chat_id == breach.chat_id && c.customer_message == breach.customer_message
                }) else {
                    return Ok(vec![]);
                };
                Ok(match level {
                    crate::sla::SlaLevel::Alert if !clock.alerted => {
                        vec![ConversationEvent::SlaAlertRaised(breach)]
                    }
                    crate::sla::SlaLevel::Escalation if !clock.escalated => {
                        vec![ConversationEvent::SlaEscalated(breach)]
                    }
                    _ => vec![],
                })
            }
            ConversationCommand::RecordDispatch {
                message_id,
                outcome,
                attempts,
                now,
            } => {
                let outbound = self
                    .outbound
                    .get(&message_id)
                    .ok_or(ConversationRejection::UnknownMessage(message_id))?;
                if outbound.settled {
                    return Ok(vec![]);
                }
                let chat_id = outbound.chat_id;
                Ok(vec![match outcome {
                    DispatchOutcome::Sent {
                        provider_message_id,
                    } => ConversationEvent::MessageDispatched {
                        chat_id,
                        message_id,
                        provider_message_id,
                        attempts,
                        dispatched_at: now,
                    },
                    DispatchOutcome::Failed {
                        code,
                        error,
                        permanent,
                    } => ConversationEvent::MessageDispatchFailed {
                        chat_id,
                        message_id,
                        code,
                        error,
                        permanent,
                        attempts,
                        failed_at: now,
                    },
                }])
            }
            ConversationCommand::ApplyTag {
                chat_id,
                tag,
                catalog,
                by,
                now,
            } => {
                let chat = self.the_open_chat(chat_id)?;
                if tag == AWAITING_CUSTOMER_TAG {
                    return Err(ConversationRejection::SystemTag(tag));
                }
                if !catalog.contains(&tag) {
                    return Err(ConversationRejection::UnknownTag { tag, catalog });
                }
                if chat.tags.contains(&tag) {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::TagApplied {
                    chat_id,
                    tag,
                    by,
                    at: now,
                }])
            }
            ConversationCommand::RemoveTag {
                chat_id,
                tag,
                by,
                now,
            } => {
                let chat = self.the_open_chat(chat_id)?;
                if tag == AWAITING_CUSTOMER_TAG {
                    return Err(ConversationRejection::SystemTag(tag));
                }
                if !chat.tags.contains(&tag) {
                    return Ok(vec![]);
                }
                Ok(vec![ConversationEvent::TagRemoved {
                    chat_id,
                    tag,
                    by,
                    at: now,
                }])
            }
            ConversationCommand::Assign {
                chat_id,
                executive,
                rule,
                candidates,
                by,
                cause,
                now,
            } => {
                let chat = self.the_open_chat(chat_id)?;
                if chat.assignee.as_ref().map(|e| e.id) == executive.as_ref().map(|e| e.id) {
                    return Ok(vec![]);
                }
                Ok(vec![match (chat.assignee.clone(), executive) {
                    (None, Some(executive)) => ConversationEvent::ChatAssigned {
                        chat_id,
                        executive,
                        rule,
                        candidates,
                        by,
                        cause,
                        assigned_at: now,
                    },
                    (Some(previous), executive) => ConversationEvent::ChatReassigned {
                        chat_id,
                        executive,
                        previous,
                        rule,
                        candidates,
                        by,
                        cause,
                        assigned_at: now,
                    },
                    (None, None) => return Ok(vec![]),
                }])
            }
        }
    }

    /// Whether free-form messages are allowed at `now`: within 24 hours of the customer's
    /// last message.
    pub fn within_service_window(&self, now: DateTime<Utc>) -> bool {
        self.last_incoming_at
            .is_some_and(|at| now < service_window_end(at))
    }

    #[allow(clippy::too_many_arguments)]
    fn queue(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        text: Option<String>,
        template: Option<Template>,
        purpose: OutboundPurpose,
        by: String,
        now: DateTime<Utc>,
    ) -> Vec<ConversationEvent> {
        if self.outbound.contains_key(&message_id) {
            return vec![];
        }
        let to = self
            .customer
            .key()
            .unwrap_or_else(|| CustomerKey::Phone(String::new()));
        vec![ConversationEvent::ReplyQueued {
            chat_id,
            message_id,
            to,
            kind: if template.is_some() {
                "template".into()
            } else {
                "text".into()
            },
            text,
            template,
            purpose,
            by,
            queued_at: now,
        }]
    }

    /// Stops the SLA clock, if it runs.
    fn stop_clock(&self, reason: SlaStop, now: DateTime<Utc>) -> Option<ConversationEvent> {
        self.sla
            .as_ref()
            .map(|clock| ConversationEvent::SlaClockStopped {
                chat_id: clock.chat_id,
                customer_message: clock.customer_message.clone(),
                reason,
                stopped_at: now,
            })
    }

    /// The open chat, if it is `chat_id`.
    fn the_open_chat(&self, chat_id: Uuid) -> Result<&Chat, ConversationRejection> {
        self.open_chat()
            .filter(|c| c.chat_id == chat_id)
            .ok_or(ConversationRejection::ChatNotOpen(chat_id))
    }

    /// Context decides chat identity: a real change of an identity field closes the open chat
    /// and opens a new one that points back to it; any other change is recorded and keeps the
    /// chat. A change that changes nothing records nothing (a redelivered post).
    fn change_context(
        &self,
        conversation: ConversationRef,
        changes: serde_json::Map<String, Value>,
        identity_fields: Vec<String>,
        new_chat_id: Uuid,
        now: DateTime<Utc>,
    ) -> Vec<ConversationEvent> {
        let current = self.context.as_object().cloned().unwrap_or_default();
        let mut effective = serde_json::Map::new();
        let mut previous = serde_json::Map::new();
        for (field, value) in changes {
            if current.get(&field) != Some(&value) {
                previous.insert(
                    field.clone(),
                    current.get(&field).cloned().unwrap_or(Value::Null),
                );
                effective.insert(field, value);
            }
        }
        if effective.is_empty() {
            return vec![];
        }
        let identity_changed = effective.keys().any(|f| identity_fields.contains(f));
        let mut context = current;
        context.extend(effective.clone());
        let context = Value::Object(context);
        let open = self.open_chat().map(|c| c.chat_id);
        let mut events = vec![ConversationEvent::ContextChanged {
            conversation: conversation.clone(),
            changes: effective,
            previous,
            context: context.clone(),
            identity_fields,
            identity_changed,
            chat_id: open,
            changed_at: now,
        }];
        if let (true, Some(open)) = (identity_changed, open) {
            events.extend(self.stop_clock(SlaStop::Closed, now));
            events.push(ConversationEvent::ChatClosed {
                chat_id: open,
                reason: CloseReason::ContextChanged,
                superseded_by: new_chat_id,
                closed_at: now,
            });
            events.push(ConversationEvent::ChatOpened {
                chat_id: new_chat_id,
                conversation,
                reason: OpenReason::ContextChanged,
                context,
                previous_chat_id: Some(open),
                opened_at: now,
            });
        }
        events
    }
}

/// The rating a message gives, if it is one: a text (or button) of just 1 to 5.
fn rating_in(message: &InboundMessage) -> Option<u8> {
    let text = message
        .text
        .as_deref()?
        .trim()
        .trim_end_matches(['.', '!', '⭐'])
        .trim();
    match text.parse::<u8>() {
        Ok(n @ 1..=5) => Some(n),
        _ => None,
    }
}

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

fn merge_customer(known: &mut Customer, seen: &Customer) {
    if seen.phone.is_some() {
        known.phone.clone_from(&seen.phone);
    }
    if seen.user_id.is_some() {
        known.user_id.clone_from(&seen.user_id);
    }
    if seen.name.is_some() {
        known.name.clone_from(&seen.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn message(id: &str, text: &str) -> InboundMessage {
        InboundMessage {
            provider: "meta".into(),
            provider_message_id: id.into(),
            kind: "text".into(),
            text: Some(text.into()),
            media: None,
            details: None,
            context: None,
            referral: None,
            customer: Customer {
                phone: Some("+919638120888".into()),
                user_id: None,
                name: Some("Asha".into()),
            },
            sent_at: None,
            errors: vec![],
            raw: json!({"id": id}),
        }
    }

    fn receipt(id: &str, status: &str) -> Receipt {
        Receipt {
            provider: "meta".into(),
            provider_message_id: id.into(),
            status: status.into(),
            at: None,
            recipient: Customer::default(),
            errors: vec![],
            raw: json!({"id": id, "status": status}),
        }
    }

    /// given `history`, when `command`, then the decision.
    fn given(
        history: &[ConversationEvent],
        command: ConversationCommand,
    ) -> Vec<ConversationEvent> {
        Conversation::fold(history)
            .decide(command)
            .expect("accepted")
    }

    fn receive(id: &str, chat: u128, now: &str) -> ConversationCommand {
        ConversationCommand::ReceiveMessage {
            conversation: ConversationRef {
                channel: "9099039188".into(),
                channel_number: "919099039188".into(),
                stakeholder: "partner".into(),
                customer: CustomerKey::Phone("+919638120888".into()),
            },
            message: Box::new(message(id, "hi")),
            new_chat_id: Uuid::from_u128(chat),
            now: at(now),
        }
    }

    #[test]
    fn the_first_message_opens_a_chat() {
        let events = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        assert_eq!(events.len(), 3);
        assert!(
            matches!(&events[2], ConversationEvent::SlaClockStarted { customer_message, stakeholder, .. }
            if customer_message == "wamid.1" && stakeholder == "partner")
        );
        assert!(matches!(
            &events[0],
            ConversationEvent::ChatOpened { chat_id, reason: OpenReason::FirstMessage, previous_chat_id: None, .. }
                if *chat_id == Uuid::from_u128(1)
        ));
        assert!(
            matches!(&events[1], ConversationEvent::MessageReceived { chat_id, .. } if *chat_id == Uuid::from_u128(1))
        );
    }

    #[test]
    fn later_messages_join_the_open_chat() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let events = given(&history, receive("wamid.2", 2, "2026-11-22T10:01:00Z"));
        assert_eq!(events.len(), 1);
        assert!(
            matches!(&events[0], ConversationEvent::MessageReceived { chat_id, .. } if *chat_id == Uuid::from_u128(1))
        );
    }

    #[test]
    fn a_message_already_recorded_changes_nothing() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        assert!(given(&history, receive("wamid.1", 9, "2026-11-22T10:05:00Z")).is_empty());
    }

    #[test]
    fn a_receipt_for_an_unknown_message_is_recorded_as_such() {
        let events = given(
            &[],
            ConversationCommand::RecordReceipt {
                receipt: Box::new(receipt("wamid.out", "delivered")),
                now: at("2026-11-22T10:00:00Z"),
            },
        );
        assert!(matches!(
            &events[..],
            [ConversationEvent::ReceiptRecorded {
                known_message: false,
                chat_id: None,
                ..
            }]
        ));
    }

    #[test]
    fn each_status_of_a_message_is_recorded_once_in_any_order() {
        let now = at("2026-11-22T10:00:00Z");
        let read = given(
            &[],
            ConversationCommand::RecordReceipt {
                receipt: Box::new(receipt("w", "read")),
                now,
            },
        );
        let delivered = given(
            &read,
            ConversationCommand::RecordReceipt {
                receipt: Box::new(receipt("w", "delivered")),
                now,
            },
        );
        assert_eq!(
            delivered.len(),
            1,
            "an earlier status arriving late is still recorded"
        );
        let history: Vec<_> = read.into_iter().chain(delivered).collect();
        assert!(given(
            &history,
            ConversationCommand::RecordReceipt {
                receipt: Box::new(receipt("w", "read")),
                now
            }
        )
        .is_empty());
    }

    fn change(fields: &[(&str, &str)], chat: u128) -> ConversationCommand {
        ConversationCommand::ChangeContext {
            conversation: ConversationRef {
                channel: "9099039188".into(),
                channel_number: "919099039188".into(),
                stakeholder: "partner".into(),
                customer: CustomerKey::Phone("+919638120888".into()),
            },
            changes: fields
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
            identity_fields: vec!["documents_status".into(), "dco_status".into()],
            new_chat_id: Uuid::from_u128(chat),
            now: at("2026-11-22T11:00:00Z"),
        }
    }

    #[test]
    fn an_identity_field_change_replaces_the_open_chat() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let events = given(&history, change(&[("documents_status", "Approved")], 2));
        assert_eq!(
            events.iter().map(|e| e.event_type()).collect::<Vec<_>>(),
            vec![
                "ContextChanged",
                "SlaClockStopped",
                "ChatClosed",
                "ChatOpened"
            ],
            "the unanswered message's clock stops with the chat it belonged to"
        );
        assert!(
            matches!(&events[2], ConversationEvent::ChatClosed { chat_id, superseded_by, .. }
            if *chat_id == Uuid::from_u128(1) && *superseded_by == Uuid::from_u128(2))
        );
        assert!(
            matches!(&events[3], ConversationEvent::ChatOpened { reason: OpenReason::ContextChanged, previous_chat_id: Some(p), context, .. }
            if *p == Uuid::from_u128(1) && context["documents_status"] == "Approved")
        );
        // The next message joins the new chat.
        let history: Vec<_> = history.into_iter().chain(events).collect();
        let next = given(&history, receive("wamid.2", 3, "2026-11-22T11:05:00Z"));
        assert!(
            matches!(&next[..], [ConversationEvent::MessageReceived { chat_id, .. }, ConversationEvent::SlaClockStarted { .. }]
            if *chat_id == Uuid::from_u128(2))
        );
    }

    #[test]
    fn other_fields_are_recorded_and_keep_the_chat() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let events = given(&history, change(&[("city", "Surat")], 2));
        assert!(
            matches!(&events[..], [ConversationEvent::ContextChanged { identity_changed: false, chat_id: Some(c), .. }]
            if *c == Uuid::from_u128(1))
        );
    }

    #[test]
    fn the_same_change_again_changes_nothing() {
        let first = given(&[], change(&[("documents_status", "Pending")], 1));
        assert_eq!(first.len(), 1, "no chat yet: only the context is recorded");
        assert!(given(&first, change(&[("documents_status", "Pending")], 2)).is_empty());
        let back = given(&first, change(&[("documents_status", "Approved")], 3));
        assert_ne!(back[0].event_id("s"), first[0].event_id("s"));
    }

    #[test]
    fn a_context_set_before_the_first_chat_becomes_its_context() {
        let history = given(&[], change(&[("documents_status", "Pending")], 9));
        let events = given(&history, receive("wamid.1", 1, "2026-11-22T12:00:00Z"));
        assert!(
            matches!(&events[0], ConversationEvent::ChatOpened { context, reason: OpenReason::FirstMessage, .. }
            if context["documents_status"] == "Pending")
        );
    }

    fn exec(n: u128, name: &str) -> ExecutiveRef {
        ExecutiveRef {
            id: Uuid::from_u128(n),
            name: name.into(),
        }
    }

    fn assign(chat: u128, to: Option<ExecutiveRef>, cause: u128) -> ConversationCommand {
        ConversationCommand::Assign {
            chat_id: Uuid::from_u128(chat),
            executive: to,
            rule: AssignmentRule::RoundRobin,
            candidates: vec![exec(10, "Asha"), exec(11, "Ravi")],
            by: None,
            cause: Uuid::from_u128(cause),
            now: at("2026-11-22T10:01:00Z"),
        }
    }

    #[test]
    fn assignment_then_reassignment_then_back_to_waiting() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let assigned = given(&history, assign(1, Some(exec(10, "Asha")), 100));
        assert!(
            matches!(&assigned[..], [ConversationEvent::ChatAssigned { executive, .. }] if executive.name == "Asha")
        );
        let history: Vec<_> = history.into_iter().chain(assigned).collect();
        assert_eq!(
            Conversation::fold(&history).chat.unwrap().status,
            ChatStatus::Assigned
        );
        assert!(
            given(&history, assign(1, Some(exec(10, "Asha")), 101)).is_empty(),
            "already hers"
        );
        let moved = given(&history, assign(1, Some(exec(11, "Ravi")), 102));
        assert!(
            matches!(&moved[..], [ConversationEvent::ChatReassigned { previous, executive: Some(e), .. }]
            if previous.name == "Asha" && e.name == "Ravi")
        );
        let history: Vec<_> = history.into_iter().chain(moved).collect();
        let waiting = given(&history, assign(1, None, 103));
        let history: Vec<_> = history.into_iter().chain(waiting).collect();
        let state = Conversation::fold(&history);
        assert_eq!(state.chat.as_ref().unwrap().status, ChatStatus::Open);
        assert!(state.chat.unwrap().assignee.is_none());
    }

    #[test]
    fn only_the_open_chat_can_be_assigned() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let err = Conversation::fold(&history)
            .decide(assign(9, Some(exec(10, "Asha")), 1))
            .unwrap_err();
        assert_eq!(err, ConversationRejection::ChatNotOpen(Uuid::from_u128(9)));
    }

    #[test]
    fn the_same_cause_gives_the_same_event_id() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let a = given(&history, assign(1, Some(exec(10, "Asha")), 100));
        let b = given(&history, assign(1, Some(exec(11, "Ravi")), 100));
        assert_eq!(
            a[0].event_id("s"),
            b[0].event_id("s"),
            "a second process deciding the same cause is a duplicate"
        );
    }

    fn tag(chat: u128, tag: &str, apply: bool) -> ConversationCommand {
        let (chat_id, tag, by, now) = (
            Uuid::from_u128(chat),
            tag.to_owned(),
            "asha".to_owned(),
            at("2026-11-22T10:02:00Z"),
        );
        if apply {
            ConversationCommand::ApplyTag {
                chat_id,
                tag,
                catalog: vec!["Payment".into(), "Documents".into()],
                by,
                now,
            }
        } else {
            ConversationCommand::RemoveTag {
                chat_id,
                tag,
                by,
                now,
            }
        }
    }

    #[test]
    fn tags_come_from_the_catalog_and_the_system_tag_is_not_for_hands() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let state = Conversation::fold(&history);
        assert!(matches!(
            state.decide(tag(1, "VIP", true)),
            Err(ConversationRejection::UnknownTag { .. })
        ));
        assert!(matches!(
            state.decide(tag(1, AWAITING_CUSTOMER_TAG, true)),
            Err(ConversationRejection::SystemTag(_))
        ));
        assert!(matches!(
            state.decide(tag(1, AWAITING_CUSTOMER_TAG, false)),
            Err(ConversationRejection::SystemTag(_))
        ));
        let applied = given(&history, tag(1, "Payment", true));
        assert!(
            matches!(&applied[..], [ConversationEvent::TagApplied { tag, .. }] if tag == "Payment")
        );
        let history: Vec<_> = history.into_iter().chain(applied).collect();
        assert!(
            given(&history, tag(1, "Payment", true)).is_empty(),
            "already tagged"
        );
        assert!(
            given(&history, tag(1, "Documents", false)).is_empty(),
            "not tagged"
        );
        let removed = given(&history, tag(1, "Payment", false));
        assert!(matches!(
            &removed[..],
            [ConversationEvent::TagRemoved { .. }]
        ));
    }

    fn reply(chat: u128, message: u128, now: &str) -> ConversationCommand {
        ConversationCommand::SendReply {
            chat_id: Uuid::from_u128(chat),
            message_id: Uuid::from_u128(message),
            text: "on its way".into(),
            by: "asha".into(),
            now: at(now),
        }
    }

    #[test]
    fn replies_only_within_24_hours_of_the_customers_last_message() {
        // The customer's message was sent at 10:00 (received_at; sent_at not given).
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let queued = given(&history, reply(1, 50, "2026-11-23T09:59:59Z"));
        assert!(
            matches!(&queued[..], [ConversationEvent::ReplyQueued { kind, .. }, ConversationEvent::SlaClockStopped { reason: SlaStop::Answered, .. }]
            if kind == "text")
        );
        let late = Conversation::fold(&history)
            .decide(reply(1, 51, "2026-11-23T10:00:00Z"))
            .unwrap_err();
        assert!(
            matches!(late, ConversationRejection::OutsideServiceWindow(Some(_))),
            "{late}"
        );
        assert!(late.to_string().contains("send a template"));
        let template = ConversationCommand::SendTemplate {
            chat_id: Uuid::from_u128(1),
            message_id: Uuid::from_u128(52),
            template: Template {
                name: "follow_up".into(),
                language: "en".into(),
                params: vec![],
            },
            by: "asha".into(),
            now: at("2026-11-25T10:00:00Z"),
        };
        assert!(
            matches!(&given(&history, template)[..], [ConversationEvent::ReplyQueued { kind, .. }, ..] if kind == "template")
        );
    }

    #[test]
    fn a_dispatch_outcome_is_recorded_once_and_receipts_find_the_message() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let queued = given(&history, reply(1, 50, "2026-11-22T10:01:00Z"));
        let history: Vec<_> = history.into_iter().chain(queued).collect();
        assert_eq!(
            Conversation::fold(&history).chat.unwrap().status,
            ChatStatus::AwaitingCustomer
        );
        let sent = ConversationCommand::RecordDispatch {
            message_id: Uuid::from_u128(50),
            outcome: DispatchOutcome::Sent {
                provider_message_id: "wamid.out".into(),
            },
            attempts: 3,
            now: at("2026-11-22T10:01:01Z"),
        };
        let dispatched = given(&history, sent.clone());
        assert!(matches!(
            &dispatched[..],
            [ConversationEvent::MessageDispatched { attempts: 3, .. }]
        ));
        let history: Vec<_> = history.into_iter().chain(dispatched).collect();
        assert!(given(&history, sent).is_empty(), "one outcome per message");
        let read = given(
            &history,
            ConversationCommand::RecordReceipt {
                receipt: Box::new(receipt("wamid.out", "read")),
                now: at("2026-11-22T10:02:00Z"),
            },
        );
        assert!(
            matches!(&read[..], [ConversationEvent::ReceiptRecorded { known_message: true, chat_id: Some(c), .. }] if *c == Uuid::from_u128(1))
        );
        // The customer answers: the chat is no longer awaiting them.
        let answered = given(&history, receive("wamid.2", 9, "2026-11-22T10:05:00Z"));
        let history: Vec<_> = history.into_iter().chain(answered).collect();
        assert_eq!(
            Conversation::fold(&history).chat.unwrap().status,
            ChatStatus::Open
        );
    }

    fn resolve(chat: u128, now: &str) -> ConversationCommand {
        ConversationCommand::Resolve {
            chat_id: Uuid::from_u128(chat),
            rating_message_id: Uuid::from_u128(700),
            rating_template: Template {
                name: "rating_request".into(),
                language: "en".into(),
                params: vec![],
            },
            by: "asha".into(),
            now: at(now),
        }
    }

    fn customer_says(id: &str, text: &str, chat: u128) -> ConversationCommand {
        let mut m = message(id, text);
        m.sent_at = Some(at("2026-11-22T10:10:00Z"));
        ConversationCommand::ReceiveMessage {
            conversation: ConversationRef {
                channel: "9099039188".into(),
                channel_number: "919099039188".into(),
                stakeholder: "partner".into(),
                customer: CustomerKey::Phone("+919638120888".into()),
            },
            message: Box::new(m),
            new_chat_id: Uuid::from_u128(chat),
            now: at("2026-11-22T10:10:00Z"),
        }
    }

    #[test]
    fn resolve_then_rating_then_a_new_chat() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let resolved = given(&history, resolve(1, "2026-11-22T10:05:00Z"));
        assert!(
            matches!(&resolved[..], [ConversationEvent::SlaClockStopped { reason: SlaStop::Resolved, .. }, ConversationEvent::ChatResolved { .. },
            ConversationEvent::ReplyQueued { purpose: OutboundPurpose::RatingRequest, text: Some(t), .. }] if t == RATING_REQUEST_TEXT)
        );
        let history: Vec<_> = history.into_iter().chain(resolved).collect();
        let rated = given(&history, customer_says("wamid.r", " 4 ", 2));
        assert!(
            matches!(&rated[..], [ConversationEvent::MessageReceived { chat_id, .. }, ConversationEvent::ChatRated { rating: 4, .. }]
            if *chat_id == Uuid::from_u128(1))
        );
        let history: Vec<_> = history.into_iter().chain(rated).collect();
        let after = given(&history, customer_says("wamid.h", "hello", 3));
        assert!(
            matches!(&after[0], ConversationEvent::ChatOpened { reason: OpenReason::AfterResolution, previous_chat_id: Some(p), .. }
            if *p == Uuid::from_u128(1))
        );
    }

    #[test]
    fn anything_but_a_rating_after_resolution_opens_a_new_chat() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let resolved = given(&history, resolve(1, "2026-11-22T10:05:00Z"));
        let history: Vec<_> = history.into_iter().chain(resolved).collect();
        for text in ["hello", "7", "4 stars please", "0"] {
            let events = given(&history, customer_says("wamid.x", text, 5));
            assert!(
                matches!(
                    &events[0],
                    ConversationEvent::ChatOpened {
                        reason: OpenReason::AfterResolution,
                        ..
                    }
                ),
                "{text}"
            );
        }
    }

    #[test]
    fn outside_the_window_the_rating_request_is_a_template() {
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let resolved = given(&history, resolve(1, "2026-11-24T10:00:00Z"));
        assert!(
            matches!(resolved.last().unwrap(), ConversationEvent::ReplyQueued { kind, template: Some(t), .. } if kind == "template" && t.name == "rating_request")
        );
    }

    fn raise(
        level: crate::sla::SlaLevel,
        customer_message: &str,
        chat: u128,
    ) -> ConversationCommand {
        ConversationCommand::RaiseSla {
            level,
            breach: SlaBreach {
                chat_id: Uuid::from_u128(chat),
                customer_message: customer_message.into(),
                clock_started_at: at("2026-11-22T10:00:00Z"),
                due_at: at("2026-11-22T10:03:00Z"),
                fired_at: at("2026-11-22T10:03:00Z"),
                policy_version: 0,
                threshold_seconds: 180,
                notification: None,
            },
        }
    }

    #[test]
    fn the_sla_clock_runs_from_the_first_unanswered_message_until_an_answer() {
        use crate::sla::SlaLevel::{Alert, Escalation};
        let history = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        let history: Vec<_> = history
            .clone()
            .into_iter()
            .chain(given(
                &history,
                receive("wamid.2", 9, "2026-11-22T10:01:00Z"),
            ))
            .collect();
        let clock = Conversation::fold(&history).sla.unwrap();
        assert_eq!(
            clock.customer_message, "wamid.1",
            "the first unanswered message starts it"
        );
        let alert = given(&history, raise(Alert, "wamid.1", 1));
        assert!(matches!(&alert[..], [ConversationEvent::SlaAlertRaised(_)]));
        let history: Vec<_> = history.into_iter().chain(alert).collect();
        assert!(
            given(&history, raise(Alert, "wamid.1", 1)).is_empty(),
            "raised once"
        );
        assert!(matches!(
            &given(&history, raise(Escalation, "wamid.1", 1))[..],
            [ConversationEvent::SlaEscalated(_)]
        ));
        // An executive's reply stops the clock: nothing more is raised for that message.
        let answered = given(&history, reply(1, 60, "2026-11-22T10:04:00Z"));
        let history: Vec<_> = history.into_iter().chain(answered).collect();
        assert!(Conversation::fold(&history).sla.is_none());
        assert!(
            given(&history, raise(Escalation, "wamid.1", 1)).is_empty(),
            "an answer that came first wins"
        );
        // The next unanswered message starts it again.
        let again = given(&history, receive("wamid.3", 9, "2026-11-22T10:06:00Z"));
        let history: Vec<_> = history.into_iter().chain(again).collect();
        assert_eq!(
            Conversation::fold(&history).sla.unwrap().customer_message,
            "wamid.3"
        );
    }

    #[test]
    fn a_message_without_an_id_is_refused() {
        let err = Conversation::default()
            .decide(receive("", 1, "2026-11-22T10:00:00Z"))
            .unwrap_err();
        assert_eq!(err, ConversationRejection::MissingMessageId);
    }

    /// One event of every variant, as the log would hold them.
    fn one_of_each() -> Vec<ConversationEvent> {
        use ConversationEvent as E;
        let t = at("2026-11-22T10:00:00Z");
        let chat_id = Uuid::from_u128(1);
        let conversation = ConversationRef {
            channel: "9099039188".into(),
            channel_number: "919099039188".into(),
            stakeholder: "partner".into(),
            customer: CustomerKey::Phone("+919638120888".into()),
        };
        let asha = ExecutiveRef {
            id: Uuid::from_u128(2),
            name: "asha".into(),
        };
        let breach = SlaBreach {
            chat_id,
            customer_message: "wamid.1".into(),
            clock_started_at: t,
            due_at: t,
            fired_at: t,
            policy_version: 3,
            threshold_seconds: 180,
            notification: Some(Notification {
                message_id: Uuid::from_u128(3),
                to: "+919000000777".into(),
                template: Template {
                    name: "sla_alert".into(),
                    language: "en".into(),
                    params: vec!["x".into()],
                },
            }),
        };
        vec![
            E::ChatOpened {
                chat_id,
                conversation: conversation.clone(),
                reason: OpenReason::ContextChanged,
                context: json!({"documents_status": "Approved"}),
                previous_chat_id: Some(Uuid::from_u128(9)),
                opened_at: t,
            },
            E::MessageReceived {
                chat_id,
                received_at: t,
                message: Box::new(message("wamid.1", "hi")),
            },
            E::ReceiptRecorded {
                chat_id: Some(chat_id),
                known_message: true,
                received_at: t,
                receipt: Box::new(receipt("wamid.out", "read")),
            },
            E::ContextChanged {
                conversation,
                changes: json!({"city": "Surat"}).as_object().unwrap().clone(),
                previous: json!({"city": null}).as_object().unwrap().clone(),
                context: json!({"city": "Surat"}),
                identity_fields: vec!["documents_status".into()],
                identity_changed: false,
                chat_id: Some(chat_id),
                changed_at: t,
            },
            E::ChatClosed {
                chat_id,
                reason: CloseReason::ContextChanged,
                superseded_by: Uuid::from_u128(4),
                closed_at: t,
            },
            E::ChatAssigned {
                chat_id,
                executive: asha.clone(),
                rule: AssignmentRule::RoundRobin,
                candidates: vec![asha.clone()],
                by: None,
                cause: Uuid::from_u128(5),
                assigned_at: t,
            },
            E::ChatReassigned {
                chat_id,
                executive: None,
                previous: asha,
                rule: AssignmentRule::AssigneeLeft,
                candidates: vec![],
                by: Some("lead".into()),
                cause: Uuid::from_u128(6),
                assigned_at: t,
            },
            E::TagApplied {
                chat_id,
                tag: "Payment".into(),
                by: "asha".into(),
                at: t,
            },
            E::TagRemoved {
                chat_id,
                tag: "Payment".into(),
                by: "asha".into(),
                at: t,
            },
            E::ReplyQueued {
                chat_id,
                message_id: Uuid::from_u128(7),
                to: CustomerKey::UserId("IN.1".into()),
                kind: "text".into(),
                text: Some("on it".into()),
                template: None,
                purpose: OutboundPurpose::Reply,
                by: "asha".into(),
                queued_at: t,
            },
            E::ChatResolved {
                chat_id,
                by: "asha".into(),
                resolved_at: t,
            },
            E::SlaClockStarted {
                chat_id,
                stakeholder: "partner".into(),
                customer_message: "wamid.1".into(),
                started_at: t,
            },
            E::SlaClockStopped {
                chat_id,
                customer_message: "wamid.1".into(),
                reason: SlaStop::Answered,
                stopped_at: t,
            },
            E::SlaAlertRaised(breach.clone()),
            E::SlaEscalated(SlaBreach {
                notification: None,
                ..breach
            }),
            E::ChatRated {
                chat_id,
                rating: 5,
                provider_message_id: "wamid.9".into(),
                rated_at: t,
            },
            E::MessageDispatched {
                chat_id,
                message_id: Uuid::from_u128(7),
                provider_message_id: "wamid.out".into(),
                attempts: 1,
                dispatched_at: t,
            },
            E::MessageDispatchFailed {
                chat_id,
                message_id: Uuid::from_u128(8),
                code: Some(131047),
                error: "Re-engagement message".into(),
                permanent: true,
                attempts: 1,
                failed_at: t,
            },
            E::PersonalDataErased {
                customer: CustomerKey::Phone("+919638120888".into()),
                key_id: "k".into(),
                by: "dpo".into(),
                erased_at: t,
            },
        ]
    }

    #[test]
    fn every_variant_round_trips_and_its_type_is_in_the_list() {
        let events = one_of_each();
        let mut types: Vec<&str> = events.iter().map(ConversationEvent::event_type).collect();
        types.sort_unstable();
        types.dedup();
        let mut listed = ConversationEvent::TYPES.to_vec();
        listed.sort_unstable();
        assert_eq!(
            types, listed,
            "one event of each variant, each type listed once"
        );
        for event in &events {
            let new = event.to_new_event("conversation-x-+91", Metadata::by("test"));
            assert_eq!(new.event_type, event.event_type());
            let recorded = RecordedEvent {
                event_id: new.event_id,
                stream: "conversation-x-+91".into(),
                version: 0,
                position: 1,
                event_type: new.event_type.clone(),
                schema_version: 1,
                data: new.data.clone(),
                metadata: new.metadata.clone(),
                recorded_at: at("2026-11-22T10:00:00Z"),
                hash: crate::EventHash::GENESIS,
            };
            assert_eq!(
                ConversationEvent::from_recorded(&recorded)
                    .unwrap()
                    .as_ref(),
                Some(event),
                "{}",
                event.event_type()
            );
        }
    }

    #[test]
    fn events_round_trip_through_the_envelope_with_stable_ids() {
        let events = given(&[], receive("wamid.1", 1, "2026-11-22T10:00:00Z"));
        for event in &events {
            let new = event.to_new_event("conversation-x-+91", Metadata::by("test"));
            assert_eq!(new.event_id, event.event_id("conversation-x-+91"));
            assert_ne!(
                new.event_id,
                event.event_id("conversation-y-+91"),
                "ids differ per stream"
            );
            let recorded = RecordedEvent {
                event_id: new.event_id,
                stream: "conversation-x-+91".into(),
                version: 0,
                position: 1,
                event_type: new.event_type.clone(),
                schema_version: 1,
                data: new.data.clone(),
                metadata: new.metadata.clone(),
                recorded_at: at("2026-11-22T10:00:00Z"),
                hash: crate::EventHash::GENESIS,
            };
            assert_eq!(
                ConversationEvent::from_recorded(&recorded)
                    .unwrap()
                    .as_ref(),
                Some(event)
            );
        }
        assert_eq!(
            events[1].to_new_event("s", Metadata::default()).data["text"],
            "hi"
        );
    }
}
