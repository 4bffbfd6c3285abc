//! `config/genesys.yaml`: each business's Genesys Cloud Open Messaging integration, and which
//! of its channels route to Genesys. Optional: without the file, no channel does.
//!
//! ```yaml
//! integrations:
//!   - tenant: onewaycab                 # the business (its channels' `business`)
//!     region: mypurecloud.com
//!     client_id: 0d0f…                  # the OAuth client (client credentials)
//!     client_secret_env: GENESYS_ONEWAYCAB_CLIENT_SECRET
//!     integration_id: 73cb7fb7-…        # the Open Messaging integration
//!     webhook_secret_env: GENESYS_ONEWAYCAB_WEBHOOK_SECRET
//!     channels: ["9586924247"]
//! ```

use chatledger_adapters::genesys::Tenant;
use chatledger_core::genesys::{GenesysConfigured, GenesysIntegration, GENESYS_CONFIG_STREAM};
use chatledger_projections::bridge::BridgeLimits;

use super::*;

/// Genesys requires the webhook's secret token to be longer than this.
const SECRET_MIN: usize = 15;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenesysFile {
    #[serde(default)]
    integrations: Vec<GenesysIntegration>,
}

/// The integrations as configured, with the secrets the environment holds for them.
#[derive(Default)]
pub struct GenesysSettings {
    pub configured: GenesysConfigured,
    /// Each tenant's OAuth client secret (integrations without one cannot send).
    pub client_secrets: HashMap<String, Secret>,
    /// Each tenant's webhook secret token (a webhook of a tenant without one is refused).
    pub webhook_secrets: HashMap<String, Secret>,
    /// How the bridge tries (`GENESYS_MAX_ATTEMPTS`, `GENESYS_FIRST_BACKOFF_MS`).
    pub limits: BridgeLimits,
}

impl std::fmt::Debug for GenesysSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenesysSettings")
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

impl GenesysSettings {
    /// Reads `genesys.yaml` in `config_dir` (no file: no integration), checks each integration
    /// against the channels (a routed channel must exist and belong to that business) and
    /// reads its secrets from the environment.
    pub fn load(
        config_dir: &Path,
        channels: &ChannelsConfigured,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let path = config_dir.join("genesys.yaml");
        let source = path.display().to_string();
        let error = |message: String| ConfigError {
            source_name: source.clone(),
            message,
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(error(e.to_string())),
        };
        let file: GenesysFile = serde_yaml_ng::from_str(&text).map_err(|e| error(e.to_string()))?;
        let mut settings = GenesysSettings::default();
        let number = |name: &str, default: u64| -> Result<u64, ConfigError> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| ConfigError {
                        source_name: name.to_owned(),
                        message: format!("{v:?} is not a whole number above 0"),
                    }),
            }
        };
        let defaults = BridgeLimits::default();
        settings.limits = BridgeLimits {
            max_attempts: number("GENESYS_MAX_ATTEMPTS", u64::from(defaults.max_attempts))? as u32,
            first_backoff: Duration::from_millis(number(
                "GENESYS_FIRST_BACKOFF_MS",
                defaults.first_backoff.as_millis() as u64,
            )?),
            max_backoff: defaults.max_backoff,
        };
        let mut routed = std::collections::HashSet::new();
        for integration in &file.integrations {
            let tenant = &integration.tenant;
            if settings.configured.tenant(tenant).is_some() || tenant.trim().is_empty() {
                return Err(error(format!("tenant {tenant:?} is empty or named twice")));
            }
            for key in &integration.channels {
                let channel = channels
                    .channels
                    .iter()
                    .find(|c| &c.key == key)
                    .ok_or_else(|| {
                        error(format!("{tenant}: channel {key} is not in channels.yaml"))
                    })?;
                if &channel.business != tenant {
                    return Err(error(format!(
                        "{tenant}: channel {key} belongs to {}, not to {tenant}: one business's conversations never go to another's Genesys",
                        channel.business
                    )));
                }
                if !routed.insert(key.clone()) {
                    return Err(error(format!("channel {key} is routed twice")));
                }
            }
            let secret = |name: &str| env(name).filter(|v| !v.is_empty());
            if let Some(value) = secret(&integration.client_secret_env) {
                settings
                    .client_secrets
                    .insert(tenant.clone(), Secret::new(value));
            }
            if let Some(value) = secret(&integration.webhook_secret_env) {
                if value.chars().count() <= SECRET_MIN {
                    return Err(error(format!(
                        "{tenant}: {} must be longer than {SECRET_MIN} characters (Genesys requires it)",
                        integration.webhook_secret_env
                    )));
                }
                settings
                    .webhook_secrets
                    .insert(tenant.clone(), Secret::new(value));
            }
        }
        settings.configured = GenesysConfigured {
            integrations: file.integrations,
            source: "genesys.yaml".into(),
        };
        Ok(settings)
    }

    /// The tenants with what the HTTP client needs (the client secret: empty when it is not
    /// set, and Genesys then refuses the client, which is recorded with the message).
    pub fn tenants(&self) -> Vec<Tenant> {
        self.configured
            .integrations
            .iter()
            .map(|integration| Tenant {
                integration: integration.clone(),
                client_secret: self
                    .client_secrets
                    .get(&integration.tenant)
                    .map(|s| s.expose().to_owned())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Records the configuration when it differs from the last recorded version (only the
    /// names of the variables that hold secrets). Returns whether it recorded one.
    pub async fn record(&self, store: &dyn EventStore) -> Result<bool, StoreError> {
        if self.configured.integrations.is_empty() {
            return Ok(false);
        }
        let data = serde_json::to_value(&self.configured)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        record_config(
            store,
            GENESYS_CONFIG_STREAM,
            GenesysConfigured::EVENT_TYPE,
            data,
        )
        .await
    }
}
