//! What every reactor does at start: fold the whole log into its view.

use chatledger_core::conversation::DecodedEvent;
use chatledger_core::{EventStore, Position};
use std::time::Duration;
use tokio::sync::watch;

/// Folds every event of the log, in order, into `apply`, retrying reads that fail. Returns
/// the position reached, or `None` when `shutdown` came first.
pub async fn fold_log(
    store: &dyn EventStore,
    mut apply: impl FnMut(&DecodedEvent),
    shutdown: &mut watch::Receiver<bool>,
    reactor: &str,
) -> Option<Position> {
    let mut position = 0;
    loop {
        // A long log takes a while: a process told to stop stops between batches.
        if *shutdown.borrow() {
            return None;
        }
        match store.read_all(position, 5_000).await {
            Ok(batch) if batch.is_empty() => return Some(position),
            Ok(batch) => {
                position = batch.last().map_or(position, |e| e.position);
                for event in batch {
                    apply(&DecodedEvent::new(event));
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
