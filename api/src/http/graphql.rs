//! The transports of the GraphQL schema, and the other dashboard endpoints: login and the
//! plain JSON feed.

use async_graphql::http::{GraphiQLSource, ALL_WEBSOCKET_PROTOCOLS};
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::{read_body, require_content_type, ApiError, ClientIp};
use crate::auth::{AuthError, TokenFacts, Viewer};
use crate::graphql::{
    login, visible_chat, visible_executive, visible_message, ChatledgerSchema, ViewerResult,
};
use crate::state::AppState;
use axum::body::Body;
use chatledger_core::executive::ExecutiveStatusChanged;
use chatledger_core::RecordedEvent;
use serde_json::Value;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/ws", get(json_feed))
        .route("/api/auth/login", post(login_http))
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// The largest GraphQL request without a valid token: a `login` and nothing big.
const ANONYMOUS_BODY_LIMIT: usize = 16 * 1024;

/// `POST /graphql`. The token is checked before the body is read: without one, a body past
/// [`ANONYMOUS_BODY_LIMIT`] is refused (413) unread; with one, past `GRAPHQL_BODY_LIMIT`. A
/// request whose input the schema's guard refuses (a NUL character, a second `login`) is a
/// 400 with `BAD_USER_INPUT`; other errors follow GraphQL's convention of a 200.
async fn graphql(
    State(state): State<AppState>,
    Extension(schema): Extension<ChatledgerSchema>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (viewer, facts): (ViewerResult, Option<TokenFacts>) =
        match state.viewer(authorization(&headers)).await {
            Ok((viewer, facts)) => (Ok(viewer), facts),
            Err(e) => (Err(e), None),
        };
    state.rates.admit(
        crate::rate::Limit::Graphql,
        &crate::rate::key(viewer.as_ref().ok(), client),
    )?;
    let limit = if viewer.is_ok() {
        state.limits.graphql_body
    } else {
        ANONYMOUS_BODY_LIMIT.min(state.limits.graphql_body)
    };
    require_content_type(&headers, "application/json")?;
    let bytes = read_body(body, &headers, limit).await?;
    let request: async_graphql::Request = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("expected a GraphQL request {{\"query\": …, \"variables\": …}}: {e}"),
        )
    })?;
    let mut request = request.data(viewer);
    if let Some(facts) = facts {
        request = request.data(facts);
    }
    if let Some(ip) = client {
        request = request.data(crate::graphql::ClientAddress(ip));
    }
    let response = schema.execute(request).await;
    let refused_input = response.data == async_graphql::Value::Null
        && response
            .errors
            .iter()
            .any(|e| e.extensions.as_ref().and_then(|x| x.get("field")).is_some());
    let status = if refused_input {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    Ok((status, GraphQLResponse::from(response)).into_response())
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// The token of a `graphql-transport-ws` `connection_init` payload:
/// `{"Authorization": "Bearer …"}` or `{"token": "…"}`.
async fn connection_viewer(
    state: &AppState,
    payload: &serde_json::Value,
) -> Result<(Viewer, Option<TokenFacts>), AuthError> {
    let header = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
        .or_else(|| {
            payload
                .get("token")
                .and_then(|v| v.as_str())
                .map(|t| format!("Bearer {t}"))
        });
    state.viewer(header.as_deref()).await
}

/// Resolves when the token `signed_in` holds (once the connection has signed in) ends:
/// logged out, or its executive deactivated, given another role or a new password.
async fn token_ended(state: &AppState, signed_in: &SignedIn) {
    let mut ended = state.sessions.subscribe();
    loop {
        if ended.changed().await.is_err() {
            return std::future::pending().await;
        }
        let current = signed_in.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((viewer, facts)) = current {
            if state.sessions.standing(&viewer, facts.as_ref()).is_err() {
                return;
            }
        }
    }
}

/// Whom a live connection signed in as, once it has.
type SignedIn = std::sync::Arc<std::sync::Mutex<Option<(Viewer, Option<TokenFacts>)>>>;

async fn graphql_ws(
    State(state): State<AppState>,
    Extension(schema): Extension<ChatledgerSchema>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            let signed_in = SignedIn::default();
            let (init_state, init_signed_in) = (state.clone(), signed_in.clone());
            let serve = GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    // A bad token closes the connection at init, with the reason.
                    let (viewer, facts) = connection_viewer(&init_state, &payload)
                        .await
                        .map_err(|e| async_graphql::Error::new(e.to_string()))?;
                    *init_signed_in.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((viewer.clone(), facts.clone()));
                    let mut data = Data::default();
                    data.insert::<ViewerResult>(Ok(viewer));
                    if let Some(facts) = facts {
                        data.insert(facts);
                    }
                    Ok(data)
                })
                .serve();
            // A token that ends closes the connection (dropping it closes the socket).
            tokio::select! {
                () = serve => {}
                () = token_ended(&state, &signed_in) => {}
            }
        })
}

#[derive(Deserialize)]
struct FeedQuery {
    token: Option<String>,
}

/// `GET /ws?token=JWT`: the plain JSON event feed.
async fn json_feed(
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = query
        .token
        .ok_or_else(|| unauthorized(AuthError::Missing))?;
    let signed_in = state
        .viewer_from_token(&token)
        .await
        .map_err(unauthorized)?;
    Ok(upgrade.on_upgrade(move |socket| feed(socket, state, signed_in)))
}

async fn feed(mut socket: WebSocket, state: AppState, signed_in: (Viewer, Option<TokenFacts>)) {
    let viewer = signed_in.0.clone();
    let signed_in: SignedIn = std::sync::Arc::new(std::sync::Mutex::new(Some(signed_in)));
    let mut events = Box::pin(crate::live::events(state.live.subscribe()));
    let ended = token_ended(&state, &signed_in);
    tokio::pin!(ended);
    loop {
        tokio::select! {
            () = &mut ended => {
                let _ = socket.send(WsMessage::Close(Some(axum::extract::ws::CloseFrame {
                    code: 4401,
                    reason: "the token was ended; log in again".into(),
                }))).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            next = events.next() => {
                                let Some(event) = next else { return };
                let Some((kind, data)) = feed_frame(&state, &viewer, &event).await else { continue };
                let frame = json!({"type": kind, "position": event.position, "data": data});
                if socket.send(WsMessage::Text(frame.to_string().into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the feed says about an event the viewer may see: `message_received`,
/// `chat_assigned`, `chat_reassigned`, `tag_updated`, `executive_status`.
async fn feed_frame(
    state: &AppState,
    viewer: &crate::auth::Viewer,
    event: &RecordedEvent,
) -> Option<(&'static str, Value)> {
    match event.event_type.as_str() {
        "MessageReceived" => {
            let (stakeholder, message) = visible_message(state, viewer, event).await?;
            Some((
                "message_received",
                json!({
                    "chat_id": event.data.get("chat_id"),
                    "stakeholder": stakeholder,
                    "message_id": message.message_id.as_str(),
                    "provider_message_id": message.provider_message_id,
                    "kind": message.kind,
                    "text": message.text,
                    "at": message.at,
                }),
            ))
        }
        "ChatAssigned" => Some(("chat_assigned", chat_frame(state, viewer, event).await?)),
        "ChatReassigned" => Some(("chat_reassigned", chat_frame(state, viewer, event).await?)),
        "TagApplied" | "TagRemoved" => {
            Some(("tag_updated", chat_frame(state, viewer, event).await?))
        }
        "SlaAlertRaised" | "SlaEscalated" => {
            let mut frame = chat_frame(state, viewer, event).await?;
            frame["level"] = json!(if event.event_type == "SlaEscalated" {
                "escalation"
            } else {
                "alert"
            });
            for key in [
                "due_at",
                "fired_at",
                "policy_version",
                "threshold_seconds",
                "clock_started_at",
            ] {
                frame[key] = event.data.get(key).cloned().unwrap_or_default();
            }
            Some(("sla_alert", frame))
        }
        ExecutiveStatusChanged::EVENT_TYPE => Some((
            "executive_status",
            visible_executive(state, viewer, event).await?.feed_json(),
        )),
        _ => None,
    }
}

/// A chat with the assignment that moved it: the rule, the candidates, who it was before.
async fn chat_frame(
    state: &AppState,
    viewer: &crate::auth::Viewer,
    event: &RecordedEvent,
) -> Option<Value> {
    let mut frame = visible_chat(state, viewer, event).await?.feed_json();
    for key in ["rule", "candidates", "previous", "executive", "by", "tag"] {
        if let Some(value) = event.data.get(key) {
            frame[key] = value.clone();
        }
    }
    Some(frame)
}

fn unauthorized(e: AuthError) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
}

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

/// `POST /api/auth/login` `{email, password}` → `{token, expires_at, executive}`.
async fn login_http(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let body = read_body(body, &headers, LOGIN_BODY_LIMIT).await?;
    let request: LoginRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            format!("expected {{\"email\": …, \"password\": …}}: {e}"),
        )
    })?;
    match login(&state, &request.email, &request.password, client).await {
        Ok(payload) => Ok(Json(json!({
            "token": payload.token,
            "expires_at": payload.expires_at,
        }))
        .into_response()),
        Err(e @ (AuthError::NotConfigured | AuthError::Unavailable(_))) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "logins_unavailable",
            e.to_string(),
        )),
        Err(AuthError::RefusedInput(reason)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_value",
            reason,
        )),
        Err(e @ AuthError::TooManyAttempts(seconds)) => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                e.to_string(),
            );
            error.retry_after = Some(seconds);
            Err(error)
        }
        Err(e @ AuthError::Locked(_)) => Err(ApiError::new(
            StatusCode::LOCKED,
            "account_locked",
            e.to_string(),
        )),
        Err(e @ AuthError::Deactivated) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "deactivated",
            e.to_string(),
        )),
        Err(e) => Err(unauthorized(e)),
    }
}

/// A login's body is an email and a password.
const LOGIN_BODY_LIMIT: usize = 16 * 1024;
