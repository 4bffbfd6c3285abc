//! The consent keeper: turns keywords customers send (STOP, START, HELP) into consent
//! changes on the customer (`consent-{customer}`) and the one automated answer each deserves.
//!
//! It folds the log in order, consent events and keyword messages alike, and applies its own
//! decisions at once: a STOP is judged against the consent as it stood at that message, so a
//! customer who sends STOP five times is withdrawn once and confirmed once, and a replay of
//! the log decides exactly what was decided live. Every change's id derives from the message
//! that caused it, and each answer's id from the change (or, for HELP, the message): written
//! again after a restart, they are duplicates.
//!
//! Answers that change nothing are rationed per customer: the HELP text goes at most once per
//! `answer_window`, judged by the messages' own times, so a burst of HELPs is all recorded and
//! answered once. A consent change is never rationed, nor its confirmation: STOP, START, STOP
//! within an hour is two withdrawals, each confirmed (a STOP repeated changes nothing and gets
//! nothing).

use std::collections::HashMap;
use std::sync::Arc;

use chatledger_core::channel::ProviderNoticeReceived;
use chatledger_core::consent::{
    consent_stream, Category, Consent, ConsentChange, ConsentEvent, Keyword, Keywords, Method,
};
use chatledger_core::conversation::{
    ConversationCommand, ConversationEvent, CustomerKey, DecodedEvent, EVENT_ID_NAMESPACE,
};
use chatledger_core::{EventStore, ExpectedVersion, Metadata};
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::watch;
use uuid::Uuid;

use crate::ownership::Ownership;
use crate::tail::LogTail;
use chatledger_application::conversations::Conversations;

const NAME: &str = "consent keeper";
const ACTOR: &str = "reactor:consent";

/// The keywords and the answers they get.
#[derive(Debug, Clone)]
pub struct ConsentSettings {
    pub keywords: Keywords,
    /// Sent once when a customer withdraws (STOP).
    pub stop_reply: String,
    /// Sent when a customer who had withdrawn comes back (START).
    pub start_reply: String,
    /// Sent for HELP.
    pub help_reply: String,
}

impl Default for ConsentSettings {
    fn default() -> Self {
        ConsentSettings {
            keywords: Keywords::default(),
            stop_reply: "You will not receive marketing messages from us any more. Reply START to receive them again.".into(),
            start_reply: "You will receive our messages again. Reply STOP to stop them.".into(),
            help_reply: "Reply STOP to stop marketing messages, START to receive them again. Write to us here for anything else.".into(),
        }
    }
}

/// An automated answer on a conversation.
#[derive(Debug)]
struct Answer {
    stream: String,
    chat_id: Uuid,
    text: String,
}

/// Something to write, decided from the log.
#[derive(Debug)]
enum Action {
    /// A consent change, and the answer that goes with it (its id derives from the change).
    Change {
        customer: CustomerKey,
        event: ConsentEvent,
        answer: Option<Answer>,
    },
    /// An answer alone (HELP), under `message_id`.
    Answer { message_id: Uuid, answer: Answer },
}

/// The reactor.
pub struct ConsentKeeper {
    store: Arc<dyn EventStore>,
    conversations: Arc<Conversations>,
    settings: ConsentSettings,
    /// Each conversation stream's customer.
    customers: HashMap<String, CustomerKey>,
    /// Each customer's consent, by consent stream.
    consents: HashMap<String, Consent>,
    ownership: Ownership,
    /// The shortest time between two answers of one kind to one customer.
    answer_window: chrono::Duration,
    /// When each customer was last answered, by consent stream and keyword.
    answered: HashMap<(String, Keyword), chrono::DateTime<Utc>>,
    /// Following the log live (not catching up at start): held answers are counted.
    live: bool,
}

impl ConsentKeeper {
    pub fn new(
        store: Arc<dyn EventStore>,
        conversations: Arc<Conversations>,
        settings: ConsentSettings,
    ) -> Self {
        ConsentKeeper {
            store,
            conversations,
            settings,
            customers: HashMap::new(),
            consents: HashMap::new(),
            ownership: Ownership::local(),
            answer_window: chrono::Duration::hours(1),
            answered: HashMap::new(),
            live: false,
        }
    }

    /// Answers each customer at most once per `window` for each keyword.
    pub fn answering_at_most_every(mut self, window: std::time::Duration) -> Self {
        self.answer_window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        self
    }

    /// Whether `customer` may be answered for `keyword` at `at`; counts the answer if so.
    fn may_answer(
        &mut self,
        customer: &CustomerKey,
        keyword: Keyword,
        at: chrono::DateTime<Utc>,
    ) -> bool {
        let key = (consent_stream(customer), keyword);
        let free = self
            .answered
            .get(&key)
            .is_none_or(|last| at - *last >= self.answer_window);
        if free {
            self.answered.insert(key, at);
        } else if self.live {
            metrics::counter!("chatledger_automated_answers_held_total", "keyword" => keyword.name())
                .increment(1);
        }
        free
    }

    /// Acts only on what this process owns (default: everything).
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Folds one event; what it decides to write.
    fn apply(&mut self, event: &DecodedEvent) -> Vec<Action> {
        match ConsentEvent::from_recorded(event) {
            Some(Ok(consent)) => {
                self.consents
                    .entry(event.stream.clone())
                    .or_default()
                    .evolve(&consent);
                return vec![];
            }
            Some(Err(e)) => {
                crate::reactor::passed_over(NAME, event, &e);
                return vec![];
            }
            None => {}
        }
        if event.event_type == ProviderNoticeReceived::EVENT_TYPE {
            return self.user_preferences(event);
        }
        let Ok(Some(conversation)) = event.conversation() else {
            return vec![];
        };
        match conversation {
            ConversationEvent::ChatOpened { conversation, .. } => {
                self.customers
                    .insert(event.stream.clone(), conversation.customer.clone());
                vec![]
            }
            ConversationEvent::MessageReceived {
                chat_id,
                message,
                received_at,
            } => self
                .message(&event.stream, *chat_id, message, *received_at)
                .into_iter()
                .collect(),
            _ => vec![],
        }
    }

    /// A keyword, or WhatsApp's own note that the customer changed their marketing
    /// preference (`system` / `user_preference_changed`).
    fn message(
        &mut self,
        stream: &str,
        chat_id: Uuid,
        message: &chatledger_core::conversation::InboundMessage,
        received_at: chrono::DateTime<Utc>,
    ) -> Option<Action> {
        let customer = self.customers.get(stream)?.clone();
        let details = message.details.as_ref();
        let preference = details
            .filter(|d| d["type"] == "user_preference_changed")
            .and_then(|d| d["marketing"].as_str());
        let (grant, method, reply) = match preference {
            Some(value) => (value == "resume", Method::UserPreferences, None),
            None => match self.settings.keywords.of(message.text.as_deref()?)? {
                Keyword::Stop => (
                    false,
                    Method::Keyword,
                    Some(self.settings.stop_reply.clone()),
                ),
                Keyword::Start => (
                    true,
                    Method::Keyword,
                    Some(self.settings.start_reply.clone()),
                ),
                Keyword::Help => {
                    if !self.may_answer(&customer, Keyword::Help, received_at) {
                        return None;
                    }
                    return Some(Action::Answer {
                        message_id: Uuid::new_v5(
                            &EVENT_ID_NAMESPACE,
                            format!("HelpAnswer/{stream}/{}", message.provider_message_id)
                                .as_bytes(),
                        ),
                        answer: Answer {
                            stream: stream.to_owned(),
                            chat_id,
                            text: self.settings.help_reply.clone(),
                        },
                    });
                }
            },
        };
        let change = ConsentChange {
            categories: vec![Category::Marketing],
            method,
            wording_version: None,
            evidence: Some(message.provider_message_id.clone()),
            actor: "customer".into(),
            at: received_at,
        };
        let decided = self.decide(&customer, grant, change)?;
        Some(Action::Change {
            customer,
            event: decided,
            answer: reply.map(|text| Answer {
                stream: stream.to_owned(),
                chat_id,
                text,
            }),
        })
    }

    /// Meta's `user_preferences` webhook: each entry stops or resumes marketing messages.
    fn user_preferences(&mut self, event: &DecodedEvent) -> Vec<Action> {
        let notice = match serde_json::from_value::<ProviderNoticeReceived>(event.data.clone()) {
            Ok(notice) => notice,
            Err(e) => {
                crate::reactor::passed_over(NAME, event, &e);
                return vec![];
            }
        };
        if notice.kind != "field:user_preferences" {
            return vec![];
        }
        let entries = notice.raw["value"]["user_preferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut actions = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let (Some(wa_id), Some(value)) = (entry["wa_id"].as_str(), entry["value"].as_str())
            else {
                continue;
            };
            if entry["category"] != "marketing_messages" || !matches!(value, "stop" | "resume") {
                continue;
            }
            let digits: String = wa_id.chars().filter(char::is_ascii_digit).collect();
            if digits.is_empty() {
                continue;
            }
            let customer = CustomerKey::Phone(format!("+{digits}"));
            let at = entry["timestamp"]
                .as_i64()
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .unwrap_or(notice.received_at);
            let change = ConsentChange {
                categories: vec![Category::Marketing],
                method: Method::UserPreferences,
                wording_version: entry["detail"].as_str().map(str::to_owned),
                evidence: Some(format!("{}/{i}", event.event_id)),
                actor: "customer".into(),
                at,
            };
            if let Some(decided) = self.decide(&customer, value == "resume", change) {
                actions.push(Action::Change {
                    customer,
                    event: decided,
                    answer: None,
                });
            }
        }
        actions
    }

    /// The change to record, applied at once to the customer's consent: the next keyword is
    /// judged with this one counted.
    fn decide(
        &mut self,
        customer: &CustomerKey,
        grant: bool,
        change: ConsentChange,
    ) -> Option<ConsentEvent> {
        let consent = self.consents.entry(consent_stream(customer)).or_default();
        let decided = consent.decide(grant, change)?;
        consent.evolve(&decided);
        Some(decided)
    }

    async fn act(&self, action: Action) {
        let (message_id, answer) = match action {
            Action::Change {
                customer,
                event,
                answer,
            } => {
                let consent = consent_stream(&customer);
                let new = event.to_new_event(&consent, Metadata::by(ACTOR));
                let message_id = Uuid::new_v5(&EVENT_ID_NAMESPACE, new.event_id.as_bytes());
                if self.ownership.owns(&consent) {
                    if let Err(e) = self
                        .store
                        .append(&consent, ExpectedVersion::Any, vec![new])
                        .await
                    {
                        tracing::error!(stream = %consent, error = %e, "recording a consent change failed");
                        return;
                    }
                }
                let Some(answer) = answer else { return };
                (message_id, answer)
            }
            Action::Answer { message_id, answer } => (message_id, answer),
        };
        if !self.ownership.owns(&answer.stream) {
            return;
        }
        let command = ConversationCommand::SendReply {
            chat_id: answer.chat_id,
            message_id,
            text: answer.text,
            by: "system:consent".into(),
            now: Utc::now(),
        };
        if let Err(e) = self
            .conversations
            .handle(&answer.stream, vec![command], &Metadata::by(ACTOR))
            .await
        {
            tracing::warn!(stream = %answer.stream, error = %e, "the consent answer was not queued");
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, tail: LogTail, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let mut decided = Vec::new();
        let Some(position) = crate::reactor::fold_log(
            store.as_ref(),
            0,
            |e| decided.extend(self.apply(e)),
            &mut shutdown,
            NAME,
        )
        .await
        else {
            return;
        };
        // What was decided while catching up is written now (written before: duplicates).
        for action in decided {
            self.act(action).await;
        }
        self.live = true;
        let mut follower = tail.subscribe(position);
        loop {
            tokio::select! {
                next = follower.next() => match next {
                    Some(Ok(event)) => {
                        let mut actions = Vec::new();
                        crate::reactor::observe(NAME, &event, |e| actions = self.apply(e));
                        for action in actions {
                            self.act(action).await;
                        }
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "the consent keeper's read failed; it retries"),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
