use super::*;

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
            format!("CREATE INDEX messages{s}_by_chat ON messages{s} (chat_id, position)"),
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

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        match conversation_event(event)? {
            Some(ConversationEvent::MessageReceived {
                chat_id,
                received_at,
                message,
            }) => {
                let media = message
                    .media
                    .as_ref()
                    .map(|m| serde_json::to_string(m).unwrap_or_default());
                // A receipt may have arrived before the message it is about.
                tx.execute(
                    &format!(
                        "INSERT INTO messages{s} (message_id, chat_id, stream, direction, kind, text, media,
                            provider_message_id, at, delivery_status, status_rank, error, position)
                         SELECT $1, $2, $3, 'INBOUND', $4, $5, $6, $7, $8, r.status, COALESCE(r.status_rank, 0), r.error, $9
                         FROM (SELECT 1 AS one) AS base
                         LEFT JOIN (SELECT status, status_rank, error FROM message_receipts{s}
                                    WHERE stream = $3 AND provider_message_id = $7
                                    ORDER BY status_rank DESC LIMIT 1) AS r ON 1 = 1
                         ON CONFLICT (message_id) DO NOTHING"
                    ),
                    &[
                        event.event_id.to_string().into(),
                        chat_id.to_string().into(),
                        (&event.stream).into(),
                        (&message.kind).into(),
                        message.text.clone().into(),
                        media.into(),
                        (&message.provider_message_id).into(),
                        message_time(message, *received_at).into(),
                        event.position.into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::ReplyQueued {
                chat_id,
                message_id,
                kind,
                text,
                template,
                media,
                queued_at,
                ..
            }) => {
                let described = media.as_ref().map(|m| {
                    serde_json::to_string(&chatledger_core::conversation::Media::described(
                        m,
                        text.clone(),
                    ))
                    .unwrap_or_default()
                });
                let text = text
                    .clone()
                    .or(template.as_ref().map(|t| format!("[template {}]", t.name)));
                tx.execute(
                    &format!(
                        "INSERT INTO messages{s} (message_id, chat_id, stream, direction, kind, text, at, delivery_status, status_rank, position, media)
                         VALUES ($1, $2, $3, 'OUTBOUND', $4, $5, $6, 'queued', $7, $8, $9)
                         ON CONFLICT (message_id) DO NOTHING"
                    ),
                    &[
                        message_id.to_string().into(),
                        chat_id.to_string().into(),
                        (&event.stream).into(),
                        kind.into(),
                        text.into(),
                        queued_at.into(),
                        status_rank("queued").into(),
                        event.position.into(),
                        described.into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::MessageDispatched {
                message_id,
                provider_message_id,
                ..
            }) => {
                // Receipts may have come before the outcome was recorded.
                tx.execute(
                    &format!(
                        "UPDATE messages{s} SET provider_message_id = $2,
                            delivery_status = COALESCE((SELECT status FROM message_receipts{s} r
                                WHERE r.stream = messages{s}.stream AND r.provider_message_id = $2
                                ORDER BY status_rank DESC LIMIT 1), 'accepted'),
                            status_rank = COALESCE((SELECT MAX(status_rank) FROM message_receipts{s} r
                                WHERE r.stream = messages{s}.stream AND r.provider_message_id = $2), $3)
                         WHERE message_id = $1"
                    ),
                    &[message_id.to_string().into(), provider_message_id.into(), status_rank("accepted").into()],
                )
                .await?;
            }
            Some(ConversationEvent::MessageDispatchFailed {
                message_id,
                code,
                error,
                ..
            }) => {
                let error = dispatch_error(*code, error);
                tx.execute(
                    &format!("UPDATE messages{s} SET delivery_status = 'failed', status_rank = $2, error = $3 WHERE message_id = $1"),
                    &[message_id.to_string().into(), status_rank("failed").into(), error.into()],
                )
                .await?;
            }
            Some(ConversationEvent::PersonalDataErased { .. }) => {
                // Text becomes "[erased]" (a template's name is not personal); captions and
                // file names inside media too, exactly as a replay reads them.
                tx.execute(
                    &format!(
                        "UPDATE messages{s} SET text = $2
                         WHERE stream = $1 AND text IS NOT NULL AND NOT (direction = 'OUTBOUND' AND kind = 'template')"
                    ),
                    &[(&event.stream).into(), ERASED.into()],
                )
                .await?;
                let with_media = tx
                    .fetch_all(
                        &format!("SELECT message_id, media FROM messages{s} WHERE stream = $1 AND media IS NOT NULL"),
                        &[(&event.stream).into()],
                    )
                    .await?;
                for row in with_media {
                    let Some(mut media) = row
                        .json(1)
                        .and_then(|m| serde_json::from_value::<Media>(m).ok())
                    else {
                        continue;
                    };
                    let erase = |field: &mut Option<String>| {
                        if field.is_some() {
                            *field = Some(ERASED.to_owned());
                        }
                    };
                    erase(&mut media.caption);
                    erase(&mut media.filename);
                    tx.execute(
                        &format!("UPDATE messages{s} SET media = $2 WHERE message_id = $1"),
                        &[
                            row.text(0).into(),
                            serde_json::to_string(&media).unwrap_or_default().into(),
                        ],
                    )
                    .await?;
                }
            }
            Some(ConversationEvent::ReceiptRecorded { receipt, .. }) => {
                let rank = status_rank(&receipt.status);
                let error = receipt.errors.first().map(|e| match &e.title {
                    Some(title) => format!("{}: {title}", e.code),
                    None => e.code.to_string(),
                });
                tx.execute(
                    &format!(
                        "INSERT INTO message_receipts{s} (stream, provider_message_id, status, status_rank, at, error, position)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (stream, provider_message_id, status) DO NOTHING"
                    ),
                    &[
                        (&event.stream).into(),
                        (&receipt.provider_message_id).into(),
                        (&receipt.status).into(),
                        rank.into(),
                        receipt.at.map(time_text).into(),
                        error.clone().into(),
                        event.position.into(),
                    ],
                )
                .await?;
                tx.execute(
                    &format!(
                        "UPDATE messages{s} SET delivery_status = $3, status_rank = $4, error = COALESCE($5, error)
                         WHERE stream = $1 AND provider_message_id = $2 AND status_rank < $4"
                    ),
                    &[
                        (&event.stream).into(),
                        (&receipt.provider_message_id).into(),
                        (&receipt.status).into(),
                        rank.into(),
                        error.into(),
                    ],
                )
                .await?;
            }
            // Other events do not change these tables.
            _ => {}
        }
        Ok(())
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
