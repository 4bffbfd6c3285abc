//! The SLA timer reactor: wakes at the exact moment an unanswered customer message crosses
//! a threshold and records `SlaAlertRaised` or `SlaEscalated`.
//!
//! Its schedule is folded from the log with core's one rule for the clock (`SlaClock::evolve`;
//! the clock is in the events: `SlaClockStarted`, `SlaClockStopped`), keeping only the clock of
//! each stream, and a wait is judged by the policy in force when its clock started (the last
//! `SlaPolicyConfigured` before it in the log, as the SLA read model reads it); every alert
//! names that version. Raising goes through the conversation decider with the expected
//! version, so an answer that lands in the same instant wins cleanly, and the event id derives
//! from (chat, customer message, level), so an alert is recorded once even with two processes
//! or after a restart. After a restart, overdue alerts fire at once, recording both the time
//! they were due and the time they fired. With several processes, a clock is acted on only by the process that owns its
//! stream's partition ([`crate::ownership`]). It starts from its last snapshot
//! ([`crate::snapshots`]: each stream's running clock, stakeholder, customer and policy) and
//! folds only the log after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chatledger_core::conversation::{
    ConversationCommand, ConversationEvent, DecodedEvent, Notification, SlaBreach, SlaClock,
    Template,
};
use chatledger_core::sla::{SlaLevel, SlaPolicy, SLA_POLICY_EVENT};
use chatledger_core::{EventStore, Metadata, Position};
use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use uuid::Uuid;

use crate::clock::Clock;
use crate::ownership::{Ownership, ROUND};
use crate::snapshots::{Remembered, Snapshots};
use crate::tail::LogTail;
use chatledger_application::conversations::{CommandError, Conversations, Handled};

mod what_if;
pub use what_if::{WhatIf, WhatIfCounts, WhatIfDifference, WhatIfFold};

/// Who is told, with which template.
#[derive(Debug, Clone)]
pub struct SlaNotifications {
    /// The internal alert group (`SLA_ALERT_GROUP_NUMBER`), E.164.
    pub alert_to: Option<String>,
    /// The shift lead (`SLA_SHIFT_LEAD_NUMBER`), E.164.
    pub escalate_to: Option<String>,
    pub alert_template: String,
    pub escalation_template: String,
    pub language: String,
}

#[derive(Default)]
struct Watched {
    /// The running clock, folded by core's rule ([`SlaClock::evolve`]).
    clock: Option<SlaClock>,
    stakeholder: String,
    customer: String,
    /// The policy in force when the running clock started (its version and itself): a wait
    /// is judged by it to the end, whatever is configured meanwhile (ADR 6 §5), as the SLA
    /// read model's due times are.
    policy: Option<(u64, SlaPolicy)>,
}

/// What the timers keep between runs: of each stream, only what they read.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Kept {
    /// The policy in force, by version, and every policy a running clock is judged by.
    policy: u64,
    policies: BTreeMap<u64, SlaPolicy>,
    streams: HashMap<String, KeptStream>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct KeptStream {
    customer: String,
    stakeholder: String,
    /// The version of the policy its running clock started under.
    policy: Option<u64>,
    clock: Option<SlaClock>,
}

/// The shape of [`Kept`]; a release that changes it (or what the fold means) counts it up.
const SNAPSHOT_FORMAT: u32 = 1;
const NAME: &str = "SLA timers";

/// The reactor.
pub struct SlaTimers {
    store: Arc<dyn EventStore>,
    conversations: Arc<Conversations>,
    clock: Arc<dyn Clock>,
    notifications: SlaNotifications,
    policy: (u64, SlaPolicy),
    streams: HashMap<String, Watched>,
    /// The running clocks by their next threshold, earliest first.
    queue: BTreeSet<(DateTime<Utc>, String)>,
    /// Each running clock's place in `queue`.
    scheduled: HashMap<String, DateTime<Utc>>,
    ownership: Ownership,
    /// How far this reactor's view of the log has got.
    seen: Position,
    memory: Option<Remembered>,
}

/// Crossings recorded at once; more wait for the next round.
const MAX_CONCURRENT_RAISES: usize = 64;

/// One threshold crossing to act on.
struct Due {
    stream: String,
    level: SlaLevel,
    at: DateTime<Utc>,
}

impl SlaTimers {
    pub fn new(
        store: Arc<dyn EventStore>,
        conversations: Arc<Conversations>,
        clock: Arc<dyn Clock>,
        notifications: SlaNotifications,
    ) -> Self {
        SlaTimers {
            store,
            conversations,
            clock,
            notifications,
            policy: (0, SlaPolicy::default()),
            streams: HashMap::new(),
            queue: BTreeSet::new(),
            scheduled: HashMap::new(),
            ownership: Ownership::local(),
            seen: 0,
            memory: None,
        }
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
        let policy_of = |version: u64| {
            kept.policies
                .get(&version)
                .map(|policy| (version, policy.clone()))
        };
        self.policy = policy_of(kept.policy).unwrap_or((0, SlaPolicy::default()));
        for (stream, watched) in kept.streams {
            self.streams.insert(
                stream.clone(),
                Watched {
                    clock: watched.clock,
                    stakeholder: watched.stakeholder,
                    customer: watched.customer,
                    policy: watched.policy.and_then(policy_of),
                },
            );
            self.reschedule(&stream);
        }
        tracing::info!(
            position,
            running = self.queue.len(),
            "the SLA timers start from their snapshot"
        );
        position
    }

    /// Keeps the view as it stands, if a snapshot is due (or `now`, as it stops).
    async fn keep(&mut self, now: bool) {
        let Some(memory) = self.memory.as_mut() else {
            return;
        };
        memory
            .keep(self.seen, now, || kept_view(&self.policy, &self.streams))
            .await;
    }

    /// Acts only on what this process owns (default: everything).
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    fn apply(&mut self, event: &DecodedEvent) {
        if event.event_type == SLA_POLICY_EVENT {
            if let Ok(policy) = serde_json::from_value::<SlaPolicy>(event.data.clone()) {
                // Clocks that start from now on; running ones keep the policy they started
                // under.
                self.policy = (event.version, policy);
            }
            return;
        }
        if let Ok(Some(decoded)) = event.conversation() {
            self.apply_conversation(&event.stream, decoded);
        }
    }

    fn apply_conversation(&mut self, stream: &str, event: &ConversationEvent) {
        let watched = self.streams.entry(stream.to_owned()).or_default();
        match event {
            ConversationEvent::ChatOpened { conversation, .. } => {
                watched.customer = conversation.customer.to_string()
            }
            ConversationEvent::SlaClockStarted { stakeholder, .. } => {
                watched.stakeholder.clone_from(stakeholder);
                watched.policy = Some(self.policy.clone());
            }
            _ => {}
        }
        SlaClock::evolve(&mut watched.clock, event);
        self.reschedule(stream);
    }

    /// The policy a stream's running clock is judged by: the one in force when it started.
    fn policy_of<'a>(&'a self, watched: &'a Watched) -> &'a (u64, SlaPolicy) {
        watched.policy.as_ref().unwrap_or(&self.policy)
    }

    /// The next threshold of `stream`'s clock, if it runs.
    fn next_due(&self, stream: &str) -> Option<Due> {
        let watched = self.streams.get(stream)?;
        let clock = watched.clock.as_ref()?;
        let thresholds = self
            .policy_of(watched)
            .1
            .for_stakeholder(&watched.stakeholder);
        let level = if !clock.alerted {
            SlaLevel::Alert
        } else if !clock.escalated {
            SlaLevel::Escalation
        } else {
            return None;
        };
        Some(Due {
            stream: stream.to_owned(),
            level,
            at: thresholds.due(clock.started_at, level),
        })
    }

    /// Puts `stream` in the schedule at its next threshold, or takes it out.
    fn reschedule(&mut self, stream: &str) {
        let next = self.next_due(stream).map(|d| d.at);
        if self.scheduled.get(stream).copied() == next {
            return;
        }
        if let Some(at) = self.scheduled.remove(stream) {
            self.queue.remove(&(at, stream.to_owned()));
        }
        if let Some(at) = next {
            self.scheduled.insert(stream.to_owned(), at);
            self.queue.insert((at, stream.to_owned()));
        }
    }

    /// When the earliest threshold this process owns falls due.
    fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.queue
            .iter()
            .find(|(_, stream)| self.ownership.owns(stream))
            .map(|(at, _)| *at)
    }

    /// The thresholds this process owns that are due by `now`, earliest first.
    fn due_by(&self, now: DateTime<Utc>) -> Vec<Due> {
        self.queue
            .iter()
            .take_while(|(at, _)| *at <= now)
            .filter(|(_, stream)| self.ownership.owns(stream))
            .filter_map(|(_, stream)| self.next_due(stream))
            .collect()
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
        self.seen = position;
        self.keep(false).await;
        // Shared ownership changes under the reactor: look again every round.
        let shared = self.ownership.is_shared();
        let mut follower = tail.subscribe(position);
        loop {
            let stuck = self.fire_due().await;
            // What could not be raised now (not ready to act on, or the log refused) is tried
            // again after a round, not in a tight loop.
            let next = if stuck { None } else { self.next_wake() };
            let clock = self.clock.clone();
            let wake = async move {
                match next {
                    Some(at) => clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = follower.next() => match event {
                    Some(Ok(event)) => {
                        self.seen = self.seen.max(event.position);
                        crate::reactor::observe(NAME, &event, |e| self.apply(e));
                        // Take in everything already read before looking at the clock again.
                        while let Some(Some(Ok(event))) = follower.next().now_or_never() {
                            self.seen = self.seen.max(event.position);
                            crate::reactor::observe(NAME, &event, |e| self.apply(e));
                        }
                        self.keep(false).await;
                    }
                    Some(Err(e)) => tracing::warn!(error = %e, "the SLA timers' read failed; they retry"),
                    None => return,
                },
                () = wake => {}
                () = tokio::time::sleep(ROUND), if shared || stuck => {}
                _ = shutdown.changed() => {
                    self.keep(true).await;
                    return;
                }
            }
        }
    }

    /// Raises everything due by now (an alert and, after a long outage, its escalation too).
    /// Crossings of different conversations are recorded concurrently, so one slow append
    /// does not make every other alert late. True when something due could not be raised.
    async fn fire_due(&mut self) -> bool {
        loop {
            let now = self.clock.now();
            let due = self.due_by(now);
            if due.is_empty() {
                return false;
            }
            let mut progressed = false;
            for chunk in due.chunks(MAX_CONCURRENT_RAISES) {
                let raised =
                    futures_util::future::join_all(chunk.iter().map(|due| self.raise(due, now)))
                        .await;
                for (due, outcome) in chunk.iter().zip(raised) {
                    progressed |= self.settle(due, outcome).await;
                }
            }
            if !progressed {
                return true;
            }
        }
    }

    /// Records one crossing. `None` when there is nothing to raise any more.
    async fn raise(&self, due: &Due, now: DateTime<Utc>) -> Option<Result<Handled, CommandError>> {
        // Held until the alert is recorded: the partition is not handed on meanwhile.
        let _held = self.ownership.hold(&due.stream, self.seen).await?;
        let watched = self.streams.get(&due.stream)?;
        let clock = watched.clock.clone()?;
        let (policy_version, policy) = self.policy_of(watched);
        let thresholds = policy.for_stakeholder(&watched.stakeholder);
        let threshold_seconds = match due.level {
            SlaLevel::Alert => thresholds.alert_after_seconds,
            SlaLevel::Escalation => thresholds.escalate_after_seconds,
        };
        let (to, template) = match due.level {
            SlaLevel::Alert => (
                &self.notifications.alert_to,
                &self.notifications.alert_template,
            ),
            SlaLevel::Escalation => (
                &self.notifications.escalate_to,
                &self.notifications.escalation_template,
            ),
        };
        let notification = to.as_ref().map(|to| Notification {
            message_id: Uuid::new_v5(
                &chatledger_core::conversation::EVENT_ID_NAMESPACE,
                format!(
                    "SlaNotification/{}/{}/{:?}",
                    due.stream, clock.customer_message, due.level
                )
                .as_bytes(),
            ),
            to: to.clone(),
            template: Template {
                name: template.clone(),
                language: self.notifications.language.clone(),
                params: vec![
                    watched.customer.clone(),
                    watched.stakeholder.clone(),
                    ((now - clock.started_at).num_seconds() / 60).to_string(),
                ],
            },
        });
        let breach = SlaBreach {
            chat_id: clock.chat_id,
            customer_message: clock.customer_message.clone(),
            clock_started_at: clock.started_at,
            due_at: due.at,
            fired_at: now,
            policy_version: *policy_version,
            threshold_seconds,
            notification,
        };
        let command = ConversationCommand::RaiseSla {
            level: due.level,
            breach,
        };
        Some(
            self.conversations
                .handle(&due.stream, vec![command], &Metadata::by("reactor:sla"))
                .await,
        )
    }

    /// Brings the view up to date after `raise`; true when it moved on (recorded, or found
    /// answered).
    async fn settle(&mut self, due: &Due, outcome: Option<Result<Handled, CommandError>>) -> bool {
        let now = self.clock.now();
        match outcome {
            None => false,
            Some(Ok(handled)) => {
                let lag_ms = (now - due.at).num_milliseconds();
                for event in &handled.recorded {
                    tracing::info!(stream = %due.stream, level = ?due.level, lag_ms, "SLA threshold crossed");
                    let level = match due.level {
                        SlaLevel::Alert => "alert",
                        SlaLevel::Escalation => "escalation",
                    };
                    metrics::counter!("chatledger_sla_raised_total", "level" => level).increment(1);
                    metrics::histogram!("chatledger_sla_raise_delay_seconds", "level" => level)
                        .record(lag_ms.max(0) as f64 / 1000.0);
                    self.apply_conversation(&due.stream, event);
                }
                if handled.recorded.is_empty() {
                    // Answered (or raised elsewhere) meanwhile: bring the view up to date.
                    self.refresh(&due.stream).await;
                }
                true
            }
            Some(Err(e)) => {
                tracing::warn!(stream = %due.stream, error = %e, "raising an SLA alert failed; it will be retried");
                false
            }
        }
    }

    /// Re-folds one stream from the log.
    async fn refresh(&mut self, stream: &str) {
        let Ok(events) = self.store.read_stream(stream, 0, 1_000_000).await else {
            return;
        };
        self.streams.remove(stream);
        self.reschedule(stream);
        for event in events {
            self.apply(&DecodedEvent::new(event));
        }
    }
}

/// What the timers keep of their view: each stream's clock, stakeholder, customer and the
/// version of its policy, and every policy a clock is judged by once.
fn kept_view(policy: &(u64, SlaPolicy), streams: &HashMap<String, Watched>) -> Kept {
    let mut policies = BTreeMap::from([policy.clone()]);
    let streams = streams
        .iter()
        .map(|(stream, watched)| {
            if let Some((version, policy)) = &watched.policy {
                policies.insert(*version, policy.clone());
            }
            let kept = KeptStream {
                customer: watched.customer.clone(),
                stakeholder: watched.stakeholder.clone(),
                policy: watched.policy.as_ref().map(|(version, _)| *version),
                clock: watched.clock.clone(),
            };
            (stream.clone(), kept)
        })
        .collect();
    Kept {
        policy: policy.0,
        policies,
        streams,
    }
}
