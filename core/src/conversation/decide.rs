//! The decider: each command goes to the function that decides it (`inbound`, `outbound`,
//! `desk`, `attachments`, `bridge`); the rules they share (the 24-hour window, queueing a
//! message, stopping the SLA clock, the open chat, context changes) are here.

use super::*;

impl Conversation {
    /// Decides what a command changes. An empty decision means "already recorded".
    pub fn decide(
        &self,
        command: ConversationCommand,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        match command {
            ConversationCommand::ReceiveMessage {
                conversation,
                message,
                new_chat_id,
                now,
            } => self.receive_message(conversation, message, new_chat_id, now),
            ConversationCommand::RecordReceipt { receipt, now } => {
                self.record_receipt(receipt, now)
            }
            ConversationCommand::ChangeContext {
                conversation,
                changes,
                identity_fields,
                new_chat_id,
                now,
            } => Ok(self.change_context(conversation, changes, identity_fields, new_chat_id, now)),
            ConversationCommand::SendReply {
                chat_id,
                message_id,
                text,
                by,
                now,
            } => self.send_reply(chat_id, message_id, text, by, now),
            ConversationCommand::SendMedia {
                chat_id,
                message_id,
                media,
                caption,
                by,
                now,
            } => self.send_media(chat_id, message_id, media, caption, by, now),
            ConversationCommand::RecordForward {
                message,
                tenant,
                outcome,
                attempts,
                now,
            } => self.record_forward(message, tenant, outcome, attempts, now),
            ConversationCommand::RecordReceiptForward {
                message_id,
                tenant,
                status,
                outcome,
                now,
            } => self.record_receipt_forward(message_id, tenant, status, outcome, now),
            ConversationCommand::QueueAgentReply {
                message_id,
                text,
                media,
                by,
                now,
            } => self.queue_agent_reply(message_id, text, media, by, now),
            ConversationCommand::RecordMedia {
                message,
                index,
                attempt,
                outcome,
                retry_at,
                now,
            } => self.record_media(message, index, attempt, outcome, retry_at, now),
            ConversationCommand::SendTemplate {
                chat_id,
                message_id,
                template,
                withdrawn,
                by,
                now,
            } => self.send_template(chat_id, message_id, template, withdrawn, by, now),
            ConversationCommand::Resolve {
                chat_id,
                rating_message_id,
                rating_template,
                rating_at_most_every,
                by,
                now,
            } => self.resolve(
                chat_id,
                rating_message_id,
                rating_template,
                rating_at_most_every,
                by,
                now,
            ),
            ConversationCommand::RaiseSla { level, breach } => self.raise_sla(level, breach),
            ConversationCommand::RecordDispatchAttempt {
                message_id,
                attempt,
                now,
            } => self.record_dispatch_attempt(message_id, attempt, now),
            ConversationCommand::RecordDispatch {
                message_id,
                outcome,
                attempts,
                now,
            } => self.record_dispatch(message_id, outcome, attempts, now),
            ConversationCommand::ApplyTag {
                chat_id,
                tag,
                catalog,
                by,
                now,
            } => self.apply_tag(chat_id, tag, catalog, by, now),
            ConversationCommand::RemoveTag {
                chat_id,
                tag,
                by,
                now,
            } => self.remove_tag(chat_id, tag, by, now),
            ConversationCommand::Assign {
                chat_id,
                executive,
                rule,
                candidates,
                by,
                cause,
                now,
            } => self.assign(chat_id, executive, rule, candidates, by, cause, now),
        }
    }

    /// Whether free-form messages are allowed at `now`: within 24 hours of the customer's
    /// last message.
    pub fn within_service_window(&self, now: DateTime<Utc>) -> bool {
        self.last_incoming_at
            .is_some_and(|at| now < service_window_end(at))
    }

    pub(super) fn queue(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        outgoing: Outgoing,
        purpose: OutboundPurpose,
        by: String,
        now: DateTime<Utc>,
    ) -> Vec<ConversationEvent> {
        if self.outbound.contains_key(&message_id) {
            return vec![];
        }
        let to = self
            .customer
            .key()
            .unwrap_or_else(|| CustomerKey::Phone(String::new()));
        let kind = match (&outgoing.template, &outgoing.media) {
            (Some(_), _) => "template".to_owned(),
            (None, Some(media)) => crate::media::kind_of_mime(Some(&media.mime)).to_owned(),
            (None, None) => "text".to_owned(),
        };
        vec![ConversationEvent::ReplyQueued {
            chat_id,
            message_id,
            to,
            kind,
            text: outgoing.text,
            template: outgoing.template,
            media: outgoing.media,
            purpose,
            by,
            queued_at: now,
        }]
    }

    /// Queues a free-form reply (text, or an attachment) on `chat_id`: only within 24 hours
    /// of the customer's last message. It answers the waiting customer: the SLA clock stops.
    pub(super) fn reply_in_window(
        &self,
        chat_id: Uuid,
        message_id: Uuid,
        outgoing: Outgoing,
        by: String,
        now: DateTime<Utc>,
    ) -> Result<Vec<ConversationEvent>, ConversationRejection> {
        if !self.within_service_window(now) {
            let closed = self.last_incoming_at.map(service_window_end);
            return Err(ConversationRejection::OutsideServiceWindow(closed));
        }
        let mut events = self.queue(
            chat_id,
            message_id,
            outgoing,
            OutboundPurpose::Reply,
            by,
            now,
        );
        events.extend(self.stop_clock(SlaStop::Answered, now));
        Ok(events)
    }

    /// Stops the SLA clock, if it runs.
    pub(super) fn stop_clock(
        &self,
        reason: SlaStop,
        now: DateTime<Utc>,
    ) -> Option<ConversationEvent> {
        self.sla
            .as_ref()
            .map(|clock| ConversationEvent::SlaClockStopped {
                chat_id: clock.chat_id,
                customer_message: clock.customer_message.clone(),
                reason,
                stopped_at: now,
            })
    }

    /// The open chat, if it is `chat_id`.
    pub(super) fn the_open_chat(&self, chat_id: Uuid) -> Result<&Chat, ConversationRejection> {
        self.open_chat()
            .filter(|c| c.chat_id == chat_id)
            .ok_or(ConversationRejection::ChatNotOpen(chat_id))
    }

    /// Context decides chat identity: a real change of an identity field closes the open chat
    /// and opens a new one that points back to it; any other change is recorded and keeps the
    /// chat. A change that changes nothing records nothing (a redelivered post).
    pub(super) fn change_context(
        &self,
        conversation: ConversationRef,
        changes: serde_json::Map<String, Value>,
        identity_fields: Vec<String>,
        new_chat_id: Uuid,
        now: DateTime<Utc>,
    ) -> Vec<ConversationEvent> {
        let current = self.context.as_object().cloned().unwrap_or_default();
        let mut effective = serde_json::Map::new();
        let mut previous = serde_json::Map::new();
        for (field, value) in changes {
            if current.get(&field) != Some(&value) {
                previous.insert(
                    field.clone(),
                    current.get(&field).cloned().unwrap_or(Value::Null),
                );
                effective.insert(field, value);
            }
        }
        if effective.is_empty() {
            return vec![];
        }
        let identity_changed = effective.keys().any(|f| identity_fields.contains(f));
        let mut context = current;
        context.extend(effective.clone());
        let context = Value::Object(context);
        let open = self.open_chat().map(|c| c.chat_id);
        let mut events = vec![ConversationEvent::ContextChanged {
            conversation: conversation.clone(),
            changes: effective,
            previous,
            context: context.clone(),
            identity_fields,
            identity_changed,
            chat_id: open,
            changed_at: now,
        }];
        if let (true, Some(open)) = (identity_changed, open) {
            events.extend(self.stop_clock(SlaStop::Closed, now));
            events.push(ConversationEvent::ChatClosed {
                chat_id: open,
                reason: CloseReason::ContextChanged,
                superseded_by: new_chat_id,
                closed_at: now,
            });
            events.push(ConversationEvent::ChatOpened {
                chat_id: new_chat_id,
                conversation,
                reason: OpenReason::ContextChanged,
                context,
                previous_chat_id: Some(open),
                opened_at: now,
            });
        }
        events
    }
}

/// What an outbound message carries: text, a template, or an attachment with its caption.
pub(super) struct Outgoing {
    pub(super) text: Option<String>,
    pub(super) template: Option<Template>,
    pub(super) media: Option<StoredMedia>,
}

impl Outgoing {
    pub(super) fn text(text: String) -> Self {
        Outgoing {
            text: Some(text),
            template: None,
            media: None,
        }
    }

    pub(super) fn template(template: Template) -> Self {
        Outgoing {
            text: None,
            template: Some(template),
            media: None,
        }
    }
}
