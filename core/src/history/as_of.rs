//! One chat as it stood at any instant ([`ChatAsOf`]).

use super::*;

/// A message in a chat.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageView {
    /// The event id of an inbound message; the queued id of an outbound one.
    pub message_id: Uuid,
    pub provider_message_id: Option<String>,
    pub inbound: bool,
    pub kind: String,
    pub text: Option<String>,
    pub media: Option<Media>,
    /// Its attachments and where each stands (fetched, kept, failed).
    pub files: Vec<MediaFile>,
    pub at: DateTime<Utc>,
    pub delivery_status: Option<String>,
    pub error: Option<String>,
    pub position: u64,
    rank: i64,
}

/// A chat's SLA clock and what it raised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlaView {
    pub clock_started_at: Option<DateTime<Utc>>,
    pub running: bool,
    /// The next threshold the waiting message crosses.
    pub next_due_at: Option<DateTime<Utc>>,
    pub alerted_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub policy_version: Option<u64>,
    escalation_due_at: Option<DateTime<Utc>>,
}

/// One chat, folded from its conversation stream.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatView {
    pub chat_id: Uuid,
    pub stream: String,
    pub channel_number: String,
    pub stakeholder: String,
    pub customer: String,
    pub customer_name: Option<String>,
    pub status: ChatStatus,
    pub opened_at: DateTime<Utc>,
    pub opened_reason: String,
    pub context: Value,
    pub previous_chat_id: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    pub assignee: Option<ExecutiveRef>,
    pub tags: BTreeSet<String>,
    pub last_incoming_at: Option<DateTime<Utc>>,
    pub service_window_ends_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub rating: Option<u8>,
    /// Whether the last message was ours (the chat then awaits the customer).
    pub last_outbound: bool,
    pub messages: Vec<MessageView>,
    pub sla: SlaView,
    /// The position of the event that opened it.
    pub position: u64,
}

impl ChatView {
    /// Attachment `index` of the inbound message with provider id `message`.
    fn file(&mut self, message: &str, index: u32) -> Option<&mut MediaFile> {
        self.messages
            .iter_mut()
            .find(|m| m.inbound && m.provider_message_id.as_deref() == Some(message))?
            .files
            .iter_mut()
            .find(|f| f.index == index)
    }
}

/// Folds a conversation stream, event by event, into one chat.
#[derive(Debug)]
pub struct ChatAsOf {
    chat_id: Uuid,
    conversation: Conversation,
    view: Option<ChatView>,
    /// The best receipt of each provider message id: status, rank, error.
    receipts: HashMap<String, (String, i64, Option<String>)>,
}

impl ChatAsOf {
    pub fn new(chat_id: Uuid) -> Self {
        ChatAsOf {
            chat_id,
            conversation: Conversation::default(),
            view: None,
            receipts: HashMap::new(),
        }
    }

    /// Folds the next event of the stream. `policy` is the SLA policy in force when it was
    /// recorded, with its version.
    pub fn apply(
        &mut self,
        recorded: &RecordedEvent,
        event: &ConversationEvent,
        policy: Option<(u64, &SlaPolicy)>,
    ) {
        self.conversation.evolve(event);
        if let ConversationEvent::ReceiptRecorded { receipt, .. } = event {
            let rank = status_rank(&receipt.status);
            let error = receipt.errors.first().map(|e| match &e.title {
                Some(title) => format!("{}: {title}", e.code),
                None => e.code.to_string(),
            });
            let best = self
                .receipts
                .entry(receipt.provider_message_id.clone())
                .or_insert((receipt.status.clone(), rank, error.clone()));
            if rank > best.1 {
                *best = (receipt.status.clone(), rank, error.clone());
            }
            if let Some(view) = self.view.as_mut() {
                for m in view.messages.iter_mut().filter(|m| {
                    m.provider_message_id.as_deref() == Some(&receipt.provider_message_id)
                        && m.rank < rank
                }) {
                    m.delivery_status = Some(receipt.status.clone());
                    m.rank = rank;
                    m.error = error.clone().or(m.error.take());
                }
            }
        }
        if let ConversationEvent::ChatOpened {
            chat_id,
            conversation,
            reason,
            context,
            previous_chat_id,
            opened_at,
        } = event
        {
            if *chat_id == self.chat_id && self.view.is_none() {
                self.view = Some(ChatView {
                    chat_id: *chat_id,
                    stream: recorded.stream.clone(),
                    channel_number: conversation.channel_number.clone(),
                    stakeholder: conversation.stakeholder.clone(),
                    customer: conversation.customer.to_string(),
                    customer_name: None,
                    status: ChatStatus::Open,
                    opened_at: *opened_at,
                    opened_reason: format!("{reason:?}"),
                    context: context.clone(),
                    previous_chat_id: *previous_chat_id,
                    superseded_by: None,
                    assignee: None,
                    tags: BTreeSet::new(),
                    last_incoming_at: None,
                    service_window_ends_at: None,
                    resolved_at: None,
                    rating: None,
                    last_outbound: false,
                    messages: vec![],
                    sla: SlaView::default(),
                    position: recorded.position,
                });
            }
        }
        let Some(view) = self.view.as_mut() else {
            return;
        };
        if let Some(chat) = self
            .conversation
            .chat
            .as_ref()
            .filter(|c| c.chat_id == self.chat_id)
        {
            view.status = chat.status;
            view.assignee = chat.assignee.clone();
            view.tags = chat.tags.clone();
        }
        if event_chat(event) != Some(self.chat_id) {
            return;
        }
        match event {
            ConversationEvent::MessageReceived {
                received_at,
                message,
                ..
            } => {
                let at = message_time(message, *received_at);
                view.last_incoming_at = Some(at);
                view.service_window_ends_at = Some(service_window_end(at));
                if message.customer.name.is_some() {
                    view.customer_name = message.customer.name.clone();
                }
                view.last_outbound = false;
                let best = self.receipts.get(&message.provider_message_id);
                view.messages.push(MessageView {
                    message_id: recorded.event_id,
                    provider_message_id: Some(message.provider_message_id.clone()),
                    inbound: true,
                    kind: message.kind.clone(),
                    text: message.text.clone(),
                    media: message.media.clone(),
                    files: message
                        .media_sources()
                        .iter()
                        .map(|source| MediaFile::pending(source.index))
                        .collect(),
                    at,
                    delivery_status: best.map(|b| b.0.clone()),
                    error: best.and_then(|b| b.2.clone()),
                    position: recorded.position,
                    rank: best.map_or(0, |b| b.1),
                });
            }
            ConversationEvent::ReplyQueued {
                message_id,
                kind,
                text,
                template,
                media,
                queued_at,
                ..
            } => {
                view.last_outbound = true;
                view.messages.push(MessageView {
                    message_id: *message_id,
                    provider_message_id: None,
                    inbound: false,
                    kind: kind.clone(),
                    text: outbound_text(text.as_deref(), template.as_ref()),
                    media: media
                        .as_ref()
                        .map(|m| crate::conversation::Media::described(m, text.clone())),
                    files: media
                        .iter()
                        .map(|m| MediaFile::stored(0, m.clone()))
                        .collect(),
                    at: *queued_at,
                    delivery_status: Some("queued".into()),
                    error: None,
                    position: recorded.position,
                    rank: status_rank("queued"),
                });
            }
            ConversationEvent::MediaStored {
                message,
                index,
                media,
                ..
            } => {
                if let Some(file) = view.file(message, *index) {
                    *file = MediaFile::stored(*index, media.clone());
                }
            }
            ConversationEvent::MediaFetchFailed {
                message,
                index,
                code,
                reason,
                retryable,
                ..
            } => {
                if let Some(file) = view.file(message, *index) {
                    file.failed(*code, reason, *retryable);
                }
            }
            ConversationEvent::MessageDispatched {
                message_id,
                provider_message_id,
                ..
            } => {
                let best = self.receipts.get(provider_message_id);
                if let Some(m) = view
                    .messages
                    .iter_mut()
                    .find(|m| m.message_id == *message_id)
                {
                    m.provider_message_id = Some(provider_message_id.clone());
                    m.delivery_status = Some(best.map_or("accepted".into(), |b| b.0.clone()));
                    m.rank = best.map_or(status_rank("accepted"), |b| b.1);
                }
            }
            ConversationEvent::MessageDispatchFailed {
                message_id,
                code,
                error,
                ..
            } => {
                if let Some(m) = view
                    .messages
                    .iter_mut()
                    .find(|m| m.message_id == *message_id)
                {
                    m.delivery_status = Some("failed".into());
                    m.rank = status_rank("failed");
                    m.error = Some(dispatch_error(*code, error));
                }
            }
            ConversationEvent::ContextChanged {
                identity_changed: false,
                context,
                ..
            } => view.context = context.clone(),
            ConversationEvent::ChatClosed { superseded_by, .. } => {
                view.superseded_by = Some(*superseded_by);
            }
            ConversationEvent::ChatResolved { resolved_at, .. } => {
                view.resolved_at = Some(*resolved_at);
            }
            ConversationEvent::ChatRated { rating, .. } => view.rating = Some(*rating),
            ConversationEvent::SlaClockStarted {
                stakeholder,
                started_at,
                ..
            } => {
                let (version, thresholds) = match policy {
                    Some((version, policy)) => (version, policy.for_stakeholder(stakeholder)),
                    None => (0, SlaPolicy::default().for_stakeholder(stakeholder)),
                };
                view.sla = SlaView {
                    clock_started_at: Some(*started_at),
                    running: true,
                    next_due_at: Some(thresholds.due(*started_at, SlaLevel::Alert)),
                    alerted_at: None,
                    escalated_at: None,
                    policy_version: Some(version),
                    escalation_due_at: Some(thresholds.due(*started_at, SlaLevel::Escalation)),
                };
            }
            ConversationEvent::SlaClockStopped { .. } => {
                view.sla.running = false;
                view.sla.next_due_at = None;
            }
            ConversationEvent::SlaAlertRaised(breach) => {
                view.sla.alerted_at = Some(breach.fired_at);
                view.sla.next_due_at = view.sla.escalation_due_at;
                view.sla.policy_version = Some(breach.policy_version);
            }
            ConversationEvent::SlaEscalated(breach) => {
                view.sla.escalated_at = Some(breach.fired_at);
                view.sla.next_due_at = None;
            }
            _ => {}
        }
    }

    /// The chat, once its opening has been folded.
    pub fn view(&self) -> Option<&ChatView> {
        self.view.as_ref()
    }
}

/// The chat an event is about, when it names one.
pub fn event_chat(event: &ConversationEvent) -> Option<Uuid> {
    use ConversationEvent as E;
    match event {
        E::ChatOpened { chat_id, .. }
        | E::MessageReceived { chat_id, .. }
        | E::ChatAssigned { chat_id, .. }
        | E::ChatReassigned { chat_id, .. }
        | E::ReplyQueued { chat_id, .. }
        | E::DispatchAttempted { chat_id, .. }
        | E::DispatchRetrying { chat_id, .. }
        | E::MessageDispatched { chat_id, .. }
        | E::MessageDispatchFailed { chat_id, .. }
        | E::ChatResolved { chat_id, .. }
        | E::ChatRated { chat_id, .. }
        | E::SlaClockStarted { chat_id, .. }
        | E::SlaClockStopped { chat_id, .. }
        | E::TagApplied { chat_id, .. }
        | E::TagRemoved { chat_id, .. }
        | E::ChatClosed { chat_id, .. }
        | E::MediaStored { chat_id, .. }
        | E::MediaFetchFailed { chat_id, .. }
        | E::ForwardedToAgent { chat_id, .. }
        | E::ForwardToAgentFailed { chat_id, .. }
        | E::GenesysConversationMapped { chat_id, .. }
        | E::ReceiptForwardedToAgent { chat_id, .. } => Some(*chat_id),
        E::SlaAlertRaised(breach) | E::SlaEscalated(breach) => Some(breach.chat_id),
        E::ReceiptRecorded { chat_id, .. } | E::ContextChanged { chat_id, .. } => *chat_id,
        E::PersonalDataErased { .. } => None,
    }
}
