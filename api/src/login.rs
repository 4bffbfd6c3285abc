//! Password checks: a bounded few at a time, off the async workers, and slowed for whoever
//! keeps failing.
//!
//! An argon2 check takes tens of milliseconds of one core, on purpose. Run on the async
//! workers, a burst of them stalls every other request (health checks included); run without
//! a bound, a burst takes every core. So checks run on the blocking pool, at most
//! `LOGIN_CONCURRENCY` at once, and each account and each client address may fail
//! `LOGIN_FREE_FAILURES` times before every next attempt must wait: 1 second, then 2, 4, … up
//! to `LOGIN_MAX_DELAY_SECONDS`. An attempt that comes too early is refused before any
//! password is checked (429 with `Retry-After`), so a flood costs no CPU. A success clears the
//! account's count. The counts live in this process's memory; a lockout recorded as events
//! is the guard-rails' (issue 22).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::limits::Limits;

/// Counts kept at most; beyond it, those idle longest are forgotten first.
const REMEMBERED: usize = 100_000;
/// A count untouched this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// No attempt before this.
    wait_until: Instant,
    last: Instant,
}

/// This process's password checks and failure counts. Cloning shares them.
#[derive(Clone)]
pub struct LoginGuard {
    checks: Arc<Semaphore>,
    /// Password checks run since start.
    run: Arc<std::sync::atomic::AtomicU64>,
    failures: Arc<Mutex<HashMap<String, Failures>>>,
    free: u32,
    max_delay: Duration,
}

/// Who is trying: the account (its email, as typed, lowercased) and the client's address.
pub struct Attempt {
    keys: Vec<String>,
}

impl Attempt {
    pub fn new(email: &str, client: Option<IpAddr>) -> Self {
        let mut keys = vec![format!("account:{}", email.trim().to_lowercase())];
        if let Some(ip) = client {
            keys.push(format!("address:{ip}"));
        }
        Attempt { keys }
    }
}

impl LoginGuard {
    pub fn new(limits: &Limits) -> Self {
        LoginGuard {
            checks: Arc::new(Semaphore::new(limits.login_concurrency.max(1))),
            run: Arc::default(),
            failures: Arc::default(),
            free: limits.login_free_failures,
            max_delay: limits.login_max_delay,
        }
    }

    /// `Err(wait)` when the account or the address must wait before trying again.
    pub fn admit(&self, attempt: &Attempt) -> Result<(), Duration> {
        let now = Instant::now();
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let wait = attempt
            .keys
            .iter()
            .filter_map(|key| failures.get(key))
            .map(|f| f.wait_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Counts a failed attempt against the account and the address.
    pub fn failed(&self, attempt: &Attempt) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= REMEMBERED {
            failures.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if failures.len() >= REMEMBERED {
                // Still full: forget the oldest half.
                let mut lasts: Vec<Instant> = failures.values().map(|f| f.last).collect();
                lasts.sort_unstable();
                let cut = lasts[lasts.len() / 2];
                failures.retain(|_, f| f.last > cut);
            }
        }
        for key in &attempt.keys {
            let entry = failures.entry(key.clone()).or_insert(Failures {
                count: 0,
                wait_until: now,
                last: now,
            });
            entry.count = entry.count.saturating_add(1);
            entry.last = now;
            if entry.count > self.free {
                let doublings = (entry.count - self.free - 1).min(20);
                let delay = Duration::from_secs(1 << doublings).min(self.max_delay);
                entry.wait_until = now + delay;
            }
        }
    }

    /// Clears the account's count (the address keeps its own: one success does not excuse
    /// an address that tried many accounts).
    pub fn succeeded(&self, attempt: &Attempt) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(account) = attempt.keys.first() {
            failures.remove(account);
        }
    }

    /// Password checks run since the process started.
    pub fn checks_run(&self) -> u64 {
        self.run.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether `password` matches `hash`, checked on the blocking pool when a check's turn
    /// comes.
    pub async fn verify(&self, hash: String, password: String) -> bool {
        let Ok(_turn) = self.checks.acquire().await else {
            return false;
        };
        self.run.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::task::spawn_blocking(move || crate::auth::verify_password(&hash, &password))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_beyond_the_free_ones_make_the_next_attempt_wait() {
        let limits = Limits {
            login_free_failures: 2,
            login_max_delay: Duration::from_secs(4),
            ..Limits::default()
        };
        let guard = LoginGuard::new(&limits);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let asha = Attempt::new("Asha@OneWay.cab ", Some(ip));
        for _ in 0..2 {
            assert!(guard.admit(&asha).is_ok());
            guard.failed(&asha);
        }
        assert!(guard.admit(&asha).is_ok(), "two failures are free");
        guard.failed(&asha);
        let wait = guard.admit(&asha).unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(900));
        // The same address trying another account waits too; another address does not.
        assert!(guard
            .admit(&Attempt::new("ravi@oneway.cab", Some(ip)))
            .is_err());
        assert!(guard
            .admit(&Attempt::new(
                "ravi@oneway.cab",
                Some("192.0.2.8".parse().unwrap())
            ))
            .is_ok());
        // The delay doubles and stops at the maximum.
        for _ in 0..10 {
            guard.failed(&asha);
        }
        assert!(guard.admit(&asha).unwrap_err() <= Duration::from_secs(4));
        guard.succeeded(&asha);
        assert!(
            guard.admit(&Attempt::new("asha@oneway.cab", None)).is_ok(),
            "a success clears the account"
        );
    }
}
