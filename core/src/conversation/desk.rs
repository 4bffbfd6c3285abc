//! The desk's work on a chat: SLA alerts, tags, assignment.

use super::*;

impl Conversation {
    /// An SLA alert or escalation, if its clock still runs and it was not raised yet.
    pub(super) fn raise_sla(
        &self,
        level: crate::sla::SlaLevel,
        breach: SlaBreach,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let Some(clock) = self.sla.as_ref().filter(|c| {
            c.chat_id == breach.chat_id && c.customer_message == breach.customer_message
        }) else {
            return Ok(vec![]);
        };
        Ok(match level {
            crate::sla::SlaLevel::Alert if !clock.alerted => {
                vec![ConversationEvent::SlaAlertRaised(breach)]
            }
            crate::sla::SlaLevel::Escalation if !clock.escalated => {
                vec![ConversationEvent::SlaEscalated(breach)]
            }
            _ => vec![],
        })
    }

    /// A tag from the catalog on the open chat (not the system tag).
    pub(super) fn apply_tag(
        &self,
        chat_id: Uuid,
        tag: String,
        catalog: Vec<String>,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let chat = self.the_open_chat(chat_id)?;
        if tag == AWAITING_CUSTOMER_TAG {
            return Err(ConversationRejection::SystemTag(tag));
        }
        if !catalog.contains(&tag) {
            return Err(ConversationRejection::UnknownTag { tag, catalog });
        }
        if chat.tags.contains(&tag) {
            return Ok(vec![]);
        }
        Ok(vec![ConversationEvent::TagApplied {
            chat_id,
            tag,
            by,
            at: now,
        }])
    }

    /// A tag off the open chat (not the system tag).
    pub(super) fn remove_tag(
        &self,
        chat_id: Uuid,
        tag: String,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let chat = self.the_open_chat(chat_id)?;
        if tag == AWAITING_CUSTOMER_TAG {
            return Err(ConversationRejection::SystemTag(tag));
        }
        if !chat.tags.contains(&tag) {
            return Ok(vec![]);
        }
        Ok(vec![ConversationEvent::TagRemoved {
            chat_id,
            tag,
            by,
            at: now,
        }])
    }

    /// Gives the open chat to an executive (or takes it back), saying by which rule and among whom.
    // The command's fields, one argument each, as every decision here takes them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn assign(
        &self,
        chat_id: Uuid,
        executive: Option<ExecutiveRef>,
        rule: AssignmentRule,
        candidates: Vec<ExecutiveRef>,
        by: Option<String>,
        cause: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        let chat = self.the_open_chat(chat_id)?;
        if chat.assignee.as_ref().map(|e| e.id) == executive.as_ref().map(|e| e.id) {
            return Ok(vec![]);
        }
        Ok(vec![match (chat.assignee.clone(), executive) {
            (None, Some(executive)) => ConversationEvent::ChatAssigned {
                chat_id,
                executive,
                rule,
                candidates,
                by,
                cause,
                assigned_at: now,
            },
            (Some(previous), executive) => ConversationEvent::ChatReassigned {
                chat_id,
                executive,
                previous,
                rule,
                candidates,
                by,
                cause,
                assigned_at: now,
            },
            (None, None) => return Ok(vec![]),
        }])
    }
}
