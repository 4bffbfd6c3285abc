use chatledger_core::media::{MediaFile, MediaStatus, StoredMedia};

use super::*;

/// `message_media`: each attachment of a message (inbound: by provider message id; outbound:
/// by our message id) and where it stands: being fetched, kept (with its key, hash, size and
/// type), or given up (with the reason). What the events mean is [`MediaFile`]'s rule.
pub struct MessageMedia;

/// The columns [`MessageMedia`] keeps, in the order [`file_from_row`] reads them.
const MEDIA_COLUMNS: &str =
    "message, idx, status, object_key, sha256, size, mime, filename, failure";

/// An attachment back from a row of `message_media` read with [`MEDIA_COLUMNS`].
fn file_from_row(row: &crate::read_db::DbRow) -> (String, MediaFile) {
    let stored = row.text(3).map(|key| StoredMedia {
        key,
        sha256: row.text(4).unwrap_or_default(),
        size: row.i64(5).unwrap_or_default().max(0) as u64,
        mime: row.text(6).unwrap_or_default(),
        filename: row.text(7),
    });
    let file = MediaFile {
        index: row.i64(1).unwrap_or_default().max(0) as u32,
        status: MediaStatus::parse(&row.text(2).unwrap_or_default()),
        stored,
        failure: row.text(8),
    };
    (row.text(0).unwrap_or_default(), file)
}

async fn write(
    tx: &mut ReadTx,
    s: &str,
    event: &DecodedEvent,
    chat_id: &uuid::Uuid,
    message: &str,
    file: &MediaFile,
) -> Result<(), ProjectionError> {
    let stored = file.stored.as_ref();
    // A missing size is a NULL, which PostgreSQL types as text unless told.
    tx.execute(
        &format!(
            "INSERT INTO message_media{s} (stream, message, idx, chat_id, status, object_key, sha256, size, mime, filename, failure, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7, CAST($8 AS BIGINT), $9, $10, $11, $12)
             ON CONFLICT (stream, message, idx) DO UPDATE SET status = $5, object_key = $6, sha256 = $7, size = CAST($8 AS BIGINT),
                mime = $9, filename = $10, failure = $11, position = $12"
        ),
        &[
            (&event.stream).into(),
            message.into(),
            i64::from(file.index).into(),
            chat_id.to_string().into(),
            file.status.as_str().into(),
            stored.map(|m| m.key.clone()).into(),
            stored.map(|m| m.sha256.clone()).into(),
            stored.map(|m| m.size).into(),
            stored.map(|m| m.mime.clone()).into(),
            stored.and_then(|m| m.filename.clone()).into(),
            file.failure.clone().into(),
            event.position.into(),
        ],
    )
    .await?;
    Ok(())
}

#[async_trait]
impl Projector for MessageMedia {
    fn name(&self) -> &'static str {
        "message_media"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["message_media"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "MessageReceived"
                | "ReplyQueued"
                | "MediaStored"
                | "MediaFetchFailed"
                | "PersonalDataErased"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE message_media{s} (
                    stream TEXT NOT NULL,
                    message TEXT NOT NULL,
                    idx BIGINT NOT NULL,
                    chat_id TEXT NOT NULL,
                    status TEXT NOT NULL,
                    object_key TEXT,
                    sha256 TEXT,
                    size BIGINT,
                    mime TEXT,
                    filename TEXT,
                    failure TEXT,
                    position BIGINT NOT NULL,
                    PRIMARY KEY (stream, message, idx)
                )"
        )]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE INDEX message_media{s}_by_chat ON message_media{s} (chat_id)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        match conversation_event(event)? {
            Some(ConversationEvent::MessageReceived {
                chat_id, message, ..
            }) => {
                for source in message.media_sources() {
                    tx.execute(
                        &format!(
                            "INSERT INTO message_media{s} (stream, message, idx, chat_id, status, position)
                             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream, message, idx) DO NOTHING"
                        ),
                        &[
                            (&event.stream).into(),
                            (&message.provider_message_id).into(),
                            i64::from(source.index).into(),
                            chat_id.to_string().into(),
                            MediaStatus::Pending.as_str().into(),
                            event.position.into(),
                        ],
                    )
                    .await?;
                }
            }
            Some(ConversationEvent::ReplyQueued {
                chat_id,
                message_id,
                media: Some(media),
                ..
            }) => {
                let file = MediaFile::stored(0, media.clone());
                write(tx, s, event, chat_id, &message_id.to_string(), &file).await?;
            }
            Some(ConversationEvent::MediaStored {
                chat_id,
                message,
                index,
                media,
                ..
            }) => {
                let file = MediaFile::stored(*index, media.clone());
                write(tx, s, event, chat_id, message, &file).await?;
            }
            Some(ConversationEvent::MediaFetchFailed {
                chat_id,
                message,
                index,
                code,
                reason,
                retryable,
                ..
            }) => {
                let row = tx
                    .fetch_optional(
                        &format!("SELECT {MEDIA_COLUMNS} FROM message_media{s} WHERE stream = $1 AND message = $2 AND idx = $3"),
                        &[(&event.stream).into(), message.into(), i64::from(*index).into()],
                    )
                    .await?;
                let mut file = row
                    .as_ref()
                    .map(|r| file_from_row(r).1)
                    .unwrap_or_else(|| MediaFile::pending(*index));
                file.failed(*code, reason, *retryable);
                write(tx, s, event, chat_id, message, &file).await?;
            }
            Some(ConversationEvent::PersonalDataErased { .. }) => {
                tx.execute(
                    &format!("UPDATE message_media{s} SET filename = $2 WHERE stream = $1 AND filename IS NOT NULL"),
                    &[(&event.stream).into(), ERASED.into()],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The attachments of messages named by `messages` (provider message ids inbound, our ids
/// outbound), by chat and message, in index order. A provider's id is unique only where the
/// provider says, hence the chat in the key.
pub async fn files_of_messages(
    db: &crate::read_db::ReadDb,
    messages: &[&str],
) -> Result<std::collections::HashMap<(String, String), Vec<MediaFile>>, sqlx::Error> {
    let mut files: std::collections::HashMap<(String, String), Vec<MediaFile>> = Default::default();
    if messages.is_empty() {
        return Ok(files);
    }
    let names: Vec<Arg> = messages.iter().map(|&m| m.into()).collect();
    let rows = db
        .fetch_all(
            &format!(
                "SELECT {MEDIA_COLUMNS}, chat_id FROM message_media WHERE message IN ({}) ORDER BY idx",
                crate::read_db::placeholders(names.len())
            ),
            &names,
        )
        .await?;
    for row in &rows {
        let (message, file) = file_from_row(row);
        let chat = row.text(9).unwrap_or_default();
        files.entry((chat, message)).or_default().push(file);
    }
    Ok(files)
}
