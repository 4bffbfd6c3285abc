//! Fetching inbound attachments from providers (WHATSAPP.md §d, §f) into the object store.
//!
//! - **Meta's shape** (Meta, 360dialog, Pinbot): `GET {base}/{media-id}` with the channel's
//!   auth header answers `{url, mime_type, sha256, file_size}` (`file_size` a string or a
//!   number); the `url` works for 5 minutes and only with the same header, so every try asks
//!   for a fresh one. 360dialog serves the file through its own host instead of Meta's
//!   lookaside host.
//! - **Twilio**: `MediaUrl{N}` with HTTP Basic auth (account SID, auth token), sent only to the
//!   API's own host; the URL redirects to a CDN on another host, which gets no credentials.
//!
//! Failures are classified here, once: the provider unreachable, 5xx, 429, an expired or
//! refused link and a file that arrived damaged are retryable; a missing file (404/410), a
//! file over WhatsApp's limit or of the wrong type are not.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatledger_core::media::{
    declared_hash_matches, folder, size_limit, sniff, MediaError, MediaFetcher, MediaSource,
    StoredMedia,
};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::store::{KeepError, MediaStore};

/// Meta's host for media downloads, which 360dialog replaces with its own.
const LOOKASIDE: &str = "https://lookaside.fbsbx.com";

/// How a channel's media is fetched.
#[derive(Clone)]
pub enum MediaApi {
    /// Meta's media API shape, at `base`, with `headers` (the channel's auth). With
    /// `own_download_host`, files are downloaded through `base` instead of Meta's lookaside
    /// host (360dialog).
    CloudApi {
        base: String,
        headers: Vec<(String, String)>,
        own_download_host: bool,
    },
    /// Twilio: media URLs under `base` take HTTP Basic auth with the account SID (configured,
    /// else the one the message came through) and the auth token.
    Twilio {
        base: String,
        account_sid: Option<String>,
        auth_token: Option<String>,
    },
}

impl std::fmt::Debug for MediaApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        match self {
            MediaApi::CloudApi { base, .. } => write!(f, "CloudApi {{ base: {base} }}"),
            MediaApi::Twilio { base, .. } => write!(f, "Twilio {{ base: {base} }}"),
        }
    }
}

/// Each channel's media API (with the credentials in force when asked).
#[async_trait]
pub trait MediaApis: Send + Sync + 'static {
    async fn media_api(&self, channel: &str) -> Result<MediaApi, MediaError>;
}

#[async_trait]
impl MediaApis for HashMap<String, MediaApi> {
    async fn media_api(&self, channel: &str) -> Result<MediaApi, MediaError> {
        self.get(channel).cloned().ok_or_else(|| {
            MediaError::permanent(format!(
                "channel {channel} has no way to fetch media configured"
            ))
        })
    }
}

/// Fetches over HTTP into a [`MediaStore`].
pub struct HttpMediaFetcher {
    client: reqwest::Client,
    store: MediaStore,
    apis: Arc<dyn MediaApis>,
}

impl HttpMediaFetcher {
    pub fn new(store: MediaStore, apis: Arc<dyn MediaApis>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(timeout)
            // Redirects are followed here, so that credentials never follow one elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        HttpMediaFetcher {
            client,
            store,
            apis,
        }
    }
}

/// What the provider said of the file before it was downloaded.
struct Described {
    url: Url,
    /// Headers sent to the URL's own host (and to no other).
    auth: Auth,
    mime: Option<String>,
    sha256: Option<String>,
    size: Option<u64>,
}

#[derive(Clone)]
enum Auth {
    None,
    Headers(Vec<(String, String)>),
    Basic(String, String),
}

fn unreachable_error(e: reqwest::Error) -> MediaError {
    MediaError::transient(format!("the provider could not be reached: {e}"))
}

/// The provider's error from an answer that is not a success.
async fn provider_error(response: reqwest::Response, what: &str) -> MediaError {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let error = &body["error"];
    let code = error["code"].as_i64().or_else(|| body["code"].as_i64());
    let message = error["error_data"]["details"]
        .as_str()
        .or_else(|| error["message"].as_str())
        .or_else(|| body["message"].as_str())
        .map(|m| format!("{what}: HTTP {status}: {m}"))
        .unwrap_or_else(|| format!("{what}: HTTP {status}"));
    let retryable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        // An expired or refused link: the next try asks for a fresh one.
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || status == StatusCode::REQUEST_TIMEOUT;
    MediaError {
        code,
        reason: message,
        retryable,
    }
}

impl HttpMediaFetcher {
    /// Sends a GET to `url`, following up to 5 redirects; `auth` goes only to the first URL's
    /// host.
    async fn get(&self, url: Url, auth: &Auth) -> Result<reqwest::Response, MediaError> {
        let host = (
            url.scheme().to_owned(),
            url.host_str().map(str::to_owned),
            url.port_or_known_default(),
        );
        let mut url = url;
        for _ in 0..=5 {
            let same_host = (
                url.scheme().to_owned(),
                url.host_str().map(str::to_owned),
                url.port_or_known_default(),
            ) == host;
            let mut request = self.client.get(url.clone());
            if same_host {
                request = match auth {
                    Auth::None => request,
                    Auth::Headers(headers) => headers.iter().fold(request, |r, (name, value)| {
                        r.header(name.as_str(), value.as_str())
                    }),
                    Auth::Basic(user, password) => request.basic_auth(user, Some(password)),
                };
            }
            let response = request.send().await.map_err(unreachable_error)?;
            if !response.status().is_redirection() {
                return Ok(response);
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    MediaError::permanent(format!(
                        "the provider answered {} without a usable Location",
                        response.status()
                    ))
                })?;
            url = location;
        }
        Err(MediaError::permanent(
            "the provider redirected more than 5 times",
        ))
    }

    /// Asks the provider where the file is and what it is.
    async fn describe(
        &self,
        api: &MediaApi,
        source: &MediaSource,
    ) -> Result<Described, MediaError> {
        match api {
            MediaApi::CloudApi {
                base,
                headers,
                own_download_host,
            } => {
                let id = source
                    .id
                    .as_deref()
                    .ok_or_else(|| MediaError::permanent("the attachment has no media id"))?;
                let info_url = Url::parse(&format!("{base}/{id}"))
                    .map_err(|e| MediaError::permanent(format!("bad media API URL: {e}")))?;
                let auth = Auth::Headers(headers.clone());
                let response = self.get(info_url, &auth).await?;
                if !response.status().is_success() {
                    return Err(provider_error(response, "asking for the media's link").await);
                }
                let info: Value = response.json().await.map_err(|e| {
                    MediaError::transient(format!("the media API's answer does not read: {e}"))
                })?;
                let mut link = info["url"]
                    .as_str()
                    .ok_or_else(|| MediaError::transient("the media API's answer has no url"))?
                    .to_owned();
                if *own_download_host {
                    link = link.replace(LOOKASIDE, base);
                }
                let size = match &info["file_size"] {
                    Value::String(s) => s.trim().parse().ok(),
                    Value::Number(n) => n.as_u64(),
                    _ => None,
                };
                Ok(Described {
                    url: Url::parse(&link).map_err(|e| {
                        MediaError::transient(format!("the media link does not read: {e}"))
                    })?,
                    auth,
                    mime: info["mime_type"].as_str().map(str::to_owned),
                    sha256: info["sha256"].as_str().map(str::to_owned),
                    size,
                })
            }
            MediaApi::Twilio {
                base,
                account_sid,
                auth_token,
            } => {
                let given = source
                    .url
                    .as_deref()
                    .ok_or_else(|| MediaError::permanent("the attachment has no URL"))?;
                let base_url = Url::parse(&format!("{}/", base.trim_end_matches('/')))
                    .map_err(|e| MediaError::permanent(format!("bad Twilio base URL: {e}")))?;
                // Absolute as Twilio sends them; a relative one is under the API's host.
                let url = base_url.join(given).map_err(|e| {
                    MediaError::permanent(format!("the media URL does not read: {e}"))
                })?;
                let same_host = url.host_str() == base_url.host_str()
                    && url.port_or_known_default() == base_url.port_or_known_default();
                let user = account_sid.clone().or_else(|| source.account.clone());
                let auth = match (user, auth_token, same_host) {
                    (Some(user), Some(token), true) => Auth::Basic(user, token.clone()),
                    _ => Auth::None,
                };
                Ok(Described {
                    url,
                    auth,
                    mime: source.mime_type.clone(),
                    sha256: None,
                    size: None,
                })
            }
        }
    }
}

#[async_trait]
impl MediaFetcher for HttpMediaFetcher {
    async fn fetch(
        &self,
        channel: &str,
        stream: &str,
        source: &MediaSource,
    ) -> Result<StoredMedia, MediaError> {
        let api = self.apis.media_api(channel).await?;
        let described = self.describe(&api, source).await?;
        let limit = size_limit(&source.kind, source.animated.unwrap_or(false));
        if described.size.is_some_and(|size| size > limit.0) {
            return Err(MediaError::permanent(format!(
                "the file is larger than WhatsApp allows ({})",
                limit.1
            )));
        }
        let response = self.get(described.url.clone(), &described.auth).await?;
        if !response.status().is_success() {
            return Err(provider_error(response, "downloading the media").await);
        }
        let header_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let kind = source.kind.clone();
        let body = response.bytes_stream();
        let kept = self
            .store
            .keep(&folder(stream), body, limit, |head| {
                // What the bytes say must fit the kind: an error page is not an image.
                match (sniff(head), kind.as_str()) {
                    (Some(found), "image" | "sticker" | "video" | "audio")
                        if !found.starts_with(&format!("{}/", top_level(&kind))) =>
                    {
                        Err(format!(
                            "the provider sent {found}, not the {kind} it announced"
                        ))
                    }
                    _ => Ok(()),
                }
            })
            .await
            .map_err(|e| match e {
                KeepError::TooLarge(_) => MediaError::permanent(e.to_string()),
                // A page instead of the file: a fresh link may bring the file.
                KeepError::Refused(reason) => MediaError::transient(reason),
                KeepError::Source(_) | KeepError::Store(_) => MediaError::transient(e.to_string()),
            })?;
        let declared = described.sha256.as_deref().or(source.sha256.as_deref());
        let mut actual = [0u8; 32];
        hex::decode_to_slice(&kept.sha256, &mut actual).unwrap_or_default();
        if declared.and_then(|d| declared_hash_matches(d, &actual)) == Some(false) {
            return Err(MediaError::transient(format!(
                "the file arrived damaged: its SHA-256 is {}, the provider declared {}",
                kept.sha256,
                declared.unwrap_or_default()
            )));
        }
        let mime = described
            .mime
            .or(header_type)
            .or_else(|| sniff(&kept.head).map(str::to_owned))
            .unwrap_or_else(|| "application/octet-stream".to_owned());
        Ok(StoredMedia {
            key: kept.key,
            sha256: kept.sha256,
            size: kept.size,
            mime,
            filename: None,
        })
    }
}

/// The MIME top-level type a kind of message carries.
fn top_level(kind: &str) -> &str {
    match kind {
        "sticker" => "image",
        other => other,
    }
}
