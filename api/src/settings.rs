//! Everything read from configuration files and the environment at start.

use crate::auth::AuthSettings;
use crate::config::{
    DispatchSettings, GenesysSettings, MediaSettings, SlaSettings, TagCatalog, TransactionSettings,
    WhatsAppSettings,
};
use crate::limits::Limits;
use crate::onboarding::OnboardingSettings;
use chatledger_core::conversation::Template;
use chatledger_projections::audit::SealPolicy;

/// Everything read from configuration files and the environment at start.
pub struct Settings {
    pub whatsapp: WhatsAppSettings,
    pub auth: AuthSettings,
    pub transaction: TransactionSettings,
    pub tags: TagCatalog,
    pub dispatch: DispatchSettings,
    /// The template that asks for a rating outside the 24-hour window
    /// (`RATING_TEMPLATE_NAME`, `RATING_TEMPLATE_LANGUAGE`).
    pub rating_template: Template,
    pub sla: SlaSettings,
    /// When the sealer records a seal (`SEAL_EVERY_EVENTS`, `SEAL_EVERY_SECONDS`).
    pub seal: SealPolicy,
    /// What one client may make the server do (body sizes, timeouts, connections, logins).
    pub limits: Limits,
    /// Official onboarding: the app, the secrets key, the Graph API or BSP, token refresh.
    pub onboarding: OnboardingSettings,
    /// The object store, each channel's media API, how the media reactor tries.
    pub media: MediaSettings,
    /// Businesses' Genesys Cloud integrations (`genesys.yaml`) and their secrets.
    pub genesys: GenesysSettings,
    /// Consent keywords and their answers (`CONSENT_*`).
    pub consent: chatledger_projections::consent::ConsentSettings,
}

/// Consent keywords and answers from the environment: `CONSENT_STOP_KEYWORDS`,
/// `CONSENT_START_KEYWORDS`, `CONSENT_HELP_KEYWORDS` (comma-separated, replacing the
/// defaults), `CONSENT_STOP_REPLY`, `CONSENT_START_REPLY`, `CONSENT_HELP_REPLY`.
pub fn consent_settings(
    env: &dyn Fn(&str) -> Option<String>,
) -> chatledger_projections::consent::ConsentSettings {
    let mut settings = chatledger_projections::consent::ConsentSettings::default();
    let set = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let words = |v: String| -> Vec<String> {
        v.split(',')
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty())
            .collect()
    };
    if let Some(v) = set("CONSENT_STOP_KEYWORDS") {
        settings.keywords.stop = words(v);
    }
    if let Some(v) = set("CONSENT_START_KEYWORDS") {
        settings.keywords.start = words(v);
    }
    if let Some(v) = set("CONSENT_HELP_KEYWORDS") {
        settings.keywords.help = words(v);
    }
    if let Some(v) = set("CONSENT_STOP_REPLY") {
        settings.stop_reply = v;
    }
    if let Some(v) = set("CONSENT_START_REPLY") {
        settings.start_reply = v;
    }
    if let Some(v) = set("CONSENT_HELP_REPLY") {
        settings.help_reply = v;
    }
    settings
}

/// The seal policy from the environment: every 1,000 events or 60 seconds by default.
pub fn seal_policy(env: &dyn Fn(&str) -> Option<String>) -> Result<SealPolicy, String> {
    let mut policy = SealPolicy::default();
    let number = |name: &str| -> Result<Option<u64>, String> {
        env(name)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} must be a whole number above 0, not {v:?}"))
            })
            .transpose()
    };
    if let Some(n) = number("SEAL_EVERY_EVENTS")? {
        policy.every_events = n;
    }
    if let Some(n) = number("SEAL_EVERY_SECONDS")? {
        policy.every = std::time::Duration::from_secs(n);
    }
    Ok(policy)
}

/// The rating template from the environment; `rating_request` in `en` by default.
pub fn rating_template(env: &dyn Fn(&str) -> Option<String>) -> Template {
    Template {
        name: env("RATING_TEMPLATE_NAME").unwrap_or_else(|| "rating_request".into()),
        language: env("RATING_TEMPLATE_LANGUAGE").unwrap_or_else(|| "en".into()),
        params: vec![],
    }
}

impl Settings {
    /// Reads `config_dir` and the environment (through `env`); media is kept in `data_dir`
    /// unless `MEDIA_STORE_URL` says otherwise.
    pub fn load(
        config_dir: &std::path::Path,
        env: &dyn Fn(&str) -> Option<String>,
        data_dir: &std::path::Path,
    ) -> Result<Self, String> {
        let whatsapp = WhatsAppSettings::load(&config_dir.join("channels.yaml"), env)
            .map_err(|e| e.to_string())?;
        let dispatch =
            DispatchSettings::new(&whatsapp.configured, env).map_err(|e| e.to_string())?;
        let sla =
            SlaSettings::load(config_dir, env, &whatsapp.phones).map_err(|e| e.to_string())?;
        let media =
            MediaSettings::load(&whatsapp.configured, env, data_dir).map_err(|e| e.to_string())?;
        let genesys = GenesysSettings::load(config_dir, &whatsapp.configured, env)
            .map_err(|e| e.to_string())?;
        Ok(Settings {
            consent: consent_settings(env),
            genesys,
            media,
            auth: AuthSettings::from_env(env)?,
            whatsapp,
            transaction: TransactionSettings::load(config_dir, env).map_err(|e| e.to_string())?,
            tags: TagCatalog::load(config_dir).map_err(|e| e.to_string())?,
            dispatch,
            rating_template: rating_template(env),
            sla,
            seal: seal_policy(env)?,
            limits: Limits::from_env(env)?,
            onboarding: OnboardingSettings::from_env(env).map_err(|e| e.to_string())?,
        })
    }
}
