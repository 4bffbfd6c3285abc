//! The consent keeper: turns keywords customers send (STOP, START, HELP) into consent
//! changes on the customer (`consent-{customer}`) and the one automated answer each deserves.
//!
//! It folds the log in order, consent events and keyword messages alike, and applies its own
//! decisions at once: a STOP is judged against the consent as it stood at that message, so a
//! customer who sends STOP five times is withdrawn once and confirmed once, and a replay of
//! the log decides exactly what was decided live. Every change's id derives from the message
//! that caused it, and each answer's id from the change (or, for HELP, the message): written
//! again after a restart, they are duplicates.

use std::collections::HashMap;
use std::sync::Arc;

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

use crate::conversations::Conversations;
use crate::ownership::Ownership;
use crate::tail::LogTail;

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

/// Something to write, decided from the log.
#[derive(Debug)]
enum Action {
    /// A consent change, and the answer that goes with it.
    Change {
        stream: String,
        customer: CustomerKey,
        event: ConsentEvent,
        chat_id: Uuid,
        reply: String,
    },
    /// An answer alone (HELP).
    Answer {
        stream: String,
        chat_id: Uuid,
        message_id: Uuid,
        reply: String,
    },
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
        }
    }

    /// Acts only on what this process owns (default: everything).
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Folds one event; what it decides to write.
    fn apply(&mut self, event: &DecodedEvent) -> Option<Action> {
        if let Some(Ok(consent)) = ConsentEvent::from_recorded(event) {
            self.consents
                .entry(event.stream.clone())
                .or_default()
                .evolve(&consent);
            return None;
        }
        let Ok(Some(conversation)) = event.conversation() else {
            return None;
        };
        match conversation {
            ConversationEvent::ChatOpened { conversation, .. } => {
                self.customers
                    .insert(event.stream.clone(), conversation.customer.clone());
                None
            }
            ConversationEvent::MessageReceived {
                chat_id,
                message,
                received_at,
            } => {
                let keyword = self.settings.keywords.of(message.text.as_deref()?)?;
                let customer = self.customers.get(&event.stream)?.clone();
                let change = ConsentChange {
                    categories: vec![Category::Marketing],
                    method: Method::Keyword,
                    wording_version: None,
                    evidence: Some(message.provider_message_id.clone()),
                    actor: "customer".into(),
                    at: *received_at,
                };
                let (grant, reply) = match keyword {
                    Keyword::Stop => (false, self.settings.stop_reply.clone()),
                    Keyword::Start => (true, self.settings.start_reply.clone()),
                    Keyword::Help => {
                        return Some(Action::Answer {
                            stream: event.stream.clone(),
                            chat_id: *chat_id,
                            message_id: Uuid::new_v5(
                                &EVENT_ID_NAMESPACE,
                                format!(
                                    "HelpAnswer/{}/{}",
                                    event.stream, message.provider_message_id
                                )
                                .as_bytes(),
                            ),
                            reply: self.settings.help_reply.clone(),
                        })
                    }
                };
                let stream = consent_stream(&customer);
                let consent = self.consents.entry(stream).or_default();
                let decided = consent.decide(grant, change)?;
                // Applied at once: the next STOP is judged with this one counted.
                consent.evolve(&decided);
                Some(Action::Change {
                    stream: event.stream.clone(),
                    customer,
                    event: decided,
                    chat_id: *chat_id,
                    reply,
                })
            }
            _ => None,
        }
    }

    async fn act(&self, action: Action) {
        let (stream, chat_id, message_id, reply) = match action {
            Action::Change {
                stream,
                customer,
                event,
                chat_id,
                reply,
            } => {
                if !self.ownership.owns(&stream) {
                    return;
                }
                let consent = consent_stream(&customer);
                let new = event.to_new_event(&consent, Metadata::by(ACTOR));
                let message_id = Uuid::new_v5(&EVENT_ID_NAMESPACE, new.event_id.as_bytes());
                if let Err(e) = self
                    .store
                    .append(&consent, ExpectedVersion::Any, vec![new])
                    .await
                {
                    tracing::error!(stream = %consent, error = %e, "recording a consent change failed");
                    return;
                }
                (stream, chat_id, message_id, reply)
            }
            Action::Answer {
                stream,
                chat_id,
                message_id,
                reply,
            } => {
                if !self.ownership.owns(&stream) {
                    return;
                }
                (stream, chat_id, message_id, reply)
            }
        };
        let command = ConversationCommand::SendReply {
            chat_id,
            message_id,
            text: reply,
            by: "system:consent".into(),
            now: Utc::now(),
        };
        if let Err(e) = self
            .conversations
            .handle(&stream, vec![command], &Metadata::by(ACTOR))
            .await
        {
            tracing::warn!(stream = %stream, error = %e, "the consent answer was not queued");
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
        let mut follower = tail.subscribe(position);
        loop {
            tokio::select! {
                next = follower.next() => match next {
                    Some(Ok(event)) => {
                        let mut action = None;
                        crate::reactor::observe(NAME, &event, |e| action = self.apply(e));
                        if let Some(action) = action {
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
