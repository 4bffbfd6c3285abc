//! Requests per signed-in account: `POST /graphql` and `/api/media` uploads, each under its
//! own quota per executive (the admin token has one of its own; GraphQL requests without a
//! valid token count per client address); downloads per link. Beyond it a request is refused before any work is done: 429, `Retry-After` in whole
//! seconds, and the `chatledger_rate_limited_total` counter. Quotas are kept in this
//! process's memory (GCRA, the `governor` crate): several processes each allow their quota.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::auth::Viewer;
use crate::limits::{Limits, Rate};

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>;

/// Keys remembered before those idle long enough to be full again are dropped.
const REMEMBERED: usize = 10_000;

/// The limiters of one process. Cloning shares them.
#[derive(Clone)]
pub struct Rates {
    graphql: Arc<Keyed>,
    media: Arc<Keyed>,
}

/// Which quota a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Graphql,
    Media,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::Graphql => "graphql",
            Limit::Media => "media",
        }
    }
}

fn keyed(rate: Rate) -> Arc<Keyed> {
    let per_minute = NonZeroU32::new(rate.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(
        Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

/// A request over its quota (answered 429 with `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    pub limit: Limit,
    /// Whole seconds until the next request of this key is admitted (at least 1).
    pub retry_after: u64,
}

impl std::fmt::Display for RateLimited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "too many {} requests with this token; try again in {} s",
            self.limit.name(),
            self.retry_after
        )
    }
}

impl Rates {
    pub fn new(limits: &Limits) -> Self {
        Rates {
            graphql: keyed(limits.graphql_rate),
            media: keyed(limits.media_rate),
        }
    }

    /// Counts one request of `key` against `limit`; refused, saying when to come back, when
    /// the quota is spent.
    pub fn admit(&self, limit: Limit, key: &str) -> Result<(), RateLimited> {
        let limiter = match limit {
            Limit::Graphql => &self.graphql,
            Limit::Media => &self.media,
        };
        if limiter.len() > REMEMBERED {
            limiter.retain_recent();
        }
        match limiter.check_key(&key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                metrics::counter!("chatledger_rate_limited_total", "limit" => limit.name())
                    .increment(1);
                Err(RateLimited {
                    limit,
                    retry_after: seconds.max(1),
                })
            }
        }
    }
}

/// Whose quota a request spends: the signed-in executive's (all their tokens share it), the
/// admin token's, or, without a valid token, the client address's.
pub fn key(viewer: Option<&Viewer>, client: Option<IpAddr>) -> String {
    match viewer {
        Some(viewer) => viewer
            .executive_id
            .as_ref()
            .map_or_else(|| "admin-token".to_owned(), |id| format!("executive:{id}")),
        None => client.map_or_else(|| "anonymous".to_owned(), |ip| format!("address:{ip}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_past_its_burst_waits_and_others_do_not() {
        let limits = Limits {
            graphql_rate: Rate {
                per_minute: 60,
                burst: 3,
            },
            ..Limits::default()
        };
        let rates = Rates::new(&limits);
        for _ in 0..3 {
            assert!(rates.admit(Limit::Graphql, "token:a").is_ok());
        }
        let refused = rates.admit(Limit::Graphql, "token:a").unwrap_err();
        assert_eq!(refused.limit, Limit::Graphql);
        assert_eq!(refused.retry_after, 1, "one a second comes back");
        assert!(rates.admit(Limit::Graphql, "token:b").is_ok(), "per token");
        assert!(rates.admit(Limit::Media, "token:a").is_ok(), "per limit");
    }
}
