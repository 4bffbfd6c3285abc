//! Genesys Cloud Open Messaging over HTTP (GENESYS.md): client-credentials tokens cached per
//! tenant, customers' messages sent to `…/inbound/open/message`, and the webhook signature.
//!
//! Tokens are kept until `expires_in` minus a margin (Genesys sets the lifetime per OAuth
//! client, from 5 minutes to 48 hours) and renewed once however many sends need one at the
//! same moment: the tenant's lock is held while it is asked for. They are never logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use chatledger_core::genesys::{
    BridgeError, Delivered, GenesysIntegration, OpenMessaging, ReceiptToAgent, ToAgent,
};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Mutex;

use crate::media::{Link, MediaStore};

/// Renewed this long before Genesys says a token expires.
const MARGIN: Duration = Duration::from_secs(60);
/// How long a link handed to Genesys for an attachment works: long enough for Genesys to
/// fetch it, also after our retries.
const AGENT_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Whether `header` (`X-Hub-Signature-256`: base64 HMAC-SHA256 of the raw body, with or
/// without `sha256=`) was made with `secret` over `body`. Compared in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let given = header.trim();
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(given) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// One tenant's integration with its client secret.
pub struct Tenant {
    pub integration: GenesysIntegration,
    pub client_secret: String,
}

struct Token {
    value: String,
    renew_at: Instant,
}

/// Open Messaging for every tenant.
pub struct GenesysClient {
    http: reqwest::Client,
    tenants: HashMap<String, Tenant>,
    tokens: HashMap<String, Arc<Mutex<Option<Token>>>>,
    /// Where attachments are kept, and where Genesys reaches chatledger's download route.
    media: Option<(MediaStore, Option<String>)>,
    /// Tokens asked for, for tests and metrics.
    asked: std::sync::atomic::AtomicU64,
}

fn transient(message: String) -> BridgeError {
    BridgeError {
        code: None,
        message,
        transient: true,
    }
}

impl GenesysClient {
    pub fn new(tenants: Vec<Tenant>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        let tokens = tenants
            .iter()
            .map(|t| (t.integration.tenant.clone(), Arc::default()))
            .collect();
        GenesysClient {
            http,
            tenants: tenants
                .into_iter()
                .map(|t| (t.integration.tenant.clone(), t))
                .collect(),
            tokens,
            media: None,
            asked: Default::default(),
        }
    }

    /// Attachments are handed to Genesys as links to `store` (presigned on S3; on the
    /// filesystem under `public_base_url`).
    pub fn with_media(mut self, store: MediaStore, public_base_url: Option<String>) -> Self {
        self.media = Some((store, public_base_url));
        self
    }

    /// How many tokens have been asked for since the start.
    pub fn tokens_asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn tenant(&self, tenant: &str) -> Result<&Tenant, BridgeError> {
        self.tenants.get(tenant).ok_or_else(|| BridgeError {
            code: None,
            message: format!("no Genesys integration is configured for {tenant}"),
            transient: false,
        })
    }

    /// A token for `tenant`, from the cache or asked for once.
    async fn token(&self, tenant: &str) -> Result<String, BridgeError> {
        let config = self.tenant(tenant)?;
        let slot = self.tokens.get(tenant).cloned().unwrap_or_default();
        let mut held = slot.lock().await;
        if let Some(token) = held.as_ref().filter(|t| Instant::now() < t.renew_at) {
            return Ok(token.value.clone());
        }
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let url = format!("{}/oauth/token", config.integration.login_base());
        let response = self
            .http
            .post(&url)
            .basic_auth(&config.integration.client_id, Some(&config.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .map_err(|e| transient(format!("Genesys's login could not be reached: {e}")))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let (Some(value), true) = (body["access_token"].as_str(), status.is_success()) else {
            return Err(BridgeError {
                code: body["error"].as_str().map(str::to_owned),
                message: format!(
                    "Genesys refused the OAuth client of {tenant}: HTTP {status}{}",
                    body["error_description"]
                        .as_str()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
                transient: status.is_server_error() || status.as_u16() == 429,
            });
        };
        let lifetime = Duration::from_secs(body["expires_in"].as_u64().unwrap_or(300));
        // Renewed a minute before it ends, or halfway through a token shorter than two minutes.
        let margin = MARGIN.min(lifetime / 2);
        *held = Some(Token {
            value: value.to_owned(),
            renew_at: Instant::now() + lifetime - margin,
        });
        Ok(value.to_owned())
    }

    /// Forgets `tenant`'s token (Genesys refused it).
    async fn drop_token(&self, tenant: &str) {
        if let Some(slot) = self.tokens.get(tenant) {
            *slot.lock().await = None;
        }
    }

    /// The attachments of `message` as Genesys takes them: links it fetches itself.
    async fn content(&self, message: &ToAgent) -> Result<Vec<Value>, BridgeError> {
        let mut content = Vec::new();
        for attachment in &message.attachments {
            let (store, public_base) = self.media.as_ref().ok_or_else(|| BridgeError {
                code: None,
                message: "the bridge has no object store to link attachments from".into(),
                transient: false,
            })?;
            let link = store
                .link(&attachment.key, AGENT_LINK_TTL, Some(&attachment.mime))
                .await
                .map_err(|e| transient(format!("the object store cannot make a link: {e}")))?;
            let url = match link {
                Link::Presigned(url) => url,
                Link::Route(token) => match public_base {
                    Some(base) => format!("{}/api/media/{token}", base.trim_end_matches('/')),
                    None => {
                        return Err(BridgeError {
                            code: None,
                            message: "handing attachments to Genesys from the filesystem store needs PUBLIC_BASE_URL (where Genesys reaches chatledger)".into(),
                            transient: false,
                        })
                    }
                },
            };
            let media_type = match attachment.mime.split('/').next() {
                Some("image") => "Image",
                Some("video") => "Video",
                Some("audio") => "Audio",
                _ => "File",
            };
            let mut object = json!({"mediaType": media_type, "url": url, "mime": attachment.mime});
            if let Some(filename) = &attachment.filename {
                object["filename"] = json!(filename);
            }
            content.push(json!({"contentType": "Attachment", "attachment": object}));
        }
        Ok(content)
    }
}

impl GenesysClient {
    /// Fetches a file an agent attached (its `url` on Genesys's download host) into
    /// `folder` of the store, held to WhatsApp's limit for its kind. Asked for without
    /// credentials first; on 401/403 again with the tenant's token (GENESYS.md §3 does not
    /// say which the download host wants).
    pub async fn download(
        &self,
        tenant: &str,
        url: &str,
        folder: &str,
        mime: Option<&str>,
        filename: Option<String>,
    ) -> Result<chatledger_core::media::StoredMedia, BridgeError> {
        use chatledger_core::media::{kind_of_mime, size_limit, sniff};
        let (store, _) = self.media.as_ref().ok_or_else(|| BridgeError {
            code: None,
            message: "the bridge has no object store to keep attachments in".into(),
            transient: false,
        })?;
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| transient(format!("the attachment could not be downloaded: {e}")))?;
        if matches!(response.status().as_u16(), 401 | 403) {
            let token = self.token(tenant).await?;
            response = self
                .http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .map_err(|e| transient(format!("the attachment could not be downloaded: {e}")))?;
        }
        let status = response.status();
        if !status.is_success() {
            return Err(BridgeError {
                code: Some(status.as_u16().to_string()),
                message: format!("downloading the agent's attachment: HTTP {status}"),
                transient: status.is_server_error() || status.as_u16() == 429,
            });
        }
        let declared = mime.map(str::to_owned).or_else(|| {
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        let kind = kind_of_mime(declared.as_deref());
        let kept = store
            .keep(
                folder,
                response.bytes_stream(),
                size_limit(kind, false),
                |_| Ok(()),
            )
            .await
            .map_err(|e| BridgeError {
                code: None,
                message: format!("keeping the agent's attachment: {e}"),
                transient: !matches!(e, crate::media::KeepError::TooLarge(_)),
            })?;
        let mime = declared
            .or_else(|| sniff(&kept.head).map(str::to_owned))
            .unwrap_or_else(|| "application/octet-stream".into());
        Ok(chatledger_core::media::StoredMedia {
            key: kept.key,
            sha256: kept.sha256,
            size: kept.size,
            mime,
            filename,
        })
    }
}

impl GenesysClient {
    /// Posts `body` to the tenant's `…/inbound/open/{endpoint}` with its token; the status
    /// and the answer. A 401 drops the token, so that the next try asks for a new one.
    async fn post_inbound(
        &self,
        tenant: &str,
        endpoint: &str,
        body: &Value,
    ) -> Result<(reqwest::StatusCode, Value), BridgeError> {
        let config = self.tenant(tenant)?;
        let url = format!(
            "{}/api/v2/conversations/messages/{}/inbound/open/{endpoint}",
            config.integration.api_base(),
            config.integration.integration_id
        );
        let token = self.token(tenant).await?;
        let response = self
            .http
            .post(&url)
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .map_err(|e| transient(format!("Genesys could not be reached: {e}")))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() == 401 {
            self.drop_token(tenant).await;
        }
        Ok((status, answer))
    }
}

/// Genesys's answer that is not a success, as an error: its code and message; retryable for
/// 5xx, 429, 408 and an expired token (401, renewed on the next try).
fn refusal(status: reqwest::StatusCode, answer: &Value) -> BridgeError {
    BridgeError {
        code: answer["code"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| Some(status.as_u16().to_string())),
        message: answer["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}")),
        transient: status.is_server_error() || matches!(status.as_u16(), 401 | 408 | 429),
    }
}

#[async_trait]
impl OpenMessaging for GenesysClient {
    async fn send_to_agent(&self, message: &ToAgent) -> Result<Delivered, BridgeError> {
        let mut from = json!({"id": message.from, "idType": "Opaque"});
        if let Some(nickname) = &message.nickname {
            from["nickname"] = json!(nickname);
        }
        let mut body = json!({
            "channel": {
                "messageId": message.message_id,
                "from": from,
                "time": message.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
            "text": message.text,
        });
        let content = self.content(message).await?;
        if !content.is_empty() {
            body["content"] = Value::Array(content);
        }
        let (status, answer) = self
            .post_inbound(
                &message.tenant,
                "message?prefetchConversationId=true",
                &body,
            )
            .await?;
        if !status.is_success() {
            return Err(refusal(status, &answer));
        }
        Ok(Delivered {
            id: answer["id"].as_str().map(str::to_owned),
            conversation_id: answer["conversationId"].as_str().map(str::to_owned),
        })
    }

    async fn send_receipt(&self, receipt: &ReceiptToAgent) -> Result<(), BridgeError> {
        let mut body = json!({
            "id": receipt.genesys_message_id,
            "channel": {
                "to": {"id": receipt.to, "idType": "Opaque"},
                "time": receipt.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            },
            "status": receipt.status,
            "direction": "Outbound",
            "isFinalReceipt": receipt.status != "Delivered",
        });
        if let Some((code, message)) = &receipt.reason {
            body["reasons"] = json!([{"code": code, "message": message}]);
        }
        let (status, answer) = self.post_inbound(&receipt.tenant, "receipt", &body).await?;
        if !status.is_success() {
            return Err(refusal(status, &answer));
        }
        // A 200 may still say the receipt failed, with reasons; a `Failed` we sent is echoed
        // as `Failed` (README: assumed where Genesys's documentation is silent).
        if answer["status"] == "Failed" && receipt.status != "Failed" {
            let reasons = answer["reasons"].as_array().cloned().unwrap_or_default();
            let code = reasons
                .first()
                .and_then(|r| r["code"].as_str())
                .map(str::to_owned);
            let message = reasons
                .iter()
                .map(|r| {
                    format!(
                        "{}: {}",
                        r["code"].as_str().unwrap_or("?"),
                        r["message"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(BridgeError {
                transient: reasons.iter().any(|r| r["code"] == "RateLimited"),
                code,
                message: format!("Genesys answered the receipt Failed: {message}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixtures_signature_vector_holds_raw_bytes_only() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/genesys/01-webhook-outbound-text.json"
        ))
        .unwrap();
        let secret = b"chatledger-genesys-secret-0001";
        let header = "sha256=sYfdWQCzNlOtDx6kgW6RF27yp2E95hVV9GYcW/8W+hk=";
        assert!(signature_valid(secret, &body, header));
        assert!(signature_valid(
            secret,
            &body,
            header.trim_start_matches("sha256=")
        ));
        assert!(!signature_valid(b"another-secret-of-length", &body, header));
        // The body as Genesys's own sample re-serialises it: another MAC.
        let reserialised =
            serde_json::to_vec(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
        assert!(!signature_valid(secret, &reserialised, header));
        assert!(!signature_valid(secret, &body, "sha256=not base64!"));
    }
}
