//! SLA policy: how long a customer may wait for an answer before an alert, and before an
//! escalation. Versioned history like all configuration (`config-sla-all`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The stream of the SLA policy's history.
pub const SLA_POLICY_STREAM: &str = "config-sla-all";
/// Its event type.
pub const SLA_POLICY_EVENT: &str = "SlaPolicyConfigured";

/// Thresholds, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    pub alert_after_seconds: u64,
    pub escalate_after_seconds: u64,
}

impl Thresholds {
    /// The seconds a wait may last before `level` is crossed.
    pub fn after_seconds(&self, level: SlaLevel) -> u64 {
        match level {
            SlaLevel::Alert => self.alert_after_seconds,
            SlaLevel::Escalation => self.escalate_after_seconds,
        }
    }

    /// When a wait whose clock started at `started_at` crosses `level`.
    pub fn due(&self, started_at: DateTime<Utc>, level: SlaLevel) -> DateTime<Utc> {
        crate::time::later(started_at, crate::time::seconds(self.after_seconds(level)))
    }
}

/// The policy: defaults, and per-stakeholder overrides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaPolicy {
    pub alert_after_seconds: u64,
    pub escalate_after_seconds: u64,
    #[serde(default)]
    pub stakeholders: BTreeMap<String, PartialThresholds>,
}

/// An override; what it leaves out comes from the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PartialThresholds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_after_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_after_seconds: Option<u64>,
}

impl Default for SlaPolicy {
    /// 3 minutes to an alert, 10 to an escalation.
    fn default() -> Self {
        SlaPolicy {
            alert_after_seconds: 180,
            escalate_after_seconds: 600,
            stakeholders: BTreeMap::new(),
        }
    }
}

impl SlaPolicy {
    /// The thresholds for `stakeholder`.
    pub fn for_stakeholder(&self, stakeholder: &str) -> Thresholds {
        let o = self
            .stakeholders
            .get(stakeholder)
            .copied()
            .unwrap_or_default();
        Thresholds {
            alert_after_seconds: o.alert_after_seconds.unwrap_or(self.alert_after_seconds),
            escalate_after_seconds: o
                .escalate_after_seconds
                .unwrap_or(self.escalate_after_seconds),
        }
    }

    /// Whether every alert comes before its escalation.
    pub fn validate(&self) -> Result<(), String> {
        let mut all = vec![("default".to_owned(), self.for_stakeholder(""))];
        all.extend(
            self.stakeholders
                .keys()
                .map(|s| (s.clone(), self.for_stakeholder(s))),
        );
        for (who, t) in all {
            if t.alert_after_seconds == 0 || t.escalate_after_seconds <= t.alert_after_seconds {
                return Err(format!(
                    "{who}: the alert must come after 0 seconds and before the escalation ({}s, {}s)",
                    t.alert_after_seconds, t.escalate_after_seconds
                ));
            }
        }
        Ok(())
    }
}

/// Which threshold was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SlaLevel {
    Alert,
    Escalation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_fall_back_to_defaults() {
        let mut policy = SlaPolicy::default();
        policy.stakeholders.insert(
            "partner".into(),
            PartialThresholds {
                alert_after_seconds: Some(60),
                escalate_after_seconds: None,
            },
        );
        assert_eq!(
            policy.for_stakeholder("partner"),
            Thresholds {
                alert_after_seconds: 60,
                escalate_after_seconds: 600
            }
        );
        assert_eq!(
            policy.for_stakeholder("vendor"),
            Thresholds {
                alert_after_seconds: 180,
                escalate_after_seconds: 600
            }
        );
        assert!(policy.validate().is_ok());
        policy.escalate_after_seconds = 30;
        assert!(policy.validate().is_err());
    }
}
