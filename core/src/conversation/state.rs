//! A conversation as folded from its events (the state the decider decides on).

use super::*;

/// A chat's lifecycle status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatStatus {
    Open,
    Assigned,
    AwaitingCustomer,
    Resolved,
    Closed,
}

impl ChatStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [ChatStatus; 5] = [
        ChatStatus::Open,
        ChatStatus::Assigned,
        ChatStatus::AwaitingCustomer,
        ChatStatus::Resolved,
        ChatStatus::Closed,
    ];

    /// The name the read models keep and the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatStatus::Open => "OPEN",
            ChatStatus::Assigned => "ASSIGNED",
            ChatStatus::AwaitingCustomer => "AWAITING_CUSTOMER",
            ChatStatus::Resolved => "RESOLVED",
            ChatStatus::Closed => "CLOSED",
        }
    }

    /// A status back from its name ([`ChatStatus::as_str`]).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The status `event`, one of the chat's own, leaves a chat in that was `self` and had an
    /// executive or not (`assigned`) before it. The one rule of a chat's lifecycle: the
    /// conversation's fold and the chats read model both follow it.
    pub fn after(self, event: &ConversationEvent, assigned: bool) -> ChatStatus {
        match event {
            ConversationEvent::MessageReceived { .. } if self == ChatStatus::AwaitingCustomer => {
                if assigned {
                    ChatStatus::Assigned
                } else {
                    ChatStatus::Open
                }
            }
            ConversationEvent::ReplyQueued { .. }
                if matches!(self, ChatStatus::Open | ChatStatus::Assigned) =>
            {
                ChatStatus::AwaitingCustomer
            }
            ConversationEvent::ChatResolved { .. } => ChatStatus::Resolved,
            ConversationEvent::ChatClosed { .. } => ChatStatus::Closed,
            ConversationEvent::ChatAssigned { .. } => ChatStatus::Assigned,
            ConversationEvent::ChatReassigned {
                executive: Some(_), ..
            } => ChatStatus::Assigned,
            ConversationEvent::ChatReassigned {
                executive: None, ..
            } => ChatStatus::Open,
            _ => self,
        }
    }
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
    /// Inbound attachments with a recorded outcome, by message provider id and index.
    pub media: HashMap<(String, u32), MediaProgress>,
    /// Messages handed to Genesys (or given up), by provider id.
    pub forwarded: HashSet<String>,
    /// The Genesys conversation the customer's messages go to, by tenant.
    pub genesys_conversations: HashMap<String, String>,
    /// `(our message id, status)` of each receipt told to Genesys.
    pub receipts_to_agent: HashSet<(Uuid, String)>,
    /// When the customer was last asked for a rating.
    pub last_rating_request_at: Option<DateTime<Utc>>,
}

/// How far fetching one inbound attachment has got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaProgress {
    /// Stored, or given up: nothing more is recorded for it.
    pub settled: bool,
    /// Failed tries recorded so far.
    pub attempts: u32,
}

/// An outbound message as the conversation knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub chat_id: Uuid,
    pub provider_message_id: Option<String>,
    /// Dispatched or failed: nothing more will be sent for it.
    pub settled: bool,
    /// Tries recorded so far.
    pub attempts: u32,
}

impl SlaClock {
    /// Folds one event into a conversation's SLA clock: when it starts, stops, and which
    /// thresholds it has crossed. The one rule for it, for the conversation's fold and for the
    /// SLA timers (which keep only the clock).
    pub fn evolve(clock: &mut Option<SlaClock>, event: &ConversationEvent) {
        match event {
            ConversationEvent::SlaClockStarted {
                chat_id,
                customer_message,
                started_at,
                ..
            } => {
                *clock = Some(SlaClock {
                    chat_id: *chat_id,
                    started_at: *started_at,
                    customer_message: customer_message.clone(),
                    alerted: false,
                    escalated: false,
                });
            }
            ConversationEvent::SlaClockStopped { .. } => *clock = None,
            ConversationEvent::SlaAlertRaised(breach) | ConversationEvent::SlaEscalated(breach) => {
                let escalation = matches!(event, ConversationEvent::SlaEscalated(_));
                if let Some(clock) = clock
                    .as_mut()
                    .filter(|c| c.customer_message == breach.customer_message)
                {
                    if escalation {
                        clock.escalated = true;
                    } else {
                        clock.alerted = true;
                    }
                }
            }
            _ => {}
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
                self.move_status(*chat_id, event);
            }
            ConversationEvent::ReplyQueued {
                chat_id,
                message_id,
                purpose,
                queued_at,
                ..
            } => {
                // A rating request makes the next 1-5 the chat's rating (a resolve without
                // one, because the customer was asked lately, does not).
                if *purpose == OutboundPurpose::RatingRequest {
                    self.last_rating_request_at = Some(*queued_at);
                    self.awaiting_rating = Some(*chat_id);
                }
                self.outbound.insert(
                    *message_id,
                    Outbound {
                        chat_id: *chat_id,
                        provider_message_id: None,
                        settled: false,
                        attempts: 0,
                    },
                );
                self.move_status(*chat_id, event);
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
            ConversationEvent::DispatchAttempted {
                message_id,
                attempt,
                ..
            } => {
                if let Some(outbound) = self.outbound.get_mut(message_id) {
                    outbound.attempts = outbound.attempts.max(*attempt);
                }
            }
            // When the next try is due is the dispatcher's business; the conversation's state
            // does not change.
            ConversationEvent::DispatchRetrying { .. } => {}
            ConversationEvent::SlaClockStarted { .. }
            | ConversationEvent::SlaClockStopped { .. } => SlaClock::evolve(&mut self.sla, event),
            ConversationEvent::SlaAlertRaised(breach) | ConversationEvent::SlaEscalated(breach) => {
                SlaClock::evolve(&mut self.sla, event);
                if let Some(notification) = &breach.notification {
                    self.outbound.insert(
                        notification.message_id,
                        Outbound {
                            chat_id: breach.chat_id,
                            provider_message_id: None,
                            settled: false,
                            attempts: 0,
                        },
                    );
                }
            }
            ConversationEvent::ChatResolved { chat_id, .. } => {
                self.move_status(*chat_id, event);
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
                self.move_status(*chat_id, event);
            }
            ConversationEvent::ChatAssigned {
                chat_id, executive, ..
            } => self.set_assignee(*chat_id, Some(executive.clone()), event),
            ConversationEvent::ChatReassigned {
                chat_id, executive, ..
            } => self.set_assignee(*chat_id, executive.clone(), event),
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
            ConversationEvent::MediaStored { message, index, .. } => {
                self.media
                    .entry((message.clone(), *index))
                    .or_default()
                    .settled = true;
            }
            ConversationEvent::MediaFetchFailed {
                message,
                index,
                attempt,
                retryable,
                ..
            } => {
                let progress = self.media.entry((message.clone(), *index)).or_default();
                progress.attempts = progress.attempts.max(*attempt);
                progress.settled |= !retryable;
            }
            ConversationEvent::ForwardedToAgent { message, .. }
            | ConversationEvent::ForwardToAgentFailed { message, .. } => {
                self.forwarded.insert(message.clone());
            }
            ConversationEvent::GenesysConversationMapped {
                tenant,
                conversation_id,
                ..
            } => {
                self.genesys_conversations
                    .insert(tenant.clone(), conversation_id.clone());
            }
            ConversationEvent::ReceiptForwardedToAgent {
                message_id, status, ..
            } => {
                self.receipts_to_agent.insert((*message_id, status.clone()));
            }
        }
    }

    fn set_assignee(
        &mut self,
        chat_id: Uuid,
        executive: Option<ExecutiveRef>,
        event: &ConversationEvent,
    ) {
        self.move_status(chat_id, event);
        if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == chat_id) {
            chat.assignee = executive;
        }
    }

    /// The current chat's status after `event`, when the chat is `chat_id`.
    fn move_status(&mut self, chat_id: Uuid, event: &ConversationEvent) {
        if let Some(chat) = self.chat.as_mut().filter(|c| c.chat_id == chat_id) {
            chat.status = chat.status.after(event, chat.assignee.is_some());
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
}

/// What a later message tells of the customer: a number, a user id, a name.
pub(super) fn merge_customer(known: &mut Customer, seen: &Customer) {
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
