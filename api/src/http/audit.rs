//! What auditors read over HTTP: the log's head, to note and check later.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chatledger_core::executive::Role;
use serde_json::{json, Value};

use super::ApiError;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/audit/head", get(head))
}

/// The position the sealer has followed the log to and the running digest up to it, with
/// the latest seal. `chatledger verify --expect POSITION:HASH` later proves that nothing up
/// to that position changed.
async fn head(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let viewer = super::signed_in(&state, &headers).await?;
    if !matches!(viewer.role, Role::Auditor | Role::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the audit head is for auditors (and admins)",
        ));
    }
    let view = state.audit_head.view();
    let log_head = state.store.head_position().await.ok();
    Ok(Json(json!({
        "position": view.running.position,
        "events": view.running.events,
        "head_hash": view.running.head().to_string(),
        "log_head_position": log_head,
        "last_seal": view.last_seal.map(|(seal, at)| json!({
            "position": seal.position,
            "events": seal.events,
            "digest": seal.digest.to_string(),
            "sealed_at": seal.sealed_at,
            "recorded_at_position": at,
        })),
        "verify_with": format!(
            "chatledger verify --expect {}:{}",
            view.running.position,
            view.running.head()
        ),
    })))
}
