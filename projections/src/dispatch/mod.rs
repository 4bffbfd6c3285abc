//! The dispatcher reactor: sends queued messages (`ReplyQueued`, SLA notifications) through
//! the channel's provider and records the outcome (`MessageDispatched` /
//! `MessageDispatchFailed`).
//!
//! - **Nothing queued is lost**: what is pending is folded from the log at start (queued,
//!   no outcome yet), so a restart picks up where the last run stopped.
//! - **Only its own partitions**: with several processes on one database, a message is sent
//!   only by the process that owns its stream's partition ([`crate::ownership`]), and only
//!   while it holds it.
//! - **Each try recorded before it is made** (`DispatchAttempted`, its id derived from the
//!   message and the try's number): the record is the fence, so two processes that both think
//!   they own a stream cannot both make try N. A try found in the log with no outcome, made by
//!   another process or by this one before a restart, is *unknown*: the provider may have
//!   accepted it. It is not sent again blindly: a receipt that echoes our message id
//!   (`biz_opaque_callback_data`) settles it as sent; only when none comes within
//!   `unknown_grace` is it sent again (ADR 14 says what that guarantees).
//! - **Retries**: transient failures (5xx, 429, timeouts, rate-limit codes) are retried
//!   with exponential backoff and jitter, honouring `Retry-After`, up to a bound, each recorded
//!   with when the next try is due (`DispatchRetrying`: a process taking the message over goes
//!   on then); permanent ones are recorded at once and never retried.
//! - **Limits**: per channel, at most `rate_per_second` sends from this process; per
//!   recipient, at least `recipient_interval` between two messages (a recipient's stream has
//!   one owner, so that one holds across processes).
//! - **Starts from where it was**: the streams with pending messages and the channels are
//!   kept as a snapshot ([`crate::snapshots`]); at start the dispatcher reads those streams up
//!   to the snapshot's position and folds only the log after it. The messages' text is not in
//!   the snapshot: it comes from the log, where `forget` can erase it.
//! - **In order**: a conversation's messages to one recipient go in the order they were
//!   queued; one that waits (a retry, a try of unknown outcome) holds the ones after it.
//! - **Circuit breakers** ([`crate::breaker`]): after repeated transient failures of a
//!   channel's endpoint nothing is sent there for a cool-down; what waits is not tried, so it
//!   does not use up its tries, and a probe reopens the way.
//! - **One outcome per message**: the outcome event's id derives from the message; an outcome
//!   that could not be written is written again later, never sent again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chatledger_core::conversation::{
    ConversationCommand, ConversationEvent, DecodedEvent, DispatchOutcome,
};
use chatledger_core::sender::{MessageSender, OutboundMessage};
use chatledger_core::{EventStore, Metadata, Position};
use chrono::Utc;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

mod record;

use crate::breaker::{Circuits, Permit};
use crate::ownership::{Ownership, ROUND};
use crate::snapshots::{Remembered, Snapshots};
use crate::tail::LogTail;
use chatledger_application::conversations::{CommandError, Conversations};

/// Limits the dispatcher keeps.
#[derive(Debug, Clone)]
pub struct DispatchLimits {
    /// Per channel; Meta's default throughput is 80 messages a second.
    pub rate_per_second: u32,
    /// Between two messages to one recipient.
    pub recipient_interval: Duration,
    /// Attempts before a transient failure is recorded as a failure.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// How long a try with no recorded outcome waits for a receipt before it is made again.
    pub unknown_grace: Duration,
}

impl Default for DispatchLimits {
    fn default() -> Self {
        DispatchLimits {
            rate_per_second: 80,
            recipient_interval: Duration::from_secs(1),
            max_attempts: 6,
            first_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(60),
            unknown_grace: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone)]
struct Pending {
    stream: String,
    channel: String,
    message: OutboundMessage,
    /// Tries recorded in the log.
    attempts: u32,
    /// The last try this dispatcher made itself (0: none).
    tried_here: u32,
    /// The last try recorded has no outcome and was not made here: the provider may have it.
    unknown: bool,
    /// An outcome known here but not yet written.
    unwritten: Option<DispatchOutcome>,
    due: Instant,
    /// The order it was queued in.
    seq: u64,
}

impl Pending {
    fn new(stream: &str, channel: String, message: OutboundMessage) -> Self {
        Pending {
            stream: stream.to_owned(),
            channel,
            message,
            attempts: 0,
            tried_here: 0,
            unknown: false,
            unwritten: None,
            due: Instant::now(),
            seq: 0,
        }
    }
}

/// What the dispatcher keeps between runs: the channel of each stream, and which streams have
/// messages waiting to be sent.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Kept {
    channels: HashMap<String, String>,
    pending_streams: BTreeSet<String>,
}

/// The shape of [`Kept`]; a release that changes it (or what the fold means) counts it up.
const SNAPSHOT_FORMAT: u32 = 1;
const NAME: &str = "dispatcher";

/// The reactor.
pub struct Dispatcher {
    store: Arc<dyn EventStore>,
    conversations: Arc<Conversations>,
    sender: Arc<dyn MessageSender>,
    limits: DispatchLimits,
    /// Channel of each conversation stream (from `ChatOpened`).
    channels: HashMap<String, String>,
    pending: BTreeMap<Uuid, Pending>,
    last_send: HashMap<String, Instant>,
    last_to: HashMap<String, Instant>,
    ownership: Ownership,
    /// How far this dispatcher's view of the log has got.
    seen: Position,
    memory: Option<Remembered>,
    circuits: Circuits,
    /// The next queued message's place in the order.
    next_seq: u64,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn EventStore>,
        conversations: Arc<Conversations>,
        sender: Arc<dyn MessageSender>,
        limits: DispatchLimits,
    ) -> Self {
        Dispatcher {
            store,
            conversations,
            sender,
            limits,
            channels: HashMap::new(),
            pending: BTreeMap::new(),
            last_send: HashMap::new(),
            last_to: HashMap::new(),
            ownership: Ownership::local(),
            seen: 0,
            memory: None,
            circuits: Circuits::default(),
            next_seq: 0,
        }
    }

    /// Keeps its circuits in `circuits` (shared with whoever shows them).
    pub fn with_circuits(mut self, circuits: Circuits) -> Self {
        self.circuits = circuits;
        self
    }

    /// Queues `pending` behind everything queued before it.
    fn queue(&mut self, message_id: Uuid, mut pending: Pending) {
        self.next_seq += 1;
        pending.seq = self.next_seq;
        self.pending.insert(message_id, pending);
    }

    /// Starts from the last snapshot in `snapshots` and keeps new ones there.
    pub fn remembered_in(mut self, snapshots: Snapshots) -> Self {
        self.memory = Some(Remembered::new(snapshots, NAME, SNAPSHOT_FORMAT));
        self
    }

    /// Takes the view back from the last snapshot; the position it covers (0: none).
    async fn restore(&mut self) -> Position {
        let Some(memory) = self.memory.as_mut() else {
            return 0;
        };
        let Some((position, kept)) = memory.restore::<Kept>(self.store.as_ref()).await else {
            return 0;
        };
        self.channels = kept.channels;
        // The pending work itself comes from its streams, as they stood then.
        let store = self.store.clone();
        if !crate::reactor::fold_streams(
            store.as_ref(),
            &kept.pending_streams,
            position,
            NAME,
            |e| {
                self.apply(e);
            },
        )
        .await
        {
            self.channels.clear();
            self.pending.clear();
            return 0;
        }
        tracing::info!(
            position,
            pending = self.pending.len(),
            "the dispatcher starts from its snapshot"
        );
        position
    }

    /// Keeps the view as it stands, if a snapshot is due (or `now`, as it stops).
    async fn keep(&mut self, now: bool) {
        let Some(memory) = self.memory.as_mut() else {
            return;
        };
        memory
            .keep(self.seen, now, || Kept {
                channels: self.channels.clone(),
                pending_streams: self.pending.values().map(|p| p.stream.clone()).collect(),
            })
            .await;
    }

    /// Sends only what this process owns (default: everything).
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    fn apply(&mut self, event: &DecodedEvent) {
        let Ok(Some(conversation)) = event.conversation() else {
            return;
        };
        match conversation {
            ConversationEvent::ChatOpened { conversation, .. } => {
                self.channels
                    .insert(event.stream.clone(), conversation.channel.clone());
            }
            ConversationEvent::ReplyQueued {
                message_id,
                to,
                text,
                template,
                media,
                ..
            } => {
                let channel = self
                    .channels
                    .get(&event.stream)
                    .cloned()
                    .unwrap_or_default();
                self.queue(
                    *message_id,
                    Pending::new(
                        &event.stream,
                        channel,
                        OutboundMessage {
                            message_id: message_id.to_string(),
                            to: to.to_string(),
                            text: text.clone(),
                            template: template.clone(),
                            media: media.clone(),
                        },
                    ),
                );
            }
            // SLA alerts notify our own people through the conversation's channel.
            ConversationEvent::SlaAlertRaised(breach) | ConversationEvent::SlaEscalated(breach) => {
                if let Some(notification) = &breach.notification {
                    let channel = self
                        .channels
                        .get(&event.stream)
                        .cloned()
                        .unwrap_or_default();
                    self.queue(
                        notification.message_id,
                        Pending::new(
                            &event.stream,
                            channel,
                            OutboundMessage {
                                message_id: notification.message_id.to_string(),
                                to: notification.to.clone(),
                                text: None,
                                template: Some(notification.template.clone()),
                                media: None,
                            },
                        ),
                    );
                }
            }
            ConversationEvent::DispatchAttempted {
                message_id,
                attempt,
                ..
            } => {
                let grace = self.limits.unknown_grace;
                if let Some(p) = self.pending.get_mut(message_id) {
                    p.attempts = p.attempts.max(*attempt);
                    if *attempt > p.tried_here {
                        // Not ours (another process, or this one before a restart): its
                        // outcome is unknown until a receipt or the grace says otherwise.
                        p.unknown = true;
                        p.due = Instant::now() + grace;
                    }
                }
            }
            ConversationEvent::DispatchRetrying {
                message_id,
                attempt,
                retry_at,
                ..
            } => {
                if let Some(p) = self.pending.get_mut(message_id) {
                    if *attempt >= p.attempts {
                        // The latest try failed and said when to go on: not unknown.
                        p.attempts = *attempt;
                        p.unknown = false;
                        let wait = (*retry_at - Utc::now()).to_std().unwrap_or_default();
                        p.due = Instant::now() + wait;
                    }
                }
            }
            ConversationEvent::MessageDispatched { message_id, .. }
            | ConversationEvent::MessageDispatchFailed { message_id, .. } => {
                self.pending.remove(message_id);
            }
            _ => {}
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, tail: LogTail, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let from = self.restore().await;
        let Some(position) =
            crate::reactor::fold_log(store.as_ref(), from, |e| self.apply(e), &mut shutdown, NAME)
                .await
        else {
            return;
        };
        if !self.pending.is_empty() {
            tracing::info!(
                pending = self.pending.len(),
                "dispatching messages queued before the start"
            );
        }
        self.seen = position;
        self.keep(false).await;
        let mut follower = tail.subscribe(position);
        loop {
            // Only the first message of each queue can be due: the ones behind it wait for it.
            let next_due = self.heads().map(|(_, p)| p.due).min();
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
                        self.keep(false).await;
                        metrics::gauge!("chatledger_reactor_queue", "reactor" => NAME)
                            .set(self.pending.len() as f64);
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "the dispatcher's read failed; it retries"),
                    None => return,
                },
                () = wake => self.send_due().await,
                _ = shutdown.changed() => {
                    self.keep(true).await;
                    return;
                }
            }
        }
    }

    /// The first message of each conversation's queue to one recipient, in the order they
    /// were queued: the only ones that may go.
    fn heads(&self) -> impl Iterator<Item = (&Uuid, &Pending)> {
        let mut queued: Vec<(&Uuid, &Pending)> = self.pending.iter().collect();
        queued.sort_unstable_by_key(|(_, p)| p.seq);
        let mut seen = std::collections::HashSet::new();
        queued
            .into_iter()
            .filter(move |(_, p)| seen.insert((p.stream.as_str(), p.message.to.as_str())))
    }

    /// The messages that may go now: the first of each queue, when it is due.
    fn due(&self) -> Vec<Uuid> {
        let now = Instant::now();
        self.heads()
            .filter(|(_, p)| p.due <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Sends every message that is due, within the limits.
    async fn send_due(&mut self) {
        for message_id in self.due() {
            let Some(pending) = self.pending.get(&message_id).cloned() else {
                continue;
            };
            // Held until the outcome is written: the partition is not handed on meanwhile.
            let Some(_held) = self.ownership.hold(&pending.stream, self.seen).await else {
                // Not ours (now): look again when ownership may have changed.
                self.postpone(&message_id, Instant::now() + ROUND);
                continue;
            };
            if let Some(outcome) = pending.unwritten.clone() {
                self.record(&pending, message_id, outcome, pending.attempts)
                    .await;
                continue;
            }
            if pending.unknown {
                tracing::warn!(message.id = %message_id, attempt = pending.attempts,
                    grace_s = self.limits.unknown_grace.as_secs(),
                    "no outcome and no receipt for an earlier try; sending again");
            }
            // Pace per channel and per recipient: if either is too soon, come back later.
            let channel_gap =
                Duration::from_secs_f64(1.0 / f64::from(self.limits.rate_per_second.max(1)));
            let ready_at = [
                self.last_send
                    .get(&pending.channel)
                    .map(|t| *t + channel_gap),
                self.last_to
                    .get(&pending.message.to)
                    .map(|t| *t + self.limits.recipient_interval),
            ]
            .into_iter()
            .flatten()
            .max();
            if let Some(ready_at) = ready_at.filter(|t| *t > Instant::now()) {
                self.postpone(&message_id, ready_at);
                continue;
            }
            // A circuit that is open: the message waits, its tries untouched.
            let circuit = format!("channel:{}", pending.channel);
            let probing = match self.circuits.permit(&circuit) {
                Ok(permit) => permit == Permit::Probe,
                Err(until) => {
                    self.postpone(&message_id, Instant::from_std(until));
                    continue;
                }
            };
            let attempt = pending.attempts + 1;
            if !self.record_attempt(&pending, message_id, attempt).await {
                if probing {
                    self.circuits.abandon(&circuit);
                }
                continue;
            }
            let sent_at = Instant::now();
            self.last_send.insert(pending.channel.clone(), sent_at);
            self.last_to.insert(pending.message.to.clone(), sent_at);
            let sent = self.sender.send(&pending.channel, &pending.message).await;
            match &sent {
                Err(e) if e.says_the_endpoint_is_down() => self.circuits.failed(&circuit),
                // A failure of this message alone (a refusal, a recipient's limit) says the
                // endpoint answers.
                _ => self.circuits.succeeded(&circuit),
            }
            // A probe's failure is the provider's, not the message's: it is tried again
            // whatever its count, once the circuit lets it.
            let tries_left = attempt < self.limits.max_attempts || probing;
            let (outcome_name, code) = match &sent {
                Ok(_) => ("sent", String::new()),
                Err(e) if e.transient && tries_left => (
                    "retrying",
                    e.code.map(|c| c.to_string()).unwrap_or_default(),
                ),
                Err(e) => ("failed", e.code.map(|c| c.to_string()).unwrap_or_default()),
            };
            metrics::counter!("chatledger_dispatch_total",
                "channel" => pending.channel.clone(), "outcome" => outcome_name, "code" => code)
            .increment(1);
            let outcome = match sent {
                Ok(sent) => Some(DispatchOutcome::Sent {
                    provider_message_id: sent.provider_message_id,
                }),
                Err(e) if e.transient && tries_left => {
                    // A provider's `Retry-After` is honoured up to the longest backoff of our own.
                    let delay = e
                        .retry_after
                        .map_or_else(|| self.backoff(attempt), |d| d.min(self.limits.max_backoff));
                    tracing::warn!(message.id = %message_id, attempts = attempt, error = %e, retry_in_ms = delay.as_millis() as u64,
                        "sending failed; retrying");
                    self.postpone(&message_id, Instant::now() + delay);
                    let retrying = DispatchOutcome::Retrying {
                        code: e.code,
                        error: e.message,
                        retry_at: Utc::now()
                            + chrono::Duration::from_std(delay).unwrap_or_default(),
                    };
                    self.record_retrying(&pending, message_id, retrying, attempt)
                        .await;
                    None
                }
                Err(e) => Some(DispatchOutcome::Failed {
                    code: e.code,
                    error: e.message,
                    permanent: !e.transient,
                }),
            };
            if let Some(outcome) = outcome {
                self.record(&pending, message_id, outcome, attempt).await;
            }
        }
    }

    fn postpone(&mut self, message_id: &Uuid, until: Instant) {
        if let Some(p) = self.pending.get_mut(message_id) {
            p.due = until;
        }
    }

    /// Exponential backoff with jitter: up to half of the delay again, at random.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self
            .limits
            .first_backoff
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(self.limits.max_backoff);
        let jitter = (Uuid::new_v4().as_u128() % 1000) as u32;
        base + base.mul_f64(f64::from(jitter) / 2000.0)
    }
}
