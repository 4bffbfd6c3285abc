//! `chatledger sla recompute`: what another SLA policy would have done to a recorded history,
//! folded from the SLA events alone; nothing is written.

use std::collections::HashMap;

use chatledger_core::conversation::ConversationEvent;
use chatledger_core::sla::SlaPolicy;
use chatledger_core::RecordedEvent;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What a different SLA policy would have done to a recorded history, per stakeholder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhatIfCounts {
    pub live_alerts: usize,
    pub live_escalations: usize,
    pub alerts: usize,
    pub escalations: usize,
}

/// A waiting customer message the other policy treats differently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatIfDifference {
    pub stream: String,
    pub chat_id: Uuid,
    pub customer_message: String,
    pub waited_seconds: i64,
    /// (alert, escalation) as recorded, and as the other policy would have had them.
    pub live: (bool, bool),
    pub what_if: (bool, bool),
}

#[derive(Debug, Clone, Default)]
pub struct WhatIf {
    pub by_stakeholder: std::collections::BTreeMap<String, WhatIfCounts>,
    pub differences: Vec<WhatIfDifference>,
}

#[derive(Debug)]
struct Wait {
    chat_id: Uuid,
    stakeholder: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    alerted: bool,
    escalated: bool,
}

/// Folds a history's SLA clocks (`SlaClockStarted` / `Stopped`, and the alerts recorded) and
/// judges each wait that started in `[from, to)` under `policy`. Reads events only: nothing is
/// written anywhere.
pub struct WhatIfFold {
    policy: SlaPolicy,
    from: Option<DateTime<Utc>>,
    to: DateTime<Utc>,
    waits: HashMap<(String, String), Wait>,
}

impl WhatIfFold {
    pub fn new(policy: SlaPolicy, from: Option<DateTime<Utc>>, to: DateTime<Utc>) -> Self {
        WhatIfFold {
            policy,
            from,
            to,
            waits: HashMap::new(),
        }
    }

    pub fn apply(&mut self, event: &RecordedEvent) {
        let Ok(Some(decoded)) = ConversationEvent::from_recorded(event) else {
            return;
        };
        match decoded {
            ConversationEvent::SlaClockStarted {
                chat_id,
                stakeholder,
                customer_message,
                started_at,
            } => {
                self.waits.insert(
                    (event.stream.clone(), customer_message),
                    Wait {
                        chat_id,
                        stakeholder,
                        started_at,
                        ended_at: None,
                        alerted: false,
                        escalated: false,
                    },
                );
            }
            ConversationEvent::SlaClockStopped {
                customer_message,
                stopped_at,
                ..
            } => {
                if let Some(wait) = self
                    .waits
                    .get_mut(&(event.stream.clone(), customer_message))
                {
                    wait.ended_at = Some(stopped_at);
                }
            }
            ConversationEvent::SlaAlertRaised(breach) => {
                if let Some(wait) = self
                    .waits
                    .get_mut(&(event.stream.clone(), breach.customer_message))
                {
                    wait.alerted = true;
                }
            }
            ConversationEvent::SlaEscalated(breach) => {
                if let Some(wait) = self
                    .waits
                    .get_mut(&(event.stream.clone(), breach.customer_message))
                {
                    wait.escalated = true;
                }
            }
            _ => {}
        }
    }

    pub fn finish(self) -> WhatIf {
        let mut report = WhatIf::default();
        let mut waits: Vec<((String, String), Wait)> = self.waits.into_iter().collect();
        waits.sort_by(|a, b| {
            a.1.started_at
                .cmp(&b.1.started_at)
                .then_with(|| a.0.cmp(&b.0))
        });
        for ((stream, customer_message), wait) in waits {
            if wait.started_at >= self.to || self.from.is_some_and(|from| wait.started_at < from) {
                continue;
            }
            let end = wait.ended_at.unwrap_or(self.to).min(self.to);
            let waited = (end - wait.started_at).num_seconds();
            let t = self.policy.for_stakeholder(&wait.stakeholder);
            let what_if = (
                waited >= t.alert_after_seconds as i64,
                waited >= t.escalate_after_seconds as i64,
            );
            let counts = report
                .by_stakeholder
                .entry(wait.stakeholder.clone())
                .or_default();
            counts.live_alerts += usize::from(wait.alerted);
            counts.live_escalations += usize::from(wait.escalated);
            counts.alerts += usize::from(what_if.0);
            counts.escalations += usize::from(what_if.1);
            if what_if != (wait.alerted, wait.escalated) {
                report.differences.push(WhatIfDifference {
                    stream,
                    chat_id: wait.chat_id,
                    customer_message,
                    waited_seconds: waited,
                    live: (wait.alerted, wait.escalated),
                    what_if,
                });
            }
        }
        report
    }
}
