//! Sending through providers over HTTP: Meta's Cloud API message shape (Meta itself,
//! Pinbot, 360dialog) and Twilio's Messages API.
//!
//! Failures are classified here, once: HTTP 5xx, 429, timeouts and Meta's rate-limit codes
//! are transient (the dispatcher retries them with backoff); anything else is permanent.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chatledger_core::channel::MediaDelivery;
use chatledger_core::media::{kind_of_mime, StoredMedia};
use chatledger_core::sender::{MessageSender, OutboundMessage, SendError, Sent};
use serde_json::{json, Value};

use crate::media::{Link, MediaStore};

/// How long a link handed to a provider works: long enough for it to fetch the file, also
/// after our retries.
const PROVIDER_LINK_TTL: Duration = Duration::from_secs(24 * 3600);

/// Meta error codes that mean "slow down" or "try again".
const META_TRANSIENT_CODES: [i64; 7] = [1, 2, 4, 80007, 130429, 131000, 131056];

/// How a channel's messages are sent.
#[derive(Clone)]
pub enum Endpoint {
    /// `POST url` with a Cloud API JSON body and `headers` (e.g. `Authorization: Bearer …`,
    /// `apikey: …`, `D360-API-KEY: …`).
    CloudApi {
        url: String,
        headers: Vec<(String, String)>,
        /// How attachments reach it: uploaded to `…/media` first, or by link.
        media: MediaDelivery,
    },
    /// `POST url` (…/Accounts/{sid}/Messages.json) form-encoded, HTTP Basic auth, from our
    /// WhatsApp number.
    Twilio {
        url: String,
        account_sid: String,
        auth_token: String,
        from: String,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        match self {
            Endpoint::CloudApi { url, headers, .. } => {
                let names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
                write!(f, "CloudApi {{ url: {url}, headers: {names:?} }}")
            }
            Endpoint::Twilio { url, .. } => write!(f, "Twilio {{ url: {url} }}"),
        }
    }
}

/// Sends over HTTP to each channel's endpoint.
pub struct HttpSender {
    client: reqwest::Client,
    endpoints: HashMap<String, Endpoint>,
    /// Why a channel without an endpoint has none (the setting it lacks).
    missing: HashMap<String, String>,
    /// Where attachments are kept, and the public address of chatledger's download route.
    media: Option<(MediaStore, Option<String>)>,
}

impl HttpSender {
    pub fn new(endpoints: HashMap<String, Endpoint>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        HttpSender {
            client,
            endpoints,
            missing: HashMap::new(),
            media: None,
        }
    }

    /// The same sender, sending attachments kept in `store`; `public_base_url` is where
    /// providers reach chatledger's download route (needed for links on the filesystem).
    pub fn with_media(mut self, store: MediaStore, public_base_url: Option<String>) -> Self {
        self.media = Some((store, public_base_url));
        self
    }

    /// The same sender, saying for each channel in `missing` which setting it lacks when a
    /// message for it fails.
    pub fn with_missing(mut self, missing: impl IntoIterator<Item = (String, String)>) -> Self {
        self.missing = missing.into_iter().collect();
        self
    }
}

/// How an attachment is named to the provider: by the id an upload gave it, or by a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaRef {
    Id(String),
    Link(String),
}

/// The Cloud API body of a message (DESIGN: WHATSAPP.md §c); `media` names its attachment.
pub fn cloud_api_body(message: &OutboundMessage, media: Option<&MediaRef>) -> Value {
    let to = message.to.trim_start_matches('+');
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "biz_opaque_callback_data": message.message_id,
    });
    if let (Some(stored), Some(reference)) = (&message.media, media) {
        let kind = kind_of_mime(Some(&stored.mime));
        let mut object = match reference {
            MediaRef::Id(id) => json!({"id": id}),
            MediaRef::Link(link) => json!({"link": link}),
        };
        // Captions go with images, videos and documents only (WhatsApp refuses them on audio
        // and stickers); documents also keep their file name.
        if let Some(caption) = message
            .text
            .as_ref()
            .filter(|_| matches!(kind, "image" | "video" | "document"))
        {
            object["caption"] = json!(caption);
        }
        if let Some(filename) = stored.filename.as_ref().filter(|_| kind == "document") {
            object["filename"] = json!(filename);
        }
        body["type"] = json!(kind);
        body[kind] = object;
        return body;
    }
    match (&message.template, &message.text) {
        (Some(template), _) => {
            let mut t = json!({"name": template.name, "language": {"code": template.language}});
            if !template.params.is_empty() {
                let parameters: Vec<Value> = template
                    .params
                    .iter()
                    .map(|p| json!({"type": "text", "text": p}))
                    .collect();
                t["components"] = json!([{"type": "body", "parameters": parameters}]);
            }
            body["type"] = json!("template");
            body["template"] = t;
        }
        (None, text) => {
            body["type"] = json!("text");
            body["text"] = json!({"preview_url": false, "body": text.clone().unwrap_or_default()});
        }
    }
    body
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn network_error(e: reqwest::Error) -> SendError {
    SendError {
        code: None,
        message: format!("the provider could not be reached: {e}"),
        transient: true,
        retry_after: None,
        ours: false,
    }
}

#[async_trait]
impl MessageSender for HttpSender {
    async fn send(&self, channel: &str, message: &OutboundMessage) -> Result<Sent, SendError> {
        let endpoint = self.endpoints.get(channel).ok_or_else(|| SendError {
            code: None,
            message: match self.missing.get(channel) {
                Some(missing) => format!("channel {channel} cannot send: {missing}"),
                None => format!("channel {channel} has no way to send configured"),
            },
            transient: false,
            retry_after: None,
            ours: false,
        })?;
        self.send_to(endpoint, message).await
    }
}

impl HttpSender {
    /// Sends `message` to `endpoint`.
    pub async fn send_to(
        &self,
        endpoint: &Endpoint,
        message: &OutboundMessage,
    ) -> Result<Sent, SendError> {
        match endpoint {
            Endpoint::CloudApi {
                url,
                headers,
                media,
            } => {
                let reference = match &message.media {
                    Some(stored) => Some(match media {
                        MediaDelivery::Upload => {
                            MediaRef::Id(self.upload(url, headers, stored).await?)
                        }
                        MediaDelivery::Link => MediaRef::Link(self.public_link(stored).await?),
                    }),
                    None => None,
                };
                let mut request = self.client.post(url);
                for (name, value) in headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                let response = request
                    .json(&cloud_api_body(message, reference.as_ref()))
                    .send()
                    .await
                    .map_err(network_error)?;
                let status = response.status();
                let wait = retry_after(&response);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    return body["messages"][0]["id"]
                        .as_str()
                        .map(|id| Sent {
                            provider_message_id: id.to_owned(),
                        })
                        .ok_or_else(|| SendError {
                            code: None,
                            message: format!("the provider answered {status} without a message id"),
                            transient: false,
                            retry_after: None,
                            ours: false,
                        });
                }
                let error = &body["error"];
                let code = error["code"].as_i64();
                let text = error["error_data"]["details"]
                    .as_str()
                    .or_else(|| error["message"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {status}"));
                Err(SendError {
                    code,
                    message: text,
                    transient: status.is_server_error()
                        || status.as_u16() == 429
                        || code.is_some_and(|c| META_TRANSIENT_CODES.contains(&c)),
                    retry_after: wait,
                    ours: false,
                })
            }
            Endpoint::Twilio {
                url,
                account_sid,
                auth_token,
                from,
            } => {
                if message.template.is_some() || (message.text.is_none() && message.media.is_none())
                {
                    return Err(SendError {
                        code: None,
                        message: "templates over Twilio need a Content SID, which chatledger does not configure yet".into(),
                        transient: false,
                        retry_after: None,
                        ours: false,
                    });
                }
                let to = if message.to.starts_with('+') {
                    format!("whatsapp:{}", message.to)
                } else {
                    message.to.clone()
                };
                let mut form = vec![
                    ("To", to),
                    (
                        "From",
                        format!("whatsapp:+{}", from.trim_start_matches('+')),
                    ),
                ];
                if let Some(text) = &message.text {
                    form.push(("Body", text.clone()));
                }
                // Twilio takes attachments only as links it fetches.
                if let Some(stored) = &message.media {
                    form.push(("MediaUrl", self.public_link(stored).await?));
                }
                let response = self
                    .client
                    .post(url)
                    .basic_auth(account_sid, Some(auth_token))
                    .form(&form)
                    .send()
                    .await
                    .map_err(network_error)?;
                let status = response.status();
                let wait = retry_after(&response);
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status.is_success() {
                    if let Some(sid) = body["sid"].as_str() {
                        return Ok(Sent {
                            provider_message_id: sid.to_owned(),
                        });
                    }
                }
                Err(SendError {
                    code: body["code"].as_i64(),
                    message: body["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("HTTP {status}")),
                    transient: status.is_server_error() || status.as_u16() == 429,
                    retry_after: wait,
                    ours: false,
                })
            }
        }
    }
}

impl HttpSender {
    fn media_store(&self) -> Result<&(MediaStore, Option<String>), SendError> {
        self.media
            .as_ref()
            .ok_or_else(|| permanent("this sender has no object store to send attachments from"))
    }

    /// A link the provider fetches the attachment by, without credentials.
    async fn public_link(&self, stored: &StoredMedia) -> Result<String, SendError> {
        let (store, public_base) = self.media_store()?;
        match store
            .link(&stored.key, PROVIDER_LINK_TTL, Some(&stored.mime))
            .await
            .map_err(|e| transient(format!("the object store cannot make a link: {e}")))?
        {
            Link::Presigned(url) => Ok(url),
            Link::Route(token) => match public_base {
                Some(base) => Ok(format!("{}/api/media/{token}", base.trim_end_matches('/'))),
                None => Err(permanent(
                    "sending an attachment by link from the filesystem store needs PUBLIC_BASE_URL (where the provider reaches chatledger), or send.media: upload",
                )),
            },
        }
    }

    /// Uploads the attachment to the provider's media endpoint (`…/media` beside
    /// `…/messages`), streamed from the store; the id it gives.
    async fn upload(
        &self,
        messages_url: &str,
        headers: &[(String, String)],
        stored: &StoredMedia,
    ) -> Result<String, SendError> {
        let (store, _) = self.media_store()?;
        let url = match messages_url.strip_suffix("/messages") {
            Some(base) => format!("{base}/media"),
            None => {
                return Err(permanent(format!(
                    "cannot tell the media endpoint beside {messages_url}"
                )))
            }
        };
        let (size, body) = store
            .get(&stored.key)
            .await
            .map_err(|e| transient(format!("the object store failed: {e}")))?
            .ok_or_else(|| {
                permanent(format!(
                    "the attachment {} is no longer in the object store",
                    stored.key
                ))
            })?;
        let file =
            reqwest::multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), size)
                .file_name(
                    stored
                        .filename
                        .clone()
                        .unwrap_or_else(|| stored.sha256.clone()),
                )
                .mime_str(&stored.mime)
                .map_err(|e| {
                    permanent(format!(
                        "the attachment's type {:?} does not read: {e}",
                        stored.mime
                    ))
                })?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", stored.mime.clone())
            .part("file", file);
        let mut request = self.client.post(&url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request
            .multipart(form)
            .send()
            .await
            .map_err(network_error)?;
        let status = response.status();
        let wait = retry_after(&response);
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            if let Some(id) = body["id"].as_str() {
                return Ok(id.to_owned());
            }
        }
        let error = &body["error"];
        let code = error["code"].as_i64();
        Err(SendError {
            code,
            message: format!(
                "uploading the attachment failed: {}",
                error["error_data"]["details"]
                    .as_str()
                    .or_else(|| error["message"].as_str())
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("HTTP {status}"))
            ),
            transient: status.is_server_error()
                || status.as_u16() == 429
                || code.is_some_and(|c| META_TRANSIENT_CODES.contains(&c)),
            retry_after: wait,
            ours: false,
        })
    }
}

fn permanent(message: impl Into<String>) -> SendError {
    SendError {
        code: None,
        message: message.into(),
        transient: false,
        retry_after: None,
        ours: false,
    }
}

/// A failure on our side (the object store), worth retrying; says nothing of the provider.
fn transient(message: impl Into<String>) -> SendError {
    SendError {
        code: None,
        message: message.into(),
        transient: true,
        retry_after: None,
        ours: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatledger_core::conversation::Template;

    #[test]
    fn cloud_api_bodies() {
        let text = OutboundMessage {
            message_id: "m1".into(),
            to: "+919638120888".into(),
            text: Some("Hello".into()),
            template: None,
            media: None,
        };
        assert_eq!(
            cloud_api_body(&text, None),
            json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "919638120888",
                   "biz_opaque_callback_data": "m1", "type": "text", "text": {"preview_url": false, "body": "Hello"}})
        );
        let template = OutboundMessage {
            template: Some(Template {
                name: "rating_request".into(),
                language: "en".into(),
                params: vec!["Asha".into()],
            }),
            text: None,
            ..text
        };
        let body = cloud_api_body(&template, None);
        assert_eq!(body["type"], "template");
        assert_eq!(body["template"]["language"]["code"], "en");
        assert_eq!(
            body["template"]["components"][0]["parameters"][0]["text"],
            "Asha"
        );
    }
}
