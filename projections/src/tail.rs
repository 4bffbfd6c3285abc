//! The tail of the log: one reader per process, shared by everything that follows the log.
//!
//! Every projector and reactor follows the log. Each following it on its own would read,
//! parse and open (personal data) every event once per follower, a dozen times over; under
//! load that, not the work itself, was most of what the process did. The tail reads each new
//! event once, keeps the latest [`WINDOW`] of them in memory as shared [`Arc`]s, and hands
//! them to every subscriber; each conversation event is decoded once too, by whichever
//! subscriber first asks ([`DecodedEvent`]). A subscriber further behind than the window (a projector catching
//! up after a restart, say) reads the log itself until it reaches the window.
//!
//! # Order
//!
//! The window holds every event after `window.after`, in the order the store's own follower
//! delivered them: the global order, nothing skipped. A subscriber at position `p >=
//! window.after` therefore finds exactly the events after `p` as the window's events with a
//! position above `p`. Positions need not be dense (PostgreSQL's are not), so nothing here
//! assumes `p + 1` follows `p`.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chatledger_core::conversation::DecodedEvent;
use chatledger_core::{EventStore, Position, StoreError};
use futures_core::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;

/// Events kept in memory for subscribers.
pub const WINDOW: usize = 8_192;
/// Events a subscriber takes (from the window or the log) at once.
const READ: usize = 1_000;
/// Pause after a failed read before a subscriber tries again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// A handle on this process's tail of the log. Cloning shares it.
#[derive(Clone)]
pub struct LogTail {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    window: RwLock<Window>,
    /// The position of the last event in the window; moves whenever the window grows.
    head: watch::Sender<Position>,
    /// Dropped with the last handle, which stops the reader.
    _alive: watch::Sender<()>,
}

struct Window {
    /// `None` until the reader has found where the log ends. Until then, subscribers read the
    /// log themselves.
    after: Option<Position>,
    events: VecDeque<Arc<DecodedEvent>>,
}

impl LogTail {
    /// Starts reading `store` from its current end. Must be called within a tokio runtime; the
    /// reader stops when the last handle is dropped.
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        let (head, _) = watch::channel(0);
        let (alive, stopped) = watch::channel(());
        let inner = Arc::new(Inner {
            store,
            window: RwLock::new(Window {
                after: None,
                events: VecDeque::with_capacity(WINDOW),
            }),
            head,
            _alive: alive,
        });
        tokio::spawn(read_tail(Arc::downgrade(&inner), stopped));
        LogTail { inner }
    }

    /// The store the tail reads.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Every event after `after`, in the global order, then each new one as it commits. The
    /// stream never ends; a failed read of the log is an `Err` item, and the subscriber goes on
    /// after it.
    pub fn subscribe(
        &self,
        after: Position,
    ) -> BoxStream<'static, Result<Arc<DecodedEvent>, StoreError>> {
        let state = Subscriber {
            inner: self.inner.clone(),
            after,
            buffer: VecDeque::new(),
            head: self.inner.head.subscribe(),
            failed: false,
        };
        futures_util::stream::unfold(state, |mut s| async move {
            let next = s.next().await;
            Some((next, s))
        })
        .boxed()
    }
}

struct Subscriber {
    inner: Arc<Inner>,
    after: Position,
    buffer: VecDeque<Arc<DecodedEvent>>,
    head: watch::Receiver<Position>,
    failed: bool,
}

/// Where a subscriber's next events are.
enum Source {
    Window,
    Log,
    Wait,
}

impl Subscriber {
    async fn next(&mut self) -> Result<Arc<DecodedEvent>, StoreError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.after = event.position;
                return Ok(event);
            }
            if self.failed {
                tokio::time::sleep(RETRY_AFTER).await;
                self.failed = false;
            }
            // Seen before looking, so that an event added after the look still wakes us.
            self.head.borrow_and_update();
            let source = {
                let window = self.inner.window.read().unwrap_or_else(|e| e.into_inner());
                match window.after {
                    Some(start) if self.after >= start => {
                        let from = window.events.partition_point(|e| e.position <= self.after);
                        self.buffer
                            .extend(window.events.range(from..).take(READ).cloned());
                        if self.buffer.is_empty() {
                            Source::Wait
                        } else {
                            Source::Window
                        }
                    }
                    _ => Source::Log,
                }
            };
            match source {
                Source::Window => continue,
                Source::Log => match self.inner.store.read_all(self.after, READ).await {
                    Ok(events) if !events.is_empty() => {
                        self.buffer
                            .extend(events.into_iter().map(|e| Arc::new(DecodedEvent::new(e))));
                    }
                    // The log ends before the window starts: the reader is about to add it.
                    Ok(_) => {
                        let _ = tokio::time::timeout(RETRY_AFTER, self.head.changed()).await;
                    }
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                },
                Source::Wait => {
                    let _ = self.head.changed().await;
                }
            }
        }
    }
}

/// The one reader: finds the end of the log, then follows it into the window.
async fn read_tail(inner: std::sync::Weak<Inner>, mut stopped: watch::Receiver<()>) {
    let (store, start) = loop {
        let Some(tail) = inner.upgrade() else { return };
        let store = tail.store.clone();
        drop(tail);
        match store.head_position().await {
            Ok(head) => break (store, head),
            Err(e) => {
                tracing::warn!(error = %e, "the log's tail cannot find the end of the log yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_AFTER) => {}
                    _ = stopped.changed() => return,
                }
            }
        }
    };
    if let Some(tail) = inner.upgrade() {
        tail.window.write().unwrap_or_else(|e| e.into_inner()).after = Some(start);
        tail.head.send_replace(start);
    }
    let mut log = store.follow(start);
    loop {
        let first = tokio::select! {
            next = log.next() => next,
            _ = stopped.changed() => return,
        };
        let mut batch = Vec::with_capacity(64);
        match first {
            Some(Ok(event)) => batch.push(Arc::new(DecodedEvent::new(event))),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the log's tail failed; it retries");
                continue;
            }
            None => return,
        }
        while batch.len() < READ {
            match log.next().now_or_never() {
                Some(Some(Ok(event))) => batch.push(Arc::new(DecodedEvent::new(event))),
                _ => break,
            }
        }
        let Some(tail) = inner.upgrade() else { return };
        let last = batch.last().map_or(0, |e| e.position);
        {
            let mut window = tail.window.write().unwrap_or_else(|e| e.into_inner());
            window.events.extend(batch);
            while window.events.len() > WINDOW {
                if let Some(dropped) = window.events.pop_front() {
                    window.after = Some(dropped.position);
                }
            }
        }
        tail.head.send_replace(last);
    }
}
