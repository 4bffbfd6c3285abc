//! Following the log live, shared by every backend.
//!
//! A follower reads batches after its position until it is caught up, then sleeps until the
//! backend signals a commit through a `watch` channel (or, as a safety net, a fallback
//! interval passes: it covers writers in other processes that cannot signal this one, and
//! lost notifications). Before each read it marks the current signal as seen, so a commit
//! that lands between the read and the sleep still wakes it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chatledger_core::{Position, RecordedEvent, StoreError};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use tokio::sync::watch;

/// How many events a follower reads at once.
const BATCH: usize = 500;
/// Pause after a failed read before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

pub(crate) type ReadAll = Arc<
    dyn Fn(
            Position,
            usize,
        ) -> Pin<Box<dyn Future<Output = Result<Vec<RecordedEvent>, StoreError>> + Send>>
        + Send
        + Sync,
>;

struct Follower {
    read: ReadAll,
    after: Position,
    buffer: VecDeque<RecordedEvent>,
    wake: watch::Receiver<u64>,
    fallback: Duration,
    failed: bool,
}

pub(crate) fn follow(
    read: ReadAll,
    after: Position,
    wake: watch::Receiver<u64>,
    fallback: Duration,
) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
    let state = Follower {
        read,
        after,
        buffer: VecDeque::new(),
        wake,
        fallback,
        failed: false,
    };
    futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.buffer.pop_front() {
                s.after = event.position;
                return Some((Ok(event), s));
            }
            if s.failed {
                tokio::time::sleep(RETRY_AFTER).await;
                s.failed = false;
            }
            s.wake.mark_unchanged();
            match (s.read)(s.after, BATCH).await {
                Ok(batch) if !batch.is_empty() => s.buffer.extend(batch),
                Ok(_) => s.wait().await,
                Err(e) => {
                    s.failed = true;
                    return Some((Err(e), s));
                }
            }
        }
    })
    .boxed()
}

impl Follower {
    async fn wait(&mut self) {
        if self.wake.has_changed().is_err() {
            // The store that signalled commits is gone; keep going on the fallback interval.
            tokio::time::sleep(self.fallback).await;
            return;
        }
        let _ = tokio::time::timeout(self.fallback, self.wake.changed()).await;
    }
}
