//! The Genesys bridge reactor: hands each customer message of a channel routed to Genesys to
//! the business's Open Messaging integration, and records the outcome (`ForwardedToAgent`,
//! with the conversation Genesys names the first time: `GenesysConversationMapped`; or
//! `ForwardToAgentFailed` with Genesys's reason).
//!
//! - **Delivered once**: what is pending is folded from the log at start (a message of a
//!   routed channel with no outcome), so a restart resumes; the outcome's id derives from
//!   the message, and Genesys de-duplicates on our message id (`channel.messageId`).
//! - **In order**: a customer's messages go one after another; a later one waits while an
//!   earlier one is retried.
//! - **With its attachments**: a message with media waits until each attachment is kept (or
//!   given up), then goes with links Genesys fetches.
//! - **Retries**: unreachable, 5xx, 429 and an expired token are retried with exponential
//!   backoff up to `max_attempts`; anything else is recorded at once with Genesys's reason.
//! - **Only its own partitions**, like every reactor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chatledger_core::conversation::{
    ConversationCommand, ConversationEvent, CustomerKey, DecodedEvent,
};
use chatledger_core::genesys::{
    address, reason_code, receipt_status, text_for_agent, GenesysConfigured, OpenMessaging,
    ReceiptToAgent, ToAgent,
};
use chatledger_core::{EventStore, Metadata, Position};
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::breaker::{Circuits, Permit};
use crate::ownership::{Ownership, ROUND};
use crate::tail::LogTail;
use chatledger_application::conversations::{CommandError, Conversations};

const NAME: &str = "genesys bridge";
const ACTOR: &str = "reactor:genesys";

/// How the bridge tries.
#[derive(Debug, Clone)]
pub struct BridgeLimits {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for BridgeLimits {
    fn default() -> Self {
        BridgeLimits {
            max_attempts: 10,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    stream: String,
    message: ToAgent,
    /// Attachments not yet kept (or given up), by index.
    waiting: BTreeSet<u32>,
    attempts: u32,
    due: Instant,
}

/// An agent's message, as the bridge needs it to tell Genesys what became of it.
#[derive(Debug, Clone)]
struct AgentMessage {
    stream: String,
    tenant: String,
    genesys_message_id: String,
    to: String,
}

#[derive(Debug, Clone)]
struct PendingReceipt {
    stream: String,
    message_id: Uuid,
    receipt: ReceiptToAgent,
    attempts: u32,
    due: Instant,
}

/// The reactor.
pub struct Bridge {
    store: Arc<dyn EventStore>,
    conversations: Arc<Conversations>,
    messaging: Arc<dyn OpenMessaging>,
    routing: GenesysConfigured,
    limits: BridgeLimits,
    /// Channel and customer of each conversation stream.
    conversations_seen: HashMap<String, (String, CustomerKey)>,
    /// In the order the messages were recorded.
    pending: BTreeMap<u64, Pending>,
    /// Where each pending message is in `pending`, by stream and provider id.
    index: HashMap<(String, String), u64>,
    next: u64,
    /// Agents' messages by our message id.
    agent_messages: HashMap<Uuid, AgentMessage>,
    /// Agents' messages sent, by stream and provider id (receipts name them so).
    by_provider: HashMap<(String, String), Uuid>,
    /// Receipts to tell Genesys, by message id and status.
    receipts: BTreeMap<(Uuid, String), PendingReceipt>,
    ownership: Ownership,
    seen: Position,
    /// One per tenant ([`crate::breaker`]).
    circuits: Circuits,
}

impl Bridge {
    pub fn new(
        store: Arc<dyn EventStore>,
        conversations: Arc<Conversations>,
        messaging: Arc<dyn OpenMessaging>,
        routing: GenesysConfigured,
        limits: BridgeLimits,
    ) -> Self {
        Bridge {
            store,
            conversations,
            messaging,
            routing,
            limits,
            conversations_seen: HashMap::new(),
            pending: BTreeMap::new(),
            index: HashMap::new(),
            next: 0,
            agent_messages: HashMap::new(),
            by_provider: HashMap::new(),
            receipts: BTreeMap::new(),
            ownership: Ownership::local(),
            seen: 0,
            circuits: Circuits::default(),
        }
    }

    /// Keeps its circuits in `circuits` (shared with whoever shows them).
    pub fn with_circuits(mut self, circuits: Circuits) -> Self {
        self.circuits = circuits;
        self
    }

    /// Whether the tenant's circuit lets a call go (`Some`, true when it is the probe, whose
    /// failure is not counted against the message); when not, `due` is put off until it may.
    fn circuit_permits(&self, tenant: &str, due: &mut Instant) -> Option<bool> {
        match self.circuits.permit(&format!("genesys:{tenant}")) {
            Ok(permit) => Some(permit == Permit::Probe),
            Err(until) => {
                *due = Instant::from_std(until);
                None
            }
        }
    }

    /// Counts an answer (or its absence) against the tenant's circuit.
    fn circuit_heard<T>(
        &self,
        tenant: &str,
        outcome: &Result<T, chatledger_core::genesys::BridgeError>,
    ) {
        let circuit = format!("genesys:{tenant}");
        match outcome {
            Err(e) if e.transient => self.circuits.failed(&circuit),
            _ => self.circuits.succeeded(&circuit),
        }
    }

    /// Sends only what this process owns (default: everything).
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    fn pending_mut(&mut self, stream: &str, message: &str) -> Option<&mut Pending> {
        let seq = self.index.get(&(stream.to_owned(), message.to_owned()))?;
        self.pending.get_mut(seq)
    }

    fn settle(&mut self, stream: &str, message: &str) {
        if let Some(seq) = self.index.remove(&(stream.to_owned(), message.to_owned())) {
            self.pending.remove(&seq);
        }
    }

    fn apply(&mut self, event: &DecodedEvent) {
        let Ok(Some(conversation)) = event.conversation() else {
            return;
        };
        let stream = event.stream.clone();
        match conversation {
            ConversationEvent::ChatOpened { conversation, .. } => {
                self.conversations_seen.insert(
                    stream,
                    (conversation.channel.clone(), conversation.customer.clone()),
                );
            }
            ConversationEvent::MessageReceived {
                message,
                received_at,
                ..
            } => {
                let Some((channel, customer)) = self.conversations_seen.get(&stream).cloned()
                else {
                    return;
                };
                let Some(integration) = self.routing.routing(&channel) else {
                    return;
                };
                let key = (stream.clone(), message.provider_message_id.clone());
                if self.index.contains_key(&key) {
                    return;
                }
                let pending = Pending {
                    stream: stream.clone(),
                    message: ToAgent {
                        tenant: integration.tenant.clone(),
                        from: address(&channel, &customer),
                        nickname: message.customer.name.clone(),
                        message_id: message.provider_message_id.clone(),
                        time: message.sent_at.unwrap_or(*received_at),
                        text: text_for_agent(message),
                        attachments: vec![],
                    },
                    waiting: message.media_sources().iter().map(|s| s.index).collect(),
                    attempts: 0,
                    due: Instant::now(),
                };
                self.pending.insert(self.next, pending);
                self.index.insert(key, self.next);
                self.next += 1;
            }
            ConversationEvent::MediaStored {
                message,
                index,
                media,
                ..
            } => {
                if let Some(p) = self.pending_mut(&stream, message) {
                    if p.waiting.remove(index) {
                        p.message.attachments.push(media.clone());
                    }
                }
            }
            ConversationEvent::MediaFetchFailed {
                message,
                index,
                retryable: false,
                ..
            } => {
                // Given up: the message goes without it (its text names the kind).
                if let Some(p) = self.pending_mut(&stream, message) {
                    p.waiting.remove(index);
                }
            }
            ConversationEvent::ForwardedToAgent { message, .. }
            | ConversationEvent::ForwardToAgentFailed { message, .. } => {
                self.settle(&stream, message);
            }
            ConversationEvent::ReplyQueued { message_id, .. } => {
                let extra = &event.metadata.extra;
                let (Some(genesys_message_id), Some(tenant)) = (
                    extra.get("genesys_message_id").and_then(|v| v.as_str()),
                    extra.get("genesys_tenant").and_then(|v| v.as_str()),
                ) else {
                    return;
                };
                let Some((channel, customer)) = self.conversations_seen.get(&stream) else {
                    return;
                };
                self.agent_messages.insert(
                    *message_id,
                    AgentMessage {
                        stream: stream.clone(),
                        tenant: tenant.to_owned(),
                        genesys_message_id: genesys_message_id.to_owned(),
                        to: address(channel, customer),
                    },
                );
            }
            ConversationEvent::MessageDispatched {
                message_id,
                provider_message_id,
                ..
            } if self.agent_messages.contains_key(message_id) => {
                self.by_provider
                    .insert((stream, provider_message_id.clone()), *message_id);
            }
            ConversationEvent::ReceiptRecorded {
                receipt,
                received_at,
                ..
            } => {
                let Some(message_id) = self
                    .by_provider
                    .get(&(stream, receipt.provider_message_id.clone()))
                    .copied()
                else {
                    return;
                };
                let Some(status) = receipt_status(&receipt.status) else {
                    return;
                };
                let reason = (status == "Failed").then(|| {
                    let error = receipt.errors.first();
                    (
                        reason_code(error.map(|e| e.code)).to_owned(),
                        error
                            .and_then(|e| e.title.clone().or_else(|| e.message.clone()))
                            .unwrap_or_else(|| "WhatsApp did not deliver the message".into()),
                    )
                });
                self.receipt(
                    message_id,
                    status,
                    reason,
                    receipt.at.unwrap_or(*received_at),
                );
            }
            ConversationEvent::MessageDispatchFailed {
                message_id,
                code,
                error,
                failed_at,
                ..
            } => {
                let reason = (reason_code(*code).to_owned(), error.clone());
                self.receipt(*message_id, "Failed", Some(reason), *failed_at);
            }
            ConversationEvent::ReceiptForwardedToAgent {
                message_id, status, ..
            } => {
                self.receipts.remove(&(*message_id, status.clone()));
            }
            ConversationEvent::PersonalDataErased { .. } => {
                let gone: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.stream == stream)
                    .map(|(seq, _)| *seq)
                    .collect();
                for seq in gone {
                    if let Some(p) = self.pending.remove(&seq) {
                        self.index.remove(&(p.stream, p.message.message_id));
                    }
                }
            }
            _ => {}
        }
    }

    /// Queues telling Genesys that the agent's message `message_id` is `status`.
    fn receipt(
        &mut self,
        message_id: Uuid,
        status: &str,
        reason: Option<(String, String)>,
        at: chrono::DateTime<Utc>,
    ) {
        let Some(agent) = self.agent_messages.get(&message_id) else {
            return;
        };
        self.receipts
            .entry((message_id, status.to_owned()))
            .or_insert_with(|| PendingReceipt {
                stream: agent.stream.clone(),
                message_id,
                receipt: ReceiptToAgent {
                    tenant: agent.tenant.clone(),
                    genesys_message_id: agent.genesys_message_id.clone(),
                    to: agent.to.clone(),
                    time: at,
                    status: status.to_owned(),
                    reason,
                },
                attempts: 0,
                due: Instant::now(),
            });
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, tail: LogTail, mut shutdown: watch::Receiver<bool>) {
        if self.routing.integrations.is_empty() {
            return;
        }
        let store = self.store.clone();
        let Some(position) =
            crate::reactor::fold_log(store.as_ref(), 0, |e| self.apply(e), &mut shutdown, NAME)
                .await
        else {
            return;
        };
        if !self.pending.is_empty() {
            tracing::info!(
                pending = self.pending.len(),
                "handing to Genesys the messages received before the start"
            );
        }
        self.seen = position;
        let mut follower = tail.subscribe(position);
        loop {
            let next_due = self
                .ready()
                .first()
                .map(|seq| self.pending[seq].due)
                .into_iter()
                .chain(self.receipts.values().map(|r| r.due))
                .min();
            let wake = async {
                match next_due {
                    Some(due) => tokio::time::sleep_until(due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = follower.next() => match next {
                    Some(Ok(event)) => {
                        self.seen = self.seen.max(event.position);
                        crate::reactor::observe(NAME, &event, |e| self.apply(e));
                        metrics::gauge!("chatledger_reactor_queue", "reactor" => NAME)
                            .set((self.pending.len() + self.receipts.len()) as f64);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "the bridge's read failed; it retries"),
                    None => return,
                },
                () = wake => {
                    self.send_due().await;
                    self.send_receipts().await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The messages that may go now: each stream's first pending one, once its attachments
    /// are settled.
    fn ready(&self) -> Vec<u64> {
        let mut streams = BTreeSet::new();
        let mut ready: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| streams.insert(p.stream.clone()) && p.waiting.is_empty())
            .map(|(seq, _)| *seq)
            .collect();
        ready.sort_by_key(|seq| self.pending[seq].due);
        ready
    }

    async fn send_due(&mut self) {
        let now = Instant::now();
        for seq in self.ready() {
            let Some(p) = self.pending.get(&seq).cloned() else {
                continue;
            };
            if p.due > now {
                continue;
            }
            let Some(_held) = self.ownership.hold(&p.stream, self.seen).await else {
                if let Some(p) = self.pending.get_mut(&seq) {
                    p.due = Instant::now() + ROUND;
                }
                continue;
            };
            let mut due = p.due;
            let Some(probing) = self.circuit_permits(&p.message.tenant, &mut due) else {
                if let Some(p) = self.pending.get_mut(&seq) {
                    p.due = due;
                }
                continue;
            };
            let attempt = p.attempts + 1;
            let outcome = self.messaging.send_to_agent(&p.message).await;
            self.circuit_heard(&p.message.tenant, &outcome);
            let outcome = match outcome {
                Err(e) if e.transient && (attempt < self.limits.max_attempts || probing) => {
                    let delay = self.backoff(attempt);
                    tracing::warn!(stream = %p.stream, attempt, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "Genesys did not take a message; trying again");
                    if let Some(p) = self.pending.get_mut(&seq) {
                        p.attempts = attempt;
                        p.due = Instant::now() + delay;
                    }
                    continue;
                }
                other => other,
            };
            if let Err(e) = &outcome {
                tracing::error!(stream = %p.stream, attempt, error = %e, "Genesys refused a message");
            }
            let command = ConversationCommand::RecordForward {
                message: p.message.message_id.clone(),
                tenant: p.message.tenant.clone(),
                outcome,
                attempts: attempt,
                now: Utc::now(),
            };
            match self
                .conversations
                .handle(&p.stream, vec![command], &Metadata::by(ACTOR))
                .await
            {
                Ok(_) | Err(CommandError::Rejected(_)) => {
                    self.settle(&p.stream, &p.message.message_id);
                }
                Err(e) => {
                    // Sent, but not recorded: sent again shortly (Genesys de-duplicates on
                    // our message id), and recorded then.
                    tracing::warn!(stream = %p.stream, error = %e, "recording a message handed to Genesys failed; trying again");
                    if let Some(p) = self.pending.get_mut(&seq) {
                        p.due = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
        }
    }
}

impl Bridge {
    fn backoff(&self, attempt: u32) -> Duration {
        self.limits
            .first_backoff
            .saturating_mul(1 << (attempt.saturating_sub(1)).min(16))
            .min(self.limits.max_backoff)
    }

    /// Tells Genesys what became of agents' messages, as far as each receipt is due.
    async fn send_receipts(&mut self) {
        let now = Instant::now();
        let due: Vec<(Uuid, String)> = self
            .receipts
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let Some(pending) = self.receipts.get(&key).cloned() else {
                continue;
            };
            let Some(_held) = self.ownership.hold(&pending.stream, self.seen).await else {
                if let Some(r) = self.receipts.get_mut(&key) {
                    r.due = Instant::now() + ROUND;
                }
                continue;
            };
            let mut due = pending.due;
            let Some(probing) = self.circuit_permits(&pending.receipt.tenant, &mut due) else {
                if let Some(r) = self.receipts.get_mut(&key) {
                    r.due = due;
                }
                continue;
            };
            let attempt = pending.attempts + 1;
            let outcome = self.messaging.send_receipt(&pending.receipt).await;
            self.circuit_heard(&pending.receipt.tenant, &outcome);
            if let Err(e) = &outcome {
                if e.transient && (attempt < self.limits.max_attempts || probing) {
                    let delay = self.backoff(attempt);
                    if let Some(r) = self.receipts.get_mut(&key) {
                        r.attempts = attempt;
                        r.due = Instant::now() + delay;
                    }
                    continue;
                }
                tracing::warn!(stream = %pending.stream, status = %pending.receipt.status, error = %e,
                    "Genesys would not hear a receipt; it is kept in the log");
            }
            let command = ConversationCommand::RecordReceiptForward {
                message_id: pending.message_id,
                tenant: pending.receipt.tenant.clone(),
                status: pending.receipt.status.clone(),
                outcome,
                now: Utc::now(),
            };
            match self
                .conversations
                .handle(&pending.stream, vec![command], &Metadata::by(ACTOR))
                .await
            {
                Ok(_) | Err(CommandError::Rejected(_)) => {
                    self.receipts.remove(&key);
                }
                Err(e) => {
                    tracing::warn!(stream = %pending.stream, error = %e, "recording a receipt told to Genesys failed; trying again");
                    if let Some(r) = self.receipts.get_mut(&key) {
                        r.due = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
        }
    }
}
