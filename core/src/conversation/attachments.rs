//! What the conversation decides about an inbound attachment: kept, or a failed try.

use super::*;

impl Conversation {
    pub(super) fn record_media(
        &self,
        message: String,
        index: u32,
        attempt: u32,
        outcome: Result<StoredMedia, MediaError>,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let chat_id = *self
            .received
            .get(&message)
            .ok_or_else(|| ConversationRejection::UnknownInboundMessage(message.clone()))?;
        let progress = self
            .media
            .get(&(message.clone(), index))
            .copied()
            .unwrap_or_default();
        if progress.settled {
            return Ok(vec![]);
        }
        Ok(vec![match outcome {
            Ok(media) => ConversationEvent::MediaStored {
                chat_id,
                message,
                index,
                media,
                stored_at: now,
            },
            Err(_) if attempt <= progress.attempts => return Ok(vec![]),
            Err(error) => ConversationEvent::MediaFetchFailed {
                chat_id,
                message,
                index,
                attempt,
                code: error.code,
                reason: error.reason,
                retryable: error.retryable,
                retry_at: retry_at.filter(|_| error.retryable),
                failed_at: now,
            },
        }])
    }
}
