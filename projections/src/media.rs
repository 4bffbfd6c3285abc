//! The media reactor: fetches each inbound attachment as soon as its message is recorded
//! (Meta's links expire within minutes) into the object store, and records the outcome
//! (`MediaStored`, or `MediaFetchFailed` with the provider's reason and whether it is tried
//! again).
//!
//! - **Nothing is lost silently**: what is pending is folded from the log at start (an
//!   attachment with no `MediaStored` and no failure given up), so a restart, or a kill in
//!   the middle of fetches, resumes them. Every failed try is recorded with its reason; the
//!   last one that gives up says so, and the dashboard shows it.
//! - **Retries**: retryable failures (the provider down, an expired link, a damaged file) are
//!   tried again with exponential backoff and jitter, each try asking the provider for a
//!   fresh link, up to `max_attempts`; then the attachment is given up.
//! - **Only its own partitions**: with several processes on one database, an attachment is
//!   fetched only by the owner of its stream's partition, held until the outcome is written;
//!   the outcome's id derives from the message and the attachment, so it is recorded once
//!   however many times it is decided.
//! - **Several at a time**: up to `concurrency` fetches run at once.
//! - **Starts from where it was**: like the dispatcher, it keeps the channels and the streams
//!   with pending attachments as a snapshot ([`crate::snapshots`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chatledger_core::conversation::{ConversationCommand, ConversationEvent, DecodedEvent};
use chatledger_core::media::{MediaError, MediaFetcher, MediaSource, StoredMedia};
use chatledger_core::{EventStore, Metadata, Position};
use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use uuid::Uuid;

use crate::ownership::{Held, Ownership, ROUND};
use crate::snapshots::{Remembered, Snapshots};
use crate::tail::LogTail;
use chatledger_application::conversations::{CommandError, Conversations};

/// How the media reactor tries.
#[derive(Debug, Clone)]
pub struct MediaLimits {
    /// Tries before an attachment is given up.
    pub max_attempts: u32,
    /// The first retry's delay; each next one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Fetches at once.
    pub concurrency: usize,
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_attempts: 8,
            first_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            concurrency: 8,
        }
    }
}

/// An attachment by its stream, message provider id and index.
type Key = (String, String, u32);

#[derive(Debug, Clone)]
struct Pending {
    channel: String,
    source: MediaSource,
    filename: Option<String>,
    /// Failed tries recorded.
    attempts: u32,
    due: Instant,
    in_flight: bool,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Kept {
    channels: HashMap<String, String>,
    pending_streams: BTreeSet<String>,
}

const SNAPSHOT_FORMAT: u32 = 1;
const NAME: &str = "media";
const ACTOR: &str = "reactor:media";

/// What one fetch came to, back from its task.
struct Fetched {
    key: Key,
    attempt: u32,
    outcome: Result<StoredMedia, MediaError>,
    _held: Held,
}

/// The reactor.
pub struct MediaReactor {
    store: Arc<dyn EventStore>,
    conversations: Arc<Conversations>,
    fetcher: Arc<dyn MediaFetcher>,
    limits: MediaLimits,
    channels: HashMap<String, String>,
    pending: BTreeMap<Key, Pending>,
    ownership: Ownership,
    seen: Position,
    memory: Option<Remembered>,
}

impl MediaReactor {
    pub fn new(
        store: Arc<dyn EventStore>,
        conversations: Arc<Conversations>,
        fetcher: Arc<dyn MediaFetcher>,
        limits: MediaLimits,
    ) -> Self {
        MediaReactor {
            store,
            conversations,
            fetcher,
            limits,
            channels: HashMap::new(),
            pending: BTreeMap::new(),
            ownership: Ownership::local(),
            seen: 0,
            memory: None,
        }
    }

    /// Fetches only what this process owns (default: everything).
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Starts from the last snapshot in `snapshots` and keeps new ones there.
    pub fn remembered_in(mut self, snapshots: Snapshots) -> Self {
        self.memory = Some(Remembered::new(snapshots, NAME, SNAPSHOT_FORMAT));
        self
    }

    fn apply(&mut self, event: &DecodedEvent) {
        let Ok(Some(conversation)) = event.conversation() else {
            return;
        };
        let stream = &event.stream;
        match conversation {
            ConversationEvent::ChatOpened { conversation, .. } => {
                self.channels
                    .insert(stream.clone(), conversation.channel.clone());
            }
            ConversationEvent::MessageReceived { message, .. } => {
                let channel = self.channels.get(stream).cloned().unwrap_or_default();
                let filename = message.media.as_ref().and_then(|m| m.filename.clone());
                for source in message.media_sources() {
                    let key = (
                        stream.clone(),
                        message.provider_message_id.clone(),
                        source.index,
                    );
                    self.pending.entry(key).or_insert(Pending {
                        channel: channel.clone(),
                        filename: filename.clone().filter(|_| source.index == 0),
                        source,
                        attempts: 0,
                        due: Instant::now(),
                        in_flight: false,
                    });
                }
            }
            ConversationEvent::MediaStored { message, index, .. } => {
                self.pending
                    .remove(&(stream.clone(), message.clone(), *index));
            }
            ConversationEvent::MediaFetchFailed {
                message,
                index,
                attempt,
                retryable,
                retry_at,
                ..
            } => {
                let key = (stream.clone(), message.clone(), *index);
                if !retryable {
                    self.pending.remove(&key);
                } else if let Some(p) = self.pending.get_mut(&key) {
                    if *attempt >= p.attempts {
                        p.attempts = *attempt;
                        let wait = retry_at
                            .and_then(|at| (at - Utc::now()).to_std().ok())
                            .unwrap_or_default();
                        p.due = Instant::now() + wait;
                    }
                }
            }
            // A forgotten customer's attachments are not fetched any more.
            ConversationEvent::PersonalDataErased { .. } => {
                self.pending.retain(|(s, _, _), _| s != stream);
            }
            _ => {}
        }
    }

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
        position
    }

    async fn keep(&mut self, now: bool) {
        let Some(memory) = self.memory.as_mut() else {
            return;
        };
        memory
            .keep(self.seen, now, || Kept {
                channels: self.channels.clone(),
                pending_streams: self.pending.keys().map(|(s, _, _)| s.clone()).collect(),
            })
            .await;
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
                "fetching attachments received before the start"
            );
        }
        self.seen = position;
        self.keep(false).await;
        let mut follower = tail.subscribe(position);
        let mut fetches: JoinSet<Fetched> = JoinSet::new();
        loop {
            let room = fetches.len() < self.limits.concurrency;
            let next_due = self
                .pending
                .values()
                .filter(|p| !p.in_flight)
                .map(|p| p.due)
                .min()
                .filter(|_| room);
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
                    Some(Err(e)) => tracing::warn!(error = %e, "the media reactor's read failed; it retries"),
                    None => return,
                },
                () = wake => self.start_due(&mut fetches).await,
                Some(done) = fetches.join_next(), if !fetches.is_empty() => match done {
                    Ok(fetched) => self.record(fetched).await,
                    Err(e) => tracing::error!(error = %e, "a media fetch task was cancelled"),
                },
                _ = shutdown.changed() => {
                    self.keep(true).await;
                    return;
                }
            }
        }
    }

    /// Starts the fetches that are due, as many as there is room for.
    async fn start_due(&mut self, fetches: &mut JoinSet<Fetched>) {
        let now = Instant::now();
        let due: Vec<Key> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.in_flight && p.due <= now)
            .map(|(k, _)| k.clone())
            .take(self.limits.concurrency.saturating_sub(fetches.len()))
            .collect();
        for key in due {
            let Some(held) = self.ownership.hold(&key.0, self.seen).await else {
                if let Some(p) = self.pending.get_mut(&key) {
                    p.due = Instant::now() + ROUND;
                }
                continue;
            };
            let Some(p) = self.pending.get_mut(&key) else {
                continue;
            };
            p.in_flight = true;
            let attempt = p.attempts + 1;
            let (fetcher, channel, source) =
                (self.fetcher.clone(), p.channel.clone(), p.source.clone());
            let stream = key.0.clone();
            fetches.spawn(async move {
                // A fetch that panics is a failed try like any other, not a stuck entry.
                let outcome =
                    std::panic::AssertUnwindSafe(fetcher.fetch(&channel, &stream, &source))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|panic| {
                            Err(MediaError::transient(format!(
                                "the fetch failed unexpectedly: {}",
                                crate::projector::panic_text(panic.as_ref())
                            )))
                        });
                Fetched {
                    key,
                    attempt,
                    outcome,
                    _held: held,
                }
            });
        }
    }

    /// Records what a fetch came to.
    async fn record(&mut self, fetched: Fetched) {
        let Fetched {
            key,
            attempt,
            outcome,
            _held,
        } = fetched;
        let delay = self.backoff(attempt);
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.in_flight = false;
        let mut outcome = outcome.map(|mut stored| {
            stored.filename = p.filename.clone();
            stored
        });
        let mut retry_at = None;
        match &mut outcome {
            Ok(stored) => {
                tracing::info!(stream = %key.0, index = key.2, size = stored.size, "attachment kept");
            }
            Err(e) if e.retryable && attempt < self.limits.max_attempts => {
                tracing::warn!(stream = %key.0, index = key.2, attempt, error = %e, retry_in_ms = delay.as_millis() as u64,
                    "fetching an attachment failed; trying again");
                p.due = Instant::now() + delay;
                retry_at = Some(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
            }
            Err(e) => {
                if e.retryable {
                    e.retryable = false;
                    e.reason = format!("{} (given up after {attempt} tries)", e.reason);
                }
                tracing::error!(stream = %key.0, index = key.2, attempt, error = %e, "an attachment could not be fetched");
            }
        }
        let (stream, message, index) = key.clone();
        let command = ConversationCommand::RecordMedia {
            message,
            index,
            attempt,
            outcome,
            retry_at,
            now: Utc::now(),
        };
        match self
            .conversations
            .handle(&stream, vec![command], &Metadata::by(ACTOR))
            .await
        {
            Ok(_) => {
                if let Some(p) = self.pending.get_mut(&key) {
                    p.attempts = p.attempts.max(attempt);
                }
            }
            Err(CommandError::Rejected(rejection)) => {
                tracing::error!(stream = %stream, reason = %rejection, "an attachment's outcome cannot be recorded; dropping it");
                self.pending.remove(&key);
            }
            Err(e) => {
                // Not written: fetched again shortly (the object is content-addressed, so a
                // second fetch writes the same object; the outcome is recorded once).
                tracing::warn!(stream = %stream, error = %e, "recording an attachment's outcome failed; trying again shortly");
                if let Some(p) = self.pending.get_mut(&key) {
                    p.due = Instant::now() + Duration::from_secs(1);
                }
            }
        }
        // The event comes back through the log and settles the entry; until then it is not
        // due again unless a retry was asked for.
        if let Some(p) = self.pending.get_mut(&key) {
            if retry_at.is_none() && p.due <= Instant::now() {
                p.due = Instant::now() + ROUND;
            }
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let base = self
            .limits
            .first_backoff
            .saturating_mul(1 << (attempts.saturating_sub(1)).min(16))
            .min(self.limits.max_backoff);
        let jitter = (Uuid::new_v4().as_u128() % 1000) as u32;
        base + base.mul_f64(f64::from(jitter) / 2000.0)
    }
}
