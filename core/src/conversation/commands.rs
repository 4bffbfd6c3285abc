//! What a conversation is asked to do, and why it may refuse.

use super::*;

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
    /// Queue an attachment (an executive's upload) on the open chat, with an optional
    /// caption: only within 24 hours of the customer's last message, as for text.
    SendMedia {
        chat_id: Uuid,
        message_id: Uuid,
        media: StoredMedia,
        caption: Option<String>,
        by: String,
        now: DateTime<Utc>,
    },
    /// Record what fetching an inbound attachment came to: stored, or the `attempt`-th try
    /// failed (tried again at `retry_at` when the error is retryable and one is given).
    RecordMedia {
        message: String,
        index: u32,
        attempt: u32,
        outcome: Result<StoredMedia, MediaError>,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    },
    /// Record what handing a customer's message to Genesys came to (and the conversation
    /// Genesys named, if it is new).
    RecordForward {
        message: String,
        tenant: String,
        outcome: Result<crate::genesys::Delivered, crate::genesys::BridgeError>,
        attempts: u32,
        now: DateTime<Utc>,
    },
    /// Record that what became of a Genesys agent's message (`status`) was told to Genesys,
    /// or why Genesys would not hear it.
    RecordReceiptForward {
        message_id: Uuid,
        tenant: String,
        status: String,
        outcome: Result<(), crate::genesys::BridgeError>,
        now: DateTime<Utc>,
    },
    /// Queue a Genesys agent's reply on the open chat, under the id derived from Genesys's
    /// message (a redelivered webhook queues nothing more); within the 24-hour window, as
    /// for any free-form reply.
    QueueAgentReply {
        message_id: Uuid,
        text: Option<String>,
        media: Option<StoredMedia>,
        by: String,
        now: DateTime<Utc>,
    },
    /// Queue a template message on the open chat (allowed at any time).
    SendTemplate {
        chat_id: Uuid,
        message_id: Uuid,
        template: Template,
        /// For a marketing template: the customer's withdrawal of marketing consent, if it
        /// stands (the template is then refused).
        withdrawn: Option<crate::consent::Standing>,
        by: String,
        now: DateTime<Utc>,
    },
    /// Resolve the open chat and ask for a rating: as text inside the 24-hour window, else
    /// as the `rating_template`.
    Resolve {
        chat_id: Uuid,
        rating_message_id: Uuid,
        rating_template: Template,
        /// A customer asked for a rating less than this long ago is not asked again.
        rating_at_most_every: chrono::Duration,
        by: String,
        now: DateTime<Utc>,
    },
    /// Raise an SLA alert or escalation for the customer message `customer_message`, if the
    /// clock it started is still running (an answer that landed first wins).
    RaiseSla {
        level: crate::sla::SlaLevel,
        breach: SlaBreach,
    },
    /// Record that the dispatcher is about to make its `attempt`-th try at a queued message.
    /// Records nothing when the message is settled or that try is already recorded (by
    /// another process): the caller sends only when the try was recorded by this command.
    RecordDispatchAttempt {
        message_id: Uuid,
        attempt: u32,
        now: DateTime<Utc>,
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
    /// This try failed, and the message is tried again at `retry_at`.
    Retrying {
        code: Option<i64>,
        error: String,
        retry_at: DateTime<Utc>,
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
    #[error("there is no received message {0:?}")]
    UnknownInboundMessage(String),
    #[error("the customer has no open chat to answer in")]
    NoOpenChat,
    #[error("the customer withdrew marketing consent on {} ({:?}); marketing templates are not sent to them, replies in their conversation are", .0.at.to_rfc3339(), .0.method)]
    ConsentWithdrawn(crate::consent::Standing),
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
            ConversationRejection::UnknownInboundMessage(_) => "UNKNOWN_MESSAGE",
            ConversationRejection::NoOpenChat => "NO_OPEN_CHAT",
            ConversationRejection::ConsentWithdrawn(_) => "CONSENT_WITHDRAWN",
        }
    }
}
