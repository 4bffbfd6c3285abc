//! One chat as it stood at any moment, and its history in words.
//!
//! [`ChatAsOf`] folds a conversation stream's events, up to an instant, with
//! [`Conversation::evolve`] — the fold the live system decides with — for the chat's status,
//! assignee and tags, and adds what the dashboard shows beside them (messages and their
//! delivery status, SLA deadlines), by the same rules as the read models. [`describe`] says
//! what each event did, and why, in words an auditor reads.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::conversation::service_window_end;
use crate::conversation::{
    AssignmentRule, ChatStatus, Conversation, ConversationEvent, ExecutiveRef, InboundMessage,
    Media, OpenReason, OutboundPurpose, SlaStop,
};
use crate::event::RecordedEvent;
use crate::sla::{SlaLevel, SlaPolicy};

/// The order of delivery statuses: a receipt never moves a message's status backwards.
pub fn status_rank(status: &str) -> i64 {
    match status {
        "queued" => 1,
        "accepted" => 2,
        "sent" => 3,
        "delivered" => 4,
        "read" => 5,
        "failed" | "undelivered" => 6,
        _ => 0,
    }
}

/// The longest last-message preview a chat list shows, in characters.
pub const PREVIEW_CHARS: usize = 200;

/// What a message shows as its last-message preview: the start of its text, or its kind.
pub fn preview(text: Option<&str>, kind: &str) -> String {
    match text {
        Some(text) => text.chars().take(PREVIEW_CHARS).collect(),
        None => format!("[{kind}]"),
    }
}

/// An outbound message's text as the dashboard shows it: its text, or the template it is.
pub fn outbound_text(
    text: Option<&str>,
    template: Option<&crate::conversation::Template>,
) -> Option<String> {
    text.map(str::to_owned)
        .or_else(|| template.map(|t| format!("[template {}]", t.name)))
}

/// Why a message failed to go out, as the dashboard shows it: the provider's code and text.
pub fn dispatch_error(code: Option<i64>, error: &str) -> String {
    match code {
        Some(code) => format!("{code}: {error}"),
        None => error.to_owned(),
    }
}

/// When a customer's message was sent: by the provider's clock if it says, else when it
/// reached us.
pub fn message_time(message: &InboundMessage, received_at: DateTime<Utc>) -> DateTime<Utc> {
    message.sent_at.unwrap_or(received_at)
}

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
                    media: None,
                    at: *queued_at,
                    delivery_status: Some("queued".into()),
                    error: None,
                    position: recorded.position,
                    rank: status_rank("queued"),
                });
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
        | E::MessageDispatched { chat_id, .. }
        | E::MessageDispatchFailed { chat_id, .. }
        | E::ChatResolved { chat_id, .. }
        | E::ChatRated { chat_id, .. }
        | E::SlaClockStarted { chat_id, .. }
        | E::SlaClockStopped { chat_id, .. }
        | E::TagApplied { chat_id, .. }
        | E::TagRemoved { chat_id, .. }
        | E::ChatClosed { chat_id, .. } => Some(*chat_id),
        E::SlaAlertRaised(breach) | E::SlaEscalated(breach) => Some(breach.chat_id),
        E::ReceiptRecorded { chat_id, .. } | E::ContextChanged { chat_id, .. } => *chat_id,
        E::PersonalDataErased { .. } => None,
    }
}

fn names(executives: &[ExecutiveRef]) -> String {
    if executives.is_empty() {
        "nobody online".to_owned()
    } else {
        executives
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn shown(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "(not set)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The changes of a context change, as "field old → new", joined.
fn changes_in_words(
    changes: &serde_json::Map<String, Value>,
    previous: &serde_json::Map<String, Value>,
) -> String {
    changes
        .iter()
        .map(|(field, new)| {
            format!(
                "{field} changed {} → {}",
                shown(previous.get(field)),
                shown(Some(new))
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn duration_in_words(seconds: u64) -> String {
    match seconds {
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Says what events did and why, in order. Keeps what an event needs from the ones before
/// it (the context change behind a new chat).
#[derive(Debug, Default)]
pub struct Narrator {
    /// The last context change that decided chat identity, in words.
    identity_change: Option<String>,
}

impl Narrator {
    /// What `event` did, in words.
    pub fn describe(&mut self, event: &ConversationEvent) -> String {
        use ConversationEvent as E;
        match event {
            E::ChatOpened {
                reason,
                previous_chat_id,
                ..
            } => match reason {
                OpenReason::FirstMessage => "new chat: the customer's first message".to_owned(),
                OpenReason::AfterResolution => match previous_chat_id {
                    Some(previous) => {
                        format!("new chat: the customer wrote after chat {previous} was resolved")
                    }
                    None => "new chat: the customer wrote after the last chat was resolved".into(),
                },
                OpenReason::ContextChanged => match self.identity_change.take() {
                    Some(change) => format!("new chat: {change}"),
                    None => "new chat: a field that decides chat identity changed".to_owned(),
                },
            },
            E::MessageReceived { message, .. } => {
                format!("the customer sent a {} message", message.kind)
            }
            E::ReceiptRecorded {
                receipt,
                known_message,
                ..
            } => {
                let about = if *known_message {
                    "the message"
                } else {
                    "a message this conversation has no record of"
                };
                let mut words = format!(
                    "{} says {about} ({}) is {}",
                    receipt.provider, receipt.provider_message_id, receipt.status
                );
                if let Some(error) = receipt.errors.first() {
                    words.push_str(&format!(", error {}", error.code));
                    if let Some(title) = &error.title {
                        words.push_str(&format!(": {title}"));
                    }
                }
                words
            }
            E::ContextChanged {
                changes,
                previous,
                identity_changed,
                ..
            } => {
                let change = changes_in_words(changes, previous);
                if *identity_changed {
                    self.identity_change = Some(change.clone());
                    format!("context: {change}; that decides chat identity, so a new chat opens")
                } else {
                    format!("context: {change}")
                }
            }
            E::ChatAssigned {
                executive,
                rule,
                candidates,
                by,
                ..
            } => match rule {
                AssignmentRule::RoundRobin => format!(
                    "assigned to {} by round robin; candidates: {}",
                    executive.name,
                    names(candidates)
                ),
                AssignmentRule::AssigneeWentOffline => format!(
                    "assigned to {} because the assignee went offline; candidates: {}",
                    executive.name,
                    names(candidates)
                ),
                AssignmentRule::AssigneeLeft => format!(
                    "assigned to {} because the assignee no longer works these chats; candidates: {}",
                    executive.name,
                    names(candidates)
                ),
                AssignmentRule::Manual => format!(
                    "assigned to {} by {}",
                    executive.name,
                    by.as_deref().unwrap_or("a lead")
                ),
            },
            E::ChatReassigned {
                executive,
                previous,
                rule,
                candidates,
                by,
                ..
            } => {
                let to = match executive {
                    Some(e) => format!("reassigned from {} to {}", previous.name, e.name),
                    None => format!("taken from {} and back to waiting", previous.name),
                };
                match rule {
                    AssignmentRule::Manual => {
                        format!("{to} by {}", by.as_deref().unwrap_or("a lead"))
                    }
                    AssignmentRule::AssigneeWentOffline => format!(
                        "{to}: {} went offline; candidates: {}",
                        previous.name,
                        names(candidates)
                    ),
                    AssignmentRule::AssigneeLeft => format!(
                        "{to}: {} no longer works these chats (deactivated, or moved); candidates: {}",
                        previous.name,
                        names(candidates)
                    ),
                    AssignmentRule::RoundRobin => {
                        format!("{to} by round robin; candidates: {}", names(candidates))
                    }
                }
            }
            E::ReplyQueued {
                kind,
                template,
                purpose,
                by,
                ..
            } => match (purpose, template) {
                (OutboundPurpose::RatingRequest, _) => {
                    "rating request queued for the customer".to_owned()
                }
                (_, Some(template)) => {
                    format!(
                        "{by} queued template {} ({})",
                        template.name, template.language
                    )
                }
                _ => format!("{by} queued a {kind} reply"),
            },
            E::MessageDispatched {
                provider_message_id,
                attempts,
                ..
            } => format!(
                "the provider accepted the message as {provider_message_id} (attempt {attempts})"
            ),
            E::MessageDispatchFailed {
                code,
                error,
                permanent,
                attempts,
                ..
            } => {
                let code = code.map(|c| format!(" {c}")).unwrap_or_default();
                let outcome = if *permanent {
                    "not sent: retrying cannot help"
                } else {
                    "not sent yet: it will be retried"
                };
                format!("the provider refused the message (error{code}: {error}) after {attempts} attempts; {outcome}")
            }
            E::ChatResolved { by, .. } => format!("resolved by {by}; a rating request follows"),
            E::ChatRated { rating, .. } => format!("the customer rated the chat {rating} of 5"),
            E::SlaClockStarted { .. } => {
                "SLA clock started: a customer message waits for an answer".to_owned()
            }
            E::SlaClockStopped { reason, .. } => match reason {
                SlaStop::Answered => "SLA clock stopped: an executive answered".to_owned(),
                SlaStop::Resolved => "SLA clock stopped: the chat was resolved".to_owned(),
                SlaStop::Closed => "SLA clock stopped: the chat was closed".to_owned(),
            },
            E::SlaAlertRaised(breach) | E::SlaEscalated(breach) => {
                let what = if matches!(event, E::SlaAlertRaised(_)) {
                    "SLA alert"
                } else {
                    "SLA escalation"
                };
                let mut words = format!(
                    "{what}: no answer {} after the customer's message (policy v{}); due {}, raised {}",
                    duration_in_words(breach.threshold_seconds),
                    breach.policy_version,
                    breach.due_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    breach.fired_at.format("%Y-%m-%d %H:%M:%S UTC"),
                );
                if let Some(n) = &breach.notification {
                    words.push_str(&format!("; {} notified", n.to));
                }
                words
            }
            E::TagApplied { tag, by, .. } => format!("tag \"{tag}\" applied by {by}"),
            E::TagRemoved { tag, by, .. } => format!("tag \"{tag}\" removed by {by}"),
            E::ChatClosed { superseded_by, .. } => {
                format!("closed: a context change opened chat {superseded_by} in its place")
            }
            E::PersonalDataErased { by, .. } => format!(
                "the customer's messages and name were erased at their request ({by}); their key was destroyed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{ConversationRef, CustomerKey};
    use serde_json::json;

    fn conversation() -> ConversationRef {
        ConversationRef {
            channel: "partner".into(),
            channel_number: "919099039188".into(),
            stakeholder: "partner".into(),
            customer: CustomerKey::Phone("+919638120888".into()),
        }
    }

    #[test]
    fn a_new_chat_says_which_context_change_opened_it() {
        let at: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let change = ConversationEvent::ContextChanged {
            conversation: conversation(),
            changes: json!({"documents_status": "Approved"})
                .as_object()
                .unwrap()
                .clone(),
            previous: json!({"documents_status": "Pending"})
                .as_object()
                .unwrap()
                .clone(),
            context: json!({"documents_status": "Approved"}),
            identity_fields: vec!["documents_status".into()],
            identity_changed: true,
            chat_id: Some(old),
            changed_at: at,
        };
        let opened = ConversationEvent::ChatOpened {
            chat_id: new,
            conversation: conversation(),
            reason: OpenReason::ContextChanged,
            context: json!({"documents_status": "Approved"}),
            previous_chat_id: Some(old),
            opened_at: at,
        };
        let mut narrator = Narrator::default();
        assert!(narrator.describe(&change).ends_with("so a new chat opens"));
        assert_eq!(
            narrator.describe(&opened),
            "new chat: documents_status changed Pending → Approved"
        );
    }

    #[test]
    fn assignments_name_the_rule_and_the_candidates() {
        let asha = ExecutiveRef {
            id: Uuid::from_u128(1),
            name: "Asha".into(),
        };
        let ravi = ExecutiveRef {
            id: Uuid::from_u128(2),
            name: "Ravi".into(),
        };
        let assigned = ConversationEvent::ChatAssigned {
            chat_id: Uuid::from_u128(9),
            executive: asha.clone(),
            rule: AssignmentRule::RoundRobin,
            candidates: vec![asha.clone(), ravi.clone()],
            by: None,
            cause: Uuid::from_u128(8),
            assigned_at: "2026-11-22T10:00:00Z".parse().unwrap(),
        };
        assert_eq!(
            Narrator::default().describe(&assigned),
            "assigned to Asha by round robin; candidates: Asha, Ravi"
        );
        let handed_on = ConversationEvent::ChatReassigned {
            chat_id: Uuid::from_u128(9),
            executive: Some(ravi.clone()),
            previous: asha,
            rule: AssignmentRule::AssigneeWentOffline,
            candidates: vec![ravi],
            by: None,
            cause: Uuid::from_u128(7),
            assigned_at: "2026-11-22T10:05:00Z".parse().unwrap(),
        };
        assert_eq!(
            Narrator::default().describe(&handed_on),
            "reassigned from Asha to Ravi: Asha went offline; candidates: Ravi"
        );
    }
}
