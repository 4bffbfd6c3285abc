//! `GET /metrics` (for `METRICS_TOKEN` or an admin, or alone on `METRICS_LISTEN`), and the
//! middleware that counts and times every request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::ApiError;
use crate::metrics::render;
use crate::state::AppState;

/// `GET /metrics` on the main address: for `METRICS_TOKEN` or an admin.
pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(guarded))
}

async fn guarded(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !state.auth.is_metrics_scraper(authorization) {
        let viewer = super::signed_in(&state, &headers).await?;
        if viewer.role != chatledger_core::executive::Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "/metrics is for METRICS_TOKEN or an admin",
            ));
        }
    }
    Ok(text(render(state.store.as_ref(), &state.read_side).await))
}

fn text(body: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// `/metrics` alone, without a token, for `METRICS_LISTEN`.
pub fn open_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move {
                text(render(state.store.as_ref(), &state.read_side).await)
            }),
        )
        .with_state(state)
}

/// Counts every request by its route (the pattern, not the path: `/api/webhooks/{number}`)
/// and status, and times it; a provider's webhook also by channel and outcome.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let webhook = request.method() == axum::http::Method::POST
        && matches!(
            route.as_str(),
            "/api/chats/whatsapp_chat/{number}"
                | "/api/webhooks/whatsapp"
                | "/api/webhooks/twilio/{number}"
                | "/api/genesys/{tenant}/webhook"
        );
    let response = next.run(request).await;
    let status = response.status();
    if webhook {
        // The channel when it is one of ours; anything else is one label, so a stranger
        // cannot make new series.
        let named = path.rsplit('/').next().unwrap_or_default();
        let channel = match route.as_str() {
            "/api/webhooks/whatsapp" => "app".to_owned(),
            "/api/genesys/{tenant}/webhook" => "genesys".to_owned(),
            _ => state
                .channel(named)
                .map_or_else(|| "unknown".to_owned(), |c| c.key),
        };
        let outcome = match status.as_u16() {
            200..=299 => "recorded",
            401 | 403 => "refused",
            400..=499 => "invalid",
            _ => "failed",
        };
        metrics::counter!("chatledger_webhooks_total", "channel" => channel, "outcome" => outcome)
            .increment(1);
    }
    // `/api/media/:token` rather than `{token}`: braces in a label value trip some parsers.
    let route = route.replace('{', ":").replace('}', "");
    metrics::counter!("chatledger_http_requests_total",
        "route" => route.clone(), "status" => status.as_u16().to_string())
    .increment(1);
    metrics::histogram!("chatledger_http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
