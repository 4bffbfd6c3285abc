use super::*;

mod fold;

use fold::MessagesFold;

/// `messages` (both directions) and `message_receipts` (every receipt, kept).
pub struct Messages;

#[async_trait]
impl Projector for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["messages", "message_receipts"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "MessageReceived"
                | "ReplyQueued"
                | "MessageDispatched"
                | "MessageDispatchFailed"
                | "PersonalDataErased"
                | "ReceiptRecorded"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE messages{s} (
                    message_id TEXT PRIMARY KEY,
                    chat_id TEXT NOT NULL,
                    stream TEXT NOT NULL,
                    direction TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    text TEXT,
                    media TEXT,
                    provider_message_id TEXT,
                    at TEXT NOT NULL,
                    delivery_status TEXT,
                    status_rank BIGINT NOT NULL DEFAULT 0,
                    error TEXT,
                    position BIGINT NOT NULL
                )"
            ),
            format!("CREATE INDEX messages{s}_by_provider_id ON messages{s} (stream, provider_message_id)"),
            format!(
                "CREATE TABLE message_receipts{s} (
                    stream TEXT NOT NULL,
                    provider_message_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    status_rank BIGINT NOT NULL,
                    at TEXT,
                    error TEXT,
                    position BIGINT NOT NULL,
                    PRIMARY KEY (stream, provider_message_id, status)
                )"
            ),
        ]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE INDEX messages{s}_by_chat ON messages{s} (chat_id, position)"
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

    /// Folds the batch's messages and receipts in memory (each message and each receipt read
    /// from the tables once) and writes the changed messages and the new receipts with one
    /// statement each.
    async fn apply_batch(
        &self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        fold_batch::<MessagesFold>(tx, s, events).await
    }
}

/// A message as `messages` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub message_id: String,
    pub provider_message_id: Option<String>,
    /// Ours (sent) rather than the customer's.
    pub outbound: bool,
    pub kind: String,
    pub text: Option<String>,
    /// The provider's description of its attachment, if it has one.
    pub media: Option<chatledger_core::conversation::Media>,
    pub at: chrono::DateTime<chrono::Utc>,
    pub delivery_status: Option<String>,
    pub error: Option<String>,
    pub chat_id: String,
}

const COLUMNS: &str =
    "message_id, provider_message_id, direction, kind, text, media, at, delivery_status, error, chat_id";

impl MessageRow {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        MessageRow {
            message_id: row.text(0).unwrap_or_default(),
            provider_message_id: row.text(1),
            outbound: row.text(2).as_deref() == Some("OUTBOUND"),
            kind: row.text(3).unwrap_or_default(),
            text: row.text(4),
            media: row.json(5).and_then(|m| serde_json::from_value(m).ok()),
            at: row.time(6).unwrap_or_default(),
            delivery_status: row.text(7),
            error: row.text(8),
            chat_id: row.text(9).unwrap_or_default(),
        }
    }
}

/// One message by our id (the event's, for a received one).
pub async fn message(
    db: &crate::read_db::ReadDb,
    message_id: &str,
) -> Result<Option<MessageRow>, sqlx::Error> {
    let row = db
        .fetch_optional(
            &format!("SELECT {COLUMNS} FROM messages WHERE message_id = $1"),
            &[message_id.into()],
        )
        .await?;
    Ok(row.as_ref().map(MessageRow::from_row))
}

/// A chat's messages after the log position `after`, oldest first, at most `limit`.
pub async fn messages_of_chat(
    db: &crate::read_db::ReadDb,
    chat_id: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    let rows = db
        .fetch_all(
            &format!(
                "SELECT {COLUMNS} FROM messages WHERE chat_id = $1 AND position > $2 ORDER BY position LIMIT $3"
            ),
            &[chat_id.into(), after.into(), limit.into()],
        )
        .await?;
    Ok(rows.iter().map(MessageRow::from_row).collect())
}
