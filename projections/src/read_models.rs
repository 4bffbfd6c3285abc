//! The read models: chats, messages, customers, executives, rides. Each is its own projector
//! with its own checkpoint; adding a read model is adding one more [`Projector`] to [`all`].

use std::sync::Arc;

use async_trait::async_trait;
use chatledger_core::booking::{Booking, BookingChange};
use chatledger_core::conversation::{
    service_window_end, ConversationEvent, CustomerKey, DecodedEvent, InboundMessage, Media,
};
use chatledger_core::executive::ExecutiveEvent;
use chatledger_core::history::{message_time, status_rank};
use chatledger_core::personal::ERASED;
use chatledger_core::sla::{SlaLevel, SlaPolicy, SLA_POLICY_EVENT};
use serde_json::Value;

use crate::read_db::{time_text, Arg, ReadTx};
use crate::runner::{ProjectionError, Projector};

/// Every read model, in the order they are built.
pub fn all() -> Vec<Arc<dyn Projector>> {
    vec![
        Arc::new(Chats),
        Arc::new(Messages),
        Arc::new(Customers),
        Arc::new(Executives),
        Arc::new(Rides),
        Arc::new(Sla::default()),
        Arc::new(crate::credentials::Credentials),
    ]
}

fn conversation_event(event: &DecodedEvent) -> Result<Option<&ConversationEvent>, ProjectionError> {
    event.conversation().map_err(|e| ProjectionError::Event {
        position: event.position,
        reason: e.to_owned(),
    })
}

fn customer_id(customer: &CustomerKey) -> String {
    customer.to_string()
}

/// A short text for lists: the text, or the kind in brackets.
fn preview(message: &InboundMessage) -> String {
    match &message.text {
        Some(text) => text.chars().take(200).collect(),
        None => format!("[{}]", message.kind),
    }
}

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
                let preview = text
                    .clone()
                    .or(template.as_ref().map(|t| format!("[template {}]", t.name)))
                    .unwrap_or_default();
                tx.execute(
                    &format!(
                        "UPDATE chats{s} SET last_message_at = $2, last_message_text = $3, last_direction = 'OUTBOUND',
                            status = CASE WHEN status IN ('OPEN', 'ASSIGNED') THEN 'AWAITING_CUSTOMER' ELSE status END
                         WHERE chat_id = $1"
                    ),
                    &[chat_id.to_string().into(), queued_at.into(), preview.chars().take(200).collect::<String>().into()],
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
                queued_at,
                ..
            }) => {
                let text = text
                    .clone()
                    .or(template.as_ref().map(|t| format!("[template {}]", t.name)));
                tx.execute(
                    &format!(
                        "INSERT INTO messages{s} (message_id, chat_id, stream, direction, kind, text, at, delivery_status, status_rank, position)
                         VALUES ($1, $2, $3, 'OUTBOUND', $4, $5, $6, 'queued', $7, $8)
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
                let error = match code {
                    Some(code) => format!("{code}: {error}"),
                    None => error.clone(),
                };
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

/// `customers`: each customer per stakeholder, their context and every chat they had.
pub struct Customers;

#[async_trait]
impl Projector for Customers {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["customers"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "ChatOpened" | "PersonalDataErased" | "MessageReceived" | "ContextChanged"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE customers{s} (
                stakeholder TEXT NOT NULL,
                customer TEXT NOT NULL,
                channel TEXT NOT NULL,
                stream TEXT NOT NULL,
                name TEXT,
                context TEXT NOT NULL,
                chat_ids TEXT NOT NULL,
                first_seen_at TEXT NOT NULL,
                position BIGINT NOT NULL,
                PRIMARY KEY (stakeholder, customer)
            )"
            ),
            format!("CREATE INDEX customers{s}_by_stream ON customers{s} (stream)"),
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
                context,
                opened_at,
                ..
            }) => {
                // The chat joins the customer's list (a JSON array of ids, in order) unless it
                // is there already, written without reading the row back.
                let quoted = Value::String(chat_id.to_string()).to_string();
                tx.execute(
                    &format!(
                        "INSERT INTO customers{s} (stakeholder, customer, channel, stream, context, chat_ids, first_seen_at, position)
                         VALUES ($1, $2, $3, $8, $4, '[' || $5 || ']', $6, $7)
                         ON CONFLICT (stakeholder, customer) DO UPDATE SET context = $4, position = $7,
                            chat_ids = CASE
                                WHEN customers{s}.chat_ids LIKE '%' || $5 || '%' THEN customers{s}.chat_ids
                                WHEN customers{s}.chat_ids = '[]' THEN '[' || $5 || ']'
                                ELSE substr(customers{s}.chat_ids, 1, length(customers{s}.chat_ids) - 1) || ',' || $5 || ']'
                            END"
                    ),
                    &[
                        (&conversation.stakeholder).into(),
                        customer_id(&conversation.customer).into(),
                        (&conversation.channel).into(),
                        context.to_string().into(),
                        quoted.into(),
                        opened_at.into(),
                        event.position.into(),
                        (&event.stream).into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::PersonalDataErased { .. }) => {
                tx.execute(
                    &format!(
                        "UPDATE customers{s} SET name = $2 WHERE stream = $1 AND name IS NOT NULL"
                    ),
                    &[(&event.stream).into(), ERASED.into()],
                )
                .await?;
            }
            Some(ConversationEvent::MessageReceived { message, .. }) => {
                if let Some(name) = &message.customer.name {
                    tx.execute(
                        &format!("UPDATE customers{s} SET name = $2 WHERE stream = $1"),
                        &[(&event.stream).into(), name.into()],
                    )
                    .await?;
                }
            }
            Some(ConversationEvent::ContextChanged {
                conversation,
                context,
                changed_at,
                ..
            }) => {
                // A context may arrive before the customer's first chat.
                tx.execute(
                    &format!(
                        "INSERT INTO customers{s} (stakeholder, customer, channel, stream, context, chat_ids, first_seen_at, position)
                         VALUES ($1, $2, $3, $4, $5, '[]', $6, $7)
                         ON CONFLICT (stakeholder, customer) DO UPDATE SET context = $5, position = $7"
                    ),
                    &[
                        (&conversation.stakeholder).into(),
                        customer_id(&conversation.customer).into(),
                        (&conversation.channel).into(),
                        (&event.stream).into(),
                        context.to_string().into(),
                        changed_at.into(),
                        event.position.into(),
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

/// `executives`: who may log in, with what role, for which stakeholders.
pub struct Executives;

#[async_trait]
impl Projector for Executives {
    fn name(&self) -> &'static str {
        "executives"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["executives"]
    }

    fn wants(&self, event_type: &str) -> bool {
        ExecutiveEvent::is_one(event_type)
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE executives{s} (
                    executive_id TEXT PRIMARY KEY,
                    email TEXT NOT NULL,
                    name TEXT NOT NULL,
                    role TEXT NOT NULL,
                    stakeholders TEXT NOT NULL,
                    password_hash TEXT NOT NULL,
                    online BIGINT NOT NULL DEFAULT 0,
                    position BIGINT NOT NULL
                )"
            ),
            format!("CREATE UNIQUE INDEX executives{s}_by_email ON executives{s} (email)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(decoded) = ExecutiveEvent::decode(&event.event_type, &event.data) else {
            return Ok(());
        };
        let change = decoded.map_err(|e| ProjectionError::Event {
            position: event.position,
            reason: e.to_string(),
        })?;
        let id = change.executive_id().to_string();
        // (statement, its values after the executive's id)
        let (sql, values): (String, Vec<Arg>) = match change {
            ExecutiveEvent::Registered(registered) => (
                format!(
                    "INSERT INTO executives{s} (executive_id, email, name, role, stakeholders, password_hash, position)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (executive_id) DO NOTHING"
                ),
                vec![
                    registered.email.to_lowercase().into(),
                    registered.name.into(),
                    registered.role.as_str().into(),
                    serde_json::to_string(&registered.stakeholders).unwrap_or_default().into(),
                    registered.password_hash.into(),
                    event.position.into(),
                ],
            ),
            ExecutiveEvent::StatusChanged(changed) => (
                format!("UPDATE executives{s} SET online = $2 WHERE executive_id = $1"),
                vec![i64::from(changed.online).into()],
            ),
            // Whether an executive may log in is the sessions' (kept from the log by every
            // process); here a deactivated executive is only no longer online.
            ExecutiveEvent::Deactivated(_) => (
                format!("UPDATE executives{s} SET online = 0 WHERE executive_id = $1"),
                vec![],
            ),
            ExecutiveEvent::Reactivated(_) | ExecutiveEvent::LoggedOut(_) => return Ok(()),
            ExecutiveEvent::RoleChanged(changed) => (
                format!("UPDATE executives{s} SET role = $2, stakeholders = $3 WHERE executive_id = $1"),
                vec![
                    changed.role.as_str().into(),
                    serde_json::to_string(&changed.stakeholders).unwrap_or_default().into(),
                ],
            ),
            ExecutiveEvent::Renamed(renamed) => (
                format!("UPDATE executives{s} SET name = $2 WHERE executive_id = $1"),
                vec![renamed.name.into()],
            ),
            ExecutiveEvent::PasswordReset(reset) => (
                format!("UPDATE executives{s} SET password_hash = $2 WHERE executive_id = $1"),
                vec![reset.password_hash.into()],
            ),
        };
        let mut args: Vec<Arg> = vec![id.into()];
        args.extend(values);
        tx.execute(&sql, &args).await?;
        Ok(())
    }
}

/// `rides`: each booking's latest state, by customer.
pub struct Rides;

#[async_trait]
impl Projector for Rides {
    fn name(&self) -> &'static str {
        "rides"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rides"]
    }

    fn wants(&self, event_type: &str) -> bool {
        BookingChange::from_event_type(event_type).is_some()
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE rides{s} (
                    booking_id TEXT PRIMARY KEY,
                    customer TEXT NOT NULL,
                    ride_at TEXT NOT NULL,
                    status TEXT NOT NULL,
                    cancelled BIGINT NOT NULL DEFAULT 0,
                    position BIGINT NOT NULL
                )"
            ),
            format!("CREATE INDEX rides{s}_by_customer ON rides{s} (customer, ride_at)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(change) = BookingChange::from_event_type(&event.event_type) else {
            return Ok(());
        };
        let booking: Booking =
            serde_json::from_value(event.data.clone()).map_err(|e| ProjectionError::Event {
                position: event.position,
                reason: e.to_string(),
            })?;
        let cancelled = i64::from(change == BookingChange::Cancelled);
        tx.execute(
            &format!(
                "INSERT INTO rides{s} (booking_id, customer, ride_at, status, cancelled, position)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (booking_id) DO UPDATE SET customer = $2, ride_at = $3, status = $4, cancelled = $5, position = $6"
            ),
            &[
                booking.booking_id.into(),
                booking.customer.into(),
                booking.ride_at.into(),
                booking.ride_status.into(),
                cancelled.into(),
                event.position.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// `sla`: each chat's SLA clock, due times (under the policy in force when it started),
/// alerts and escalations; `sla_policy`: the policy versions.
#[derive(Default)]
pub struct Sla {
    /// The latest policy as one transaction read it (by its serial and the tables' suffix):
    /// a batch of new chats reads it once, not once per chat.
    policy: std::sync::Mutex<Option<(u64, String, i64, SlaPolicy)>>,
}

#[async_trait]
impl Projector for Sla {
    fn name(&self) -> &'static str {
        "sla"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["sla", "sla_policy"]
    }

    fn wants(&self, event_type: &str) -> bool {
        event_type == SLA_POLICY_EVENT
            || matches!(
                event_type,
                "SlaClockStarted" | "SlaClockStopped" | "SlaAlertRaised" | "SlaEscalated"
            )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE sla{s} (
                    chat_id TEXT PRIMARY KEY,
                    stream TEXT NOT NULL,
                    stakeholder TEXT NOT NULL,
                    customer_message TEXT NOT NULL,
                    clock_started_at TEXT NOT NULL,
                    alert_due_at TEXT NOT NULL,
                    escalation_due_at TEXT NOT NULL,
                    next_due_at TEXT,
                    alerted_at TEXT,
                    escalated_at TEXT,
                    policy_version BIGINT NOT NULL,
                    running BIGINT NOT NULL,
                    position BIGINT NOT NULL
                )"
            ),
            format!("CREATE INDEX sla{s}_board ON sla{s} (running, next_due_at)"),
            format!(
                "CREATE TABLE sla_policy{s} (
                    version BIGINT PRIMARY KEY,
                    policy TEXT NOT NULL
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
        let unreadable = |e: serde_json::Error| ProjectionError::Event {
            position: event.position,
            reason: e.to_string(),
        };
        if event.event_type == SLA_POLICY_EVENT {
            *self.policy.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tx.execute(
                &format!("INSERT INTO sla_policy{s} (version, policy) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING"),
                &[event.version.into(), event.data.to_string().into()],
            )
            .await?;
            return Ok(());
        }
        match conversation_event(event)? {
            Some(ConversationEvent::SlaClockStarted {
                chat_id,
                stakeholder,
                customer_message,
                started_at,
            }) => {
                let remembered = self
                    .policy
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .filter(|(serial, suffix, _, _)| *serial == tx.serial() && suffix == s)
                    .map(|(_, _, version, policy)| (*version, policy.clone()));
                let (version, policy) = match remembered {
                    Some(remembered) => remembered,
                    None => {
                        let row = tx
                            .fetch_optional(&format!("SELECT version, policy FROM sla_policy{s} ORDER BY version DESC LIMIT 1"), &[])
                            .await?;
                        let read = match row {
                            Some(row) => (
                                row.i64(0).unwrap_or_default(),
                                serde_json::from_str::<SlaPolicy>(&row.text(1).unwrap_or_default())
                                    .map_err(unreadable)?,
                            ),
                            None => (0, SlaPolicy::default()),
                        };
                        *self.policy.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some((tx.serial(), s.to_owned(), read.0, read.1.clone()));
                        read
                    }
                };
                let t = policy.for_stakeholder(stakeholder);
                let alert_due = t.due(*started_at, SlaLevel::Alert);
                let escalation_due = t.due(*started_at, SlaLevel::Escalation);
                tx.execute(
                    &format!(
                        "INSERT INTO sla{s} (chat_id, stream, stakeholder, customer_message, clock_started_at, alert_due_at,
                            escalation_due_at, next_due_at, alerted_at, escalated_at, policy_version, running, position)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $6, NULL, NULL, $8, 1, $9)
                         ON CONFLICT (chat_id) DO UPDATE SET customer_message = $4, clock_started_at = $5, alert_due_at = $6,
                            escalation_due_at = $7, next_due_at = $6, alerted_at = NULL, escalated_at = NULL,
                            policy_version = $8, running = 1, position = $9"
                    ),
                    &[
                        chat_id.to_string().into(),
                        (&event.stream).into(),
                        stakeholder.into(),
                        customer_message.into(),
                        started_at.into(),
                        alert_due.into(),
                        escalation_due.into(),
                        version.into(),
                        event.position.into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::SlaClockStopped { chat_id, .. }) => {
                tx.execute(
                    &format!(
                        "UPDATE sla{s} SET running = 0, next_due_at = NULL WHERE chat_id = $1"
                    ),
                    &[chat_id.to_string().into()],
                )
                .await?;
            }
            Some(ConversationEvent::SlaAlertRaised(breach)) => {
                tx.execute(
                    &format!("UPDATE sla{s} SET alerted_at = $2, next_due_at = escalation_due_at, policy_version = $3 WHERE chat_id = $1"),
                    &[breach.chat_id.to_string().into(), breach.fired_at.into(), breach.policy_version.into()],
                )
                .await?;
            }
            Some(ConversationEvent::SlaEscalated(breach)) => {
                tx.execute(
                    &format!("UPDATE sla{s} SET escalated_at = $2, next_due_at = NULL WHERE chat_id = $1"),
                    &[breach.chat_id.to_string().into(), breach.fired_at.into()],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
