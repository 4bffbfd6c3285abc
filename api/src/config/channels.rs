//! `channels.yaml`: our numbers, how their webhooks are authenticated, and its problems.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelsFile {
    default_country: String,
    #[serde(default)]
    channels: Vec<ChannelEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChannelEntry {
    key: String,
    number: String,
    stakeholder: String,
    #[serde(default)]
    business: Option<String>,
    provider: Provider,
    #[serde(default)]
    phone_number_id: Option<String>,
    #[serde(default)]
    auth: Option<AuthEntry>,
    #[serde(default)]
    send: ChannelSend,
}

/// A channel's `auth`: its checks, or the word `none` (webhooks taken unauthenticated, on
/// purpose: a private network).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum AuthEntry {
    Word(String),
    Checks(ChannelAuth),
}

/// How a request fared against its channel's authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    Passed,
    /// The channel says `auth: none`: taken without a check, on purpose (the server says so
    /// at start).
    Open,
    /// No check of the channel has its secret set: every request is refused until one is.
    NotConfigured,
    Failed,
}

/// Everything the WhatsApp webhooks need, resolved at start.
#[derive(Debug)]
pub struct WhatsAppSettings {
    /// The channels as configured, for recording as a config event.
    pub configured: ChannelsConfigured,
    by_key: HashMap<String, usize>,
    by_phone_number_id: HashMap<String, usize>,
    pub phones: PhoneNormalizer,
    pub verify_token: Option<Secret>,
    pub meta_app_secret: Option<Secret>,
    pub twilio_auth_token: Option<Secret>,
    /// The public URL Twilio calls (scheme and host, e.g. `https://chat.example.com`), when
    /// the server sits behind a proxy.
    pub public_base_url: Option<String>,
    pub body_limit: usize,
    /// The most messages, receipts and changes one webhook may carry (`WEBHOOK_MAX_ITEMS`).
    pub max_items: usize,
    header_secrets: HashMap<String, Secret>,
}

impl WhatsAppSettings {
    /// Reads `channels.yaml`; a missing file means no channels.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let source_name = path.display().to_string();
        let error = |message: String| ConfigError {
            source_name: source_name.clone(),
            message,
        };
        let configured = match std::fs::read_to_string(path) {
            Ok(text) => parse_channels(&text, &source_name).map_err(error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ChannelsConfigured {
                default_country: "IN".into(),
                channels: vec![],
                source: format!("{source_name} (not found: no channels)"),
            },
            Err(e) => return Err(error(format!("cannot be read: {e}"))),
        };
        Self::new(configured, env)
    }

    /// Resolves a channel configuration against the environment.
    pub fn new(
        configured: ChannelsConfigured,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            source_name: configured.source.clone(),
            message,
        };
        let phones = PhoneNormalizer::new(&configured.default_country)
            .map_err(|e| error(format!("default_country: {e}")))?;
        let mut by_key = HashMap::new();
        let mut by_phone_number_id = HashMap::new();
        let mut header_secrets = HashMap::new();
        // Keys and phone number ids are unique: `read_channels` refuses a file that repeats one.
        for (i, channel) in configured.channels.iter().enumerate() {
            by_key.insert(channel.key.clone(), i);
            if let Some(id) = &channel.phone_number_id {
                by_phone_number_id.insert(id.clone(), i);
            }
            if let Some(header) = &channel.auth.secret_header {
                if let Some(value) = env(&header.env).filter(|v| !v.is_empty()) {
                    header_secrets.insert(header.env.clone(), Secret::new(value));
                }
            }
        }
        let secret = |name: &str| env(name).filter(|v| !v.is_empty()).map(Secret::new);
        let count = |name: &str, default: usize, unit: &str| match env(name) {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    error(format!(
                        "{name} must be a number of {unit} above 0, not {v:?}"
                    ))
                }),
            None => Ok(default),
        };
        let body_limit = count("WEBHOOK_BODY_LIMIT", DEFAULT_BODY_LIMIT, "bytes")?;
        let max_items = count("WEBHOOK_MAX_ITEMS", DEFAULT_MAX_ITEMS, "items")?;
        Ok(WhatsAppSettings {
            by_key,
            by_phone_number_id,
            phones,
            verify_token: secret("WEBHOOK_VERIFY_TOKEN"),
            meta_app_secret: secret("META_APP_SECRET"),
            twilio_auth_token: secret("TWILIO_AUTH_TOKEN"),
            public_base_url: env("PUBLIC_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_owned())
                .filter(|u| !u.is_empty()),
            body_limit,
            max_items,
            header_secrets,
            configured,
        })
    }

    pub fn channel(&self, key: &str) -> Option<&Channel> {
        self.by_key.get(key).map(|&i| &self.configured.channels[i])
    }

    pub fn channel_by_phone_number_id(&self, id: &str) -> Option<&Channel> {
        self.by_phone_number_id
            .get(id)
            .map(|&i| &self.configured.channels[i])
    }

    /// Keys of channels open on purpose (`auth: none`).
    pub fn open_channels(&self) -> Vec<&str> {
        self.configured
            .channels
            .iter()
            .filter(|c| c.auth.open)
            .map(|c| c.key.as_str())
            .collect()
    }

    /// Channels whose webhooks are all refused because no secret of their checks is set, each
    /// with the settings that would let them in.
    pub fn closed_channels(&self) -> Vec<(&str, String)> {
        self.configured
            .channels
            .iter()
            .filter(|c| !c.auth.open && !self.has_check(&c.auth))
            .map(|c| (c.key.as_str(), needed_secrets(&c.auth)))
            .collect()
    }

    fn has_check(&self, auth: &ChannelAuth) -> bool {
        (auth.meta_signature && self.meta_app_secret.is_some())
            || (auth.twilio_signature && self.twilio_auth_token.is_some())
            || auth
                .secret_header
                .as_ref()
                .is_some_and(|h| self.header_secrets.contains_key(&h.env))
    }

    /// Whether the request carries the channel's secret header with the configured value.
    fn secret_header_passes(&self, auth: &ChannelAuth, headers: &HeaderMap) -> bool {
        let Some(configured) = &auth.secret_header else {
            return false;
        };
        match (
            self.header_secrets.get(&configured.env),
            header(headers, &configured.name),
        ) {
            (Some(secret), Some(presented)) => secret_matches(secret.expose(), presented),
            _ => false,
        }
    }

    /// Authenticates a Meta-format webhook (`X-Hub-Signature-256` or a secret header) for
    /// `auth` against the raw body bytes.
    pub fn authenticate_meta(
        &self,
        auth: &ChannelAuth,
        headers: &HeaderMap,
        body: &[u8],
    ) -> AuthOutcome {
        if auth.open {
            return AuthOutcome::Open;
        }
        if !self.has_check(auth) {
            return AuthOutcome::NotConfigured;
        }
        if auth.meta_signature {
            if let (Some(secret), Some(signature)) = (
                &self.meta_app_secret,
                header(headers, "x-hub-signature-256"),
            ) {
                if meta_signature_valid(secret.expose().as_bytes(), body, signature) {
                    return AuthOutcome::Passed;
                }
            }
        }
        if self.secret_header_passes(auth, headers) {
            return AuthOutcome::Passed;
        }
        AuthOutcome::Failed
    }
}

impl WhatsAppSettings {
    /// Authenticates a Twilio callback: `X-Twilio-Signature` over the URL Twilio called and
    /// every form field, or a secret header.
    pub fn authenticate_twilio(
        &self,
        auth: &ChannelAuth,
        headers: &HeaderMap,
        url: &str,
        params: &[(String, String)],
    ) -> AuthOutcome {
        if auth.open {
            return AuthOutcome::Open;
        }
        if !self.has_check(auth) {
            return AuthOutcome::NotConfigured;
        }
        if auth.twilio_signature {
            if let (Some(token), Some(signature)) = (
                &self.twilio_auth_token,
                header(headers, "x-twilio-signature"),
            ) {
                if twilio_signature_valid(token.expose().as_bytes(), url, params, signature) {
                    return AuthOutcome::Passed;
                }
            }
        }
        if self.secret_header_passes(auth, headers) {
            return AuthOutcome::Passed;
        }
        AuthOutcome::Failed
    }
}

/// The settings whose value would let a channel's checks pass, in words.
pub fn needed_secrets(auth: &ChannelAuth) -> String {
    let mut needed = Vec::new();
    if auth.meta_signature {
        needed.push("META_APP_SECRET".to_owned());
    }
    if auth.twilio_signature {
        needed.push("TWILIO_AUTH_TOKEN".to_owned());
    }
    if let Some(header) = &auth.secret_header {
        needed.push(header.env.clone());
    }
    if needed.is_empty() {
        "a check in channels.yaml (meta_signature, twilio_signature or secret_header), or auth: none".to_owned()
    } else {
        needed.join(" or ")
    }
}

/// Records the channel configuration as a `ChannelsConfigured` event when it differs from
/// the last recorded version. Returns whether it recorded one.
pub async fn record_channels(
    store: &dyn EventStore,
    configured: &ChannelsConfigured,
) -> Result<bool, StoreError> {
    let data = serde_json::to_value(configured).map_err(|e| StoreError::Invalid(e.to_string()))?;
    record_config(store, CHANNELS_CONFIG_STREAM, "ChannelsConfigured", data).await
}

pub(super) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Reads the text of a channels.yaml; `source` names it in the result and in errors. Every
/// problem is named (see [`read_channels`]); this joins them.
pub fn parse_channels(text: &str, source: &str) -> Result<ChannelsConfigured, String> {
    let (configured, problems) = read_channels(text, source);
    match configured {
        Some(configured) if problems.is_empty() => Ok(configured),
        _ => Err(problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// Reads the text of a channels.yaml: the channels (when it parses), and every problem found.
pub fn read_channels(text: &str, source: &str) -> (Option<ChannelsConfigured>, Vec<Problem>) {
    let file: ChannelsFile = match serde_yaml_ng::from_str(text) {
        Ok(file) => file,
        Err(e) => return (None, vec![Problem::yaml(&e)]),
    };
    let mut problems = Vec::new();
    if let Err(e) = PhoneNormalizer::new(&file.default_country) {
        problems.push(Problem::new(
            Spot::Mention("default_country".into()),
            format!("default_country: {e}"),
        ));
    }
    let mut channels = Vec::with_capacity(file.channels.len());
    let mut keys = std::collections::HashSet::new();
    let mut phone_number_ids = std::collections::HashSet::new();
    for (n, entry) in file.channels.into_iter().enumerate() {
        let spot = Spot::Entry { key: "channels", n };
        let mut problem = |message: String| problems.push(Problem::new(spot.clone(), message));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if entry.key.is_empty()
            || !entry
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            problem(format!(
                "channel key {:?} must be letters, digits, '-' or '_'",
                entry.key
            ));
        }
        if !keys.insert(entry.key.clone()) {
            problem(format!("channel key {:?} appears twice", entry.key));
        }
        if let Some(id) = &entry.phone_number_id {
            if !phone_number_ids.insert(id.clone()) {
                problem(format!("phone_number_id {id:?} appears twice"));
            }
        }
        if !digits(&entry.number) {
            problem(format!(
                "channel {}: number {:?} must be international digits without '+'",
                entry.key, entry.number
            ));
        }
        if entry.stakeholder.trim().is_empty() {
            problem(format!("channel {}: stakeholder is empty", entry.key));
        }
        let auth = match entry.auth {
            None => default_auth(entry.provider),
            Some(AuthEntry::Checks(auth)) => auth,
            Some(AuthEntry::Word(word)) if word == "none" => ChannelAuth {
                open: true,
                ..ChannelAuth::default()
            },
            Some(AuthEntry::Word(word)) => {
                problem(format!(
                    "channel {}: auth must be `none` or a map of checks, not {word:?}",
                    entry.key
                ));
                ChannelAuth::default()
            }
        };
        channels.push(Channel {
            key: entry.key,
            number: entry.number,
            stakeholder: stakeholder_name(&entry.stakeholder),
            business: entry.business.unwrap_or_else(|| "default".into()),
            provider: entry.provider,
            phone_number_id: entry.phone_number_id,
            auth,
            send: entry.send,
        });
    }
    let configured = ChannelsConfigured {
        default_country: file.default_country,
        channels,
        source: source.to_owned(),
    };
    (Some(configured), problems)
}

/// What a channel without an `auth` section checks: the provider's own signature.
pub(super) fn default_auth(provider: Provider) -> ChannelAuth {
    ChannelAuth {
        open: false,
        meta_signature: provider != Provider::Twilio,
        secret_header: None,
        twilio_signature: provider == Provider::Twilio,
    }
}
