//! How `chats` folds a batch: each chat's row read once, changed event by event by the
//! lifecycle's rule, written once; the tags applied and removed, in order.

use super::*;

/// The chats a batch changes, by id, and the tags it applies.
#[derive(Default)]
pub(super) struct ChatsFold {
    rows: crate::rows::Folded<String, Stored>,
    /// Tags applied and removed, in order, since the last write.
    tags: Vec<TagChange>,
}

/// A tag applied (a row of `chat_tags`) or removed.
enum TagChange {
    Applied(Vec<Arg>),
    Removed { chat_id: String, tag: String },
}

/// The columns of `chat_tags`, in the order the fold writes them.
const TAGS: [crate::rows::Column; 4] = [
    ("chat_id", false),
    ("tag", false),
    ("applied_by", false),
    ("applied_at", false),
];

/// A row of `chats` as the table stores it (times as their stored text).
#[derive(Debug, Clone)]
struct Stored {
    chat_id: String,
    stream: String,
    channel: String,
    channel_number: String,
    stakeholder: String,
    customer: String,
    customer_name: Option<String>,
    status: String,
    opened_at: String,
    opened_reason: String,
    context: String,
    previous_chat_id: Option<String>,
    superseded_by: Option<String>,
    assigned_to: Option<String>,
    last_incoming_at: Option<String>,
    service_window_ends_at: Option<String>,
    resolved_at: Option<String>,
    rating: Option<i64>,
    last_message_at: Option<String>,
    last_message_text: Option<String>,
    last_direction: Option<String>,
    position: i64,
}

/// The columns of `chats`, in [`Stored::values`]' order; `true` for integers.
const STORED: [crate::rows::Column; 22] = [
    ("chat_id", false),
    ("stream", false),
    ("channel", false),
    ("channel_number", false),
    ("stakeholder", false),
    ("customer", false),
    ("customer_name", false),
    ("status", false),
    ("opened_at", false),
    ("opened_reason", false),
    ("context", false),
    ("previous_chat_id", false),
    ("superseded_by", false),
    ("assigned_to", false),
    ("last_incoming_at", false),
    ("service_window_ends_at", false),
    ("resolved_at", false),
    ("rating", true),
    ("last_message_at", false),
    ("last_message_text", false),
    ("last_direction", false),
    ("position", true),
];

impl Stored {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        let text = |i| row.text(i).unwrap_or_default();
        Stored {
            chat_id: text(0),
            stream: text(1),
            channel: text(2),
            channel_number: text(3),
            stakeholder: text(4),
            customer: text(5),
            customer_name: row.text(6),
            status: text(7),
            opened_at: text(8),
            opened_reason: text(9),
            context: text(10),
            previous_chat_id: row.text(11),
            superseded_by: row.text(12),
            assigned_to: row.text(13),
            last_incoming_at: row.text(14),
            service_window_ends_at: row.text(15),
            resolved_at: row.text(16),
            rating: row.i64(17),
            last_message_at: row.text(18),
            last_message_text: row.text(19),
            last_direction: row.text(20),
            position: row.i64(21).unwrap_or_default(),
        }
    }

    /// The status after `event`, by the chat lifecycle's rule.
    fn move_status(&mut self, event: &ConversationEvent) {
        if let Some(status) = ChatStatus::parse(&self.status) {
            self.status = status
                .after(event, self.assigned_to.is_some())
                .as_str()
                .to_owned();
        }
    }
}

impl crate::rows::RowValues for Stored {
    fn values(&self) -> Vec<Arg> {
        vec![
            (&self.chat_id).into(),
            (&self.stream).into(),
            (&self.channel).into(),
            (&self.channel_number).into(),
            (&self.stakeholder).into(),
            (&self.customer).into(),
            self.customer_name.as_ref().into(),
            (&self.status).into(),
            (&self.opened_at).into(),
            (&self.opened_reason).into(),
            (&self.context).into(),
            self.previous_chat_id.as_ref().into(),
            self.superseded_by.as_ref().into(),
            self.assigned_to.as_ref().into(),
            self.last_incoming_at.as_ref().into(),
            self.service_window_ends_at.as_ref().into(),
            self.resolved_at.as_ref().into(),
            self.rating.into(),
            self.last_message_at.as_ref().into(),
            self.last_message_text.as_ref().into(),
            self.last_direction.as_ref().into(),
            self.position.into(),
        ]
    }
}

#[async_trait]
impl BatchFold for ChatsFold {
    /// Reads the rows of the chats `events` name that are not in memory yet.
    async fn read(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        let mut wanted: Vec<Arg> = Vec::new();
        for event in events {
            if let Some(chat_id) = conversation_event(event)?.and_then(chat_of) {
                let chat_id = chat_id.to_string();
                if self.rows.unread(&chat_id) {
                    wanted.push(Arg::Text(chat_id));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = STORED.iter().map(|(name, _)| *name).collect();
        let sql = format!(
            "SELECT {} FROM chats{s} WHERE chat_id IN ({})",
            names.join(", "),
            tx.json_texts("$1")
        );
        for row in tx
            .fetch_keys(&sql, crate::rows::json_param(&wanted), wanted.len())
            .await?
        {
            let stored = Stored::from_row(&row);
            self.rows.found(stored.chat_id.clone(), stored);
        }
        Ok(())
    }

    /// One event's change to its chat's row or its tags.
    fn evolve(&mut self, event: &DecodedEvent, change: &ConversationEvent) {
        match change {
            ConversationEvent::ChatOpened {
                chat_id,
                conversation,
                reason,
                context,
                previous_chat_id,
                opened_at,
            } => {
                let key = chat_id.to_string();
                self.rows.add(
                    key.clone(),
                    Stored {
                        chat_id: key.clone(),
                        stream: event.stream.clone(),
                        channel: conversation.channel.clone(),
                        channel_number: conversation.channel_number.clone(),
                        stakeholder: conversation.stakeholder.clone(),
                        customer: customer_id(&conversation.customer),
                        customer_name: None,
                        status: ChatStatus::Open.as_str().to_owned(),
                        opened_at: time_text(*opened_at),
                        opened_reason: format!("{reason:?}"),
                        context: context.to_string(),
                        previous_chat_id: previous_chat_id.map(|id| id.to_string()),
                        superseded_by: None,
                        assigned_to: None,
                        last_incoming_at: None,
                        service_window_ends_at: None,
                        resolved_at: None,
                        rating: None,
                        last_message_at: None,
                        last_message_text: None,
                        last_direction: None,
                        position: event.position as i64,
                    },
                );
            }
            ConversationEvent::MessageReceived {
                chat_id,
                received_at,
                message,
            } => {
                let Some(row) = self.change(chat_id) else {
                    return;
                };
                let at = message_time(message, *received_at);
                row.last_incoming_at = Some(time_text(at));
                row.service_window_ends_at = Some(time_text(service_window_end(at)));
                if let Some(name) = &message.customer.name {
                    row.customer_name = Some(name.clone());
                }
                row.last_message_at = Some(time_text(at));
                row.last_message_text = Some(preview(message));
                row.last_direction = Some("INBOUND".into());
                row.move_status(change);
            }
            ConversationEvent::ContextChanged {
                identity_changed: false,
                chat_id: Some(chat_id),
                context,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.context = context.to_string();
                }
            }
            ConversationEvent::ChatClosed {
                chat_id,
                superseded_by,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.superseded_by = Some(superseded_by.to_string());
                }
            }
            ConversationEvent::ReplyQueued {
                chat_id,
                text,
                template,
                queued_at,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    let shown =
                        outbound_text(text.as_deref(), template.as_ref()).unwrap_or_default();
                    row.last_message_at = Some(time_text(*queued_at));
                    row.last_message_text =
                        Some(chatledger_core::history::preview(Some(&shown), ""));
                    row.last_direction = Some("OUTBOUND".into());
                    row.move_status(change);
                }
            }
            ConversationEvent::ChatResolved {
                chat_id,
                resolved_at,
                ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.resolved_at = Some(time_text(*resolved_at));
                }
            }
            ConversationEvent::ChatRated {
                chat_id, rating, ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.rating = Some(i64::from(*rating));
                }
            }
            ConversationEvent::ChatAssigned {
                chat_id, executive, ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.assigned_to = Some(executive.id.to_string());
                }
            }
            ConversationEvent::ChatReassigned {
                chat_id, executive, ..
            } => {
                if let Some(row) = self.change(chat_id) {
                    row.move_status(change);
                    row.assigned_to = executive.as_ref().map(|e| e.id.to_string());
                }
            }
            ConversationEvent::TagApplied {
                chat_id,
                tag,
                by,
                at,
            } => self.tags.push(TagChange::Applied(vec![
                chat_id.to_string().into(),
                tag.into(),
                by.into(),
                at.into(),
            ])),
            ConversationEvent::TagRemoved { chat_id, tag, .. } => {
                self.tags.push(TagChange::Removed {
                    chat_id: chat_id.to_string(),
                    tag: tag.clone(),
                })
            }
            // Other events do not change a chat's row or its tags.
            _ => {}
        }
    }

    /// Writes the changed rows (one statement) and the tags.
    async fn write(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError> {
        self.rows
            .write_changed(tx, &format!("chats{s}"), &STORED, &["chat_id"])
            .await?;
        self.write_tags(tx, s).await
    }

    async fn erase(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        stream: &str,
    ) -> Result<(), ProjectionError> {
        tx.execute(
            &format!(
                "UPDATE chats{s} SET customer_name = CASE WHEN customer_name IS NULL THEN NULL ELSE $2 END,
                    last_message_text = CASE WHEN last_message_text IS NULL THEN NULL ELSE $2 END
                 WHERE stream = $1"
            ),
            &[stream.into(), ERASED.into()],
        )
        .await?;
        self.rows.forget(|row| row.stream == stream);
        Ok(())
    }
}

impl ChatsFold {
    /// The row of `chat_id`, when the chat is in the table (or opened in this batch), marked
    /// changed.
    fn change(&mut self, chat_id: &uuid::Uuid) -> Option<&mut Stored> {
        self.rows.change(&chat_id.to_string())
    }

    /// Writes the tag changes since the last write, in order: the tags applied between two
    /// removals with one statement (each unless its chat has it already: a tag applied twice
    /// keeps its first application), each removal with one.
    async fn write_tags(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError> {
        let mut applied: Vec<Vec<Arg>> = Vec::new();
        for change in std::mem::take(&mut self.tags) {
            match change {
                TagChange::Applied(row) => applied.push(row),
                TagChange::Removed { chat_id, tag } => {
                    write_applied_tags(tx, s, std::mem::take(&mut applied)).await?;
                    tx.execute(
                        &format!("DELETE FROM chat_tags{s} WHERE chat_id = $1 AND tag = $2"),
                        &[chat_id.into(), tag.into()],
                    )
                    .await?;
                }
            }
        }
        write_applied_tags(tx, s, applied).await
    }
}

/// Applied tags, rows of `chat_tags`, in one statement.
async fn write_applied_tags(
    tx: &mut ReadTx,
    s: &str,
    rows: Vec<Vec<Arg>>,
) -> Result<(), ProjectionError> {
    tx.write_rows(
        &format!("chat_tags{s}"),
        &TAGS,
        &["chat_id", "tag"],
        crate::rows::OnConflict::Keep,
        rows,
    )
    .await?;
    Ok(())
}

/// The chat whose row an event may change.
fn chat_of(event: &ConversationEvent) -> Option<uuid::Uuid> {
    match event {
        ConversationEvent::ChatOpened { chat_id, .. }
        | ConversationEvent::MessageReceived { chat_id, .. }
        | ConversationEvent::ChatClosed { chat_id, .. }
        | ConversationEvent::ReplyQueued { chat_id, .. }
        | ConversationEvent::ChatResolved { chat_id, .. }
        | ConversationEvent::ChatRated { chat_id, .. }
        | ConversationEvent::ChatAssigned { chat_id, .. }
        | ConversationEvent::ChatReassigned { chat_id, .. } => Some(*chat_id),
        ConversationEvent::ContextChanged {
            identity_changed: false,
            chat_id: Some(chat_id),
            ..
        } => Some(*chat_id),
        _ => None,
    }
}
