//! The Graph API calls of Embedded Signup and token upkeep (WHATSAPP.md §e), against Meta
//! directly or a BSP that fronts it (its base URL and auth header).
//!
//! Errors are read from Meta's `{"error": {...}}` body; a failure to reach the API is
//! reported without the URL, whose query carries the app secret.

use std::time::Duration;

use chatledger_core::credential::GraphError;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};

/// Where the Graph API is and how to reach it.
#[derive(Clone)]
pub struct ApiProvider {
    /// `meta` or the BSP's name (e.g. `360dialog`): recorded with the credential.
    pub name: String,
    /// Including the version, e.g. `https://graph.facebook.com/v21.0`.
    pub base_url: String,
    /// A header the BSP wants on every call (name, value).
    pub header: Option<(String, String)>,
}

impl std::fmt::Debug for ApiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ApiProvider {{ name: {}, base_url: {}, header: {:?} }}",
            self.name,
            self.base_url,
            self.header.as_ref().map(|(name, _)| name)
        )
    }
}

/// What `debug_token` says about a token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub is_valid: bool,
    /// `None`: it never expires.
    pub expires_at: Option<DateTime<Utc>>,
    pub token_type: Option<String>,
    pub scopes: Vec<String>,
}

/// A number as WhatsApp shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhoneNumber {
    /// Digits only.
    pub display_phone_number: String,
    pub verified_name: Option<String>,
}

/// The app's identity towards the Graph API.
#[derive(Clone)]
pub struct App {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "App {{ id: {} }}", self.id)
    }
}

/// A Graph API client.
#[derive(Clone, Debug)]
pub struct GraphApi {
    client: reqwest::Client,
    pub provider: ApiProvider,
}

/// Reads Meta's error body (or says what the answer lacked).
fn graph_error(status: reqwest::StatusCode, body: &Value) -> GraphError {
    let error = &body["error"];
    GraphError {
        http_status: Some(status.as_u16()),
        code: error["code"].as_i64(),
        subcode: error["error_subcode"].as_i64(),
        kind: error["type"].as_str().map(str::to_owned),
        message: error["error_user_msg"]
            .as_str()
            .or_else(|| error["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}")),
        fbtrace_id: error["fbtrace_id"].as_str().map(str::to_owned),
    }
}

fn unreachable(e: reqwest::Error) -> GraphError {
    GraphError::local(format!(
        "the Graph API could not be reached: {}",
        e.without_url()
    ))
}

impl GraphApi {
    pub fn new(provider: ApiProvider, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        GraphApi { client, provider }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.provider.base_url.trim_end_matches('/'))
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Result<Value, GraphError> {
        let request = match &self.provider.header {
            Some((name, value)) => request.header(name.as_str(), value.as_str()),
            None => request,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() && body.get("error").is_none() {
            Ok(body)
        } else {
            Err(graph_error(status, &body))
        }
    }

    /// `GET /oauth/access_token?client_id&client_secret&code`: the business token.
    pub async fn exchange_code(&self, app: &App, code: &str) -> Result<String, GraphError> {
        let body = self
            .call(self.client.get(self.url("oauth/access_token")).query(&[
                ("client_id", app.id.as_str()),
                ("client_secret", app.secret.as_str()),
                ("code", code),
            ]))
            .await?;
        access_token(&body)
    }

    /// `GET /oauth/access_token?grant_type=fb_exchange_token…`: a longer-lived token for an
    /// expiring one, as Meta documents for long-lived tokens.
    pub async fn extend_token(&self, app: &App, token: &str) -> Result<String, GraphError> {
        let body = self
            .call(self.client.get(self.url("oauth/access_token")).query(&[
                ("grant_type", "fb_exchange_token"),
                ("client_id", app.id.as_str()),
                ("client_secret", app.secret.as_str()),
                ("fb_exchange_token", token),
            ]))
            .await?;
        access_token(&body)
    }

    /// `GET /debug_token?input_token&access_token=APP_ID|APP_SECRET`.
    pub async fn debug_token(&self, app: &App, token: &str) -> Result<TokenInfo, GraphError> {
        let app_token = format!("{}|{}", app.id, app.secret);
        let body = self
            .call(
                self.client
                    .get(self.url("debug_token"))
                    .query(&[("input_token", token), ("access_token", app_token.as_str())]),
            )
            .await?;
        let data = &body["data"];
        if !data.is_object() {
            return Err(GraphError::local("debug_token answered without `data`"));
        }
        let expires_at = match data["expires_at"].as_i64() {
            None | Some(0) => None,
            Some(seconds) => Utc.timestamp_opt(seconds, 0).single(),
        };
        Ok(TokenInfo {
            is_valid: data["is_valid"].as_bool().unwrap_or(false),
            expires_at,
            token_type: data["type"].as_str().map(str::to_owned),
            scopes: data["scopes"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// `POST /{waba_id}/subscribed_apps`: our app receives the WABA's webhooks.
    pub async fn subscribe_app(&self, waba_id: &str, token: &str) -> Result<(), GraphError> {
        let body = self
            .call(
                self.client
                    .post(self.url(&format!("{waba_id}/subscribed_apps")))
                    .bearer_auth(token),
            )
            .await?;
        success(&body, "subscribed_apps")
    }

    /// `POST /{phone_number_id}/register` with the two-step verification PIN.
    pub async fn register(
        &self,
        phone_number_id: &str,
        token: &str,
        pin: &str,
    ) -> Result<(), GraphError> {
        let body = self
            .call(
                self.client
                    .post(self.url(&format!("{phone_number_id}/register")))
                    .bearer_auth(token)
                    .json(&json!({"messaging_product": "whatsapp", "pin": pin})),
            )
            .await?;
        success(&body, "register")
    }

    /// `GET /{phone_number_id}?fields=display_phone_number,verified_name`.
    pub async fn phone_number(
        &self,
        phone_number_id: &str,
        token: &str,
    ) -> Result<PhoneNumber, GraphError> {
        let body = self
            .call(
                self.client
                    .get(self.url(phone_number_id))
                    .query(&[("fields", "display_phone_number,verified_name")])
                    .bearer_auth(token),
            )
            .await?;
        let digits: String = body["display_phone_number"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        if digits.is_empty() {
            return Err(GraphError::local(
                "the phone number answered without display_phone_number",
            ));
        }
        Ok(PhoneNumber {
            display_phone_number: digits,
            verified_name: body["verified_name"].as_str().map(str::to_owned),
        })
    }
}

fn access_token(body: &Value) -> Result<String, GraphError> {
    body["access_token"]
        .as_str()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| GraphError::local("the Graph API answered without an access_token"))
}

fn success(body: &Value, call: &str) -> Result<(), GraphError> {
    if body["success"].as_bool() == Some(true) {
        Ok(())
    } else {
        Err(GraphError::local(format!(
            "{call} did not answer success: true"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_as_meta_writes_them() {
        let body = json!({"error": {"message": "Error validating access token: Session has expired", "type": "OAuthException",
            "code": 190, "error_subcode": 463, "fbtrace_id": "A1b2"}});
        let error = graph_error(reqwest::StatusCode::UNAUTHORIZED, &body);
        assert_eq!(error.code, Some(190));
        assert_eq!(error.subcode, Some(463));
        assert_eq!(error.kind.as_deref(), Some("OAuthException"));
        assert!(error.token_rejected());
        assert_eq!(
            error.to_string(),
            "(190) Error validating access token: Session has expired"
        );
        let bare = graph_error(reqwest::StatusCode::BAD_GATEWAY, &Value::Null);
        assert_eq!(bare.message, "HTTP 502 Bad Gateway");
        assert!(!bare.token_rejected());
    }

    #[test]
    fn the_provider_never_prints_its_header_value() {
        let provider = ApiProvider {
            name: "360dialog".into(),
            base_url: "https://waba-v2.360dialog.io".into(),
            header: Some(("D360-API-KEY".into(), "very-secret".into())),
        };
        let printed = format!(
            "{:?}",
            GraphApi::new(provider.clone(), Duration::from_secs(1))
        );
        assert!(printed.contains("D360-API-KEY"));
        assert!(!printed.contains("very-secret"));
        let app = App {
            id: "1".into(),
            secret: "app-secret".into(),
        };
        assert!(!format!("{app:?}").contains("app-secret"));
    }
}
