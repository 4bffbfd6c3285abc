//! The bounds of what one client may make the server do: body sizes, time to send a request,
//! connections held, password checks. Each has a default and a setting; the README's "Limits"
//! table lists them all.

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
            login_free_failures: u32::try_from(number(
                "LOGIN_FREE_FAILURES",
                u64::from(d.login_free_failures),
            )?)
            .unwrap_or(u32::MAX),
            login_max_delay: Duration::from_secs(number(
                "LOGIN_MAX_DELAY_SECONDS",
                d.login_max_delay.as_secs(),
            )?),
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
