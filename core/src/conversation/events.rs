//! The events of a conversation stream, their ids and the form they are stored in.

use super::*;

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
        /// An attachment (an executive's upload, kept in the conversation's folder); `text`
        /// is then its caption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<StoredMedia>,
        purpose: OutboundPurpose,
        by: String,
        queued_at: DateTime<Utc>,
    },
    /// The dispatcher is about to send a queued message (its `attempt`-th try): recorded
    /// before the provider is called, so that a process taking over after a crash knows the
    /// outcome of this try is unknown and does not send it again blindly.
    DispatchAttempted {
        chat_id: Uuid,
        message_id: Uuid,
        attempt: u32,
        attempted_at: DateTime<Utc>,
    },
    /// A try failed in a way worth trying again (the provider busy, a timeout): the next try
    /// is due at `retry_at`. Recorded so that a process taking the message over knows the
    /// try's outcome and when to go on, instead of waiting for a receipt that cannot come.
    DispatchRetrying {
        chat_id: Uuid,
        message_id: Uuid,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i64>,
        error: String,
        retry_at: DateTime<Utc>,
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
    /// An inbound attachment was fetched from its provider and kept in the object store.
    MediaStored {
        chat_id: Uuid,
        /// The provider's id of the message it came with.
        message: String,
        /// Which attachment of the message (0: the first).
        index: u32,
        #[serde(flatten)]
        media: StoredMedia,
        stored_at: DateTime<Utc>,
    },
    /// A try at fetching an inbound attachment failed; `retryable` when it is tried again
    /// (at `retry_at`), else it is given up, with the provider's reason.
    MediaFetchFailed {
        chat_id: Uuid,
        message: String,
        index: u32,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i64>,
        reason: String,
        retryable: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<DateTime<Utc>>,
        failed_at: DateTime<Utc>,
    },
    /// A customer's message was handed to the agents of the business's Genesys integration.
    ForwardedToAgent {
        chat_id: Uuid,
        /// The message's provider id.
        message: String,
        tenant: String,
        /// Genesys's id for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        genesys_message_id: Option<String>,
        attempts: u32,
        forwarded_at: DateTime<Utc>,
    },
    /// Genesys refused a customer's message for good (its reason), or it could not be
    /// delivered after every retry.
    ForwardToAgentFailed {
        chat_id: Uuid,
        message: String,
        tenant: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        reason: String,
        attempts: u32,
        failed_at: DateTime<Utc>,
    },
    /// Genesys named the conversation this customer's messages go to (the first time, or a
    /// new one).
    GenesysConversationMapped {
        chat_id: Uuid,
        tenant: String,
        conversation_id: String,
        mapped_at: DateTime<Utc>,
    },
    /// What became of a Genesys agent's message was told to Genesys (`accepted`), or Genesys
    /// refused to hear it (its reason): either way, kept.
    ReceiptForwardedToAgent {
        chat_id: Uuid,
        message_id: Uuid,
        tenant: String,
        /// `Delivered`, `Read` or `Failed`.
        status: String,
        accepted: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        forwarded_at: DateTime<Utc>,
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
    pub const TYPES: [&'static str; 27] = [
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
        "DispatchAttempted",
        "DispatchRetrying",
        "MediaStored",
        "MediaFetchFailed",
        "ForwardedToAgent",
        "ForwardToAgentFailed",
        "GenesysConversationMapped",
        "ReceiptForwardedToAgent",
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
            ConversationEvent::DispatchAttempted { .. } => "DispatchAttempted",
            ConversationEvent::DispatchRetrying { .. } => "DispatchRetrying",
            ConversationEvent::MessageDispatched { .. } => "MessageDispatched",
            ConversationEvent::MessageDispatchFailed { .. } => "MessageDispatchFailed",
            ConversationEvent::TagRemoved { .. } => "TagRemoved",
            ConversationEvent::PersonalDataErased { .. } => "PersonalDataErased",
            ConversationEvent::MediaStored { .. } => "MediaStored",
            ConversationEvent::MediaFetchFailed { .. } => "MediaFetchFailed",
            ConversationEvent::ForwardedToAgent { .. } => "ForwardedToAgent",
            ConversationEvent::ForwardToAgentFailed { .. } => "ForwardToAgentFailed",
            ConversationEvent::GenesysConversationMapped { .. } => "GenesysConversationMapped",
            ConversationEvent::ReceiptForwardedToAgent { .. } => "ReceiptForwardedToAgent",
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
            // One record per try: a second process deciding the same try finds it recorded.
            ConversationEvent::DispatchAttempted {
                message_id,
                attempt,
                ..
            } => format!("DispatchAttempted/{stream}/{message_id}/{attempt}"),
            // One failure per try.
            ConversationEvent::DispatchRetrying {
                message_id,
                attempt,
                ..
            } => format!("DispatchRetrying/{stream}/{message_id}/{attempt}"),
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
            // One record of each attachment kept, however many processes fetched it.
            ConversationEvent::MediaStored { message, index, .. } => {
                format!("MediaStored/{stream}/{message}/{index}")
            }
            // One failure per try.
            ConversationEvent::MediaFetchFailed {
                message,
                index,
                attempt,
                ..
            } => format!("MediaFetchFailed/{stream}/{message}/{index}/{attempt}"),
            // One outcome per message handed to Genesys.
            ConversationEvent::ForwardedToAgent { message, .. }
            | ConversationEvent::ForwardToAgentFailed { message, .. } => {
                format!("AgentForwardOutcome/{stream}/{message}")
            }
            ConversationEvent::GenesysConversationMapped {
                tenant,
                conversation_id,
                ..
            } => format!("GenesysConversationMapped/{stream}/{tenant}/{conversation_id}"),
            // One per status of an agent's message.
            ConversationEvent::ReceiptForwardedToAgent {
                message_id, status, ..
            } => format!("ReceiptForwardedToAgent/{stream}/{message_id}/{status}"),
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
}
