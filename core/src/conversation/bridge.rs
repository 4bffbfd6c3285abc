//! What the conversation decides about the Genesys bridge: a customer's message handed to
//! Genesys (and the conversation Genesys names), what Genesys was told of an agent's message,
//! and an agent's reply queued.

use super::decide::Outgoing;
use super::*;
use crate::genesys::{BridgeError, Delivered};

impl Conversation {
    pub(super) fn record_forward(
        &self,
        message: String,
        tenant: String,
        outcome: Result<Delivered, BridgeError>,
        attempts: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let chat_id = *self
            .received
            .get(&message)
            .ok_or_else(|| ConversationRejection::UnknownInboundMessage(message.clone()))?;
        if self.forwarded.contains(&message) {
            return Ok(vec![]);
        }
        Ok(match outcome {
            Ok(delivered) => {
                let mut events = vec![ConversationEvent::ForwardedToAgent {
                    chat_id,
                    message,
                    tenant: tenant.clone(),
                    genesys_message_id: delivered.id,
                    attempts,
                    forwarded_at: now,
                }];
                if let Some(conversation_id) = delivered
                    .conversation_id
                    .filter(|c| self.genesys_conversations.get(&tenant) != Some(c))
                {
                    events.push(ConversationEvent::GenesysConversationMapped {
                        chat_id,
                        tenant,
                        conversation_id,
                        mapped_at: now,
                    });
                }
                events
            }
            Err(error) => vec![ConversationEvent::ForwardToAgentFailed {
                chat_id,
                message,
                tenant,
                code: error.code,
                reason: error.message,
                attempts,
                failed_at: now,
            }],
        })
    }

    pub(super) fn record_receipt_forward(
        &self,
        message_id: Uuid,
        tenant: String,
        status: String,
        outcome: Result<(), BridgeError>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let outbound = self
            .outbound
            .get(&message_id)
            .ok_or(ConversationRejection::UnknownMessage(message_id))?;
        if self
            .receipts_to_agent
            .contains(&(message_id, status.clone()))
        {
            return Ok(vec![]);
        }
        Ok(vec![ConversationEvent::ReceiptForwardedToAgent {
            chat_id: outbound.chat_id,
            message_id,
            tenant,
            status,
            accepted: outcome.is_ok(),
            reason: outcome.err().map(|e| e.to_string()),
            forwarded_at: now,
        }])
    }

    pub(super) fn queue_agent_reply(
        &self,
        message_id: Uuid,
        text: Option<String>,
        media: Option<StoredMedia>,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        if self.outbound.contains_key(&message_id) {
            return Ok(vec![]);
        }
        let chat_id = self
            .open_chat()
            .map(|c| c.chat_id)
            .ok_or(ConversationRejection::NoOpenChat)?;
        let text = text.filter(|t| !t.trim().is_empty());
        if text.is_none() && media.is_none() {
            return Err(ConversationRejection::EmptyReply);
        }
        let outgoing = Outgoing {
            text,
            template: None,
            media,
        };
        self.reply_in_window(chat_id, message_id, outgoing, by, now)
    }
}
