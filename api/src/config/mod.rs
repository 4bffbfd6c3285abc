//! Configuration: `config/channels.yaml` and the secrets the environment holds for it.
//!
//! Files describe channels and name the environment variables that hold their secrets; the
//! values are read here, kept in [`Secret`]s (which never print), and never recorded.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use axum::http::HeaderMap;
use chatledger_adapters::whatsapp::phone::PhoneNormalizer;
use chatledger_adapters::whatsapp::send::Endpoint;
use chatledger_adapters::whatsapp::signature::{
    meta_signature_valid, secret_matches, twilio_signature_valid,
};
use chatledger_core::canonical::canonical_json_string;
use chatledger_core::channel::{
    stakeholder_name, Channel, ChannelAuth, ChannelSend, ChannelsConfigured, Provider,
    CHANNELS_CONFIG_STREAM,
};
use chatledger_core::conversation::EVENT_ID_NAMESPACE;
use chatledger_core::sla::{SlaPolicy, SLA_POLICY_EVENT, SLA_POLICY_STREAM};
use chatledger_core::NewEvent;
use chatledger_core::{EventStore, ExpectedVersion, Metadata, StoreError};
use chatledger_projections::dispatch::DispatchLimits;
use chatledger_projections::sla::SlaNotifications;
use chrono::FixedOffset;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

pub mod check;

/// The largest webhook body accepted unless `WEBHOOK_BODY_LIMIT` says otherwise: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The most messages, receipts and changes one webhook may carry unless `WEBHOOK_MAX_ITEMS`
/// says otherwise. Meta batches at most 1,000 updates in one notification.
pub const DEFAULT_MAX_ITEMS: usize = 1_000;

/// A secret value from the environment. Its `Debug` never shows it.
pub use chatledger_projections::secrets::Secret;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelsFile {
    default_country: String,
    #[serde(default)]
    channels: Vec<ChannelEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelEntry {
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
enum AuthEntry {
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

/// Records one configuration as an event on `stream` when it differs (in anything but its
/// `source`, where it was read from) from the last version recorded there. Configuration is
/// versioned history, like everything else. Returns whether it recorded a new version.
pub async fn record_config(
    store: &dyn EventStore,
    stream: &str,
    event_type: &str,
    data: Value,
) -> Result<bool, StoreError> {
    let without_source = |v: &Value| {
        let mut v = v.clone();
        if let Some(map) = v.as_object_mut() {
            map.remove("source");
        }
        v
    };
    // Another process starting at the same moment may record first; then compare again.
    for _ in 0..5 {
        let mut last: Option<(u64, Value)> = None;
        let mut from = 0;
        loop {
            let events = store.read_stream(stream, from, 100).await?;
            let Some(tail) = events.last() else { break };
            from = tail.version + 1;
            last = Some((tail.version, tail.data.clone()));
        }
        let current = last.as_ref().map(|(v, _)| *v);
        if last
            .as_ref()
            .is_some_and(|(_, recorded)| without_source(recorded) == without_source(&data))
        {
            return Ok(false);
        }
        let version = current.map_or(0, |v| v + 1);
        let id = Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!(
                "{event_type}/{stream}/{version}/{}",
                canonical_json_string(&data)
            )
            .as_bytes(),
        );
        let event = NewEvent::new(id, event_type, data.clone(), Metadata::by("config"));
        match store
            .append(stream, ExpectedVersion::from_current(current), vec![event])
            .await
        {
            Ok(_) => return Ok(true),
            Err(StoreError::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Backend(format!(
        "{stream} kept changing while recording the configuration"
    )))
}

/// The context fields that decide one stakeholder's chat identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextFields {
    pub stakeholder: String,
    pub fields: Vec<String>,
    /// Where it was read from.
    pub source: String,
}

impl ContextFields {
    /// Its configuration stream.
    pub fn stream(&self) -> String {
        format!("config-context-{}", self.stakeholder)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextFile {
    fields: Vec<String>,
}

/// What is wrong with a tag catalog as written in `tags.yaml`.
pub fn tag_problems(by_stakeholder: &BTreeMap<String, Vec<String>>) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (stakeholder, tags) in by_stakeholder {
        let mut seen = std::collections::HashSet::new();
        for tag in tags {
            let spot = || Spot::Mention(format!("{stakeholder}:"));
            if tag.as_str() == chatledger_core::conversation::AWAITING_CUSTOMER_TAG {
                problems.push(Problem::new(
                    Spot::Mention(tag.clone()),
                    format!("{stakeholder}: {tag:?} is a system tag; it cannot be in a catalog"),
                ));
            } else if tag.trim().is_empty() {
                problems.push(Problem::new(
                    spot(),
                    format!("{stakeholder}: a tag is empty"),
                ));
            } else if !seen.insert(tag.trim().to_lowercase()) {
                problems.push(Problem::new(
                    Spot::Again(tag.clone()),
                    format!("{stakeholder}: the tag {tag:?} appears twice"),
                ));
            }
        }
    }
    problems
}

/// What is wrong with one stakeholder's context fields as written in `context/*.yaml`.
fn context_problems(fields: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for field in fields {
        if field.trim().is_empty() {
            problems.push(Problem::new(
                Spot::Mention("fields:".into()),
                "a field name is empty",
            ));
        } else if !seen.insert(field.as_str()) {
            problems.push(Problem::new(
                Spot::Again(field.clone()),
                format!("the field {field:?} appears twice"),
            ));
        }
    }
    problems
}

/// Reads one `context/{stakeholder}.yaml`: its fields, or every problem found.
pub fn read_context_file(text: &str) -> Result<Vec<String>, Vec<Problem>> {
    let file: ContextFile = serde_yaml_ng::from_str(text).map_err(|e| vec![Problem::yaml(&e)])?;
    let problems = context_problems(&file.fields);
    if problems.is_empty() {
        Ok(file.fields)
    } else {
        Err(problems)
    }
}

/// The tag catalog of each stakeholder, from `config/tags.yaml`.
#[derive(Debug, Clone, Default)]
pub struct TagCatalog {
    pub by_stakeholder: BTreeMap<String, Vec<String>>,
    pub source: String,
}

impl TagCatalog {
    pub fn load(config_dir: &Path) -> Result<Self, ConfigError> {
        let path = config_dir.join("tags.yaml");
        let source = path.display().to_string();
        let error = |message: String| ConfigError {
            source_name: source.clone(),
            message,
        };
        let by_stakeholder: BTreeMap<String, Vec<String>> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_yaml_ng::from_str::<Option<BTreeMap<String, Vec<String>>>>(&text)
                .map_err(|e| error(e.to_string()))?
                .unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(error(format!("cannot be read: {e}"))),
        };
        if let Some(problem) = tag_problems(&by_stakeholder).into_iter().next() {
            return Err(error(problem.message));
        }
        let by_stakeholder: BTreeMap<String, Vec<String>> = by_stakeholder
            .into_iter()
            .map(|(stakeholder, tags)| (stakeholder_name(&stakeholder), tags))
            .collect();
        Ok(TagCatalog {
            by_stakeholder,
            source,
        })
    }

    /// The catalog of `stakeholder` (empty when none is configured).
    pub fn of(&self, stakeholder: &str) -> Vec<String> {
        self.by_stakeholder
            .get(&stakeholder_name(stakeholder))
            .cloned()
            .unwrap_or_default()
    }

    /// Records each stakeholder's catalog when it changed.
    pub async fn record(&self, store: &dyn EventStore) -> Result<Vec<String>, StoreError> {
        let mut recorded = Vec::new();
        for (stakeholder, tags) in &self.by_stakeholder {
            let stream = format!("config-tags-{stakeholder}");
            let data = serde_json::json!({"stakeholder": stakeholder, "tags": tags, "source": self.source});
            if record_config(store, &stream, "TagCatalogConfigured", data).await? {
                recorded.push(stream);
            }
        }
        Ok(recorded)
    }
}

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
fn endpoint(channel: &Channel, env: &dyn Fn(&str) -> Option<String>) -> Result<Endpoint, String> {
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
    let phone_number_id = || {
        channel.phone_number_id.as_ref().ok_or_else(|| {
            "phone_number_id is not set for this channel in channels.yaml".to_owned()
        })
    };
    match channel.provider {
        Provider::Meta => Ok(Endpoint::CloudApi {
            url: format!("{base}/{}/messages", phone_number_id()?),
            headers: vec![(
                "Authorization".into(),
                format!("Bearer {}", required(token_env.unwrap_or("WA_API_KEY_1"))?),
            )],
        }),
        Provider::Pinbot => Ok(Endpoint::CloudApi {
            url: format!("{base}/{}/messages", phone_number_id()?),
            headers: vec![(
                "apikey".into(),
                required(token_env.unwrap_or("WA_API_KEY_1"))?,
            )],
        }),
        Provider::Dialog360 => Ok(Endpoint::CloudApi {
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

/// The SLA policy (`config/sla.yaml`; the default policy when absent) and who is notified.
#[derive(Debug, Clone)]
pub struct SlaSettings {
    pub policy: SlaPolicy,
    pub notifications: SlaNotifications,
}

impl SlaSettings {
    pub fn load(
        config_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        phones: &PhoneNormalizer,
    ) -> Result<Self, ConfigError> {
        let path = config_dir.join("sla.yaml");
        let source = path.display().to_string();
        let error = |message: String| ConfigError {
            source_name: source.clone(),
            message,
        };
        let policy = match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_yaml_ng::from_str::<SlaPolicy>(&text).map_err(|e| error(e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SlaPolicy::default(),
            Err(e) => return Err(error(format!("cannot be read: {e}"))),
        };
        let mut policy = policy;
        policy.stakeholders = std::mem::take(&mut policy.stakeholders)
            .into_iter()
            .map(|(stakeholder, thresholds)| (stakeholder_name(&stakeholder), thresholds))
            .collect();
        policy.validate().map_err(error)?;
        let number = |name: &str| -> Result<Option<String>, ConfigError> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(raw) => phones.any(&raw).map(Some).ok_or_else(|| ConfigError {
                    source_name: name.to_owned(),
                    message: format!("{raw:?} is not a phone number"),
                }),
            }
        };
        Ok(SlaSettings {
            policy,
            notifications: SlaNotifications {
                alert_to: number("SLA_ALERT_GROUP_NUMBER")?,
                escalate_to: number("SLA_SHIFT_LEAD_NUMBER")?,
                alert_template: env("SLA_ALERT_TEMPLATE").unwrap_or_else(|| "sla_alert".into()),
                escalation_template: env("SLA_ESCALATION_TEMPLATE")
                    .unwrap_or_else(|| "sla_escalation".into()),
                language: env("SLA_TEMPLATE_LANGUAGE").unwrap_or_else(|| "en".into()),
            },
        })
    }

    /// Records the policy when it changed.
    pub async fn record(&self, store: &dyn EventStore) -> Result<bool, StoreError> {
        let data =
            serde_json::to_value(&self.policy).map_err(|e| StoreError::Invalid(e.to_string()))?;
        record_config(store, SLA_POLICY_STREAM, SLA_POLICY_EVENT, data).await
    }
}

/// What the transaction system's webhooks need.
#[derive(Debug)]
pub struct TransactionSettings {
    /// `TRANSACTION_API_TOKEN`: the bearer token the transaction system sends.
    pub token: Option<Secret>,
    /// Per stakeholder, from `config/context/{stakeholder}.yaml`.
    pub context_fields: BTreeMap<String, ContextFields>,
    /// How to read a ride time written without an offset (`TRANSACTION_TIMEZONE`, e.g.
    /// `+05:30`, the default).
    pub timezone: FixedOffset,
}

impl TransactionSettings {
    pub fn load(
        config_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let dir = config_dir.join("context");
        let mut context_fields = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for path in paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            {
                let source = path.display().to_string();
                let error = |message: String| ConfigError {
                    source_name: source.clone(),
                    message,
                };
                let stakeholder = stakeholder_name(
                    path.file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or_default(),
                );
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| error(format!("cannot be read: {e}")))?;
                let fields = read_context_file(&text)
                    .map_err(|problems| error(problems[0].message.clone()))?;
                context_fields.insert(
                    stakeholder.clone(),
                    ContextFields {
                        stakeholder,
                        fields,
                        source,
                    },
                );
            }
        }
        Self::new(context_fields, env)
    }

    pub fn new(
        context_fields: BTreeMap<String, ContextFields>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let timezone = match env("TRANSACTION_TIMEZONE") {
            Some(tz) => tz.trim().parse::<FixedOffset>().map_err(|_| ConfigError {
                source_name: "TRANSACTION_TIMEZONE".into(),
                message: format!("{tz:?} is not an offset like +05:30"),
            })?,
            None => FixedOffset::east_opt(5 * 3600 + 30 * 60).expect("+05:30 is a valid offset"),
        };
        Ok(TransactionSettings {
            token: env("TRANSACTION_API_TOKEN")
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            context_fields,
            timezone,
        })
    }

    /// The fields that decide `stakeholder`'s chat identity (none when not configured).
    pub fn identity_fields(&self, stakeholder: &str) -> Vec<String> {
        self.context_fields
            .get(&stakeholder_name(stakeholder))
            .map(|c| c.fields.clone())
            .unwrap_or_default()
    }

    /// Records each stakeholder's context fields when they changed.
    pub async fn record(&self, store: &dyn EventStore) -> Result<Vec<String>, StoreError> {
        let mut recorded = Vec::new();
        for fields in self.context_fields.values() {
            let data =
                serde_json::to_value(fields).map_err(|e| StoreError::Invalid(e.to_string()))?;
            if record_config(store, &fields.stream(), "ContextFieldsConfigured", data).await? {
                recorded.push(fields.stream());
            }
        }
        Ok(recorded)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
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

/// Where in a configuration file a problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spot {
    /// A line (from 1), as the YAML parser reported it.
    Line(usize),
    /// The `n`th entry (from 0) of the list under `key`.
    Entry { key: &'static str, n: usize },
    /// The first line that mentions this text.
    Mention(String),
    /// The second line that mentions this text (a repetition).
    Again(String),
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub spot: Spot,
    pub message: String,
}

impl Problem {
    fn new(spot: Spot, message: impl Into<String>) -> Self {
        Problem {
            spot,
            message: message.into(),
        }
    }

    /// A YAML parser's error, at the line it names.
    fn yaml(e: &serde_yaml_ng::Error) -> Self {
        let line = e.location().map_or(1, |l| l.line());
        Problem::new(Spot::Line(line), e.to_string())
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
fn default_auth(provider: Provider) -> ChannelAuth {
    ChannelAuth {
        open: false,
        meta_signature: provider != Provider::Twilio,
        secret_header: None,
        twilio_signature: provider == Provider::Twilio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_example_configuration_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../config/channels.yaml"
        ));
        let settings =
            WhatsAppSettings::load(path, &env(&[("PINBOT_WEBHOOK_SECRET", "s")])).unwrap();
        let partner = settings.channel("9099039188").unwrap();
        assert_eq!(
            (partner.number.as_str(), partner.stakeholder.as_str()),
            ("919099039188", "partner")
        );
        assert_eq!(
            settings.channel("8000247247").unwrap().number,
            "919638106888"
        );
        assert_eq!(
            settings.channel("9726724247").unwrap().stakeholder,
            "vendor"
        );
        assert_eq!(settings.channel("9586924247").unwrap().stakeholder, "srdp");
        assert!(
            settings.channel("9638120888").is_none(),
            "the discount number stays on the old system"
        );
        assert!(settings.closed_channels().is_empty());
        assert!(settings.open_channels().is_empty());
        let without_secrets = WhatsAppSettings::load(path, &env(&[])).unwrap();
        assert_eq!(without_secrets.closed_channels().len(), 4);
        assert_eq!(
            without_secrets.closed_channels()[0].1,
            "META_APP_SECRET or PINBOT_WEBHOOK_SECRET"
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let bad = [
            ("default_country: IN\nchannels: [{key: a, number: '1', stakeholder: s, provider: carrier-pigeon}]", "unknown variant"),
            ("default_country: IN\nchannels: [{key: a, number: '+91', stakeholder: s, provider: meta}]", "international digits"),
            ("default_country: IN\nchannels: [{key: a, number: '1', stakeholder: s, provider: meta}, {key: a, number: '2', stakeholder: s, provider: meta}]", "appears twice"),
            ("default_country: XX\nchannels: []", "default_country"),
            ("default_country: IN\nchannels: [{key: a, number: '1', stakeholder: s, provider: meta, auth: sometimes}]", "auth must be `none`"),
        ];
        for (text, needle) in bad {
            let result = parse_channels(text, "channels.yaml")
                .and_then(|c| WhatsAppSettings::new(c, &env(&[])).map_err(|e| e.to_string()));
            let err = result.err().unwrap_or_else(|| panic!("accepted: {text}"));
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn channels_are_closed_unless_they_say_auth_none() {
        let text = "default_country: IN\nchannels:\n  - {key: lan, number: '1', stakeholder: s, provider: pinbot, auth: none}\n  - {key: bsp, number: '2', stakeholder: s, provider: pinbot}\n";
        let settings =
            WhatsAppSettings::new(parse_channels(text, "channels.yaml").unwrap(), &env(&[]))
                .unwrap();
        assert_eq!(settings.open_channels(), ["lan"]);
        assert_eq!(
            settings.closed_channels(),
            [("bsp", "META_APP_SECRET".to_owned())]
        );
        let headers = HeaderMap::new();
        let lan = &settings.channel("lan").unwrap().auth;
        let bsp = &settings.channel("bsp").unwrap().auth;
        assert_eq!(
            settings.authenticate_meta(lan, &headers, b"{}"),
            AuthOutcome::Open
        );
        assert_eq!(
            settings.authenticate_meta(bsp, &headers, b"{}"),
            AuthOutcome::NotConfigured
        );
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
        let settings = WhatsAppSettings::new(
            parse_channels("default_country: IN\nchannels: []", "x").unwrap(),
            &env(&[
                ("META_APP_SECRET", "hunter2"),
                ("WEBHOOK_VERIFY_TOKEN", "hunter3"),
            ]),
        )
        .unwrap();
        let printed = format!("{settings:?}");
        assert!(
            !printed.contains("hunter2") && !printed.contains("hunter3"),
            "{printed}"
        );
    }
}
