use super::*;

/// `sla`: each chat's SLA clock, due times (under the policy in force when it started),
/// alerts and escalations; `sla_policy`: the policy versions.
#[derive(Default)]
pub struct Sla {
    /// The latest policy as one transaction read it (by its serial and the tables' suffix):
    /// a batch of new chats reads it once, not once per chat.
    policy: std::sync::Mutex<Option<(u64, String, i64, SlaPolicy)>>,
}

#[async_trait]
impl Projector for Sla {
    fn name(&self) -> &'static str {
        "sla"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sla", "sla_policy"]
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == SLA_POLICY_EVENT
            || matches!(
                event_type,
                "SlaClockStarted" | "SlaClockStopped" | "SlaAlertRaised" | "SlaEscalated"
            )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE sla{s} (
                    chat_id TEXT PRIMARY KEY,
                    stream TEXT NOT NULL,
                    stakeholder TEXT NOT NULL,
                    customer_message TEXT NOT NULL,
                    clock_started_at TEXT NOT NULL,
                    alert_due_at TEXT NOT NULL,
                    escalation_due_at TEXT NOT NULL,
                    next_due_at TEXT,
                    alerted_at TEXT,
                    escalated_at TEXT,
                    policy_version BIGINT NOT NULL,
                    running BIGINT NOT NULL,
                    position BIGINT NOT NULL
                )"
            ),
            format!("CREATE INDEX sla{s}_board ON sla{s} (running, next_due_at)"),
            format!(
                "CREATE TABLE sla_policy{s} (
                    version BIGINT PRIMARY KEY,
                    policy TEXT NOT NULL
                )"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let unreadable = |e: serde_json::Error| ProjectionError::Event {
            position: event.position,
            reason: e.to_string(),
        };
        if event.event_type == SLA_POLICY_EVENT {
            *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tx.execute(
                &format!("INSERT INTO sla_policy{s} (version, policy) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING"),
                &[event.version.into(), event.data.to_string().into()],
            )
            .await?;
            return Ok(());
        }
        match conversation_event(event)? {
            Some(ConversationEvent::SlaClockStarted {
                chat_id,
                stakeholder,
                customer_message,
                started_at,
            }) => {
                let remembered = self
                    .policy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .filter(|(serial, suffix, _, _)| *serial == tx.serial() && suffix == s)
                    .map(|(_, _, version, policy)| (*version, policy.clone()));
                let (version, policy) = match remembered {
                    Some(remembered) => remembered,
                    None => {
                        let row = tx
                            .fetch_optional(&format!("SELECT version, policy FROM sla_policy{s} ORDER BY version DESC LIMIT 1"), &[])
                            .await?;
                        let read = match row {
                            Some(row) => (
                                row.i64(0).unwrap_or_default(),
                                serde_json::from_str::<SlaPolicy>(&row.text(1).unwrap_or_default())
                                    .map_err(unreadable)?,
                            ),
                            None => (0, SlaPolicy::default()),
                        };
                        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((tx.serial(), s.to_owned(), read.0, read.1.clone()));
                        read
                    }
                };
                let t = policy.for_stakeholder(stakeholder);
                let alert_due = t.due(*started_at, SlaLevel::Alert);
                let escalation_due = t.due(*started_at, SlaLevel::Escalation);
                tx.execute(
                    &format!(
                        "INSERT INTO sla{s} (chat_id, stream, stakeholder, customer_message, clock_started_at, alert_due_at,
                            escalation_due_at, next_due_at, alerted_at, escalated_at, policy_version, running, position)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $6, NULL, NULL, $8, 1, $9)
                         ON CONFLICT (chat_id) DO UPDATE SET customer_message = $4, clock_started_at = $5, alert_due_at = $6,
                            escalation_due_at = $7, next_due_at = $6, alerted_at = NULL, escalated_at = NULL,
                            policy_version = $8, running = 1, position = $9"
                    ),
                    &[
                        chat_id.to_string().into(),
                        (&event.stream).into(),
                        stakeholder.into(),
                        customer_message.into(),
                        started_at.into(),
                        alert_due.into(),
                        escalation_due.into(),
                        version.into(),
                        event.position.into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::SlaClockStopped { chat_id, .. }) => {
                tx.execute(
                    &format!(
                        "UPDATE sla{s} SET running = 0, next_due_at = NULL WHERE chat_id = $1"
                    ),
                    &[chat_id.to_string().into()],
                )
                .await?;
            }
            Some(ConversationEvent::SlaAlertRaised(breach)) => {
                tx.execute(
                    &format!("UPDATE sla{s} SET alerted_at = $2, next_due_at = escalation_due_at, policy_version = $3 WHERE chat_id = $1"),
                    &[breach.chat_id.to_string().into(), breach.fired_at.into(), breach.policy_version.into()],
                )
                .await?;
            }
            Some(ConversationEvent::SlaEscalated(breach)) => {
                tx.execute(
                    &format!("UPDATE sla{s} SET escalated_at = $2, next_due_at = NULL WHERE chat_id = $1"),
                    &[breach.chat_id.to_string().into(), breach.fired_at.into()],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// A chat's SLA as `sla` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaRow {
    /// When the waiting customer message's next threshold falls due.
    pub next_due_at: Option<chrono::DateTime<chrono::Utc>>,
    pub alerted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub escalated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The version of the policy the running clock is judged by.
    pub policy_version: Option<i64>,
    /// Since when a customer message waits, while one does.
    pub waiting_since: Option<chrono::DateTime<chrono::Utc>>,
}

/// The SLA of a chat, if it ever had a clock.
pub async fn sla_of(
    db: &crate::read_db::ReadDb,
    chat_id: &str,
) -> Result<Option<SlaRow>, sqlx::Error> {
    let row = db
        .fetch_optional(
            "SELECT next_due_at, alerted_at, escalated_at, policy_version, running, clock_started_at FROM sla WHERE chat_id = $1",
            &[chat_id.into()],
        )
        .await?;
    Ok(row.map(|row| SlaRow {
        next_due_at: row.time(0),
        alerted_at: row.time(1),
        escalated_at: row.time(2),
        policy_version: row.i64(3),
        waiting_since: row.time(5).filter(|_| row.i64(4) == Some(1)),
    }))
}
