//! A local Genesys Cloud that speaks Open Messaging's documented wire format (GENESYS.md):
//! the OAuth token endpoint (client credentials, `expires_in`), the inbound message and
//! receipt endpoints (checking the bearer token and the body's required fields, answering
//! with the shapes in the fixtures), and a download URL for agents' attachments.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{json, Value};

/// A file an agent attached: its type and bytes.
type Download = (String, Vec<u8>);

/// One tenant's OAuth client and integration, as the fake knows them.
#[derive(Clone)]
pub struct FakeTenant {
    pub client_id: String,
    pub client_secret: String,
    pub integration_id: String,
}

/// A request the fake received on an inbound endpoint.
#[derive(Clone, Debug)]
pub struct Received {
    pub integration_id: String,
    pub endpoint: String,
    pub token: String,
    pub body: Value,
}

#[derive(Clone)]
pub struct FakeGenesys {
    pub url: String,
    tenants: Arc<Vec<FakeTenant>>,
    /// Tokens handed out: value → integration id.
    tokens: Arc<Mutex<HashMap<String, String>>>,
    pub tokens_issued: Arc<AtomicUsize>,
    /// The `expires_in` of the next tokens.
    pub expires_in: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    /// The next inbound calls that answer 503.
    outage: Arc<AtomicUsize>,
    /// Files agents attach, served at `/downloads/{id}`.
    files: Arc<Mutex<HashMap<String, Download>>>,
    /// The next receipt calls answered 200 with `status: "Failed"`.
    failed_receipts: Arc<AtomicUsize>,
}

impl FakeGenesys {
    pub async fn start(tenants: Vec<FakeTenant>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let fake = FakeGenesys {
            url,
            tenants: Arc::new(tenants),
            tokens: Default::default(),
            tokens_issued: Default::default(),
            expires_in: Arc::new(AtomicUsize::new(3600)),
            received: Default::default(),
            outage: Default::default(),
            files: Default::default(),
            failed_receipts: Default::default(),
        };
        let state = fake.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move { state.answer(request).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        fake
    }

    /// The `genesys.yaml` entry of `tenant`, talking to this fake.
    pub fn yaml(&self, tenant: &str, fake: &FakeTenant, channels: &[&str], env: &str) -> String {
        format!(
            "  - tenant: {tenant}\n    region: mypurecloud.com\n    client_id: {}\n    client_secret_env: {env}_CLIENT_SECRET\n    integration_id: {}\n    webhook_secret_env: {env}_WEBHOOK_SECRET\n    channels: [{}]\n    api_url: {}\n    login_url: {}\n",
            fake.client_id,
            fake.integration_id,
            channels.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", "),
            self.url,
            self.url
        )
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn outage(&self, n: usize) {
        self.outage.store(n, Ordering::SeqCst);
    }

    pub fn fail_next_receipts(&self, n: usize) {
        self.failed_receipts.store(n, Ordering::SeqCst);
    }

    pub fn serve_download(&self, id: &str, mime: &str, bytes: Vec<u8>) {
        self.files
            .lock()
            .unwrap()
            .insert(id.to_owned(), (mime.to_owned(), bytes));
    }

    async fn answer(&self, request: axum::extract::Request) -> axum::response::Response {
        let path = request.uri().path().to_owned();
        let authorization = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = axum::body::to_bytes(request.into_body(), 1 << 24)
            .await
            .unwrap_or_default();
        let take = |counter: &AtomicUsize| {
            counter
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        if path == "/oauth/token" {
            let given = authorization
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let form = String::from_utf8_lossy(&bytes);
            let Some(tenant) = self
                .tenants
                .iter()
                .find(|t| given == format!("{}:{}", t.client_id, t.client_secret))
            else {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(
                        json!({"error": "invalid_client", "error_description": "client not found"}),
                    ),
                )
                    .into_response();
            };
            if form != "grant_type=client_credentials" {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": "unsupported_grant_type"})),
                )
                    .into_response();
            }
            let n = self.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
            let token = format!("token-{}-{n}", tenant.client_id);
            self.tokens
                .lock()
                .unwrap()
                .insert(token.clone(), tenant.integration_id.clone());
            return axum::Json(json!({"access_token": token, "token_type": "bearer",
                "expires_in": self.expires_in.load(Ordering::SeqCst)}))
            .into_response();
        }
        if let Some(id) = path.strip_prefix("/api/v2/downloads/") {
            return match self.files.lock().unwrap().get(id).cloned() {
                Some((mime, bytes)) => ([("content-type", mime)], bytes).into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            };
        }
        // /api/v2/conversations/messages/{integrationId}/inbound/open/{endpoint}
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let ["api", "v2", "conversations", "messages", integration, "inbound", "open", endpoint] =
            parts.as_slice()
        else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let token = authorization
            .strip_prefix("Bearer ")
            .unwrap_or_default()
            .to_owned();
        if self.tokens.lock().unwrap().get(&token).map(String::as_str) != Some(*integration) {
            return (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Invalid login credentials.", "code": "bad.credentials", "status": 401}))).into_response();
        }
        if take(&self.outage) {
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"message": "Service Unavailable", "code": "service.unavailable", "status": 503}))).into_response();
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let n = {
            let mut received = self.received.lock().unwrap();
            received.push(Received {
                integration_id: integration.to_string(),
                endpoint: endpoint.to_string(),
                token,
                body: body.clone(),
            });
            received.len()
        };
        match *endpoint {
            "message" => {
                let channel = &body["channel"];
                if channel["from"]["id"].as_str().is_none() || channel["time"].as_str().is_none() {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "channel.from.id and channel.time are required", "code": "bad.request", "status": 400}))).into_response();
                }
                if body["text"].as_str().is_none_or(str::is_empty)
                    && body["content"].as_array().is_none_or(Vec::is_empty)
                {
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"message": "should have required property 'content', should have required property '.text', should match some schema in anyOf", "code": "bad.request", "status": 400}))).into_response();
                }
                // One conversation per customer address.
                let conversation = format!(
                    "conv-{}",
                    channel["from"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .replace(['|', '+'], "-")
                );
                axum::Json(
                    json!({"id": format!("genesys-in-{n}"), "channel": channel, "type": "Text",
                    "direction": "Inbound", "conversationId": conversation}),
                )
                .into_response()
            }
            "receipt" => {
                // Refused with reasons (a 200 that says Failed), or echoed as sent.
                let refused = take(&self.failed_receipts);
                let status = if refused {
                    "Failed"
                } else {
                    body["status"].as_str().unwrap_or("Delivered")
                };
                let mut answer: Value = serde_json::from_str(include_str!(
                    "../../fixtures/genesys/10-receipt-response-delivered.json"
                ))
                .unwrap();
                answer["id"] = body["id"].clone();
                answer["status"] = json!(status);
                answer["reasons"] = if refused {
                    json!([{"code": "RateLimited", "message": "you have reached your limit"}])
                } else {
                    body["reasons"].clone()
                };
                axum::Json(answer).into_response()
            }
            _ => axum::Json(json!({})).into_response(),
        }
    }
}
