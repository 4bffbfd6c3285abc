//! WhatsApp webhooks: Meta's Cloud API format (Meta, Pinbot, 360dialog) per number and
//! app-wide, and Twilio's form callbacks.
//!
//! Every handler checks in the same order: the number is ours (404), the content type
//! (415), the size (413), authentication over the raw bytes (401), the body (400). Only
//! then is anything recorded, and the answer is sent after the commit.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatledger_adapters::whatsapp::signature::secret_matches;
use chatledger_adapters::whatsapp::{meta, twilio, InboundItem};
use chatledger_core::channel::{Channel, Provider};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{read_body, require_content_type, ApiError};
use crate::config::AuthOutcome;
use crate::state::AppState;
use chatledger_application::ingest::{record, screen, Recorded, RefusedItem, Screened, Source};

/// The key of the stream for app-level notices that name no number.
const APP_CHANNEL_KEY: &str = "app";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/chats/whatsapp_chat/{number}",
            get(verify_channel).post(channel_webhook),
        )
        .route("/api/webhooks/whatsapp", get(verify_app).post(app_webhook))
        .route("/api/webhooks/twilio/{number}", post(twilio_webhook))
}

fn unknown_number(number: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_number",
        format!("{number} is not a WhatsApp number chatledger handles; nothing was recorded"),
    )
}

/// Meta's subscription check: answer `hub.challenge` when `hub.verify_token` matches.
fn verify(state: &AppState, query: &HashMap<String, String>) -> Result<Response, ApiError> {
    let forbidden =
        |message: &str| ApiError::new(StatusCode::FORBIDDEN, "verification_failed", message);
    let Some(expected) = &state.whatsapp.verify_token else {
        return Err(forbidden(
            "webhook verification is not configured: set WEBHOOK_VERIFY_TOKEN",
        ));
    };
    if query.get("hub.mode").map(String::as_str) != Some("subscribe") {
        return Err(forbidden("hub.mode must be \"subscribe\""));
    }
    let token = query
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or_default();
    if !secret_matches(expected.expose(), token) {
        return Err(forbidden("hub.verify_token does not match"));
    }
    let Some(challenge) = query.get("hub.challenge") else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_challenge",
            "hub.challenge is missing",
        ));
    };
    Ok(([(header::CONTENT_TYPE, "text/plain")], challenge.clone()).into_response())
}

async fn verify_channel(
    State(state): State<AppState>,
    Path(number): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state
        .channel(&number)
        .ok_or_else(|| unknown_number(&number))?;
    verify(&state, &query)
}

async fn verify_app(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    verify(&state, &query)
}

/// Refuses a request its channel's authentication did not pass (401, nothing recorded).
fn authenticated(
    outcome: AuthOutcome,
    channel: &str,
    auth: &chatledger_core::channel::ChannelAuth,
) -> Result<(), ApiError> {
    let message = match outcome {
        AuthOutcome::Passed | AuthOutcome::Open => return Ok(()),
        AuthOutcome::Failed => {
            "the request passed none of this channel's authentication checks; nothing was recorded".to_owned()
        }
        AuthOutcome::NotConfigured => format!(
            "this channel's webhooks are refused until its authentication is configured (set {}); nothing was recorded",
            crate::config::needed_secrets(auth)
        ),
    };
    tracing::warn!(channel, ?outcome, "webhook refused: not authenticated");
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        message,
    ))
}

pub(super) fn parse_json_object(bytes: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    if !value.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            "the body must be a JSON object",
        ));
    }
    Ok(value)
}

/// Bounds what one request may record, then keeps the items that can be recorded: more
/// items than `WEBHOOK_MAX_ITEMS` is a 413 and nothing is recorded; a request whose every
/// message and receipt is refused is a 400 naming the field; otherwise the refused ones are
/// reported beside what was recorded.
fn screened<T>(
    state: &AppState,
    channel: &str,
    items: Vec<(T, InboundItem)>,
) -> Result<Screened<T>, ApiError> {
    let limit = state.whatsapp.max_items;
    if items.len() > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!(
                "the webhook carries {} messages, receipts and changes; at most {limit} are accepted in one request (WEBHOOK_MAX_ITEMS); nothing was recorded",
                items.len()
            ),
        ));
    }
    let (kept, refused) = screen(items);
    for r in &refused {
        tracing::warn!(channel, item.id = %r.id, field = %r.field, problem = %r.problem,
            "a webhook item was refused: it cannot be recorded");
    }
    if kept.is_empty() && !refused.is_empty() {
        let first = &refused[0];
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_value",
            format!("{}: {}; nothing was recorded", first.field, first.problem),
        )
        .with("refused", json!(refused)));
    }
    Ok((kept, refused))
}

fn recorded_answer(
    recorded: &Recorded,
    refused: &[RefusedItem],
    extra: Option<(&str, Value)>,
) -> Response {
    let mut body = json!({"status": "recorded", "recorded": recorded});
    if !refused.is_empty() {
        body["refused"] = json!(refused);
    }
    if let Some((key, value)) = extra {
        body[key] = value;
    }
    Json(body).into_response()
}

async fn channel_webhook(
    State(state): State<AppState>,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let channel = state
        .channel(&number)
        .ok_or_else(|| unknown_number(&number))?;
    if channel.provider == Provider::Twilio {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "wrong_endpoint",
            format!("{number} is a Twilio channel: its webhook is /api/webhooks/twilio/{number}"),
        ));
    }
    require_content_type(&headers, "application/json")?;
    let bytes = read_body(body, &headers, state.whatsapp.body_limit).await?;
    authenticated(
        state
            .whatsapp
            .authenticate_meta(&channel.auth, &headers, &bytes),
        &channel.key,
        &channel.auth,
    )?;
    archive(&state, &channel.key, &bytes).await;
    let payload = parse_json_object(&bytes)?;
    let items = meta::parse(&payload, channel.provider.as_str(), &state.whatsapp.phones)
        .into_iter()
        .map(|routed| ((), routed.item))
        .collect();
    let (items, refused) = screened(&state, &channel.key, items)?;
    let items = items.into_iter().map(|(_, item)| item).collect();
    let source = Source {
        channel_key: &channel.key,
        channel_number: &channel.number,
        stakeholder: &channel.stakeholder,
        provider: channel.provider.as_str(),
        request_id: Uuid::new_v4(),
        received_at: state.clock.now(),
    };
    let recorded = record(&state.conversations, state.store.as_ref(), &source, items).await?;
    state
        .onboarding
        .note_account_updates(&recorded.account_updates, source.received_at)
        .await?;
    tracing::info!(channel = %channel.key, messages = recorded.messages, receipts = recorded.receipts,
        notices = recorded.notices, duplicates = recorded.duplicates, "webhook recorded");
    Ok(recorded_answer(&recorded, &refused, None))
}

/// Meta's one app-level webhook for onboarded numbers: each change is routed by its
/// `metadata.phone_number_id`.
async fn app_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_content_type(&headers, "application/json")?;
    let bytes = read_body(body, &headers, state.whatsapp.body_limit).await?;
    let app_auth = chatledger_core::channel::ChannelAuth {
        meta_signature: true,
        ..Default::default()
    };
    authenticated(
        state
            .whatsapp
            .authenticate_meta(&app_auth, &headers, &bytes),
        APP_CHANNEL_KEY,
        &app_auth,
    )?;
    archive(&state, APP_CHANNEL_KEY, &bytes).await;
    let payload = parse_json_object(&bytes)?;
    let routed = meta::parse(&payload, Provider::Meta.as_str(), &state.whatsapp.phones)
        .into_iter()
        .map(|r| (r.phone_number_id, r.item))
        .collect();
    let (routed, refused) = screened(&state, APP_CHANNEL_KEY, routed)?;
    // Items per channel, in order; `None` collects notices about the app or the WABA, which
    // name no number.
    let mut by_channel: Vec<(Option<Channel>, Vec<InboundItem>)> = Vec::new();
    let mut unknown_ids: Vec<String> = Vec::new();
    for (phone_number_id, item) in routed {
        let channel = match phone_number_id {
            Some(id) => match state.channel_by_phone_number_id(&id) {
                Some(channel) => Some(channel),
                None => {
                    if !unknown_ids.contains(&id) {
                        unknown_ids.push(id);
                    }
                    continue;
                }
            },
            None => None,
        };
        match by_channel
            .iter_mut()
            .find(|(c, _)| c.as_ref().map(|c| &c.key) == channel.as_ref().map(|c| &c.key))
        {
            Some((_, items)) => items.push(item),
            None => by_channel.push((channel, vec![item])),
        }
    }
    if by_channel.is_empty() && !unknown_ids.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_phone_number_id",
            format!(
                "phone_number_id {} is not a number chatledger handles; nothing was recorded",
                unknown_ids.join(", ")
            ),
        ));
    }
    let request_id = Uuid::new_v4();
    let received_at = state.clock.now();
    let mut total = Recorded::default();
    for (channel, items) in by_channel {
        let source = match &channel {
            Some(channel) => Source {
                channel_key: &channel.key,
                channel_number: &channel.number,
                stakeholder: &channel.stakeholder,
                provider: channel.provider.as_str(),
                request_id,
                received_at,
            },
            None => Source {
                channel_key: APP_CHANNEL_KEY,
                channel_number: "",
                stakeholder: "",
                provider: Provider::Meta.as_str(),
                request_id,
                received_at,
            },
        };
        let recorded = record(&state.conversations, state.store.as_ref(), &source, items).await?;
        state
            .onboarding
            .note_account_updates(&recorded.account_updates, received_at)
            .await?;
        total.messages += recorded.messages;
        total.receipts += recorded.receipts;
        total.notices += recorded.notices;
        total.duplicates += recorded.duplicates;
    }
    if !unknown_ids.is_empty() {
        tracing::warn!(phone_number_ids = %unknown_ids.join(","), "app webhook named numbers chatledger does not handle; those changes were not recorded");
    }
    Ok(recorded_answer(
        &total,
        &refused,
        (!unknown_ids.is_empty()).then(|| ("not_recorded_for", json!(unknown_ids))),
    ))
}

/// The URL Twilio called, as it signed it.
fn public_url(state: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if let Some(base) = &state.whatsapp.public_base_url {
        return format!("{base}{path}");
    }
    let header_value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let scheme = header_value("x-forwarded-proto").unwrap_or("http");
    let host = header_value("x-forwarded-host")
        .or_else(|| header_value("host"))
        .unwrap_or("localhost");
    format!("{scheme}://{host}{path}")
}

async fn twilio_webhook(
    State(state): State<AppState>,
    Path(number): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let channel = state
        .channel(&number)
        .filter(|c| c.provider == Provider::Twilio)
        .ok_or_else(|| unknown_number(&number))?;
    require_content_type(&headers, "application/x-www-form-urlencoded")?;
    let bytes = read_body(body, &headers, state.whatsapp.body_limit).await?;
    let params = twilio::parse_form(&bytes);
    let url = public_url(&state, &headers, &uri);
    authenticated(
        state
            .whatsapp
            .authenticate_twilio(&channel.auth, &headers, &url, &params),
        &channel.key,
        &channel.auth,
    )?;
    archive(&state, &channel.key, &bytes).await;
    let item = twilio::parse(&params, &state.whatsapp.phones);
    let (items, _) = screened(&state, &channel.key, vec![((), item)])?;
    let items = items.into_iter().map(|(_, item)| item).collect();
    let source = Source {
        channel_key: &channel.key,
        channel_number: &channel.number,
        stakeholder: &channel.stakeholder,
        provider: Provider::Twilio.as_str(),
        request_id: Uuid::new_v4(),
        received_at: state.clock.now(),
    };
    let recorded = record(&state.conversations, state.store.as_ref(), &source, items).await?;
    tracing::info!(channel = %channel.key, messages = recorded.messages, receipts = recorded.receipts,
        notices = recorded.notices, duplicates = recorded.duplicates, "Twilio webhook recorded");
    // Twilio expects TwiML; an empty response sends nothing back to the customer.
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

/// Keeps an authenticated webhook's raw body in the object store, one object per request
/// (`webhooks/{channel}/{date}/{sha256}`: a redelivery is the same object), when
/// `ARCHIVE_WEBHOOKS=true`. The log is the record; an archive that fails is logged, and the
/// request goes on.
async fn archive(state: &AppState, channel: &str, body: &[u8]) {
    if !state.media.archive_webhooks {
        return;
    }
    let folder = format!(
        "webhooks/{channel}/{}",
        state.clock.now().format("%Y-%m-%d")
    );
    if let Err(e) = state
        .media
        .store
        .put_addressed(&folder, body.to_vec())
        .await
    {
        tracing::warn!(channel, error = %e, "archiving a webhook's body failed; it is recorded in the log all the same");
    }
}
