//! Liveness and readiness, for orchestrators.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

/// How long readiness waits for the store before calling it unavailable.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(live))
        .route("/api/health/ready", get(ready))
}

/// The process is up and serving HTTP.
async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The process can do its work: the store is migrated and answers.
async fn ready(State(state): State<AppState>) -> Response {
    let unavailable = |reason: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "store": state.store_kind, "reason": reason})),
        )
            .into_response()
    };
    if let Some(reason) = state.readiness.blocker() {
        return unavailable(reason);
    }
    match tokio::time::timeout(STORE_CHECK_TIMEOUT, state.store.head_position()).await {
        Ok(Ok(head)) => {
            let checkpoints: serde_json::Map<String, serde_json::Value> = state
                .read_side
                .checkpoints()
                .into_iter()
                .map(|(name, position)| (name.to_owned(), json!(position)))
                .collect();
            let lag = head.saturating_sub(state.read_side.low_water_mark());
            if let Some(reason) = lagging(
                &state.read_side.checkpoints(),
                head,
                state.limits.ready_max_lag,
            ) {
                return unavailable(reason);
            }
            // Each reactor's view of the log, and which partitions of the streams this process
            // acts on (all of them, unless it shares the work with others on PostgreSQL).
            let reactors: serde_json::Map<String, serde_json::Value> =
                chatledger_projections::reactor::progress()
                    .into_iter()
                    .map(|(name, position)| {
                        (
                            name.to_owned(),
                            json!({"position": position, "lag": head.saturating_sub(position)}),
                        )
                    })
                    .collect();
            let ownership = state.ownership.status();
            // Circuits that are not closed: a provider or Genesys tenant this process has
            // stopped calling for a while (the process itself is fine).
            let circuits: serde_json::Map<String, serde_json::Value> = state
                .circuits
                .not_closed()
                .into_iter()
                .map(|(name, state)| (name, json!(state)))
                .collect();
            let mut body = json!({"status": "ready", "store": state.store_kind, "head_position": head,
                "projections": checkpoints, "projection_lag": lag, "reactors": reactors,
                "ownership": ownership, "circuits": circuits});
            // Events set aside keep the process serving (every other chat is current), but it
            // does not call itself ready: someone must look (ADR 10).
            let mut degraded = Vec::new();
            match chatledger_projections::quarantine::counts(&state.read_side.db).await {
                Ok(quarantined) if !quarantined.is_empty() => {
                    let total: u64 = quarantined.values().sum();
                    degraded.push(format!(
                        "{total} event(s) quarantined by read models (chatledger quarantine list)"
                    ));
                    body["quarantined"] = json!(quarantined);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "readiness could not count quarantined events");
                    degraded.push("quarantined events could not be counted".to_owned());
                }
            }
            let unfoldable = chatledger_projections::reactor::unfoldable();
            if !unfoldable.is_empty() {
                let total: u64 = unfoldable.values().sum();
                degraded.push(format!(
                    "{total} event(s) passed over by reactors (see the error log)"
                ));
                body["reactors_passed_over"] = json!(unfoldable);
            }
            if let Some(problem) = &ownership.problem {
                degraded.push(format!("this process acts on no chat: {problem}"));
            }
            if !degraded.is_empty() {
                body["status"] = json!("degraded");
                body["reason"] = json!(degraded.join("; "));
            }
            Json(body).into_response()
        }
        Ok(Err(e)) => unavailable(e.to_string()),
        Err(_) => unavailable(format!(
            "the event store did not answer within {}s",
            STORE_CHECK_TIMEOUT.as_secs()
        )),
    }
}

/// Why the process is not ready when read models are more than `max_lag` events behind the
/// log's `head` (`READY_MAX_LAG_EVENTS`), naming each and how far; `None` when none is.
fn lagging(checkpoints: &[(&'static str, u64)], head: u64, max_lag: u64) -> Option<String> {
    let behind: Vec<String> = checkpoints
        .iter()
        .filter(|(_, position)| head.saturating_sub(*position) > max_lag)
        .map(|(name, position)| format!("{name} ({} behind)", head - position))
        .collect();
    (!behind.is_empty()).then(|| {
        format!(
            "read models are more than {max_lag} events behind the log (catching up): {}",
            behind.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_model_behind_by_more_than_the_setting_is_named() {
        let checkpoints = [("chats", 990), ("messages", 1_000), ("sla", 400)];
        assert_eq!(
            lagging(&checkpoints, 1_000, 500).as_deref(),
            Some("read models are more than 500 events behind the log (catching up): sla (600 behind)")
        );
        assert_eq!(
            lagging(&checkpoints, 1_000, 600),
            None,
            "600 behind is within 600"
        );
        assert!(lagging(&checkpoints, 1_000, 5)
            .unwrap()
            .contains("chats (10 behind), sla (600 behind)"));
    }
}
