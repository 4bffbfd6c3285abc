//! What every reactor shares: folding the log into its view at start (after its snapshot,
//! [`crate::snapshots`]), how far each has got ([`progress`], for readiness), and the one
//! policy for an event a reactor cannot fold.
//!
//! # An event a reactor cannot fold
//!
//! A reactor keeps going for everyone else. An event whose conversation data cannot be read,
//! or whose fold panics, is logged at error level with its position and the reactor's name,
//! counted ([`unfoldable`], reported by readiness), and passed over: the reactor's view goes
//! on without it. Never skipped in silence. A reactor task that ends in a panic anyway (in
//! what it does, not in what it folds) is started again by [`supervise`], after a pause.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use chatledger_core::conversation::DecodedEvent;
use chatledger_core::{EventStore, Position};
use tokio::sync::watch;

/// Events each reactor of this process could not fold, by reactor.
static UNFOLDABLE: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Events each reactor of this process passed over because it could not fold them.
pub fn unfoldable() -> BTreeMap<&'static str, u64> {
    UNFOLDABLE.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How far each reactor of this process has followed the log (the last position it folded).
static PROGRESS: Mutex<BTreeMap<&'static str, Position>> = Mutex::new(BTreeMap::new());

/// How far each reactor of this process has followed the log, for readiness.
pub fn progress() -> BTreeMap<&'static str, Position> {
    PROGRESS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `reactor`'s view covers the log up to `position`.
fn advanced(reactor: &'static str, position: Position) {
    let mut progress = PROGRESS.lock().unwrap_or_else(|e| e.into_inner());
    let seen = progress.entry(reactor).or_default();
    *seen = (*seen).max(position);
}

fn count(reactor: &'static str) {
    *UNFOLDABLE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(reactor)
        .or_default() += 1;
}

/// An event of another stream kind (consent, a provider's notice) that `reactor` cannot
/// read: logged and counted by the policy above, and passed over.
pub fn passed_over(reactor: &'static str, event: &DecodedEvent, error: &dyn std::fmt::Display) {
    tracing::error!(reactor, position = event.position, stream = %event.stream,
        event_type = %event.event_type, error = %error,
        "the reactor cannot read this event; it goes on without it");
    count(reactor);
}

/// Folds `event` into a reactor's view with `apply`, by the policy above.
pub fn observe(reactor: &'static str, event: &DecodedEvent, apply: impl FnOnce(&DecodedEvent)) {
    advanced(reactor, event.position);
    if let Err(e) = event.conversation() {
        tracing::error!(reactor, position = event.position, stream = %event.stream,
            event_type = %event.event_type, error = %e,
            "the reactor cannot read this event; it goes on without it");
        count(reactor);
        return;
    }
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| apply(event))) {
        tracing::error!(reactor, position = event.position, stream = %event.stream,
            event_type = %event.event_type, panic = %crate::projector::panic_text(panic.as_ref()),
            "the reactor failed on this event; it goes on without it");
        count(reactor);
    }
}

/// Folds every event of the log after `from` (0: all of it), in order, into `apply` (by
/// [`observe`]), retrying reads that fail. Returns the position reached, or `None` when
/// `shutdown` came first.
pub async fn fold_log(
    store: &dyn EventStore,
    from: Position,
    mut apply: impl FnMut(&DecodedEvent),
    shutdown: &mut watch::Receiver<bool>,
    reactor: &'static str,
) -> Option<Position> {
    let mut position = from;
    loop {
        // A long log takes a while: a process told to stop stops between batches.
        if *shutdown.borrow() {
            return None;
        }
        match store.read_all(position, 5_000).await {
            Ok(batch) if batch.is_empty() => {
                advanced(reactor, position);
                return Some(position);
            }
            Ok(batch) => {
                position = batch.last().map_or(position, |e| e.position);
                for event in batch {
                    observe(reactor, &DecodedEvent::new(event), &mut apply);
                }
            }
            Err(e) => {
                tracing::warn!(reactor, error = %e, "cannot read the log yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.changed() => return None,
                }
            }
        }
    }
}

/// Folds `streams` as they stood at `position` into `apply` (by [`observe`]): how a reactor
/// whose snapshot names the streams with work pending takes that work back. False when one
/// cannot be read; the caller then folds the whole log instead.
pub async fn fold_streams<'a>(
    store: &dyn EventStore,
    streams: impl IntoIterator<Item = &'a String>,
    position: Position,
    reactor: &'static str,
    mut apply: impl FnMut(&DecodedEvent),
) -> bool {
    for stream in streams {
        match store.read_stream(stream, 0, usize::MAX).await {
            Ok(events) => {
                for event in events.into_iter().filter(|e| e.position <= position) {
                    observe(reactor, &DecodedEvent::new(event), &mut apply);
                }
            }
            Err(e) => {
                tracing::warn!(reactor, stream = %stream, error = %e,
                    "cannot read a stream the snapshot names; folding the whole log");
                return false;
            }
        }
    }
    true
}

/// How a view every process keeps is kept between runs ([`crate::snapshots`]).
pub struct Keeping<'a> {
    pub snapshots: crate::snapshots::Snapshots,
    /// The view's shape; a release that changes it (or what the fold means) counts it up.
    pub format: u32,
    /// The view as it stands.
    pub take: Box<dyn Fn() -> serde_json::Value + Send + Sync + 'a>,
    /// Puts a kept view back; false when it does not read (the log is then folded whole).
    pub put: Box<dyn Fn(serde_json::Value) -> bool + Send + Sync + 'a>,
}

/// Keeps a view of the log current: starts from its snapshot if `keeping` says where (else
/// folds the whole log) with `apply`, calls `folded` with the position reached, then applies
/// each new event as it comes, keeping snapshots as it goes, until `shutdown` turns true.
/// (For views every process keeps: credentials, sessions.)
pub async fn fold_and_follow(
    tail: crate::tail::LogTail,
    reactor: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut apply: impl FnMut(&DecodedEvent),
    folded: impl FnOnce(Position),
    keeping: Option<Keeping<'_>>,
) {
    use futures_util::StreamExt;
    let store = tail.store().clone();
    let mut memory = keeping
        .as_ref()
        .map(|k| crate::snapshots::Remembered::new(k.snapshots.clone(), reactor, k.format));
    let mut from = 0;
    if let (Some(memory), Some(keeping)) = (memory.as_mut(), keeping.as_ref()) {
        if let Some((position, view)) = memory.restore::<serde_json::Value>(store.as_ref()).await {
            if (keeping.put)(view) {
                tracing::info!(reactor, position, "the view starts from its snapshot");
                from = position;
            } else {
                tracing::warn!(
                    reactor,
                    position,
                    "the view's snapshot does not read; folding the whole log"
                );
            }
        }
    }
    let Some(mut position) =
        fold_log(store.as_ref(), from, &mut apply, &mut shutdown, reactor).await
    else {
        return;
    };
    folded(position);
    let mut keep = async |position: Position, now: bool| {
        if let (Some(memory), Some(keeping)) = (memory.as_mut(), keeping.as_ref()) {
            memory.keep(position, now, || (keeping.take)()).await;
        }
    };
    keep(position, false).await;
    let mut follower = tail.subscribe(position);
    loop {
        tokio::select! {
            next = follower.next() => match next {
                Some(Ok(event)) => {
                    position = position.max(event.position);
                    observe(reactor, &event, &mut apply);
                    keep(position, false).await;
                }
                Some(Err(e)) => tracing::warn!(reactor, error = %e, "following the log failed; it retries"),
                None => return,
            },
            _ = shutdown.changed() => {
                keep(position, true).await;
                return;
            }
        }
    }
}

/// Runs the reactor `start` makes until it returns; one that panics is logged and started
/// again (from the log, as at start), after a pause that grows to a minute, until `shutdown`.
pub async fn supervise<F, Fut>(reactor: &'static str, shutdown: watch::Receiver<bool>, start: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pause = Duration::from_secs(1);
    loop {
        match tokio::spawn(start()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                tracing::error!(reactor, panic = %crate::projector::panic_text(e.into_panic().as_ref()),
                    restart_in_s = pause.as_secs(), "the reactor stopped on a panic; starting it again");
            }
            Err(_) => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let mut stop = shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}
