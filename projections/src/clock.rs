//! Time for reactors that act at a moment (SLA timers): the system clock in production, a
//! clock the tests drive so that "3 minutes later" takes no time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

#[async_trait]
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
    /// Resolves once `now() >= at`.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The system clock.
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        loop {
            let left = at - Utc::now();
            if left <= chrono::Duration::zero() {
                return;
            }
            // Re-check at least every minute: the wall clock may jump.
            let nap = left
                .to_std()
                .unwrap_or_default()
                .min(std::time::Duration::from_secs(60));
            tokio::time::sleep(nap).await;
        }
    }
}

/// A clock that moves only when told to.
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock {
            now: watch::Sender::new(start),
        }
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.now.send_modify(|now| *now += by);
    }

    /// Now, in whole unix seconds (as providers timestamp messages).
    pub fn now_seconds(&self) -> i64 {
        self.now.borrow().timestamp()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut now = self.now.subscribe();
        let _ = now.wait_for(|t| *t >= at).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved_past_their_time() {
        let clock = std::sync::Arc::new(ManualClock::new(Utc::now()));
        let at = clock.now() + chrono::Duration::minutes(3);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(at).await }
        });
        clock.advance(chrono::Duration::minutes(2));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(chrono::Duration::minutes(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
    }
}
