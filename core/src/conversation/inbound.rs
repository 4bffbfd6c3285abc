//! What comes in from the customer's side: messages (a new chat, a rating, an SLA clock) and
//! delivery receipts.

use super::*;

impl Conversation {
    /// Whether a customer's message is new, and what it opens, rates or starts.
    pub(super) fn receive_message(
        &self,
        conversation: ConversationRef,
        message: Box<InboundMessage>,
        new_chat_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        if message.provider_message_id.is_empty() {
            return Err(ConversationRejection::MissingMessageId);
        }
        if self.received.contains_key(&message.provider_message_id) {
            return Ok(vec![]);
        }
        // An answer 1-5 to a pending rating request is the chat's rating.
        if let (Some(rated), Some(rating)) = (self.awaiting_rating, rating_in(&message)) {
            let provider_message_id = message.provider_message_id.clone();
            return Ok(vec![
                ConversationEvent::MessageReceived {
                    chat_id: rated,
                    received_at: now,
                    message,
                },
                ConversationEvent::ChatRated {
                    chat_id: rated,
                    rating,
                    provider_message_id,
                    rated_at: now,
                },
            ]);
        }
        let conversation_stakeholder = conversation.stakeholder.clone();
        let mut events = Vec::with_capacity(3);
        let chat_id = match self.open_chat() {
            Some(chat) => chat.chat_id,
            None => {
                let previous = self.chat.as_ref().map(|c| c.chat_id);
                events.push(ConversationEvent::ChatOpened {
                    chat_id: new_chat_id,
                    conversation,
                    reason: if previous.is_some() {
                        OpenReason::AfterResolution
                    } else {
                        OpenReason::FirstMessage
                    },
                    context: if self.context.is_null() {
                        Value::Object(Default::default())
                    } else {
                        self.context.clone()
                    },
                    previous_chat_id: previous,
                    opened_at: now,
                });
                new_chat_id
            }
        };
        let clock_running = self.sla.as_ref().is_some_and(|c| c.chat_id == chat_id);
        let start = (!clock_running).then(|| ConversationEvent::SlaClockStarted {
            chat_id,
            stakeholder: conversation_stakeholder.clone(),
            customer_message: message.provider_message_id.clone(),
            // From when we received it: we cannot answer before, whatever the
            // provider's timestamp says (a late delivery is not our wait).
            started_at: now,
        });
        events.push(ConversationEvent::MessageReceived {
            chat_id,
            received_at: now,
            message,
        });
        events.extend(start);
        Ok(events)
    }

    /// A delivery receipt, once per message and status; one naming our message by its callback settles it as sent.
    pub(super) fn record_receipt(
        &self,
        receipt: Box<Receipt>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        if receipt.provider_message_id.is_empty() {
            return Err(ConversationRejection::MissingMessageId);
        }
        let key = (receipt.provider_message_id.clone(), receipt.status.clone());
        if self.receipts.contains(&key) {
            return Ok(vec![]);
        }
        // Receipts are about messages we sent. One for a message this conversation has
        // no record of is still a fact, and is recorded as such.
        let mut events = Vec::new();
        let mut chat_id = self
            .sent
            .get(&receipt.provider_message_id)
            .or_else(|| self.received.get(&receipt.provider_message_id))
            .copied();
        // A receipt that names one of our messages by the value we gave the provider
        // to echo, while we have no outcome for it (its sender stopped between
        // sending and recording, or the receipt came first): the provider accepted it.
        if chat_id.is_none() {
            if let Some((message_id, outbound)) = receipt
                .callback
                .as_deref()
                .and_then(|c| Uuid::parse_str(c).ok())
                .and_then(|id| Some((id, self.outbound.get(&id)?)))
                .filter(|(_, outbound)| !outbound.settled)
            {
                chat_id = Some(outbound.chat_id);
                events.push(ConversationEvent::MessageDispatched {
                    chat_id: outbound.chat_id,
                    message_id,
                    provider_message_id: receipt.provider_message_id.clone(),
                    attempts: outbound.attempts,
                    dispatched_at: now,
                });
            }
        }
        events.push(ConversationEvent::ReceiptRecorded {
            chat_id,
            known_message: chat_id.is_some(),
            received_at: now,
            receipt,
        });
        Ok(events)
    }
}

/// The rating a message gives, if it is one: a text (or button) of just 1 to 5.
fn rating_in(message: &InboundMessage) -> Option<u8> {
    let text = message
        .text
        .as_deref()?
        .trim()
        .trim_end_matches(['.', '!', '⭐'])
        .trim();
    match text.parse::<u8>() {
        Ok(n @ 1..=5) => Some(n),
        _ => None,
    }
}
