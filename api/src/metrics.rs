//! Measured health: every part records into the `metrics` facade; this process renders it
//! in Prometheus's text format, served at `GET /metrics` by `http::metrics`.
//!
//! `/metrics` is never public by accident: on the main address it answers only a request
//! with `Authorization: Bearer $METRICS_TOKEN` or an admin's token; with `METRICS_LISTEN` it
//! is also served, without a token, on that address alone (a private interface, a sidecar's
//! port). The README's "Metrics" section lists what is measured.

use std::sync::OnceLock;
use std::time::Duration;

use chatledger_core::EventStore;
use chatledger_projections::read_side::ReadSide;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Seconds; from a fast append to a slow provider.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long a scrape waits for the log's head before leaving the lag figures as they were.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// This process's recorder, installed on first use (metrics recorded before are not kept).
pub fn install() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new();
        let builder = match builder
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        {
            Ok(with_buckets) => with_buckets,
            Err(e) => {
                tracing::warn!(error = %e, "histogram buckets refused; durations are summaries");
                PrometheusBuilder::new()
            }
        };
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics stays empty");
        }
        describe();
        // Histograms are kept in buckets as they come; upkeep folds them in.
        let upkeep = handle.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "chatledger_http_requests_total",
        "HTTP requests answered, by route and status"
    );
    describe_histogram!(
        "chatledger_http_request_duration_seconds",
        Unit::Seconds,
        "time to answer an HTTP request, by route"
    );
    describe_counter!(
        "chatledger_webhooks_total",
        "provider webhooks, by channel and outcome (recorded, refused, invalid, failed)"
    );
    describe_counter!(
        "chatledger_appends_total",
        "appends to the log, by outcome (ok, conflict, error)"
    );
    describe_counter!(
        "chatledger_events_appended_total",
        "events appended to the log"
    );
    describe_histogram!(
        "chatledger_append_duration_seconds",
        Unit::Seconds,
        "an append as its caller waits for it, its group's commit included"
    );
    describe_histogram!(
        "chatledger_commit_duration_seconds",
        Unit::Seconds,
        "a write transaction's commit (the disk flush)"
    );
    describe_gauge!(
        "chatledger_log_head_position",
        "the log's last position, as of the scrape"
    );
    describe_gauge!(
        "chatledger_projection_lag_events",
        "events a read model is behind the log"
    );
    describe_gauge!(
        "chatledger_reactor_lag_events",
        "events a reactor's view is behind the log"
    );
    describe_gauge!(
        "chatledger_reactor_queue",
        "work a reactor holds: messages to send, files to fetch, messages for Genesys"
    );
    describe_counter!(
        "chatledger_dispatch_total",
        "tries to send a message, by channel, outcome (sent, retrying, failed) and provider code"
    );
    describe_counter!(
        "chatledger_sla_raised_total",
        "SLA alerts and escalations raised"
    );
    describe_histogram!(
        "chatledger_sla_raise_delay_seconds",
        Unit::Seconds,
        "from an SLA threshold's due time to its alert being recorded"
    );
    describe_gauge!(
        "chatledger_circuit_state",
        "a circuit breaker's state: 0 closed, 1 half-open, 2 open"
    );
    describe_counter!(
        "chatledger_circuit_transitions_total",
        "circuit breaker changes, by circuit and new state"
    );
    describe_counter!(
        "chatledger_rate_limited_total",
        "requests refused with 429, by limit"
    );
    describe_counter!(
        "chatledger_login_failures_total",
        "failed logins, by reason"
    );
    describe_counter!(
        "chatledger_automated_answers_held_total",
        "automated answers not sent because one went to the customer within the window"
    );
}

/// The text a scrape reads, with the figures that are taken at scrape time brought up to
/// date (how far each read model and reactor is behind the log).
pub async fn render(store: &dyn EventStore, read_side: &ReadSide) -> String {
    let handle = install();
    if let Ok(Ok(head)) = tokio::time::timeout(HEAD_TIMEOUT, store.head_position()).await {
        metrics::gauge!("chatledger_log_head_position").set(head as f64);
        for (name, position) in read_side.checkpoints() {
            metrics::gauge!("chatledger_projection_lag_events", "read_model" => name)
                .set(head.saturating_sub(position) as f64);
        }
        for (name, passed_over) in chatledger_projections::reactor::unfoldable() {
            metrics::gauge!("chatledger_reactor_passed_over_events", "reactor" => name)
                .set(passed_over as f64);
        }
        for (name, position) in chatledger_projections::reactor::progress() {
            metrics::gauge!("chatledger_reactor_lag_events", "reactor" => name)
                .set(head.saturating_sub(position) as f64);
        }
    }
    handle.run_upkeep();
    handle.render()
}
