//! Where media is kept and how each channel's media is fetched and sent.

use std::path::Path;

use chatledger_adapters::media::{MediaApi, MediaStore, StoreUrl};
use chatledger_projections::media::MediaLimits;

use super::*;

/// The largest upload an executive may send: WhatsApp's limit for documents.
pub const UPLOAD_LIMIT: u64 = 100 * 1024 * 1024;

/// Media: the object store, each configured channel's media API, and how the reactor tries.
pub struct MediaSettings {
    pub store: MediaStore,
    /// Each configured channel's media API (official channels get theirs from onboarding).
    pub apis: HashMap<String, MediaApi>,
    pub limits: MediaLimits,
    /// How long a download link handed to the dashboard works (`MEDIA_LINK_TTL_SECONDS`).
    pub link_ttl: Duration,
    /// Whether each webhook request's raw body is archived to the store
    /// (`ARCHIVE_WEBHOOKS=true`).
    pub archive_webhooks: bool,
}

impl MediaSettings {
    /// The store ([`open_store`]), each configured channel's media API and the reactor's
    /// limits, from the environment.
    pub fn load(
        channels: &ChannelsConfigured,
        env: &dyn Fn(&str) -> Option<String>,
        data_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let store = open_store(env, data_dir)?;
        let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let error = |name: &str, message: String| ConfigError {
            source_name: name.to_owned(),
            message,
        };
        let apis = channels
            .channels
            .iter()
            .filter_map(|channel| Some((channel.key.clone(), media_api(channel, env)?)))
            .collect();
        let seconds = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match set(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| error(name, format!("{v:?} is not a whole number above 0"))),
            }
        };
        let defaults = MediaLimits::default();
        Ok(MediaSettings {
            store,
            apis,
            limits: MediaLimits {
                max_attempts: seconds("MEDIA_MAX_ATTEMPTS", u64::from(defaults.max_attempts))?
                    as u32,
                first_backoff: Duration::from_millis(seconds(
                    "MEDIA_FIRST_BACKOFF_MS",
                    defaults.first_backoff.as_millis() as u64,
                )?),
                max_backoff: defaults.max_backoff,
                concurrency: seconds("MEDIA_CONCURRENCY", defaults.concurrency as u64)? as usize,
            },
            link_ttl: Duration::from_secs(seconds("MEDIA_LINK_TTL_SECONDS", 300)?),
            archive_webhooks: set("ARCHIVE_WEBHOOKS").is_some_and(|v| v.trim() == "true"),
        })
    }
}

/// Opens the store `MEDIA_STORE_URL` names (default: `chatledger-media` in `data_dir`).
/// Download links are signed with `MEDIA_LINK_SECRET`, else with a key derived from
/// `JWT_SECRET_KEY`, else (links then last only as long as the process) with a random one.
pub fn open_store(
    env: &dyn Fn(&str) -> Option<String>,
    data_dir: &Path,
) -> Result<MediaStore, ConfigError> {
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let error = |message: String| ConfigError {
        source_name: "MEDIA_STORE_URL".to_owned(),
        message,
    };
    let url = match set("MEDIA_STORE_URL") {
        Some(url) => StoreUrl::parse(url.trim()).map_err(error)?,
        None => StoreUrl::Local(data_dir.join("chatledger-media")),
    };
    let secret = set("MEDIA_LINK_SECRET")
        .or_else(|| set("JWT_SECRET_KEY"))
        .map(String::into_bytes)
        .unwrap_or_else(|| uuid::Uuid::new_v4().as_bytes().to_vec());
    MediaStore::open(&url, env, &secret).map_err(error)
}

/// How `channel`'s inbound media is fetched, from its provider's defaults and the
/// environment; `None` without the token its provider needs (its attachments then fail with
/// that reason).
pub(super) fn media_api(
    channel: &Channel,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<MediaApi> {
    let secret = |name: &str| env(name).filter(|v| !v.is_empty());
    let (base_env, base_default) = provider_base_url(channel.provider);
    let base = channel
        .send
        .base_url
        .clone()
        .or_else(|| secret(base_env))
        .unwrap_or_else(|| base_default.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let token_env = channel.send.token_env.as_deref();
    let token = || secret(token_env.unwrap_or("WA_API_KEY_1"));
    Some(match channel.provider {
        Provider::Meta => MediaApi::CloudApi {
            base,
            headers: vec![("Authorization".into(), format!("Bearer {}", token()?))],
            own_download_host: false,
        },
        Provider::Pinbot => MediaApi::CloudApi {
            base,
            headers: vec![("apikey".into(), token()?)],
            own_download_host: false,
        },
        Provider::Dialog360 => MediaApi::CloudApi {
            base,
            headers: vec![("D360-API-KEY".into(), token()?)],
            own_download_host: true,
        },
        Provider::Twilio => MediaApi::Twilio {
            base,
            account_sid: channel.send.account_sid.clone(),
            auth_token: secret(token_env.unwrap_or("TWILIO_AUTH_TOKEN")),
        },
    })
}
