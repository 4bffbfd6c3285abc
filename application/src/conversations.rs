//! Running conversation commands against the log.
//!
//! Deciding needs a conversation's current state. Folding a long conversation for every
//! message would be slow, so the state is cached per stream with the version it reflects.
//! Commands for a stream this process has read are decided on the cache without reading the
//! log first: the append expects the cached version, so an event another process appended
//! meanwhile makes it fail, and only then are the events appended since read and the
//! commands decided again. A decision that appends nothing (a rejection, or nothing to do)
//! is made again on what the log holds before it is answered. The cache changes only once
//! what was decided is in the log.
//!
//! Within one process, commands for one stream take turns (an async lock per stream), so
//! concurrent webhooks for one customer do not fight over the expected version. Across
//! processes the expected version still decides: a conflict re-reads the new events and
//! decides again, a bounded number of times.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chatledger_core::conversation::{
    Conversation, ConversationCommand, ConversationEvent, ConversationRejection,
};
use chatledger_core::{
    AppendResult, EventStore, ExpectedVersion, Metadata, RecordedEvent, StoreError,
};

/// Re-decisions after a conflict with another process before giving up.
const MAX_CONFLICTS: u32 = 32;
/// The longest pause between re-decisions, in milliseconds.
const MAX_BACKOFF_MS: u128 = 50;
/// Cached streams kept before idle ones are dropped.
const CACHE_CAPACITY: usize = 50_000;
/// Events read at once while catching a stream up.
const READ_BATCH: usize = 1_000;

#[derive(Debug, Default)]
struct Cached {
    /// Whether `state` is known to be the whole stream up to `version`; when not (never read,
    /// or another process appended meanwhile), the events after `version` are read before
    /// deciding.
    up_to_date: bool,
    /// The stream's last version folded into `state` (`None`: no events yet).
    version: Option<u64>,
    state: Conversation,
}

/// Why a command could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The conversation refused it.
    #[error(transparent)]
    Rejected(#[from] ConversationRejection),
    /// The log could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What running a batch of commands did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Handled {
    /// Events written.
    pub recorded: Vec<ConversationEvent>,
    /// Events decided again but already in the log (a redelivery).
    pub duplicates: usize,
}

/// The conversation command handler, shared by everything that changes conversations.
pub struct Conversations {
    store: Arc<dyn EventStore>,
    streams: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Cached>>>>,
}

impl Conversations {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Conversations {
            store,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Decides `commands` in order on `stream` and appends what they decide in one append.
    /// `metadata` goes on every event. A command that decides nothing (already recorded) is
    /// not an error.
    pub async fn handle(
        &self,
        stream: &str,
        commands: Vec<ConversationCommand>,
        metadata: &Metadata,
    ) -> Result<Handled, CommandError> {
        let entry = self.entry(stream);
        let mut cached = entry.lock().await;
        for attempt in 0..MAX_CONFLICTS {
            if attempt > 0 {
                // Another process is appending to this stream. Deciding again at once can lose
                // to the same burst every time; a random, growing pause lets it drain.
                tokio::time::sleep(conflict_backoff(attempt)).await;
            }
            let Decided { events, working } = self
                .decide(stream, &mut cached, &commands, attempt > 0)
                .await?;
            if events.is_empty() {
                return Ok(Handled::default());
            }
            let envelopes = events
                .iter()
                .map(|e| e.to_new_event(stream, metadata.clone()))
                .collect();
            match self
                .store
                .append(
                    stream,
                    ExpectedVersion::from_current(cached.version),
                    envelopes,
                )
                .await
            {
                Ok(result) => return Ok(apply(&mut cached, stream, working, events, &result)),
                Err(StoreError::WrongExpectedVersion { .. }) => {
                    tracing::debug!(
                        stream,
                        "conversation moved on in another process; deciding again"
                    );
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Backend(format!(
            "{stream} kept changing under {MAX_CONFLICTS} attempts to decide"
        ))
        .into())
    }

    /// Decides `commands` on the cached conversation. The log is read first after a conflict
    /// (`after_conflict`) or when the cache may be behind it; otherwise only events to append are
    /// trusted without reading, since the append expects the cached version. A rejection, or
    /// a decision that nothing is to be done, may only mean that another process recorded what
    /// the command needs (a message queued there, a newer customer message), so it is decided
    /// again on what the log holds.
    async fn decide(
        &self,
        stream: &str,
        cached: &mut Cached,
        commands: &[ConversationCommand],
        after_conflict: bool,
    ) -> Result<Decided, CommandError> {
        let read = after_conflict || !cached.up_to_date;
        if read {
            self.catch_up(stream, cached).await?;
        }
        match decide_all(&cached.state, commands) {
            Ok(decided) if read || !decided.events.is_empty() => Ok(decided),
            _ => {
                self.catch_up(stream, cached).await?;
                Ok(decide_all(&cached.state, commands)?)
            }
        }
    }

    /// Folds the events appended since the cached version.
    async fn catch_up(&self, stream: &str, cached: &mut Cached) -> Result<(), CommandError> {
        cached.up_to_date = true;
        loop {
            let from = cached.version.map_or(0, |v| v + 1);
            let events = self.store.read_stream(stream, from, READ_BATCH).await?;
            let done = events.len() < READ_BATCH;
            for event in &events {
                fold_recorded(&mut cached.state, event);
                cached.version = Some(event.version);
            }
            if done {
                return Ok(());
            }
        }
    }

    fn entry(&self, stream: &str) -> Arc<tokio::sync::Mutex<Cached>> {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.len() >= CACHE_CAPACITY && !streams.contains_key(stream) {
            // Forget streams nobody is deciding on right now; they are re-read when needed.
            streams.retain(|_, entry| Arc::strong_count(entry) > 1);
        }
        streams.entry(stream.to_owned()).or_default().clone()
    }
}

fn conflict_backoff(attempt: u32) -> std::time::Duration {
    let ceiling = (1u128 << attempt.min(6)).min(MAX_BACKOFF_MS) + 1;
    let jitter = uuid::Uuid::new_v4().as_u128() % ceiling;
    std::time::Duration::from_millis(jitter as u64)
}

/// What commands decided.
struct Decided {
    events: Vec<ConversationEvent>,
    /// The state they were decided on, when it is a copy with them folded in.
    working: Option<Conversation>,
}

/// Decides `commands` in order against `state`. Each command must see what the ones before it
/// decided, so more than one are decided on a copy of the state, returned with the events; a
/// single command is decided on `state` itself (copying a long conversation's state for
/// every message would cost more than deciding it).
fn decide_all(
    state: &Conversation,
    commands: &[ConversationCommand],
) -> Result<Decided, ConversationRejection> {
    if let [command] = commands {
        return Ok(Decided {
            events: state.decide(command.clone())?,
            working: None,
        });
    }
    let mut working = state.clone();
    let mut events = Vec::new();
    for command in commands.iter().cloned() {
        for event in working.decide(command)? {
            working.evolve(&event);
            events.push(event);
        }
    }
    Ok(Decided {
        events,
        working: Some(working),
    })
}

/// Folds one stored event into the conversation. One this release cannot read (written by
/// another release, or damaged) is passed over with an error in the log: refusing the
/// customer's next messages for it would lose what the provider delivers.
fn fold_recorded(state: &mut Conversation, event: &RecordedEvent) {
    match ConversationEvent::from_recorded(event) {
        Ok(Some(event)) => state.evolve(&event),
        Ok(None) => {}
        Err(e) => tracing::error!(
            position = event.position,
            stream = %event.stream,
            error = %e,
            "a conversation event cannot be read; deciding without it"
        ),
    }
}

/// Brings the cache to the state after a successful append: the copy the events were decided
/// on, or the cached state with them folded in. An event the store reported as a duplicate
/// was appended by another process since the cache was read (the store answers a redelivery
/// whatever version was expected), so the stream holds events the cache has not seen, perhaps
/// more than the duplicate: the cache is left at the version it reflects, and the stream is
/// read from there, in its order, before the next decision.
fn apply(
    cached: &mut Cached,
    stream: &str,
    working: Option<Conversation>,
    decided: Vec<ConversationEvent>,
    result: &AppendResult,
) -> Handled {
    if result.duplicates.is_empty() {
        match working {
            Some(working) => cached.state = working,
            None => decided.iter().for_each(|event| cached.state.evolve(event)),
        }
        cached.version = result.stream_version;
    } else {
        cached.up_to_date = false;
    }
    let (recorded, duplicates): (Vec<_>, Vec<_>) = decided
        .into_iter()
        .partition(|event| !result.duplicates.contains(&event.event_id(stream)));
    Handled {
        recorded,
        duplicates: duplicates.len(),
    }
}
