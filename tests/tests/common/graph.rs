//! A local Graph API: the endpoints of Embedded Signup, token upkeep and sending, as Meta
//! documents them (WHATSAPP.md §c, §e). It checks what it receives (app id and secret, the
//! bearer token, the register body) and answers Meta's way, errors included; tests script
//! failures per endpoint and read back every request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::{META_APP_ID, META_APP_SECRET};

/// The number the fake reports for every phone number id.
pub const DISPLAY_NUMBER: &str = "+1 555-010-4242";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct GraphRequest {
    /// `exchange`, `extend`, `debug_token`, `subscribed_apps`, `register`, `phone_number`,
    /// `messages` or `unknown`.
    pub endpoint: &'static str,
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

#[derive(Default)]
struct GraphState {
    requests: Vec<GraphRequest>,
    failures: HashMap<&'static str, VecDeque<(u16, Value)>>,
    /// Issued tokens and their `expires_at` (unix seconds; 0: never).
    tokens: HashMap<String, i64>,
    revoked: HashSet<String>,
    /// `expires_at` of the next token issued.
    next_expiry: i64,
    issued: u32,
}

#[derive(Clone)]
pub struct FakeGraph {
    pub url: String,
    state: Arc<Mutex<GraphState>>,
}

/// Meta's error body.
pub fn meta_error(code: i64, kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGhIjK"}})
}

fn refuse(status: u16, body: Value) -> (StatusCode, Json<Value>) {
    (StatusCode::from_u16(status).unwrap(), Json(body))
}

impl FakeGraph {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(GraphState {
            next_expiry: chrono::Utc::now().timestamp() + 60 * 24 * 3600,
            ..GraphState::default()
        }));
        let handler_state = state.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let state = handler_state.clone();
            async move { answer(&state, request).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeGraph { url, state }
    }

    /// The next call to `endpoint` answers `status` with `body` (then the next, …).
    pub fn fail_next(&self, endpoint: &'static str, status: u16, body: Value) {
        self.state
            .lock()
            .unwrap()
            .failures
            .entry(endpoint)
            .or_default()
            .push_back((status, body));
    }

    /// Tokens issued from now on expire at `at` (unix seconds; 0: never).
    pub fn tokens_expire_at(&self, at: i64) {
        self.state.lock().unwrap().next_expiry = at;
    }

    /// Meta stops accepting every token issued so far (sends answer 190).
    pub fn revoke_all(&self) {
        let mut state = self.state.lock().unwrap();
        let tokens: Vec<String> = state.tokens.keys().cloned().collect();
        state.revoked.extend(tokens);
    }

    pub fn requests(&self) -> Vec<GraphRequest> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn calls(&self, endpoint: &str) -> Vec<GraphRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.endpoint == endpoint)
            .collect()
    }

    /// Every token issued, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut tokens: Vec<String> = state.tokens.keys().cloned().collect();
        tokens.sort_by_key(|t| t.split('x').nth(1).and_then(|n| n.parse::<u32>().ok()));
        tokens
    }
}

async fn answer(state: &Mutex<GraphState>, request: Request) -> (StatusCode, Json<Value>) {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .skip(1) // the version
        .collect();
    let endpoint = match (&method, segments.as_slice()) {
        (&Method::GET, ["oauth", "access_token"]) => {
            if query.get("grant_type").map(String::as_str) == Some("fb_exchange_token") {
                "extend"
            } else {
                "exchange"
            }
        }
        (&Method::GET, ["debug_token"]) => "debug_token",
        (&Method::POST, [_, "subscribed_apps"]) => "subscribed_apps",
        (&Method::POST, [_, "register"]) => "register",
        (&Method::POST, [_, "messages"]) => "messages",
        (&Method::GET, [_]) => "phone_number",
        _ => "unknown",
    };
    let mut state = state.lock().unwrap();
    state.requests.push(GraphRequest {
        endpoint,
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
    });
    if let Some((status, body)) = state
        .failures
        .get_mut(endpoint)
        .and_then(VecDeque::pop_front)
    {
        return refuse(status, body);
    }
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let bad_token = || {
        refuse(
            401,
            json!({"error": {"message": "Error validating access token: Session has expired on Sunday, 22-Nov-26 10:00:00 PST.",
                "type": "OAuthException", "code": 190, "error_subcode": 463, "fbtrace_id": "AbCdEfGhIjK"}}),
        )
    };
    let token_ok = |state: &GraphState| {
        bearer
            .as_ref()
            .is_some_and(|t| state.tokens.contains_key(t) && !state.revoked.contains(t))
    };
    let app_ok = query.get("client_id").map(String::as_str) == Some(META_APP_ID)
        && query.get("client_secret").map(String::as_str) == Some(META_APP_SECRET);
    match endpoint {
        "exchange" | "extend" => {
            if !app_ok {
                return refuse(
                    400,
                    meta_error(1, "OAuthException", "Error validating client secret."),
                );
            }
            if endpoint == "exchange" && query.get("code").is_none_or(|c| c.is_empty()) {
                return refuse(
                    400,
                    meta_error(100, "OAuthException", "Missing code parameter."),
                );
            }
            if endpoint == "extend"
                && !query
                    .get("fb_exchange_token")
                    .is_some_and(|t| state.tokens.contains_key(t))
            {
                return bad_token();
            }
            state.issued += 1;
            let token = format!(
                "EAAGfakex{}x{}",
                state.issued,
                uuid::Uuid::new_v4().simple()
            );
            let expiry = state.next_expiry;
            state.tokens.insert(token.clone(), expiry);
            refuse(200, json!({"access_token": token, "token_type": "bearer"}))
        }
        "debug_token" => {
            if query.get("access_token").map(String::as_str)
                != Some(format!("{META_APP_ID}|{META_APP_SECRET}").as_str())
            {
                return refuse(
                    400,
                    meta_error(
                        190,
                        "OAuthException",
                        "Invalid OAuth access token - Cannot parse access token",
                    ),
                );
            }
            let input = query.get("input_token").cloned().unwrap_or_default();
            match state.tokens.get(&input) {
                Some(expires_at) => refuse(
                    200,
                    json!({"data": {"app_id": META_APP_ID, "type": "USER", "application": "chatledger test",
                        "data_access_expires_at": expires_at, "expires_at": expires_at, "is_valid": true,
                        "issued_at": chrono::Utc::now().timestamp(),
                        "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
                        "granular_scopes": [{"scope": "whatsapp_business_management", "target_ids": ["102290129340398"]}],
                        "user_id": "10229"}}),
                ),
                None => refuse(
                    200,
                    json!({"data": {"is_valid": false, "error": {"code": 190, "message": "Invalid OAuth access token."}, "scopes": []}}),
                ),
            }
        }
        "subscribed_apps" | "phone_number" => {
            if !token_ok(&state) {
                return bad_token();
            }
            if endpoint == "subscribed_apps" {
                refuse(200, json!({"success": true}))
            } else {
                refuse(
                    200,
                    json!({"display_phone_number": DISPLAY_NUMBER, "verified_name": "Acme Rides",
                        "code_verification_status": "VERIFIED", "quality_rating": "GREEN", "id": segments[0]}),
                )
            }
        }
        "register" => {
            if !token_ok(&state) {
                return bad_token();
            }
            let pin_ok = body["pin"]
                .as_str()
                .is_some_and(|p| p.len() == 6 && p.chars().all(|c| c.is_ascii_digit()));
            if body["messaging_product"] != "whatsapp" || !pin_ok {
                return refuse(
                    400,
                    meta_error(100, "OAuthException", "(#100) Invalid parameter"),
                );
            }
            refuse(200, json!({"success": true}))
        }
        "messages" => {
            if !token_ok(&state) {
                return bad_token();
            }
            let to = body["to"].clone();
            let n = state.requests.len();
            refuse(
                200,
                json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                    "messages": [{"id": format!("wamid.graph.{n}")}]}),
            )
        }
        _ => refuse(
            400,
            meta_error(
                100,
                "GraphMethodException",
                &format!("Unsupported request: {method} {path}"),
            ),
        ),
    }
}
