//! How each channel sends: its endpoint, or the setting it lacks, and the limits kept.

use super::*;

/// How the dispatcher sends: each channel's endpoint and the limits it keeps.
#[derive(Debug)]
pub struct DispatchSettings {
    pub endpoints: HashMap<String, Endpoint>,
    /// Channels that cannot send, and the setting each lacks.
    pub unable: BTreeMap<String, String>,
    pub limits: DispatchLimits,
}

impl DispatchSettings {
    /// Resolves each channel's endpoint from its `send` section, its provider's defaults and
    /// the environment. A channel without a token (or a phone number id where the provider
    /// needs one) gets no endpoint: its messages fail with a clear error.
    pub fn new(
        channels: &ChannelsConfigured,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut endpoints = HashMap::new();
        let mut unable = BTreeMap::new();
        for channel in &channels.channels {
            match endpoint(channel, env) {
                Ok(endpoint) => {
                    endpoints.insert(channel.key.clone(), endpoint);
                }
                Err(missing) => {
                    unable.insert(channel.key.clone(), missing);
                }
            }
        }
        let number = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match env(name) {
                Some(v) => v.trim().parse().map_err(|_| ConfigError {
                    source_name: name.to_owned(),
                    message: format!("{v:?} is not a number"),
                }),
                None => Ok(default),
            }
        };
        let defaults = DispatchLimits::default();
        Ok(DispatchSettings {
            endpoints,
            unable,
            limits: DispatchLimits {
                rate_per_second: number(
                    "DISPATCH_RATE_PER_SECOND",
                    u64::from(defaults.rate_per_second),
                )? as u32,
                recipient_interval: Duration::from_millis(number(
                    "DISPATCH_RECIPIENT_INTERVAL_MS",
                    defaults.recipient_interval.as_millis() as u64,
                )?),
                max_attempts: number("DISPATCH_MAX_ATTEMPTS", u64::from(defaults.max_attempts))?
                    as u32,
                first_backoff: Duration::from_millis(number(
                    "DISPATCH_FIRST_BACKOFF_MS",
                    defaults.first_backoff.as_millis() as u64,
                )?),
                max_backoff: defaults.max_backoff,
                unknown_grace: Duration::from_secs(number(
                    "DISPATCH_UNKNOWN_GRACE_SECONDS",
                    defaults.unknown_grace.as_secs(),
                )?),
            },
        })
    }
}

/// The variable that moves a provider's API elsewhere (a sandbox, a proxy, a test's fake) for
/// every channel of that provider without a `send.base_url` of its own, and its default.
pub fn provider_base_url(provider: Provider) -> (&'static str, &'static str) {
    match provider {
        Provider::Meta => ("GRAPH_API_BASE_URL", "https://graph.facebook.com/v21.0"),
        Provider::Pinbot => ("PINBOT_API_BASE_URL", "https://partnersv1.pinbot.ai/v3"),
        Provider::Dialog360 => ("DIALOG360_API_BASE_URL", "https://waba-v2.360dialog.io"),
        Provider::Twilio => ("TWILIO_API_BASE_URL", "https://api.twilio.com"),
    }
}

/// How `channel` sends, or the setting it lacks (named as an operator would fix it).
pub(super) fn endpoint(
    channel: &Channel,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Endpoint, String> {
    let send = &channel.send;
    let secret = |name: &str| env(name).filter(|v| !v.is_empty());
    let (base_env, base_default) = provider_base_url(channel.provider);
    let base = send
        .base_url
        .clone()
        .or_else(|| secret(base_env))
        .unwrap_or_else(|| base_default.to_owned())
        .trim_end_matches('/')
        .to_owned();
    let required = |name: &str| {
        secret(name).ok_or_else(|| format!("the environment variable {name} is not set"))
    };
    let token_env = send.token_env.as_deref();
    let media = send.media.unwrap_or(MediaDelivery::Upload);
    let phone_number_id = || {
        channel.phone_number_id.as_ref().ok_or_else(|| {
            "phone_number_id is not set for this channel in channels.yaml".to_owned()
        })
    };
    match channel.provider {
        Provider::Meta => Ok(Endpoint::CloudApi {
            media,
            url: format!("{base}/{}/messages", phone_number_id()?),
            headers: vec![(
                "Authorization".into(),
                format!("Bearer {}", required(token_env.unwrap_or("WA_API_KEY_1"))?),
            )],
        }),
        Provider::Pinbot => Ok(Endpoint::CloudApi {
            media,
            url: format!("{base}/{}/messages", phone_number_id()?),
            headers: vec![(
                "apikey".into(),
                required(token_env.unwrap_or("WA_API_KEY_1"))?,
            )],
        }),
        Provider::Dialog360 => Ok(Endpoint::CloudApi {
            media,
            url: format!("{base}/messages"),
            headers: vec![(
                "D360-API-KEY".into(),
                required(token_env.unwrap_or("WA_API_KEY_1"))?,
            )],
        }),
        Provider::Twilio => {
            let sid = send.account_sid.clone().ok_or_else(|| {
                "send.account_sid (Twilio's account SID) is not set for this channel in channels.yaml"
                    .to_owned()
            })?;
            Ok(Endpoint::Twilio {
                url: format!("{base}/2010-04-01/Accounts/{sid}/Messages.json"),
                auth_token: required(token_env.unwrap_or("TWILIO_AUTH_TOKEN"))?,
                account_sid: sid,
                from: channel.number.clone(),
            })
        }
    }
}
