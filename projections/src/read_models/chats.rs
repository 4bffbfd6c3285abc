use chatledger_core::conversation::{ChatStatus, AWAITING_CUSTOMER_TAG};

use super::*;

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
            format!("CREATE INDEX chat_tags{s}_by_tag ON chat_tags{s} (tag)"),
            format!("CREATE INDEX chats{s}_by_stakeholder ON chats{s} (stakeholder, position)"),
            format!("CREATE INDEX chats{s}_by_customer ON chats{s} (customer, position)"),
            format!("CREATE INDEX chats{s}_by_stream ON chats{s} (stream, position)"),
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

/// The chats a batch changes, by id, and the tags it applies.
#[derive(Default)]
struct ChatsFold {
    rows: crate::rows::Folded<String, Stored>,
    /// Tags applied and removed, in order, since the last write.
    tags: Vec<TagChange>,
}

/// A tag applied (a row of `chat_tags`) or removed.
enum TagChange {
    Applied(Vec<Arg>),
    Removed { chat_id: String, tag: String },
}

/// The columns of `chat_tags`, in the order the fold writes them.
const TAGS: [crate::rows::Column; 4] = [
    ("chat_id", false),
    ("tag", false),
    ("applied_by", false),
    ("applied_at", false),
];

/// A row of `chats` as the table stores it (times as their stored text).
#[derive(Debug, Clone)]
struct Stored {
    chat_id: String,
    stream: String,
    channel: String,
    channel_number: String,
    stakeholder: String,
    customer: String,
    customer_name: Option<String>,
    status: String,
    opened_at: String,
    opened_reason: String,
    context: String,
    previous_chat_id: Option<String>,
    superseded_by: Option<String>,
    assigned_to: Option<String>,
    last_incoming_at: Option<String>,
    service_window_ends_at: Option<String>,
    resolved_at: Option<String>,
    rating: Option<i64>,
    last_message_at: Option<String>,
    last_message_text: Option<String>,
    last_direction: Option<String>,
    position: i64,
}

/// The columns of `chats`, in [`Stored::values`]' order; `true` for integers.
const STORED: [crate::rows::Column; 22] = [
    ("chat_id", false),
    ("stream", false),
    ("channel", false),
    ("channel_number", false),
    ("stakeholder", false),
    ("customer", false),
    ("customer_name", false),
    ("status", false),
    ("opened_at", false),
    ("opened_reason", false),
    ("context", false),
    ("previous_chat_id", false),
    ("superseded_by", false),
    ("assigned_to", false),
    ("last_incoming_at", false),
    ("service_window_ends_at", false),
    ("resolved_at", false),
    ("rating", true),
    ("last_message_at", false),
    ("last_message_text", false),
    ("last_direction", false),
    ("position", true),
];

impl Stored {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        let text = |i| row.text(i).unwrap_or_default();
        Stored {
            chat_id: text(0),
            stream: text(1),
            channel: text(2),
            channel_number: text(3),
            stakeholder: text(4),
            customer: text(5),
            customer_name: row.text(6),
            status: text(7),
            opened_at: text(8),
            opened_reason: text(9),
            context: text(10),
            previous_chat_id: row.text(11),
            superseded_by: row.text(12),
            assigned_to: row.text(13),
            last_incoming_at: row.text(14),
            service_window_ends_at: row.text(15),
            resolved_at: row.text(16),
            rating: row.i64(17),
            last_message_at: row.text(18),
            last_message_text: row.text(19),
            last_direction: row.text(20),
            position: row.i64(21).unwrap_or_default(),
        }
    }

    fn values(&self) -> Vec<Arg> {
        vec![
            (&self.chat_id).into(),
            (&self.stream).into(),
            (&self.channel).into(),
            (&self.channel_number).into(),
            (&self.stakeholder).into(),
            (&self.customer).into(),
            self.customer_name.as_ref().into(),
            (&self.status).into(),
            (&self.opened_at).into(),
            (&self.opened_reason).into(),
            (&self.context).into(),
            self.previous_chat_id.as_ref().into(),
            self.superseded_by.as_ref().into(),
            self.assigned_to.as_ref().into(),
            self.last_incoming_at.as_ref().into(),
            self.service_window_ends_at.as_ref().into(),
            self.resolved_at.as_ref().into(),
            self.rating.into(),
            self.last_message_at.as_ref().into(),
            self.last_message_text.as_ref().into(),
            self.last_direction.as_ref().into(),
            self.position.into(),
        ]
    }

    /// The status after `event`, by the chat lifecycle's rule.
    fn move_status(&mut self, event: &ConversationEvent) {
        if let Some(status) = ChatStatus::parse(&self.status) {
            self.status = status
                .after(event, self.assigned_to.is_some())
                .as_str()
                .to_owned();
        }
    }
}

#[async_trait]
impl BatchFold for ChatsFold {
    /// Reads the rows of the chats `events` name that are not in memory yet.
    async fn read(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        let mut wanted: Vec<Arg> = Vec::new();
        for event in events {
            if let Some(chat_id) = conversation_event(event)?.and_then(chat_of) {
                let chat_id = chat_id.to_string();
                if self.rows.unread(&chat_id) {
                    wanted.push(Arg::Text(chat_id));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = STORED.iter().map(|(name, _)| *name).collect();
        let sql = format!(
            "SELECT {} FROM chats{s} WHERE chat_id IN ({})",
            names.join(", "),
            tx.json_texts("$1")
        );
        for row in tx
            .fetch_keys(&sql, crate::rows::json_param(&wanted), wanted.len())
            .await?
        {
            let stored = Stored::from_row(&row);
            self.rows.found(stored.chat_id.clone(), stored);
        }
        Ok(())
    }

    /// One event's change to its chat's row or its tags.
    fn evolve(&mut self, event: &DecodedEvent, change: &ConversationEvent) {
        match change {
            ConversationEvent::ChatOpened {
                chat_id,
                conversation,
                reason,
                context,
                previous_chat_id,
                opened_at,
            } => {
                let key = chat_id.to_string();
                self.rows.add(
                    key.clone(),
                    Stored {
                        chat_id: key.clone(),
                        stream: event.stream.clone(),
                        channel: conversation.channel.clone(),
                        channel_number: conversation.channel_number.clone(),
                        stakeholder: conversation.stakeholder.clone(),
                        customer: customer_id(&conversation.customer),
                        customer_name: None,
                        status: ChatStatus::Open.as_str().to_owned(),
                        opened_at: time_text(*opened_at),
                        opened_reason: format!("{reason:?}"),
                        context: context.to_string(),
                        previous_chat_id: previous_chat_id.map(|id| id.to_string()),
                        superseded_by: None,
                        assigned_to: None,
                        last_incoming_at: None,
                        service_window_ends_at: None,
                        resolved_at: None,
                        rating: None,
                        last_message_at: None,
                        last_message_text: None,
                        last_direction: None,
                        position: event.position as i64,
                    },
                );
            }
            ConversationEvent::MessageReceived {
                chat_id,
                received_at,
                message,
            } => {
                let Some(row) = self.change(chat_id) else {
                    return;
                };
                let at = message_time(message, *received_at);
                row.last_incoming_at = Some(time_text(at));
                row.service_window_ends_at = Some(time_text(service_window_end(at)));
                if let Some(name) = &message.customer.name {
                    row.customer_name = Some(name.clone());
                }
                row.last_message_at = Some(time_text(at));
                row.last_message_text = Some(preview(message));
                row.last_direction = Some("INBOUND".into());
                row.move_status(change);
            }
            ConversationEvent::ContextChanged {
                identity_changed: false,
                chat_id: Some(chat_id),
                context,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.context = context.to_string();
                }
            }
            ConversationEvent::ChatClosed {
                chat_id,
                superseded_by,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.superseded_by = Some(superseded_by.to_string());
                }
            }
            ConversationEvent::ReplyQueued {
                chat_id,
                text,
                template,
                queued_at,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    let shown =
                        outbound_text(text.as_deref(), template.as_ref()).unwrap_or_default();
                    row.last_message_at = Some(time_text(*queued_at));
                    row.last_message_text =
                        Some(chatledger_core::history::preview(Some(&shown), ""));
                    row.last_direction = Some("OUTBOUND".into());
                    row.move_status(change);
                }
            }
            ConversationEvent::ChatResolved {
                chat_id,
                resolved_at,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.resolved_at = Some(time_text(*resolved_at));
                }
            }
            ConversationEvent::ChatRated {
                chat_id, rating, ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.rating = Some(i64::from(*rating));
                }
            }
            ConversationEvent::ChatAssigned {
                chat_id, executive, ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.assigned_to = Some(executive.id.to_string());
                }
            }
            ConversationEvent::ChatReassigned {
                chat_id, executive, ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.assigned_to = executive.as_ref().map(|e| e.id.to_string());
                }
            }
            ConversationEvent::TagApplied {
                chat_id,
                tag,
                by,
                at,
            } => self.tags.push(TagChange::Applied(vec![
                chat_id.to_string().into(),
                tag.into(),
                by.into(),
                at.into(),
            ])),
            ConversationEvent::TagRemoved { chat_id, tag, .. } => {
                self.tags.push(TagChange::Removed {
                    chat_id: chat_id.to_string(),
                    tag: tag.clone(),
                })
            }
            // Other events do not change a chat's row or its tags.
            _ => {}
        }
    }

    /// Writes the changed rows (one statement) and the tags.
    async fn write(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError> {
        let rows: Vec<Vec<Arg>> = self
            .rows
            .take_changed()
            .into_iter()
            .map(Stored::values)
            .collect();
        tx.write_rows(
            &format!("chats{s}"),
            &STORED,
            &["chat_id"],
            crate::rows::OnConflict::Replace,
            &rows,
        )
        .await?;
        self.write_tags(tx, s).await
    }

    async fn erase(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        stream: &str,
    ) -> Result<(), ProjectionError> {
        tx.execute(
            &format!(
                "UPDATE chats{s} SET customer_name = CASE WHEN customer_name IS NULL THEN NULL ELSE $2 END,
                    last_message_text = CASE WHEN last_message_text IS NULL THEN NULL ELSE $2 END
                 WHERE stream = $1"
            ),
            &[stream.into(), ERASED.into()],
        )
        .await?;
        self.rows.forget(|row| row.stream == stream);
        Ok(())
    }
}

impl ChatsFold {
    /// The row of `chat_id`, when the chat is in the table (or opened in this batch), marked
    /// changed.
    fn change(&mut self, chat_id: &uuid::Uuid) -> Option<&mut Stored> {
        self.rows.change(&chat_id.to_string())
    }

    /// Writes the tag changes since the last write, in order: the tags applied between two
    /// removals with one statement (each unless its chat has it already: a tag applied twice
    /// keeps its first application), each removal with one.
    async fn write_tags(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError> {
        let mut applied: Vec<Vec<Arg>> = Vec::new();
        for change in std::mem::take(&mut self.tags) {
            match change {
                TagChange::Applied(row) => applied.push(row),
                TagChange::Removed { chat_id, tag } => {
                    write_applied_tags(tx, s, &std::mem::take(&mut applied)).await?;
                    tx.execute(
                        &format!("DELETE FROM chat_tags{s} WHERE chat_id = $1 AND tag = $2"),
                        &[chat_id.into(), tag.into()],
                    )
                    .await?;
                }
            }
        }
        write_applied_tags(tx, s, &applied).await
    }
}

/// Applied tags, rows of `chat_tags`, in one statement.
async fn write_applied_tags(
    tx: &mut ReadTx,
    s: &str,
    rows: &[Vec<Arg>],
) -> Result<(), ProjectionError> {
    tx.write_rows(
        &format!("chat_tags{s}"),
        &TAGS,
        &["chat_id", "tag"],
        crate::rows::OnConflict::Keep,
        rows,
    )
    .await?;
    Ok(())
}

/// The chat whose row an event may change.
fn chat_of(event: &ConversationEvent) -> Option<uuid::Uuid> {
    match event {
        ConversationEvent::ChatOpened { chat_id, .. }
        | ConversationEvent::MessageReceived { chat_id, .. }
        | ConversationEvent::ChatClosed { chat_id, .. }
        | ConversationEvent::ReplyQueued { chat_id, .. }
        | ConversationEvent::ChatResolved { chat_id, .. }
        | ConversationEvent::ChatRated { chat_id, .. }
        | ConversationEvent::ChatAssigned { chat_id, .. }
        | ConversationEvent::ChatReassigned { chat_id, .. } => Some(*chat_id),
        ConversationEvent::ContextChanged {
            identity_changed: false,
            chat_id: Some(chat_id),
            ..
        } => Some(*chat_id),
        _ => None,
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
