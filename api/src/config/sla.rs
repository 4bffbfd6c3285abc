//! `sla.yaml` and who SLA alerts notify.

use super::*;

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
