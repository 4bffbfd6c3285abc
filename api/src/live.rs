//! The live feed: one follower of the log per process, fanned out to every subscription
//! (GraphQL `messageReceived`, the `/ws` JSON feed) through a broadcast channel.

use std::sync::Arc;
use std::time::Duration;

use chatledger_core::conversation::DecodedEvent;
use chatledger_projections::tail::LogTail;
use futures_util::{Stream, StreamExt};
use tokio::sync::{broadcast, watch};

/// Events waiting for the slowest subscriber before it starts missing some.
pub const CAPACITY: usize = 4_096;

pub type LiveEvents = broadcast::Sender<Arc<DecodedEvent>>;

/// Starts following the log from its current head and publishing every new event, until
/// `shutdown` turns true.
pub fn spawn_feed(tail: LogTail, sender: LiveEvents, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let head = loop {
            match tail.store().head_position().await {
                Ok(head) => break head,
                Err(_) => tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                },
            }
        };
        let mut follower = tail.subscribe(head);
        loop {
            let next = tokio::select! {
                next = follower.next() => next,
                _ = shutdown.changed() => return,
            };
            let Some(next) = next else { return };
            match next {
                // Nobody listening is fine: the event is in the log.
                Ok(event) => {
                    let _ = sender.send(event);
                }
                Err(e) => tracing::debug!(error = %e, "the live feed's read failed; it retries"),
            }
        }
    });
}

/// A subscriber's stream of live events. A subscriber too slow to keep up skips what it
/// missed (and it is logged); the log itself still has everything.
pub fn events(
    receiver: broadcast::Receiver<Arc<DecodedEvent>>,
) -> impl Stream<Item = Arc<DecodedEvent>> {
    futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(event) => return Some((event, receiver)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a live subscriber fell behind and skipped events");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
