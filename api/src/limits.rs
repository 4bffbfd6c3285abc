//! The bounds of what one client may make the server do: body sizes, time to send a request,
//! connections held, password checks, requests per token, automated answers per customer;
//! and when the server stops calling a provider that fails. Each has a default and a
//! setting; the README's "Limits" table lists them all.

use std::time::Duration;

/// The server's limits, from the environment.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The largest `POST /graphql` body with a valid token (`GRAPHQL_BODY_LIMIT`, bytes).
    pub graphql_body: usize,
    /// The time a client has to send a request's headers, and the longest a kept-alive
    /// connection may sit idle between requests (`HTTP_HEADER_TIMEOUT_SECONDS`).
    pub header_timeout: Duration,
    /// The time a client has to send a request's body (`HTTP_BODY_TIMEOUT_SECONDS`).
    pub body_timeout: Duration,
    /// Connections served at once (`HTTP_MAX_CONNECTIONS`); more wait in the kernel's queue.
    pub max_connections: usize,
    /// Password checks running at once (`LOGIN_CONCURRENCY`); more wait their turn.
    pub login_concurrency: usize,
    /// Failed logins of one account or one client address before each next attempt must
    /// wait (`LOGIN_FREE_FAILURES`).
    pub login_free_failures: u32,
    /// The longest such wait (`LOGIN_MAX_DELAY_SECONDS`); it doubles from one second.
    pub login_max_delay: Duration,
    /// Failed logins of one account in a row that lock it (`LOGIN_LOCK_AFTER`), recorded as
    /// `AccountLocked`.
    pub login_lock_after: u32,
    /// How long a lock lasts unless an admin lifts it first (`LOGIN_LOCK_SECONDS`).
    pub login_lock_for: Duration,
    /// `POST /graphql` requests per signed-in account and minute
    /// (`GRAPHQL_RATE_PER_MINUTE`), of which `GRAPHQL_RATE_BURST` may come at once.
    pub graphql_rate: Rate,
    /// `/api/media` uploads per account and downloads per link, a minute (`MEDIA_RATE_PER_MINUTE`,
    /// `MEDIA_RATE_BURST`).
    pub media_rate: Rate,
    /// The shortest time between two automated answers of one kind (HELP, ratings) to one
    /// customer (`AUTO_ANSWER_WINDOW_SECONDS`).
    pub auto_answer_window: Duration,
    /// When a provider endpoint's or a Genesys tenant's circuit opens (`BREAKER_FAILURES`)
    /// and for how long (`BREAKER_COOLDOWN_MS`).
    pub breaker: chatledger_projections::breaker::BreakerSettings,
    /// A read model further behind the log than this many events makes the server not ready
    /// (`READY_MAX_LAG_EVENTS`).
    pub ready_max_lag: u64,
}

/// So many requests a minute, so many of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_minute: u32,
    pub burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            graphql_body: 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
            login_concurrency: 2,
            login_free_failures: 5,
            login_max_delay: Duration::from_secs(300),
            login_lock_after: 20,
            login_lock_for: Duration::from_secs(3600),
            graphql_rate: Rate {
                per_minute: 600,
                burst: 60,
            },
            media_rate: Rate {
                per_minute: 120,
                burst: 20,
            },
            auto_answer_window: Duration::from_secs(3600),
            breaker: Default::default(),
            ready_max_lag: 10_000,
        }
    }
}

impl Limits {
    /// Reads the settings named on each field; unset ones keep their defaults.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} must be a whole number above 0, not {v:?}")),
            }
        };
        let count = |name: &str, default: u32| {
            number(name, u64::from(default)).map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        let d = Limits::default();
        let size = |name: &str, default: usize| {
            number(name, default as u64).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        Ok(Limits {
            graphql_body: size("GRAPHQL_BODY_LIMIT", d.graphql_body)?,
            header_timeout: Duration::from_secs(number(
                "HTTP_HEADER_TIMEOUT_SECONDS",
                d.header_timeout.as_secs(),
            )?),
            body_timeout: Duration::from_secs(number(
                "HTTP_BODY_TIMEOUT_SECONDS",
                d.body_timeout.as_secs(),
            )?),
            max_connections: size("HTTP_MAX_CONNECTIONS", d.max_connections)?,
            login_concurrency: size("LOGIN_CONCURRENCY", d.login_concurrency)?,
            login_free_failures: count("LOGIN_FREE_FAILURES", d.login_free_failures)?,
            login_max_delay: Duration::from_secs(number(
                "LOGIN_MAX_DELAY_SECONDS",
                d.login_max_delay.as_secs(),
            )?),
            login_lock_after: count("LOGIN_LOCK_AFTER", d.login_lock_after)?,
            login_lock_for: Duration::from_secs(number(
                "LOGIN_LOCK_SECONDS",
                d.login_lock_for.as_secs(),
            )?),
            graphql_rate: Rate {
                per_minute: count("GRAPHQL_RATE_PER_MINUTE", d.graphql_rate.per_minute)?,
                burst: count("GRAPHQL_RATE_BURST", d.graphql_rate.burst)?,
            },
            media_rate: Rate {
                per_minute: count("MEDIA_RATE_PER_MINUTE", d.media_rate.per_minute)?,
                burst: count("MEDIA_RATE_BURST", d.media_rate.burst)?,
            },
            auto_answer_window: Duration::from_secs(number(
                "AUTO_ANSWER_WINDOW_SECONDS",
                d.auto_answer_window.as_secs(),
            )?),
            breaker: chatledger_projections::breaker::BreakerSettings {
                failures: count("BREAKER_FAILURES", d.breaker.failures)?,
                cooldown: Duration::from_millis(number(
                    "BREAKER_COOLDOWN_MS",
                    d.breaker.cooldown.as_millis() as u64,
                )?),
            },
            ready_max_lag: number("READY_MAX_LAG_EVENTS", d.ready_max_lag)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_defaults() {
        let limits = Limits::from_env(&|name| match name {
            "HTTP_MAX_CONNECTIONS" => Some("64".into()),
            "GRAPHQL_BODY_LIMIT" => Some(" 2048 ".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(limits.max_connections, 64);
        assert_eq!(limits.graphql_body, 2048);
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        let bad = Limits::from_env(&|name| (name == "LOGIN_CONCURRENCY").then(|| "0".into()));
        assert!(bad.unwrap_err().contains("LOGIN_CONCURRENCY"));
    }
}
