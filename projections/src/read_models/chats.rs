use super::*;

/// `chats`: one row per chat, its lifecycle and what the dashboard lists.
pub struct Chats;

#[async_trait]
impl Projector for Chats {
    fn name(&self) -> &'static str {
        "chats"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["chats", "chat_tags"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "ChatOpened"
                | "MessageReceived"
                | "ContextChanged"
                | "ChatClosed"
                | "ReplyQueued"
                | "ChatResolved"
                | "ChatRated"
                | "TagApplied"
                | "TagRemoved"
                | "PersonalDataErased"
                | "ChatAssigned"
                | "ChatReassigned"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE chats{s} (
                    chat_id TEXT PRIMARY KEY,
                    stream TEXT NOT NULL,
                    channel TEXT NOT NULL,
                    channel_number TEXT NOT NULL,
                    stakeholder TEXT NOT NULL,
                    customer TEXT NOT NULL,
                    customer_name TEXT,
                    status TEXT NOT NULL,
                    opened_at TEXT NOT NULL,
                    opened_reason TEXT NOT NULL,
                    context TEXT NOT NULL,
                    previous_chat_id TEXT,
                    superseded_by TEXT,
                    assigned_to TEXT,
                    last_incoming_at TEXT,
                    service_window_ends_at TEXT,
                    resolved_at TEXT,
                    rating BIGINT,
                    last_message_at TEXT,
                                        last_message_text TEXT,
                    last_direction TEXT,
                    position BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE chat_tags{s} (
                    chat_id TEXT NOT NULL,
                    tag TEXT NOT NULL,
                    applied_by TEXT NOT NULL,
                    applied_at TEXT NOT NULL,
                    PRIMARY KEY (chat_id, tag)
                )"
            ),
            format!("CREATE INDEX chat_tags{s}_by_tag ON chat_tags{s} (tag)"),
            format!("CREATE INDEX chats{s}_by_stakeholder ON chats{s} (stakeholder, position)"),
            format!("CREATE INDEX chats{s}_by_customer ON chats{s} (customer, position)"),
            format!("CREATE INDEX chats{s}_by_stream ON chats{s} (stream, position)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        match conversation_event(event)? {
            Some(ConversationEvent::ChatOpened {
                chat_id,
                conversation,
                reason,
                context,
                previous_chat_id,
                opened_at,
            }) => {
                tx.execute(
                    &format!(
                        "INSERT INTO chats{s} (chat_id, stream, channel, channel_number, stakeholder, customer, status,
                            opened_at, opened_reason, context, previous_chat_id, position)
                         VALUES ($1, $2, $3, $4, $5, $6, 'OPEN', $7, $8, $9, $10, $11)
                         ON CONFLICT (chat_id) DO NOTHING"
                    ),
                    &[
                        chat_id.to_string().into(),
                        (&event.stream).into(),
                        (&conversation.channel).into(),
                        (&conversation.channel_number).into(),
                        (&conversation.stakeholder).into(),
                        customer_id(&conversation.customer).into(),
                        opened_at.into(),
                        format!("{reason:?}").into(),
                        context.to_string().into(),
                        previous_chat_id.map(|id| id.to_string()).into(),
                        event.position.into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::MessageReceived {
                chat_id,
                received_at,
                message,
            }) => {
                let at = message_time(message, *received_at);
                tx.execute(
                    &format!(
                        "UPDATE chats{s} SET last_incoming_at = $2, service_window_ends_at = $3,
                            customer_name = COALESCE($4, customer_name), last_message_at = $2, last_message_text = $5, last_direction = 'INBOUND',
                            status = CASE WHEN status = 'AWAITING_CUSTOMER' THEN
                                (CASE WHEN assigned_to IS NULL THEN 'OPEN' ELSE 'ASSIGNED' END) ELSE status END
                         WHERE chat_id = $1"
                    ),
                    &[
                        chat_id.to_string().into(),
                        at.into(),
                        service_window_end(at).into(),
                        message.customer.name.clone().into(),
                        preview(message).into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::ContextChanged {
                identity_changed: false,
                chat_id: Some(chat_id),
                context,
                ..
            }) => {
                tx.execute(
                    &format!("UPDATE chats{s} SET context = $2 WHERE chat_id = $1"),
                    &[chat_id.to_string().into(), context.to_string().into()],
                )
                .await?;
            }
            Some(ConversationEvent::ChatClosed {
                chat_id,
                superseded_by,
                ..
            }) => {
                tx.execute(
                    &format!("UPDATE chats{s} SET status = 'CLOSED', superseded_by = $2 WHERE chat_id = $1"),
                    &[chat_id.to_string().into(), superseded_by.to_string().into()],
                )
                .await?;
            }
            Some(ConversationEvent::ReplyQueued {
                chat_id,
                text,
                template,
                queued_at,
                ..
            }) => {
                let shown = outbound_text(text.as_deref(), template.as_ref()).unwrap_or_default();
                let preview = chatledger_core::history::preview(Some(&shown), "");
                tx.execute(
                    &format!(
                        "UPDATE chats{s} SET last_message_at = $2, last_message_text = $3, last_direction = 'OUTBOUND',
                            status = CASE WHEN status IN ('OPEN', 'ASSIGNED') THEN 'AWAITING_CUSTOMER' ELSE status END
                         WHERE chat_id = $1"
                    ),
                    &[chat_id.to_string().into(), queued_at.into(), preview.into()],
                )
                .await?;
            }
            Some(ConversationEvent::ChatResolved {
                chat_id,
                resolved_at,
                ..
            }) => {
                tx.execute(
                    &format!("UPDATE chats{s} SET status = 'RESOLVED', resolved_at = $2 WHERE chat_id = $1"),
                    &[chat_id.to_string().into(), resolved_at.into()],
                )
                .await?;
            }
            Some(ConversationEvent::ChatRated {
                chat_id, rating, ..
            }) => {
                tx.execute(
                    &format!("UPDATE chats{s} SET rating = $2 WHERE chat_id = $1"),
                    &[chat_id.to_string().into(), i64::from(*rating).into()],
                )
                .await?;
            }
            Some(ConversationEvent::TagApplied {
                chat_id,
                tag,
                by,
                at,
            }) => {
                tx.execute(
                    &format!(
                        "INSERT INTO chat_tags{s} (chat_id, tag, applied_by, applied_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (chat_id, tag) DO NOTHING"
                    ),
                    &[chat_id.to_string().into(), tag.into(), by.into(), at.into()],
                )
                .await?;
            }
            Some(ConversationEvent::TagRemoved { chat_id, tag, .. }) => {
                tx.execute(
                    &format!("DELETE FROM chat_tags{s} WHERE chat_id = $1 AND tag = $2"),
                    &[chat_id.to_string().into(), tag.into()],
                )
                .await?;
            }
            Some(ConversationEvent::PersonalDataErased { .. }) => {
                tx.execute(
                    &format!(
                        "UPDATE chats{s} SET customer_name = CASE WHEN customer_name IS NULL THEN NULL ELSE $2 END,
                            last_message_text = CASE WHEN last_message_text IS NULL THEN NULL ELSE $2 END
                         WHERE stream = $1"
                    ),
                    &[(&event.stream).into(), ERASED.into()],
                )
                .await?;
            }
            Some(ConversationEvent::ChatAssigned {
                chat_id, executive, ..
            }) => {
                tx.execute(
                    &format!("UPDATE chats{s} SET assigned_to = $2, status = 'ASSIGNED' WHERE chat_id = $1"),
                    &[chat_id.to_string().into(), executive.id.to_string().into()],
                )
                .await?;
            }
            Some(ConversationEvent::ChatReassigned {
                chat_id, executive, ..
            }) => {
                let (assignee, status) = match executive {
                    Some(executive) => (Some(executive.id.to_string()), "ASSIGNED"),
                    None => (None, "OPEN"),
                };
                tx.execute(
                    &format!(
                        "UPDATE chats{s} SET assigned_to = $2, status = $3 WHERE chat_id = $1"
                    ),
                    &[chat_id.to_string().into(), assignee.into(), status.into()],
                )
                .await?;
            }
            // Other events do not change these tables.
            _ => {}
        }
        Ok(())
    }
}
