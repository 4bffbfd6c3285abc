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
    stakeholder_name, Channel, ChannelAuth, ChannelSend, ChannelsConfigured, MediaDelivery,
    Provider, CHANNELS_CONFIG_STREAM,
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

mod channels;
pub mod check;
mod context;
mod dispatch;
mod genesys;
mod media;
mod sla;
mod tags;

pub use channels::*;
pub use context::*;
pub use dispatch::*;
pub use genesys::*;
pub use media::*;
pub use sla::*;
pub use tags::*;

/// The largest webhook body accepted unless `WEBHOOK_BODY_LIMIT` says otherwise: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// The most messages, receipts and changes one webhook may carry unless `WEBHOOK_MAX_ITEMS`
/// says otherwise. Meta batches at most 1,000 updates in one notification.
pub const DEFAULT_MAX_ITEMS: usize = 1_000;

/// A secret value from the environment. Its `Debug` never shows it.
pub use chatledger_adapters::secrets::Secret;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct ConfigError {
    pub source_name: String,
    pub message: String,
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
