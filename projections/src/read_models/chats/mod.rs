use chatledger_core::conversation::{ChatStatus, AWAITING_CUSTOMER_TAG};

use super::*;

mod fold;

use fold::ChatsFold;

/// `chats`: one row per chat, its lifecycle and what the dashboard lists.
pub struct Chats;

#[async_trait]
impl Projector for Chats {
    fn name(&self) -> &'static str {
        "chats"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["chats", "chat_tags"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "ChatOpened"
                | "MessageReceived"
                | "ContextChanged"
                | "ChatClosed"
                | "ReplyQueued"
                | "ChatResolved"
                | "ChatRated"
                | "TagApplied"
                | "TagRemoved"
                | "PersonalDataErased"
                | "ChatAssigned"
                | "ChatReassigned"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE chats{s} (
                    chat_id TEXT PRIMARY KEY,
                    stream TEXT NOT NULL,
                    channel TEXT NOT NULL,
                    channel_number TEXT NOT NULL,
                    stakeholder TEXT NOT NULL,
                    customer TEXT NOT NULL,
                    customer_name TEXT,
                    status TEXT NOT NULL,
                    opened_at TEXT NOT NULL,
                    opened_reason TEXT NOT NULL,
                    context TEXT NOT NULL,
                    previous_chat_id TEXT,
                    superseded_by TEXT,
                    assigned_to TEXT,
                    last_incoming_at TEXT,
                    service_window_ends_at TEXT,
                    resolved_at TEXT,
                    rating BIGINT,
                    last_message_at TEXT,
                                        last_message_text TEXT,
                    last_direction TEXT,
                    position BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE chat_tags{s} (
                    chat_id TEXT NOT NULL,
                    tag TEXT NOT NULL,
                    applied_by TEXT NOT NULL,
                    applied_at TEXT NOT NULL,
                    PRIMARY KEY (chat_id, tag)
                )"
            ),
            format!("CREATE INDEX chats{s}_by_stream ON chats{s} (stream, position)"),
        ]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![
            format!("CREATE INDEX chat_tags{s}_by_tag ON chat_tags{s} (tag)"),
            format!("CREATE INDEX chats{s}_by_stakeholder ON chats{s} (stakeholder, position)"),
            format!("CREATE INDEX chats{s}_by_customer ON chats{s} (customer, position)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        self.apply_batch(tx, s, &[event]).await
    }

    /// Folds the batch's changes to each chat in memory (from its row, read once) and writes
    /// every changed row with one statement; the tags applied between two removals with one
    /// more.
    async fn apply_batch(
        &self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        fold_batch::<ChatsFold>(tx, s, events).await
    }
}

/// A chat as `chats` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRow {
    pub chat_id: String,
    pub channel: String,
    pub channel_number: String,
    pub stakeholder: String,
    pub customer: String,
    pub customer_name: Option<String>,
    pub status: ChatStatus,
    pub opened_at: chrono::DateTime<chrono::Utc>,
    pub opened_reason: String,
    pub context: Value,
    pub previous_chat_id: Option<String>,
    pub superseded_by: Option<String>,
    pub assigned_to: Option<String>,
    pub last_incoming_at: Option<chrono::DateTime<chrono::Utc>>,
    pub service_window_ends_at: Option<chrono::DateTime<chrono::Utc>>,
    pub resolved_at: Option<chrono::DateTime<chrono::Utc>>,
    pub rating: Option<i64>,
    /// The log position of the chat's latest change: the order of the dashboard's list.
    pub position: i64,
    pub stream: String,
    /// `OUTBOUND` when we spoke last (the chat waits for the customer).
    pub last_direction: Option<String>,
    pub last_message_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_message_preview: Option<String>,
}

const COLUMNS: [&str; 22] = [
    "chat_id",
    "channel",
    "channel_number",
    "stakeholder",
    "customer",
    "customer_name",
    "status",
    "opened_at",
    "opened_reason",
    "context",
    "previous_chat_id",
    "superseded_by",
    "assigned_to",
    "last_incoming_at",
    "service_window_ends_at",
    "resolved_at",
    "rating",
    "position",
    "stream",
    "last_direction",
    "last_message_at",
    "last_message_text",
];

/// The columns of `chats` as [`ChatRow::from_row`] reads them, each prefixed (`c.`) or not.
fn columns(prefix: &str) -> String {
    COLUMNS
        .iter()
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ChatRow {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        ChatRow {
            chat_id: row.text(0).unwrap_or_default(),
            channel: row.text(1).unwrap_or_default(),
            channel_number: row.text(2).unwrap_or_default(),
            stakeholder: row.text(3).unwrap_or_default(),
            customer: row.text(4).unwrap_or_default(),
            customer_name: row.text(5),
            status: row
                .text(6)
                .and_then(|s| ChatStatus::parse(&s))
                .unwrap_or(ChatStatus::Open),
            opened_at: row.time(7).unwrap_or_default(),
            opened_reason: row.text(8).unwrap_or_default(),
            context: row.json(9).unwrap_or(Value::Object(Default::default())),
            previous_chat_id: row.text(10),
            superseded_by: row.text(11),
            assigned_to: row.text(12),
            last_incoming_at: row.time(13),
            service_window_ends_at: row.time(14),
            resolved_at: row.time(15),
            rating: row.i64(16),
            position: row.i64(17).unwrap_or_default(),
            stream: row.text(18).unwrap_or_default(),
            last_direction: row.text(19),
            last_message_at: row.time(20),
            last_message_preview: row.text(21),
        }
    }
}

/// One chat by its id.
pub async fn chat(
    db: &crate::read_db::ReadDb,
    chat_id: &str,
) -> Result<Option<ChatRow>, sqlx::Error> {
    let row = db
        .fetch_optional(
            &format!("SELECT {} FROM chats WHERE chat_id = $1", columns("")),
            &[chat_id.into()],
        )
        .await?;
    Ok(row.as_ref().map(ChatRow::from_row))
}

/// Where a chat belongs: its stream and its stakeholder (what deciding who may see it, or
/// folding it from the log, needs; cheaper than the whole row).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPlace {
    pub stream: String,
    pub stakeholder: String,
}

/// Where one chat belongs, by its id.
pub async fn place_of(
    db: &crate::read_db::ReadDb,
    chat_id: &str,
) -> Result<Option<ChatPlace>, sqlx::Error> {
    let row = db
        .fetch_optional(
            "SELECT stream, stakeholder FROM chats WHERE chat_id = $1",
            &[chat_id.into()],
        )
        .await?;
    Ok(row.map(|row| ChatPlace {
        stream: row.text(0).unwrap_or_default(),
        stakeholder: row.text(1).unwrap_or_default(),
    }))
}

/// A customer's chats with one stakeholder, oldest first.
pub async fn chats_of_customer(
    db: &crate::read_db::ReadDb,
    stakeholder: &str,
    customer: &str,
) -> Result<Vec<ChatRow>, sqlx::Error> {
    let rows = db
        .fetch_all(
            &format!(
                "SELECT {} FROM chats WHERE stakeholder = $1 AND customer = $2 ORDER BY position",
                columns("")
            ),
            &[stakeholder.into(), customer.into()],
        )
        .await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// How many chats assigned to an executive are not resolved or closed.
pub async fn open_chats_of(
    db: &crate::read_db::ReadDb,
    executive_id: &str,
) -> Result<i64, sqlx::Error> {
    let row = db
        .fetch_optional(
            "SELECT COUNT(*) FROM chats WHERE assigned_to = $1 AND status NOT IN ('RESOLVED', 'CLOSED')",
            &[executive_id.into()],
        )
        .await?;
    Ok(row.and_then(|r| r.i64(0)).unwrap_or(0))
}

/// Which chats a page of the dashboard's list holds.
#[derive(Debug, Clone, Default)]
pub struct ChatsFilter {
    /// Only these stakeholders' chats (`None`: every stakeholder's).
    pub stakeholders: Option<Vec<String>>,
    pub status: Option<ChatStatus>,
    pub assigned_to: Option<String>,
    /// Chats carrying this tag; [`AWAITING_CUSTOMER_TAG`] means "we spoke last".
    pub tag: Option<String>,
    /// The customer key as stored.
    pub customer: Option<String>,
    /// Only chats whose position is below this (the page's cursor).
    pub before_position: Option<i64>,
}

/// The chats `filter` admits, latest change first, at most `limit`.
pub async fn chats_page(
    db: &crate::read_db::ReadDb,
    filter: &ChatsFilter,
    limit: i64,
) -> Result<Vec<ChatRow>, sqlx::Error> {
    let mut conditions: Vec<String> = vec![];
    let mut args: Vec<Arg> = vec![];
    let arg = |args: &mut Vec<Arg>, value: Arg| {
        args.push(value);
        format!("${}", args.len())
    };
    if let Some(stakeholders) = &filter.stakeholders {
        if stakeholders.is_empty() {
            return Ok(vec![]);
        }
        let marks: Vec<String> = stakeholders
            .iter()
            .map(|s| arg(&mut args, s.as_str().into()))
            .collect();
        conditions.push(format!("stakeholder IN ({})", marks.join(", ")));
    }
    if let Some(status) = &filter.status {
        conditions.push(format!(
            "status = {}",
            arg(&mut args, status.as_str().into())
        ));
    }
    if let Some(executive) = &filter.assigned_to {
        conditions.push(format!(
            "assigned_to = {}",
            arg(&mut args, executive.as_str().into())
        ));
    }
    match filter.tag.as_deref() {
        Some(AWAITING_CUSTOMER_TAG) => conditions.push("last_direction = 'OUTBOUND'".to_owned()),
        Some(tag) => conditions.push(format!(
            "chat_id IN (SELECT chat_id FROM chat_tags WHERE tag = {})",
            arg(&mut args, tag.into())
        )),
        None => {}
    }
    if let Some(customer) = &filter.customer {
        conditions.push(format!(
            "customer = {}",
            arg(&mut args, customer.as_str().into())
        ));
    }
    if let Some(before) = filter.before_position {
        conditions.push(format!("position < {}", arg(&mut args, before.into())));
    }
    let limit = arg(&mut args, limit.into());
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let rows = db
        .fetch_all(
            &format!(
                "SELECT {} FROM chats {where_clause} ORDER BY position DESC LIMIT {limit}",
                columns("")
            ),
            &args,
        )
        .await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// Chats whose customer waits for an answer (a running SLA clock), of one stakeholder or all,
/// the next due first, then the longest waiting; at most `limit`.
pub async fn sla_board(
    db: &crate::read_db::ReadDb,
    stakeholder: Option<&str>,
    limit: i64,
) -> Result<Vec<ChatRow>, sqlx::Error> {
    let rows = db
        .fetch_all(
            &format!(
                "SELECT {} FROM chats c JOIN sla s ON s.chat_id = c.chat_id
                 WHERE s.running = 1 AND ($1 = '' OR c.stakeholder = $1)
                 ORDER BY s.next_due_at IS NULL, s.next_due_at, s.clock_started_at LIMIT $2",
                columns("c.")
            ),
            &[stakeholder.unwrap_or_default().into(), limit.into()],
        )
        .await?;
    Ok(rows.iter().map(ChatRow::from_row).collect())
}

/// The tags executives applied to a chat, sorted.
pub async fn tags_of(
    db: &crate::read_db::ReadDb,
    chat_id: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = db
        .fetch_all(
            "SELECT tag FROM chat_tags WHERE chat_id = $1 ORDER BY tag",
            &[chat_id.into()],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| r.text(0)).collect())
}

/// The tags executives applied to each of several chats, sorted (chats without tags are
/// absent).
pub async fn tags_of_chats(
    db: &crate::read_db::ReadDb,
    chat_ids: &[&str],
) -> Result<std::collections::HashMap<String, Vec<String>>, sqlx::Error> {
    let mut by_chat: std::collections::HashMap<String, Vec<String>> = Default::default();
    if chat_ids.is_empty() {
        return Ok(by_chat);
    }
    let ids: Vec<Arg> = chat_ids.iter().map(|&id| id.into()).collect();
    let rows = db
        .fetch_all(
            &format!(
                "SELECT chat_id, tag FROM chat_tags WHERE chat_id IN ({}) ORDER BY chat_id, tag",
                crate::read_db::placeholders(ids.len())
            ),
            &ids,
        )
        .await?;
    for row in &rows {
        if let (Some(chat), Some(tag)) = (row.text(0), row.text(1)) {
            by_chat.entry(chat).or_default().push(tag);
        }
    }
    Ok(by_chat)
}
