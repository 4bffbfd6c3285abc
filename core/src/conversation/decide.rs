//! The decider: what each command changes, as events.

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
            } => {
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
            ConversationCommand::RecordReceipt { receipt, now } => {
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
            } => {
                self.the_open_chat(chat_id)?;
                if text.trim().is_empty() {
                    return Err(ConversationRejection::EmptyReply);
                }
                self.reply_in_window(chat_id, message_id, Outgoing::text(text), by, now)
            }
            ConversationCommand::SendMedia {
                chat_id,
                message_id,
                media,
                caption,
                by,
                now,
            } => {
                self.the_open_chat(chat_id)?;
                let outgoing = Outgoing {
                    text: caption.filter(|c| !c.trim().is_empty()),
                    template: None,
                    media: Some(media),
                };
                self.reply_in_window(chat_id, message_id, outgoing, by, now)
            }
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
            } => {
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
            ConversationCommand::Resolve {
                chat_id,
                rating_message_id,
                rating_template,
                rating_at_most_every,
                by,
                now,
            } => {
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
            ConversationCommand::RaiseSla { level, breach } => {
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
            ConversationCommand::RecordDispatchAttempt {
                message_id,
                attempt,
                now,
            } => {
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
            ConversationCommand::RecordDispatch {
                message_id,
                outcome,
                attempts,
                now,
            } => {
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
            ConversationCommand::ApplyTag {
                chat_id,
                tag,
                catalog,
                by,
                now,
            } => {
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
            ConversationCommand::RemoveTag {
                chat_id,
                tag,
                by,
                now,
            } => {
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
            ConversationCommand::Assign {
                chat_id,
                executive,
                rule,
                candidates,
                by,
                cause,
                now,
            } => {
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

/// The rating a message gives, if it is one: a text (or button) of just 1 to 5.
pub(super) fn rating_in(message: &InboundMessage) -> Option<u8> {
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

/// What an outbound message carries: text, a template, or an attachment with its caption.
pub(super) struct Outgoing {
    pub(super) text: Option<String>,
    pub(super) template: Option<Template>,
    pub(super) media: Option<StoredMedia>,
}

impl Outgoing {
    fn text(text: String) -> Self {
        Outgoing {
            text: Some(text),
            template: None,
            media: None,
        }
    }

    fn template(template: Template) -> Self {
        Outgoing {
            text: None,
            template: Some(template),
            media: None,
        }
    }
}
