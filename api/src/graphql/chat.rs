//! Chats: the `Chat` type, its filter and status, and loading one.

use super::*;

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChatStatus {
    Open,
    Assigned,
    AwaitingCustomer,
    Resolved,
    Closed,
}

impl From<CoreChatStatus> for ChatStatus {
    fn from(status: CoreChatStatus) -> Self {
        match status {
            CoreChatStatus::Open => ChatStatus::Open,
            CoreChatStatus::Assigned => ChatStatus::Assigned,
            CoreChatStatus::AwaitingCustomer => ChatStatus::AwaitingCustomer,
            CoreChatStatus::Resolved => ChatStatus::Resolved,
            CoreChatStatus::Closed => ChatStatus::Closed,
        }
    }
}

impl From<ChatStatus> for CoreChatStatus {
    fn from(status: ChatStatus) -> Self {
        match status {
            ChatStatus::Open => CoreChatStatus::Open,
            ChatStatus::Assigned => CoreChatStatus::Assigned,
            ChatStatus::AwaitingCustomer => CoreChatStatus::AwaitingCustomer,
            ChatStatus::Resolved => CoreChatStatus::Resolved,
            ChatStatus::Closed => CoreChatStatus::Closed,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(InputObject, Default)]
pub struct ChatFilter {
    pub stakeholder: Option<String>,
    pub status: Option<ChatStatus>,
    pub assigned_to: Option<ID>,
    pub tag: Option<String>,
    pub customer_number: Option<String>,
}

pub(super) async fn load_chat(state: &AppState, chat_id: &str) -> Result<Option<Chat>, Error> {
    let row = read_models::chats::chat(&state.read_side.db, chat_id)
        .await
        .map_err(internal)?;
    Ok(row.map(Chat::from))
}

/// One chat, as the `chats` read model holds it.
pub struct Chat {
    pub(super) chat_id: String,
    pub(super) channel_number: String,
    pub(super) stakeholder: String,
    pub(super) customer: String,
    pub(super) customer_name: Option<String>,
    pub(super) status: ChatStatus,
    pub(super) opened_at: DateTime<Utc>,
    pub(super) opened_reason: String,
    pub(super) context: Value,
    pub(super) previous_chat_id: Option<String>,
    pub(super) superseded_by: Option<String>,
    pub(super) assigned_to: Option<String>,
    pub(super) last_incoming_at: Option<DateTime<Utc>>,
    pub(super) service_window_ends_at: Option<DateTime<Utc>>,
    pub(super) resolved_at: Option<DateTime<Utc>>,
    pub(super) rating: Option<i64>,
    pub(super) position: i64,
    pub(super) stream: String,
    pub(super) last_direction: Option<String>,
    pub(super) last_message_at: Option<DateTime<Utc>>,
    pub(super) last_message_preview: Option<String>,
    /// For `chatAsOf`: what the chat held at that instant, instead of the read models.
    pub(super) as_of: Option<Arc<AsOf>>,
    /// Read for a whole page at once (`chats`), so that listing 50 chats is not 50 queries
    /// per field.
    pub(super) prefetched: Prefetched,
}

/// What a page of chats read in one query per field.
#[derive(Default)]
pub(super) struct Prefetched {
    /// The tags executives applied, sorted.
    pub(super) tags: Option<Vec<String>>,
    /// The assignee (`Some(None)`: assigned to someone not in the read model).
    pub(super) assignee: Option<Option<Executive>>,
}

/// A time to the microsecond, as the read models keep times, so that a chat folded from its
/// events reads exactly as the live chat does.
pub(super) fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

impl From<read_models::chats::ChatRow> for Chat {
    fn from(row: read_models::chats::ChatRow) -> Self {
        Chat {
            chat_id: row.chat_id,
            channel_number: row.channel_number,
            stakeholder: row.stakeholder,
            customer: row.customer,
            customer_name: row.customer_name,
            status: row.status.into(),
            opened_at: row.opened_at,
            opened_reason: row.opened_reason,
            context: row.context,
            previous_chat_id: row.previous_chat_id,
            superseded_by: row.superseded_by,
            assigned_to: row.assigned_to,
            last_incoming_at: row.last_incoming_at,
            service_window_ends_at: row.service_window_ends_at,
            resolved_at: row.resolved_at,
            rating: row.rating,
            position: row.position,
            stream: row.stream,
            last_direction: row.last_direction,
            last_message_at: row.last_message_at,
            last_message_preview: row.last_message_preview,
            as_of: None,
            prefetched: Prefetched::default(),
        }
    }
}

/// A chat as folded from its stream up to an instant.
pub(super) struct AsOf {
    pub(super) at: DateTime<Utc>,
    pub(super) tags: Vec<String>,
    /// Messages with their positions, oldest first.
    pub(super) messages: Vec<(u64, Message)>,
    pub(super) sla: Sla,
}

impl Chat {
    pub(super) fn from_view(view: &ChatView, at: DateTime<Utc>) -> Self {
        let messages = view
            .messages
            .iter()
            .map(|m| (m.position, Message::from_view(m)))
            .collect();
        Chat {
            chat_id: view.chat_id.to_string(),
            channel_number: view.channel_number.clone(),
            stakeholder: view.stakeholder.clone(),
            customer: view.customer.clone(),
            customer_name: view.customer_name.clone(),
            status: view.status.into(),
            opened_at: micros(view.opened_at),
            opened_reason: view.opened_reason.clone(),
            context: view.context.clone(),
            previous_chat_id: view.previous_chat_id.map(|id| id.to_string()),
            superseded_by: view.superseded_by.map(|id| id.to_string()),
            assigned_to: view.assignee.as_ref().map(|e| e.id.to_string()),
            last_incoming_at: view.last_incoming_at.map(micros),
            service_window_ends_at: view.service_window_ends_at.map(micros),
            resolved_at: view.resolved_at.map(micros),
            rating: view.rating.map(i64::from),
            position: view.position as i64,
            stream: view.stream.clone(),
            last_direction: view.last_outbound.then(|| "OUTBOUND".to_owned()),
            last_message_at: view.messages.last().map(|m| micros(m.at)),
            last_message_preview: view.messages.last().map(|m| match &m.text {
                Some(text) => text.chars().take(200).collect(),
                None => format!("[{}]", m.kind),
            }),
            prefetched: Prefetched::default(),
            as_of: Some(Arc::new(AsOf {
                at,
                tags: view.tags.iter().cloned().collect(),
                messages,
                sla: Sla {
                    due_at: view.sla.next_due_at.map(micros),
                    alerted_at: view.sla.alerted_at.map(micros),
                    escalated_at: view.sla.escalated_at.map(micros),
                    policy_version: view.sla.policy_version.map(|v| v as i32),
                    waiting_since: view
                        .sla
                        .clock_started_at
                        .filter(|_| view.sla.running)
                        .map(micros),
                },
            })),
        }
    }

    /// Reads the tags and assignees of a whole page in one query each, for the fields the
    /// request selects.
    pub(super) async fn prefetch(
        state: &AppState,
        chats: &mut [Chat],
        tags: bool,
        assignees: bool,
    ) -> Result<(), Error> {
        if chats.is_empty() {
            return Ok(());
        }
        let db = &state.read_side.db;
        if tags {
            let ids: Vec<&str> = chats.iter().map(|c| c.chat_id.as_str()).collect();
            let mut by_chat = read_models::chats::tags_of_chats(db, &ids)
                .await
                .map_err(internal)?;
            for chat in chats.iter_mut() {
                chat.prefetched.tags = Some(by_chat.remove(&chat.chat_id).unwrap_or_default());
            }
        }
        if assignees {
            let mut ids: Vec<&str> = chats
                .iter()
                .filter_map(|c| c.assigned_to.as_deref())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let found: HashMap<String, Executive> =
                read_models::executives::executives_by_id(db, &ids)
                    .await
                    .map_err(internal)?
                    .into_iter()
                    .map(|row| (row.executive_id.clone(), Executive::from(row)))
                    .collect();
            for chat in chats.iter_mut() {
                chat.prefetched.assignee = Some(
                    chat.assigned_to
                        .as_ref()
                        .and_then(|id| found.get(id).cloned()),
                );
            }
        }
        Ok(())
    }
}

impl Chat {
    /// The chat as the `/ws` feed shows it.
    pub fn feed_json(&self) -> Value {
        serde_json::json!({
            "chat_id": self.chat_id, "stakeholder": self.stakeholder, "customer_number": self.customer,
            "status": CoreChatStatus::from(self.status).as_str(), "assigned_to": self.assigned_to,
        })
    }
}

#[Object]
impl Chat {
    async fn chat_id(&self) -> ID {
        ID(self.chat_id.clone())
    }
    async fn stakeholder(&self) -> &str {
        &self.stakeholder
    }
    async fn channel_number(&self) -> &str {
        &self.channel_number
    }
    /// E.164, or the business-scoped user id of a customer WhatsApp shows no number for.
    async fn customer_number(&self) -> &str {
        &self.customer
    }
    async fn customer_name(&self) -> Option<&str> {
        self.customer_name.as_deref()
    }
    async fn status(&self) -> ChatStatus {
        self.status
    }
    async fn opened_at(&self) -> DateTime<Utc> {
        self.opened_at
    }
    async fn opened_reason(&self) -> &str {
        &self.opened_reason
    }
    async fn context(&self) -> Json<Value> {
        Json(self.context.clone())
    }
    async fn previous_chat_id(&self) -> Option<ID> {
        self.previous_chat_id.clone().map(ID)
    }
    async fn superseded_by(&self) -> Option<ID> {
        self.superseded_by.clone().map(ID)
    }
    /// The tags executives applied, then the system tag "Awaiting Customer Response" when the
    /// last message was ours.
    async fn tags(&self, ctx: &Context<'_>) -> Result<Vec<String>, Error> {
        if let Some(as_of) = &self.as_of {
            let mut tags = as_of.tags.clone();
            if self.last_direction.as_deref() == Some("OUTBOUND") {
                tags.push(AWAITING_CUSTOMER_TAG.to_owned());
            }
            return Ok(tags);
        }
        if let Some(tags) = &self.prefetched.tags {
            let mut tags = tags.clone();
            if self.last_direction.as_deref() == Some("OUTBOUND") {
                tags.push(AWAITING_CUSTOMER_TAG.to_owned());
            }
            return Ok(tags);
        }
        let mut tags = read_models::chats::tags_of(&state(ctx).read_side.db, &self.chat_id)
            .await
            .map_err(internal)?;
        if self.last_direction.as_deref() == Some("OUTBOUND") {
            tags.push(AWAITING_CUSTOMER_TAG.to_owned());
        }
        Ok(tags)
    }
    async fn assigned_to(&self, ctx: &Context<'_>) -> Result<Option<Executive>, Error> {
        if let Some(assignee) = &self.prefetched.assignee {
            return Ok(assignee.clone());
        }
        match &self.assigned_to {
            Some(id) => Executive::load(ctx, id).await,
            None => Ok(None),
        }
    }
    /// The Genesys conversation the chat's messages go to, when its channel routes to
    /// Genesys (known once Genesys named it).
    async fn genesys_conversation_id(&self, ctx: &Context<'_>) -> Result<Option<String>, Error> {
        chatledger_projections::read_models::genesys::conversation_of(
            &state(ctx).read_side.db,
            &self.chat_id,
        )
        .await
        .map_err(internal)
    }
    /// The chat's messages, oldest first.
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Vec<Message>, Error> {
        let first = page_size(first, 50)?;
        let after = cursor(after.as_deref())?.unwrap_or(0);
        if let Some(as_of) = &self.as_of {
            return Ok(as_of
                .messages
                .iter()
                .filter(|(position, _)| *position as i64 > after)
                .take(first as usize)
                .map(|(_, m)| m.clone())
                .collect());
        }
        let rows = chatledger_projections::read_models::messages::messages_of_chat(
            &state(ctx).read_side.db,
            &self.chat_id,
            after,
            first,
        )
        .await
        .map_err(internal)?;
        with_files(ctx, rows.into_iter().map(Message::from_row).collect()).await
    }
    async fn last_incoming_message_at(&self) -> Option<DateTime<Utc>> {
        self.last_incoming_at
    }
    /// Until when free-form replies are allowed (24 hours after the customer's last message).
    async fn service_window_ends_at(&self) -> Option<DateTime<Utc>> {
        self.service_window_ends_at
    }
    async fn resolved_at(&self) -> Option<DateTime<Utc>> {
        self.resolved_at
    }
    /// The chat's SLA: when the waiting customer message is next due, alerts, escalation.
    async fn sla(&self, ctx: &Context<'_>) -> Result<Sla, Error> {
        if let Some(as_of) = &self.as_of {
            return Ok(as_of.sla.clone());
        }
        let row = chatledger_projections::read_models::sla::sla_of(
            &state(ctx).read_side.db,
            &self.chat_id,
        )
        .await
        .map_err(internal)?;
        Ok(row.map_or_else(Sla::default, |row| Sla {
            due_at: row.next_due_at,
            alerted_at: row.alerted_at,
            escalated_at: row.escalated_at,
            policy_version: row.policy_version.map(|v| v as i32),
            waiting_since: row.waiting_since,
        }))
    }
    /// The customer's rides from now on, soonest first (cancelled ones left out).
    async fn upcoming_rides(&self, ctx: &Context<'_>) -> Result<Vec<Ride>, Error> {
        let state = state(ctx);
        let rows = chatledger_projections::read_models::rides::upcoming_rides_of(
            &state.read_side.db,
            &self.customer,
            state.clock.now(),
        )
        .await
        .map_err(internal)?;
        Ok(rows.into_iter().map(Ride::from).collect())
    }
    async fn rating(&self) -> Option<i32> {
        self.rating.map(|r| r as i32)
    }
    /// When the last message either way was sent (inbound) or queued (outbound).
    async fn last_message_at(&self) -> Option<DateTime<Utc>> {
        self.last_message_at
    }
    /// The last message for lists: its first 200 characters, or its kind in brackets.
    async fn last_message_preview(&self) -> Option<&str> {
        self.last_message_preview.as_deref()
    }
    /// The chat's events, oldest first, each with who caused it and what it did and why in
    /// words (for `chatAsOf`, up to that instant).
    async fn history(&self, ctx: &Context<'_>) -> Result<Vec<HistoryEntry>, Error> {
        let chat_id = Uuid::parse_str(&self.chat_id).map_err(internal)?;
        let until = self.as_of.as_ref().map(|a| a.at);
        let events = read_stream_until(state(ctx), &self.stream, until).await?;
        let mut narrator = Narrator::default();
        let mut entries = Vec::new();
        for recorded in &events {
            let Some(event) = ConversationEvent::from_recorded(recorded).map_err(internal)? else {
                continue;
            };
            let summary = narrator.describe(&event);
            let erasure = matches!(event, ConversationEvent::PersonalDataErased { .. });
            if erasure || event_chat(&event) == Some(chat_id) {
                entries.push(HistoryEntry {
                    position: recorded.position as i64,
                    at: recorded.recorded_at,
                    event_type: recorded.event_type.clone(),
                    actor: recorded.metadata.actor.clone(),
                    summary,
                    correlation_id: recorded
                        .metadata
                        .correlation_id
                        .map(|id| ID(id.to_string())),
                    causation_id: recorded.metadata.causation_id.map(|id| ID(id.to_string())),
                });
            }
        }
        Ok(entries)
    }
}

/// One event in a chat's history.
#[derive(SimpleObject)]
pub struct HistoryEntry {
    pub position: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    #[graphql(name = "type")]
    pub event_type: String,
    /// Who caused it: an executive, a provider, the transaction system, a reactor.
    pub actor: String,
    /// What it did and why, in words.
    pub summary: String,
    pub correlation_id: Option<ID>,
    pub causation_id: Option<ID>,
}

/// A stream's events recorded up to `until` (all of them without it).
pub(super) async fn read_stream_until(
    state: &AppState,
    stream: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<RecordedEvent>, Error> {
    let mut events = Vec::new();
    let mut version = 0;
    loop {
        let batch = state
            .store
            .read_stream(stream, version, 1_000)
            .await
            .map_err(internal)?;
        let Some(last) = batch.last() else { break };
        version = last.version + 1;
        for event in batch {
            if until.is_some_and(|until| event.recorded_at > until) {
                return Ok(events);
            }
            events.push(event);
        }
    }
    Ok(events)
}
