//! The transaction system's webhooks: context changes and bookings.
//!
//! Authenticated with `Authorization: Bearer $TRANSACTION_API_TOKEN`; payloads are checked
//! against the JSON Schemas in `schema/http/`, and a refusal names the field at fault.
//! Both are idempotent: the same post twice records once.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chatledger_adapters::whatsapp::signature::secret_matches;
use chatledger_core::booking::{booking_stream, Booking, BookingChange};
use chatledger_core::channel::stakeholder_name;
use chatledger_core::conversation::{
    ConversationCommand, ConversationEvent, ConversationRef, CustomerKey,
};
use chatledger_core::{ExpectedVersion, Metadata};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::{read_body, require_content_type, ApiError};
use crate::state::AppState;

/// Transaction-system payloads are small; anything bigger is a mistake.
const BODY_LIMIT: usize = 64 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/webhook/context_change", post(context_change))
        .route("/api/webhook/booking", post(booking))
        .route("/api/webhook/consent", post(consent))
}

fn bad(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_payload",
        format!("{field}: {message}"),
    )
}

fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.transaction.token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the transaction system's webhooks are closed: TRANSACTION_API_TOKEN is not set",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if secret_matches(expected.expose(), presented.trim()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required; nothing was recorded",
        ))
    }
}

/// Reads, authenticates and validates a transaction-system post against its schema. The
/// top-level `enumerated` fields are taken in any case and with surrounding spaces, and kept
/// in their documented (lowercase) form; a value outside the schema's list is refused with
/// the accepted values named.
async fn payload(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    schema: &jsonschema::Validator,
    enumerated: &[&str],
) -> Result<Value, ApiError> {
    authenticate(state, headers)?;
    require_content_type(headers, "application/json")?;
    let bytes = read_body(body, headers, BODY_LIMIT).await?;
    let mut value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    // Every key and string, at any depth, must be text any store can take.
    chatledger_core::validate::json("", &value, chatledger_core::validate::TEXT_MAX)
        .map_err(|r| bad(&r.field, r.problem))?;
    for field in enumerated {
        if let Some(Value::String(given)) = value.get_mut(*field) {
            *given = given.trim().to_lowercase();
        }
    }
    if let Some(error) = schema.iter_errors(&value).next() {
        let path = error.instance_path().to_string();
        let field = if path.is_empty() {
            "body".to_owned()
        } else {
            path.trim_start_matches('/').replace('/', ".")
        };
        // The validator's own text shortens a long list ("… or 4 other candidates"): name
        // every accepted value.
        if let jsonschema::error::ValidationErrorKind::Enum { options } = error.kind() {
            let accepted: Vec<String> = options
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            return Err(bad(
                &field,
                format!(
                    "{} is not accepted; accepted (in any case): {}",
                    error.instance(),
                    accepted.join(", ")
                ),
            ));
        }
        return Err(bad(&field, error.to_string()));
    }
    Ok(value)
}

fn validator(
    cell: &'static OnceLock<jsonschema::Validator>,
    schema: &str,
) -> &'static jsonschema::Validator {
    cell.get_or_init(|| {
        let schema: Value =
            serde_json::from_str(schema).expect("the schemas in schema/http are valid JSON");
        jsonschema::validator_for(&schema)
            .expect("the schemas in schema/http are valid JSON Schemas")
    })
}

fn context_schema() -> &'static jsonschema::Validator {
    static CELL: OnceLock<jsonschema::Validator> = OnceLock::new();
    validator(
        &CELL,
        include_str!("../../../schema/http/context_change.schema.json"),
    )
}

fn booking_schema() -> &'static jsonschema::Validator {
    static CELL: OnceLock<jsonschema::Validator> = OnceLock::new();
    validator(
        &CELL,
        include_str!("../../../schema/http/booking.schema.json"),
    )
}

fn metadata(kind: &str, now: chrono::DateTime<Utc>) -> Metadata {
    let mut metadata = Metadata::by("transaction-system");
    metadata.correlation_id = Some(Uuid::new_v4());
    metadata.received_at = Some(now);
    metadata.extra.insert("webhook".into(), json!(kind));
    metadata
}

#[derive(Deserialize)]
struct ContextChange {
    customer: String,
    customer_type: String,
    context: serde_json::Map<String, Value>,
}

/// `{customer, customer_type, context: {changed fields}}`.
async fn context_change(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = payload(&state, &headers, body, context_schema(), &[]).await?;
    let change: ContextChange = serde_json::from_value(value).map_err(|e| bad("body", e))?;
    let phone = state.whatsapp.phones.any(&change.customer).ok_or_else(|| {
        bad(
            "customer",
            format!("{:?} is not a phone number", change.customer),
        )
    })?;
    let stakeholder = stakeholder_name(&change.customer_type);
    let configured = &state.whatsapp.configured.channels;
    let channels: Vec<_> = configured
        .iter()
        .filter(|c| c.stakeholder == stakeholder)
        .collect();
    if channels.is_empty() {
        let accepted: BTreeSet<&str> = configured.iter().map(|c| c.stakeholder.as_str()).collect();
        return Err(bad(
            "customer_type",
            format!(
                "no channel serves the stakeholder {:?}; accepted (in any case): {}",
                change.customer_type,
                accepted.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let identity_fields = state.transaction.identity_fields(&stakeholder);
    let metadata = metadata("context_change", state.clock.now());
    let now = state.clock.now();
    let mut chats = Vec::new();
    let mut recorded = false;
    for channel in channels {
        let conversation = ConversationRef {
            channel: channel.key.clone(),
            channel_number: channel.number.clone(),
            stakeholder: channel.stakeholder.clone(),
            customer: CustomerKey::Phone(phone.clone()),
        };
        let stream = conversation.stream();
        let command = ConversationCommand::ChangeContext {
            conversation,
            changes: change.context.clone(),
            identity_fields: identity_fields.clone(),
            new_chat_id: chatledger_core::conversation::new_id(),
            now,
        };
        let handled = state
            .conversations
            .handle(&stream, vec![command], &metadata)
            .await?;
        recorded |= !handled.recorded.is_empty();
        for event in &handled.recorded {
            if let ConversationEvent::ChatOpened {
                chat_id,
                previous_chat_id,
                ..
            } = event
            {
                chats.push(json!({"channel": channel.key, "chat_id": chat_id, "supersedes": previous_chat_id}));
            }
        }
    }
    Ok(Json(json!({
        "status": if recorded { "recorded" } else { "unchanged" },
        "customer": phone,
        "new_chats": chats,
    }))
    .into_response())
}

#[derive(Deserialize)]
struct BookingPost {
    event: BookingChange,
    customer_number: String,
    booking_id: Value,
    ride_datetime: String,
    ride_status: String,
}

/// A ride time: RFC 3339, or a local time without offset read in `timezone`.
fn ride_time(text: &str, timezone: chrono::FixedOffset) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text.trim()) {
        return Some(at.with_timezone(&Utc));
    }
    [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ]
    .iter()
    .find_map(|format| NaiveDateTime::parse_from_str(text.trim(), format).ok())
    .and_then(|naive| timezone.from_local_datetime(&naive).single())
    .map(|at| at.with_timezone(&Utc))
}

/// `{event, customer_number, booking_id, ride_datetime, ride_status}` into `booking-{id}`.
async fn booking(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = payload(
        &state,
        &headers,
        body,
        booking_schema(),
        &["event", "ride_status"],
    )
    .await?;
    let post: BookingPost = serde_json::from_value(value.clone()).map_err(|e| bad("body", e))?;
    let booking_id = match &post.booking_id {
        Value::String(s) => s.trim().to_owned(),
        other => other.to_string(),
    };
    if booking_id.is_empty() {
        return Err(bad("booking_id", "is empty"));
    }
    let customer = state
        .whatsapp
        .phones
        .any(&post.customer_number)
        .ok_or_else(|| {
            bad(
                "customer_number",
                format!("{:?} is not a phone number", post.customer_number),
            )
        })?;
    let ride_at = ride_time(&post.ride_datetime, state.transaction.timezone).ok_or_else(|| {
        bad(
            "ride_datetime",
            format!(
                "{:?} is neither RFC 3339 nor YYYY-MM-DD HH:MM[:SS]",
                post.ride_datetime
            ),
        )
    })?;
    chatledger_core::validate::time("ride_datetime", ride_at)
        .map_err(|r| bad(&r.field, r.problem))?;
    let booking = Booking {
        booking_id: booking_id.clone(),
        customer,
        ride_at,
        ride_status: post.ride_status,
        raw: value,
    };
    let result = state
        .store
        .append(
            &booking_stream(&booking_id),
            ExpectedVersion::Any,
            vec![booking.to_new_event(post.event, metadata("booking", state.clock.now()))],
        )
        .await?;
    Ok(Json(json!({
        "status": if result.is_duplicate() { "duplicate" } else { "recorded" },
        "booking_id": booking_id,
        "ride_at": ride_at,
    }))
    .into_response())
}

fn consent_schema() -> &'static jsonschema::Validator {
    static CELL: OnceLock<jsonschema::Validator> = OnceLock::new();
    validator(
        &CELL,
        include_str!("../../../schema/http/consent.schema.json"),
    )
}

/// A customer's consent as the transaction system took it (a web form, a signup): recorded
/// on the customer when it changes their standing (`unchanged` when it stands so already).
async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    use chatledger_core::consent::{consent_stream, Category, ConsentChange, Method};
    let value = payload(
        &state,
        &headers,
        body,
        consent_schema(),
        &["action", "method"],
    )
    .await?;
    let given = value["customer_number"].as_str().unwrap_or_default();
    let customer = state.whatsapp.phones.any(given).ok_or_else(|| {
        bad(
            "customer_number",
            format!("{given:?} is not a phone number"),
        )
    })?;
    let at = match value["at"].as_str() {
        Some(at) => DateTime::parse_from_rfc3339(at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad("at", format!("{at:?} is not RFC 3339: {e}")))?,
        None => state.clock.now(),
    };
    chatledger_core::validate::time("at", at).map_err(|r| bad(&r.field, r.problem))?;
    let categories: Vec<Category> = value["categories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| match c.as_str() {
            Some("service") => Some(Category::Service),
            Some("marketing") => Some(Category::Marketing),
            _ => None,
        })
        .collect();
    let change = ConsentChange {
        categories,
        method: if value["method"] == "form" {
            Method::Form
        } else {
            Method::Api
        },
        wording_version: value["wording_version"].as_str().map(str::to_owned),
        evidence: value["evidence"].as_str().map(str::to_owned),
        actor: "transaction-system".into(),
        at,
    };
    let key = chatledger_core::conversation::CustomerKey::Phone(customer.clone());
    let standing = state.consent_of(&key).await?;
    let Some(event) = standing.decide(value["action"] == "grant", change) else {
        return Ok(Json(json!({"status": "unchanged", "customer": customer})).into_response());
    };
    let stream = consent_stream(&key);
    let result = state
        .store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![event.to_new_event(&stream, metadata("consent", state.clock.now()))],
        )
        .await?;
    Ok(Json(json!({
        "status": if result.is_duplicate() { "duplicate" } else { "recorded" },
        "customer": customer,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ride_times() {
        let ist = chrono::FixedOffset::east_opt(19800).unwrap();
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            ride_time("2026-11-23T09:30:00+05:30", ist),
            Some(utc("2026-11-23T04:00:00Z"))
        );
        assert_eq!(
            ride_time("2026-11-23 09:30:00", ist),
            Some(utc("2026-11-23T04:00:00Z"))
        );
        assert_eq!(
            ride_time("2026-11-23 09:30", ist),
            Some(utc("2026-11-23T04:00:00Z"))
        );
        assert_eq!(ride_time("tomorrow", ist), None);
    }
}
