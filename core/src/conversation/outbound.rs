//! What we send and what became of it: replies, files and templates, resolving with its
//! rating request, and the dispatcher's tries and outcomes.

use super::decide::Outgoing;
use super::*;

impl Conversation {
    /// A free-form text reply, inside the 24-hour window.
    pub(super) fn send_reply(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        text: String,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        self.the_open_chat(chat_id)?;
        if text.trim().is_empty() {
            return Err(ConversationRejection::EmptyReply);
        }
        self.reply_in_window(chat_id, message_id, Outgoing::text(text), by, now)
    }

    /// A file (with its caption), inside the 24-hour window.
    pub(super) fn send_media(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        media: StoredMedia,
        caption: Option<String>,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        self.the_open_chat(chat_id)?;
        let outgoing = Outgoing {
            text: caption.filter(|c| !c.trim().is_empty()),
            template: None,
            media: Some(media),
        };
        self.reply_in_window(chat_id, message_id, outgoing, by, now)
    }

    /// A template, allowed outside the window; a marketing one not to a customer who withdrew.
    pub(super) fn send_template(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        template: Template,
        withdrawn: Option<crate::consent::Standing>,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        self.the_open_chat(chat_id)?;
        if let Some(standing) = withdrawn {
            return Err(ConversationRejection::ConsentWithdrawn(standing));
        }
        let mut events = self.queue(
            chat_id,
            message_id,
            Outgoing::template(template),
            OutboundPurpose::Reply,
            by,
            now,
        );
        events.extend(self.stop_clock(SlaStop::Answered, now));
        Ok(events)
    }

    /// Resolves the chat and asks for a rating (as text in the window, else the template), unless the customer was asked lately.
    pub(super) fn resolve(
        &self,
        chat_id: Uuid,
        rating_message_id: Uuid,
        rating_template: Template,
        rating_at_most_every: chrono::Duration,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        self.the_open_chat(chat_id)?;
        let asked_lately = self
            .last_rating_request_at
            .is_some_and(|asked| now - asked < rating_at_most_every);
        let (text, template) = if self.within_service_window(now) {
            (Some(RATING_REQUEST_TEXT.to_owned()), None)
        } else {
            (None, Some(rating_template))
        };
        let mut events: Vec<ConversationEvent> = self
            .stop_clock(SlaStop::Resolved, now)
            .into_iter()
            .collect();
        events.push(ConversationEvent::ChatResolved {
            chat_id,
            by: by.clone(),
            resolved_at: now,
        });
        if !asked_lately {
            events.extend(self.queue(
                chat_id,
                rating_message_id,
                Outgoing {
                    text,
                    template,
                    media: None,
                },
                OutboundPurpose::RatingRequest,
                by,
                now,
            ));
        }
        Ok(events)
    }

    /// A try about to be made: recorded once, and only while the message is unsettled.
    pub(super) fn record_dispatch_attempt(
        &self,
        message_id: Uuid,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let outbound = self
            .outbound
            .get(&message_id)
            .ok_or(ConversationRejection::UnknownMessage(message_id))?;
        if outbound.settled || attempt <= outbound.attempts {
            return Ok(vec![]);
        }
        Ok(vec![ConversationEvent::DispatchAttempted {
            chat_id: outbound.chat_id,
            message_id,
            attempt,
            attempted_at: now,
        }])
    }

    /// What became of a try: sent, failed, or failed for now with when to go on.
    pub(super) fn record_dispatch(
        &self,
        message_id: Uuid,
        outcome: DispatchOutcome,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let outbound = self
            .outbound
            .get(&message_id)
            .ok_or(ConversationRejection::UnknownMessage(message_id))?;
        if outbound.settled {
            return Ok(vec![]);
        }
        let chat_id = outbound.chat_id;
        let latest = outbound.attempts;
        Ok(vec![match outcome {
            DispatchOutcome::Sent {
                provider_message_id,
            } => ConversationEvent::MessageDispatched {
                chat_id,
                message_id,
                provider_message_id,
                attempts,
                dispatched_at: now,
            },
            DispatchOutcome::Failed {
                code,
                error,
                permanent,
            } => ConversationEvent::MessageDispatchFailed {
                chat_id,
                message_id,
                code,
                error,
                permanent,
                attempts,
                failed_at: now,
            },
            // Only the latest try's failure says when to go on.
            DispatchOutcome::Retrying { .. } if attempts < latest => return Ok(vec![]),
            DispatchOutcome::Retrying {
                code,
                error,
                retry_at,
            } => ConversationEvent::DispatchRetrying {
                chat_id,
                message_id,
                attempt: attempts,
                code,
                error,
                retry_at,
            },
        }])
    }
}
