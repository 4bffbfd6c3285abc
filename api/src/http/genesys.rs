//! `POST /api/genesys/{tenant}/webhook`: what a business's Genesys agents send its customers
//! (Open Messaging's outbound webhook, GENESYS.md §3).
//!
//! The signature first (`X-Hub-Signature-256`: base64 HMAC-SHA256 of the raw body with the
//! tenant's secret token): nothing is read or recorded before it passes. An agent's text is
//! queued on the customer's conversation under an id derived from Genesys's message id and
//! time (Genesys retries up to 5 times: a redelivery queues nothing more), and the answer
//! goes back at once; the dispatcher sends it. What cannot be sent (no open chat, the 24-hour
//! window closed, a customer this tenant has no conversation with) and what is not a message
//! (receipts, typing, types we do not know) are recorded as notices on `channel-genesys-{tenant}`
//! and answered 200, so that Genesys does not retry what cannot change.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chatledger_adapters::genesys::signature_valid;
use chatledger_application::conversations::CommandError;
use chatledger_core::channel::{channel_stream, ProviderNoticeReceived};
use chatledger_core::conversation::{stream_name, ConversationCommand, EVENT_ID_NAMESPACE};
use chatledger_core::genesys::parse_address;
use chatledger_core::{ExpectedVersion, Metadata};
use serde_json::{json, Value};
use uuid::Uuid;

use super::whatsapp::parse_json_object;
use super::{read_body, ApiError};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/genesys/{tenant}/webhook", post(webhook))
}

async fn webhook(
    State(state): State<AppState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let Some(integration) = state.genesys.configured.tenant(&tenant).cloned() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_tenant",
            format!("no Genesys integration is configured for {tenant}"),
        ));
    };
    let Some(secret) = state.genesys.webhook_secrets.get(&tenant) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_configured",
            format!(
                "{tenant}'s webhooks are refused: {} is not set",
                integration.webhook_secret_env
            ),
        ));
    };
    let bytes = read_body(body, &headers, state.whatsapp.body_limit).await?;
    let signed = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|header| signature_valid(secret.expose().as_bytes(), &bytes, header));
    if !signed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_signature",
            "X-Hub-Signature-256 is missing or was not made with this integration's secret token over this body",
        ));
    }
    let payload = parse_json_object(&bytes)?;
    let channel_id = payload["channel"]["id"].as_str();
    if channel_id.is_some_and(|id| id != integration.integration_id) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!(
                "channel.id {:?} is not {tenant}'s Open Messaging integration",
                channel_id.unwrap_or_default()
            ),
        ));
    }
    let kind = payload["type"].as_str().unwrap_or_default().to_owned();
    let genesys_id = payload["id"]
        .as_str()
        .or_else(|| payload["channel"]["messageId"].as_str())
        .unwrap_or_default()
        .to_owned();
    let time = payload["channel"]["time"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if kind != "Text" && kind != "Structured" {
        record_notice(&state, &tenant, &format!("type:{kind}"), None, payload).await?;
        return Ok(Json(json!({"status": "recorded"})));
    }
    if genesys_id.is_empty() || time.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!(
                "a {kind} message needs its id and channel.time (Genesys de-duplicates on both)"
            ),
        ));
    }
    let to = payload["channel"]["to"]["id"].as_str().unwrap_or_default();
    let routed = parse_address(to).filter(|(channel, _)| {
        state
            .genesys
            .configured
            .routing(channel)
            .is_some_and(|i| i.tenant == tenant)
    });
    let Some((channel, customer)) = routed else {
        let reason = format!("{to:?} is not a customer of a channel {tenant} routes to Genesys");
        record_notice(&state, &tenant, "unknown_customer", Some(&reason), payload).await?;
        return Ok(Json(json!({"status": "not_sent", "reason": reason})));
    };
    let stream = stream_name(&channel, &customer);
    let content = payload["content"].as_array().cloned().unwrap_or_default();
    // A template (`Structured` notification) carries no WhatsApp template name: its rendered
    // body goes as text, inside the 24-hour window.
    let text = payload["text"].as_str().map(str::to_owned).or_else(|| {
        content
            .iter()
            .find_map(|c| c["template"]["body"]["text"].as_str().map(str::to_owned))
    });
    // Attachments are fetched now, into the customer's folder: Genesys's links do not last.
    let mut media = Vec::new();
    for attachment in content
        .iter()
        .filter(|c| c["contentType"] == "Attachment")
        .map(|c| &c["attachment"])
    {
        let Some(url) = attachment["url"].as_str() else {
            continue;
        };
        let fetched = tokio::time::timeout(
            ATTACHMENT_FETCH,
            state.open_messaging.download(
                &tenant,
                url,
                &chatledger_core::media::folder(&stream),
                attachment["mime"].as_str(),
                attachment["filename"].as_str().map(str::to_owned),
            ),
        )
        .await;
        match fetched {
            Ok(Ok(stored)) => media.push(stored),
            Ok(Err(e)) => {
                let reason = format!("the agent's attachment could not be fetched: {e}");
                record_notice(&state, &tenant, "not_sent", Some(&reason), payload).await?;
                return Ok(Json(json!({"status": "not_sent", "reason": reason})));
            }
            Err(_) => {
                let reason = format!(
                    "the agent's attachment did not arrive within {} s",
                    ATTACHMENT_FETCH.as_secs()
                );
                record_notice(&state, &tenant, "not_sent", Some(&reason), payload).await?;
                return Ok(Json(json!({"status": "not_sent", "reason": reason})));
            }
        }
    }
    let agent = payload["channel"]["from"]["nickname"]
        .as_str()
        .or_else(|| payload["channel"]["from"]["nickName"].as_str())
        .unwrap_or("agent");
    // One WhatsApp message per attachment (the text goes with the first), or the text alone.
    let parts: Vec<(Option<String>, Option<chatledger_core::media::StoredMedia>)> =
        if media.is_empty() {
            vec![(text, None)]
        } else {
            media
                .into_iter()
                .enumerate()
                .map(|(i, m)| (if i == 0 { text.clone() } else { None }, Some(m)))
                .collect()
        };
    let mut metadata = Metadata::by(format!("genesys:{tenant}"));
    metadata
        .extra
        .insert("genesys_message_id".into(), json!(genesys_id));
    metadata
        .extra
        .insert("genesys_tenant".into(), json!(tenant));
    if let Some(conversation) = payload["conversationId"].as_str() {
        metadata
            .extra
            .insert("genesys_conversation_id".into(), json!(conversation));
    }
    let commands: Vec<ConversationCommand> = parts
        .into_iter()
        .enumerate()
        .map(|(i, (text, media))| ConversationCommand::QueueAgentReply {
            message_id: Uuid::new_v5(
                &EVENT_ID_NAMESPACE,
                format!("genesys/{tenant}/{genesys_id}/{time}/{i}").as_bytes(),
            ),
            text,
            media,
            by: format!("genesys:{agent}"),
            now: state.clock.now(),
        })
        .collect();
    match state
        .conversations
        .handle(&stream, commands, &metadata)
        .await
    {
        Ok(handled) => Ok(Json(json!({
            "status": if handled.recorded.is_empty() { "duplicate" } else { "recorded" },
        }))),
        Err(CommandError::Rejected(rejection)) => {
            let reason = rejection.to_string();
            record_notice(&state, &tenant, "not_sent", Some(&reason), payload).await?;
            Ok(Json(json!({"status": "not_sent", "reason": reason})))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the message could not be recorded; Genesys will retry: {e}"),
        )),
    }
}

/// How long an agent's attachment may take to arrive: Genesys wants an answer within 10 s.
const ATTACHMENT_FETCH: std::time::Duration = std::time::Duration::from_secs(7);

/// Keeps what Genesys sent that is not (or cannot become) a message, with why.
async fn record_notice(
    state: &AppState,
    tenant: &str,
    kind: &str,
    reason: Option<&str>,
    payload: Value,
) -> Result<(), ApiError> {
    let stream = channel_stream(&format!("genesys-{tenant}"));
    let notice = ProviderNoticeReceived {
        provider: "genesys".into(),
        kind: kind.to_owned(),
        errors: vec![],
        raw: json!({"payload": payload, "reason": reason}),
        received_at: state.clock.now(),
        account_id: None,
    };
    state
        .store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![notice.to_new_event(&stream, Metadata::by(format!("genesys:{tenant}")))],
        )
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the notice could not be recorded; Genesys will retry: {e}"),
            )
        })?;
    tracing::info!(
        tenant,
        kind,
        reason = reason.unwrap_or_default(),
        "Genesys webhook kept as a notice"
    );
    Ok(())
}
