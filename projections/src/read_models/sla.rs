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
            format!(
                "CREATE TABLE sla_policy{s} (
                    version BIGINT PRIMARY KEY,
                    policy TEXT NOT NULL
                )"
            ),
        ]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE INDEX sla{s}_board ON sla{s} (running, next_due_at)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, s, &[event]).await
    }

    /// Folds the batch's changes to each chat's clock in memory (from its row, read once) and
    /// writes every changed row with one statement; policies are written as they come.
    async fn apply_batch(
        &self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        let mut clocks = crate::rows::Folded::<String, Stored>::default();
        let mut wanted: Vec<Arg> = Vec::new();
        for event in events {
            if event.event_type == SLA_POLICY_EVENT {
                continue;
            }
            if let Some(chat_id) = conversation_event(event)?.and_then(clock_of) {
                let chat_id = chat_id.to_string();
                if clocks.unread(&chat_id) {
                    wanted.push(Arg::Text(chat_id));
                }
            }
        }
        if !wanted.is_empty() {
            let sql = format!(
                "SELECT {} FROM sla{s} WHERE chat_id IN ({})",
                STORED.map(|(name, _)| name).join(", "),
                tx.json_texts("$1")
            );
            for row in tx
                .fetch_keys(&sql, crate::rows::json_param(&wanted), wanted.len())
                .await?
            {
                let stored = Stored::from_row(&row);
                clocks.found(stored.chat_id.clone(), stored);
            }
        }
        for event in events {
            if event.event_type == SLA_POLICY_EVENT {
                *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tx.execute(
                    &format!("INSERT INTO sla_policy{s} (version, policy) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING"),
                    &[event.version.into(), event.data.to_string().into()],
                )
                .await?;
                continue;
            }
            match conversation_event(event)? {
                Some(ConversationEvent::SlaClockStarted {
                    chat_id,
                    stakeholder,
                    customer_message,
                    started_at,
                }) => {
                    let (version, policy) = self.policy_in_force(tx, s, event).await?;
                    let t = policy.for_stakeholder(stakeholder);
                    let alert_due = time_text(t.due(*started_at, SlaLevel::Alert));
                    let escalation_due = time_text(t.due(*started_at, SlaLevel::Escalation));
                    let key = chat_id.to_string();
                    // A new clock of a chat that had one keeps the row's stream and stakeholder.
                    if clocks.get(&key).is_none() {
                        clocks.add(
                            key.clone(),
                            Stored {
                                chat_id: key.clone(),
                                stream: event.stream.clone(),
                                stakeholder: stakeholder.clone(),
                                ..Stored::default()
                            },
                        );
                    }
                    let Some(clock) = clocks.change(&key) else {
                        continue;
                    };
                    clock.customer_message = customer_message.clone();
                    clock.clock_started_at = time_text(*started_at);
                    clock.next_due_at = Some(alert_due.clone());
                    clock.alert_due_at = alert_due;
                    clock.escalation_due_at = escalation_due;
                    clock.alerted_at = None;
                    clock.escalated_at = None;
                    clock.policy_version = version;
                    clock.running = 1;
                    clock.position = event.position as i64;
                }
                Some(ConversationEvent::SlaClockStopped { chat_id, .. }) => {
                    if let Some(clock) = clocks.change(&chat_id.to_string()) {
                        clock.running = 0;
                        clock.next_due_at = None;
                    }
                }
                Some(ConversationEvent::SlaAlertRaised(breach)) => {
                    if let Some(clock) = clocks.change(&breach.chat_id.to_string()) {
                        clock.alerted_at = Some(time_text(breach.fired_at));
                        clock.next_due_at = Some(clock.escalation_due_at.clone());
                        clock.policy_version = breach.policy_version as i64;
                    }
                }
                Some(ConversationEvent::SlaEscalated(breach)) => {
                    if let Some(clock) = clocks.change(&breach.chat_id.to_string()) {
                        clock.escalated_at = Some(time_text(breach.fired_at));
                        clock.next_due_at = None;
                    }
                }
                _ => {}
            }
        }
        clocks
            .write_changed(tx, &format!("sla{s}"), &STORED, &["chat_id"])
            .await?;
        Ok(())
    }
}

impl Sla {
    /// The latest policy (its version and rules), read once per transaction and tables.
    async fn policy_in_force(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(i64, SlaPolicy), ProjectionError> {
        let remembered = self
            .policy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|(serial, suffix, _, _)| *serial == tx.serial() && suffix == s)
            .map(|(_, _, version, policy)| (*version, policy.clone()));
        if let Some(remembered) = remembered {
            return Ok(remembered);
        }
        let row = tx
            .fetch_optional(
                &format!("SELECT version, policy FROM sla_policy{s} ORDER BY version DESC LIMIT 1"),
                &[],
            )
            .await?;
        let read = match row {
            Some(row) => (
                row.i64(0).unwrap_or_default(),
                serde_json::from_str::<SlaPolicy>(&row.text(1).unwrap_or_default()).map_err(
                    |e| ProjectionError::Event {
                        position: event.position,
                        reason: e.to_string(),
                    },
                )?,
            ),
            None => (0, SlaPolicy::default()),
        };
        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((tx.serial(), s.to_owned(), read.0, read.1.clone()));
        Ok(read)
    }
}

/// The chat whose clock an event changes.
fn clock_of(event: &ConversationEvent) -> Option<uuid::Uuid> {
    match event {
        ConversationEvent::SlaClockStarted { chat_id, .. }
        | ConversationEvent::SlaClockStopped { chat_id, .. } => Some(*chat_id),
        ConversationEvent::SlaAlertRaised(breach) | ConversationEvent::SlaEscalated(breach) => {
            Some(breach.chat_id)
        }
        _ => None,
    }
}

/// A row of `sla` as the table stores it.
#[derive(Debug, Clone, Default)]
struct Stored {
    chat_id: String,
    stream: String,
    stakeholder: String,
    customer_message: String,
    clock_started_at: String,
    alert_due_at: String,
    escalation_due_at: String,
    next_due_at: Option<String>,
    alerted_at: Option<String>,
    escalated_at: Option<String>,
    policy_version: i64,
    running: i64,
    position: i64,
}

/// The columns of `sla`, in [`Stored::values`]' order; `true` for integers.
const STORED: [crate::rows::Column; 13] = [
    ("chat_id", false),
    ("stream", false),
    ("stakeholder", false),
    ("customer_message", false),
    ("clock_started_at", false),
    ("alert_due_at", false),
    ("escalation_due_at", false),
    ("next_due_at", false),
    ("alerted_at", false),
    ("escalated_at", false),
    ("policy_version", true),
    ("running", true),
    ("position", true),
];

impl Stored {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        let text = |i| row.text(i).unwrap_or_default();
        Stored {
            chat_id: text(0),
            stream: text(1),
            stakeholder: text(2),
            customer_message: text(3),
            clock_started_at: text(4),
            alert_due_at: text(5),
            escalation_due_at: text(6),
            next_due_at: row.text(7),
            alerted_at: row.text(8),
            escalated_at: row.text(9),
            policy_version: row.i64(10).unwrap_or_default(),
            running: row.i64(11).unwrap_or_default(),
            position: row.i64(12).unwrap_or_default(),
        }
    }
}

impl crate::rows::RowValues for Stored {
    fn values(&self) -> Vec<Arg> {
        vec![
            (&self.chat_id).into(),
            (&self.stream).into(),
            (&self.stakeholder).into(),
            (&self.customer_message).into(),
            (&self.clock_started_at).into(),
            (&self.alert_due_at).into(),
            (&self.escalation_due_at).into(),
            self.next_due_at.as_ref().into(),
            self.alerted_at.as_ref().into(),
            self.escalated_at.as_ref().into(),
            self.policy_version.into(),
            self.running.into(),
            self.position.into(),
        ]
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
