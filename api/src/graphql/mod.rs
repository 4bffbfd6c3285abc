//! The GraphQL schema the dashboard and auditors use (DESIGN §6), as a library: the HTTP
//! and WebSocket transports in `http` are a thin shell around [`build`].
//!
//! Every resolver reads the read models (never the log, except `events`), and every one
//! checks the viewer: anonymous requests get `UNAUTHENTICATED`, auditors may read but not
//! change, executives see only their stakeholders' chats.

mod guard;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{
    Context, Enum, Error, ErrorExtensions, InputObject, Json, Object, Schema, SimpleObject,
    Subscription, ID,
};
use chatledger_core::channel::stakeholder_name;
use chatledger_core::conversation::{
    AssignmentRule, ChatStatus as CoreChatStatus, ConversationCommand, ConversationEvent,
    ExecutiveRef, Template, AWAITING_CUSTOMER_TAG,
};
use chatledger_core::executive::{executive_stream, ExecutiveStatusChanged, Role};
use chatledger_core::history::{event_chat, ChatAsOf, ChatView, MessageView, Narrator};
use chatledger_core::sla::{SlaPolicy, SLA_POLICY_EVENT, SLA_POLICY_STREAM};
use chatledger_core::{ExpectedVersion, Metadata, RecordedEvent};
use chatledger_projections::conversations::CommandError;
use chatledger_projections::read_db::{placeholders, Arg, DbRow};
use chrono::{DateTime, SubsecRound, Utc};
use futures_util::Stream;
use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

use crate::auth::{AuthError, TokenFacts, Viewer};
use crate::server::AppState;

pub type ChatledgerSchema = Schema<Query, Mutation, SubscriptionRoot>;

/// The largest page any list returns.
pub const MAX_PAGE: i32 = 200;
/// How deep a query may nest.
pub const MAX_DEPTH: usize = 10;
/// How costly a query may be (each field costs 1; lists multiply by their page size).
pub const MAX_COMPLEXITY: usize = 20_000;

/// The schema; `state` is absent only when printing the SDL.
pub fn build(state: Option<AppState>) -> ChatledgerSchema {
    let mut builder = Schema::build(Query, Mutation, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(guard::InputGuard);
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The address a request came from, as the transport found it (for login failure counts).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub std::net::IpAddr);

/// The viewer of a request, as the transport found it (a failure is reported by the first
/// resolver that needs a viewer, with the reason).
pub type ViewerResult = Result<Viewer, AuthError>;

fn coded(message: impl Into<String>, code: &'static str) -> Error {
    Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn state<'a>(ctx: &Context<'a>) -> &'a AppState {
    ctx.data_unchecked::<AppState>()
}

fn viewer<'a>(ctx: &Context<'a>) -> Result<&'a Viewer, Error> {
    match ctx.data_opt::<ViewerResult>() {
        Some(Ok(viewer)) => Ok(viewer),
        Some(Err(e)) => Err(coded(e.to_string(), "UNAUTHENTICATED")),
        None => Err(coded(AuthError::Missing.to_string(), "UNAUTHENTICATED")),
    }
}

fn changer<'a>(ctx: &Context<'a>) -> Result<&'a Viewer, Error> {
    let viewer = viewer(ctx)?;
    if !viewer.role.may_change() {
        return Err(coded(
            format!(
                "the {} role may read but not change anything",
                viewer.role.as_str()
            ),
            "FORBIDDEN",
        ));
    }
    Ok(viewer)
}

fn internal(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "a GraphQL resolver failed");
    coded(
        "the read models are unavailable right now; try again",
        "UNAVAILABLE",
    )
}

fn page_size(first: Option<i32>, default: i32) -> Result<i64, Error> {
    match first.unwrap_or(default) {
        n if !(1..=MAX_PAGE).contains(&n) => Err(coded(
            format!("first must be between 1 and {MAX_PAGE}, not {n}"),
            "BAD_USER_INPUT",
        )),
        n => Ok(i64::from(n)),
    }
}

fn cursor(after: Option<&str>) -> Result<Option<i64>, Error> {
    after
        .map(|a| {
            a.parse::<i64>().map_err(|_| {
                coded(
                    format!("{a:?} is not a cursor this list gave out"),
                    "BAD_USER_INPUT",
                )
            })
        })
        .transpose()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChatStatus {
    Open,
    Assigned,
    AwaitingCustomer,
    Resolved,
    Closed,
}

impl ChatStatus {
    fn stored(self) -> &'static str {
        match self {
            ChatStatus::Open => "OPEN",
            ChatStatus::Assigned => "ASSIGNED",
            ChatStatus::AwaitingCustomer => "AWAITING_CUSTOMER",
            ChatStatus::Resolved => "RESOLVED",
            ChatStatus::Closed => "CLOSED",
        }
    }

    fn from_stored(s: &str) -> Self {
        match s {
            "ASSIGNED" => ChatStatus::Assigned,
            "AWAITING_CUSTOMER" => ChatStatus::AwaitingCustomer,
            "RESOLVED" => ChatStatus::Resolved,
            "CLOSED" => ChatStatus::Closed,
            _ => ChatStatus::Open,
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

const CHAT_COLUMNS: &str = "chat_id, channel, channel_number, stakeholder, customer, customer_name, status, opened_at, \
     opened_reason, context, previous_chat_id, superseded_by, assigned_to, last_incoming_at, service_window_ends_at, \
     resolved_at, rating, position, stream, last_direction, last_message_at, last_message_text";

async fn load_chat(state: &AppState, chat_id: &str) -> Result<Option<Chat>, Error> {
    let row = state
        .read_side
        .db
        .fetch_optional(
            &format!("SELECT {CHAT_COLUMNS} FROM chats WHERE chat_id = $1"),
            &[chat_id.into()],
        )
        .await
        .map_err(internal)?;
    Ok(row.as_ref().map(Chat::from_row))
}

/// A chat the viewer may change, for a mutation: NOT_FOUND when there is none they may see.
async fn chat_for_change(ctx: &Context<'_>, chat_id: &ID) -> Result<(Chat, Viewer), Error> {
    let viewer = changer(ctx)?.clone();
    let not_found = || {
        coded(
            format!("there is no chat {}", chat_id.as_str()),
            "NOT_FOUND",
        )
    };
    let chat = load_chat(state(ctx), chat_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    if !viewer.sees_stakeholder(&chat.stakeholder) {
        return Err(not_found());
    }
    Ok((chat, viewer))
}

/// Runs a command on a chat's conversation for a mutation and answers with the chat after it.
async fn run_on_chat(
    ctx: &Context<'_>,
    chat: &Chat,
    viewer: &Viewer,
    command: ConversationCommand,
) -> Result<Chat, Error> {
    let state = state(ctx);
    let actor = viewer
        .executive_id
        .as_deref()
        .map_or("admin".to_owned(), |id| format!("executive:{id}"));
    state
        .conversations
        .handle(&chat.stream, vec![command], &Metadata::by(actor))
        .await
        .map_err(|e| match e {
            CommandError::Rejected(rejection) => coded(rejection.to_string(), "BAD_USER_INPUT"),
            other => internal(other),
        })?;
    settle(state).await;
    load_chat(state, &chat.chat_id)
        .await?
        .ok_or_else(|| coded(format!("there is no chat {}", chat.chat_id), "NOT_FOUND"))
}

/// Runs a command that queues an outbound message and answers with that message.
async fn queue_message(
    ctx: &Context<'_>,
    chat: &Chat,
    viewer: &Viewer,
    command: ConversationCommand,
    message_id: Uuid,
) -> Result<Message, Error> {
    let outside_window = matches!(command, ConversationCommand::SendReply { .. });
    run_on_chat(ctx, chat, viewer, command).await.map_err(|e| {
        // Name the case clients must handle: offer templates instead.
        if outside_window && e.message.contains("24-hour") {
            coded(e.message, "OUTSIDE_SERVICE_WINDOW")
        } else {
            e
        }
    })?;
    let row = state(ctx)
        .read_side
        .db
        .fetch_optional(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = $1"),
            &[message_id.to_string().into()],
        )
        .await
        .map_err(internal)?;
    row.as_ref().map(Message::from_row).ok_or_else(|| {
        coded(
            "the message was queued but is not visible yet",
            "UNAVAILABLE",
        )
    })
}

async fn change_tag(
    ctx: &Context<'_>,
    chat_id: ID,
    tag: String,
    apply: bool,
) -> Result<Chat, Error> {
    let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
    let chat_uuid = Uuid::parse_str(&chat.chat_id).map_err(internal)?;
    let (by, now) = (viewer.name.clone(), state(ctx).clock.now());
    let command = if apply {
        ConversationCommand::ApplyTag {
            chat_id: chat_uuid,
            tag,
            catalog: state(ctx).tags.of(&chat.stakeholder),
            by,
            now,
        }
    } else {
        ConversationCommand::RemoveTag {
            chat_id: chat_uuid,
            tag,
            by,
            now,
        }
    };
    run_on_chat(ctx, &chat, &viewer, command).await
}

/// Waits (briefly) until the read models have applied everything in the log, so that a
/// mutation's answer shows its own effect.
async fn settle(state: &AppState) {
    if let Ok(head) = state.store.head_position().await {
        let _ = tokio::time::timeout(Duration::from_secs(5), state.read_side.wait_for(head)).await;
        state.sessions.wait_for(head).await;
    }
}

/// One chat, as the `chats` read model holds it.
pub struct Chat {
    chat_id: String,
    channel_number: String,
    stakeholder: String,
    customer: String,
    customer_name: Option<String>,
    status: ChatStatus,
    opened_at: DateTime<Utc>,
    opened_reason: String,
    context: Value,
    previous_chat_id: Option<String>,
    superseded_by: Option<String>,
    assigned_to: Option<String>,
    last_incoming_at: Option<DateTime<Utc>>,
    service_window_ends_at: Option<DateTime<Utc>>,
    resolved_at: Option<DateTime<Utc>>,
    rating: Option<i64>,
    position: i64,
    stream: String,
    last_direction: Option<String>,
    last_message_at: Option<DateTime<Utc>>,
    last_message_preview: Option<String>,
    /// For `chatAsOf`: what the chat held at that instant, instead of the read models.
    as_of: Option<Arc<AsOf>>,
    /// Read for a whole page at once (`chats`), so that listing 50 chats is not 50 queries
    /// per field.
    prefetched: Prefetched,
}

/// What a page of chats read in one query per field.
#[derive(Default)]
struct Prefetched {
    /// The tags executives applied, sorted.
    tags: Option<Vec<String>>,
    /// The assignee (`Some(None)`: assigned to someone not in the read model).
    assignee: Option<Option<Executive>>,
}

/// A time to the microsecond, as the read models keep times, so that a chat folded from its
/// events reads exactly as the live chat does.
fn micros(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(6)
}

/// A chat as folded from its stream up to an instant.
struct AsOf {
    at: DateTime<Utc>,
    tags: Vec<String>,
    /// Messages with their positions, oldest first.
    messages: Vec<(u64, Message)>,
    sla: Sla,
}

impl Chat {
    fn from_view(view: &ChatView, at: DateTime<Utc>) -> Self {
        let messages = view
            .messages
            .iter()
            .map(|m| (m.position, Message::from_view(m)))
            .collect();
        let status = match view.status {
            CoreChatStatus::Open => ChatStatus::Open,
            CoreChatStatus::Assigned => ChatStatus::Assigned,
            CoreChatStatus::AwaitingCustomer => ChatStatus::AwaitingCustomer,
            CoreChatStatus::Resolved => ChatStatus::Resolved,
            CoreChatStatus::Closed => ChatStatus::Closed,
        };
        Chat {
            chat_id: view.chat_id.to_string(),
            channel_number: view.channel_number.clone(),
            stakeholder: view.stakeholder.clone(),
            customer: view.customer.clone(),
            customer_name: view.customer_name.clone(),
            status,
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

    fn from_row(row: &DbRow) -> Self {
        Chat {
            chat_id: row.text(0).unwrap_or_default(),
            channel_number: row.text(2).unwrap_or_default(),
            stakeholder: row.text(3).unwrap_or_default(),
            customer: row.text(4).unwrap_or_default(),
            customer_name: row.text(5),
            status: ChatStatus::from_stored(&row.text(6).unwrap_or_default()),
            opened_at: row.time(7).unwrap_or_default(),
            opened_reason: row.text(8).unwrap_or_default(),
            context: row.json(9).unwrap_or(Value::Object(Default::default())),
            previous_chat_id: row.text(10),
            superseded_by: row.text(11),
            assigned_to: row.text(12),
            last_incoming_at: row.time(13),
            service_window_ends_at: row.time(14),
            resolved_at: row.time(15),
            rating: row.i64(16),
            position: row.i64(17).unwrap_or_default(),
            stream: row.text(18).unwrap_or_default(),
            last_direction: row.text(19),
            last_message_at: row.time(20),
            last_message_preview: row.text(21),
            as_of: None,
            prefetched: Prefetched::default(),
        }
    }

    /// Reads the tags and assignees of a whole page in one query each, for the fields the
    /// request selects.
    async fn prefetch(
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
            let ids: Vec<Arg> = chats.iter().map(|c| c.chat_id.as_str().into()).collect();
            let rows = db
                .fetch_all(
                    &format!(
                        "SELECT chat_id, tag FROM chat_tags WHERE chat_id IN ({}) ORDER BY chat_id, tag",
                        placeholders(ids.len())
                    ),
                    &ids,
                )
                .await
                .map_err(internal)?;
            let mut by_chat: HashMap<String, Vec<String>> = HashMap::new();
            for row in &rows {
                if let (Some(chat), Some(tag)) = (row.text(0), row.text(1)) {
                    by_chat.entry(chat).or_default().push(tag);
                }
            }
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
            let mut found: HashMap<String, Executive> = HashMap::new();
            if !ids.is_empty() {
                let args: Vec<Arg> = ids.iter().map(|id| (*id).into()).collect();
                let rows = db
                    .fetch_all(
                        &format!(
                            "SELECT {EXECUTIVE_COLUMNS} FROM executives WHERE executive_id IN ({})",
                            placeholders(args.len())
                        ),
                        &args,
                    )
                    .await
                    .map_err(internal)?;
                for row in &rows {
                    let executive = Executive::from_row(row);
                    found.insert(executive.id.clone(), executive);
                }
            }
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
            "status": self.status.stored(), "assigned_to": self.assigned_to,
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
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                "SELECT tag FROM chat_tags WHERE chat_id = $1 ORDER BY tag",
                &[(&self.chat_id).into()],
            )
            .await
            .map_err(internal)?;
        let mut tags: Vec<String> = rows.iter().filter_map(|r| r.text(0)).collect();
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
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1 AND position > $2 ORDER BY position LIMIT $3"),
                &[(&self.chat_id).into(), after.into(), first.into()],
            )
            .await
            .map_err(internal)?;
        Ok(rows.iter().map(Message::from_row).collect())
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
        let row = state(ctx)
            .read_side
            .db
            .fetch_optional(
                "SELECT next_due_at, alerted_at, escalated_at, policy_version, running, clock_started_at FROM sla WHERE chat_id = $1",
                &[(&self.chat_id).into()],
            )
            .await
            .map_err(internal)?;
        Ok(row.map_or_else(Sla::default, |row| Sla {
            due_at: row.time(0),
            alerted_at: row.time(1),
            escalated_at: row.time(2),
            policy_version: row.i64(3).map(|v| v as i32),
            waiting_since: row.time(5).filter(|_| row.i64(4) == Some(1)),
        }))
    }
    /// The customer's rides from now on, soonest first (cancelled ones left out).
    async fn upcoming_rides(&self, ctx: &Context<'_>) -> Result<Vec<Ride>, Error> {
        Ride::load(
            ctx,
            "WHERE customer = $1 AND cancelled = 0 AND ride_at >= $2 ORDER BY ride_at LIMIT 20",
            &[(&self.customer).into(), state(ctx).clock.now().into()],
        )
        .await
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
async fn read_stream_until(
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

const MESSAGE_COLUMNS: &str = "message_id, provider_message_id, direction, kind, text, media, at, delivery_status, error, position";

#[derive(SimpleObject, Clone, Debug)]
pub struct Media {
    pub id: Option<String>,
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
    pub voice: bool,
    pub animated: bool,
}

/// A message in either direction.
#[derive(SimpleObject, Clone, Debug)]
pub struct Message {
    pub message_id: ID,
    pub provider_message_id: Option<String>,
    pub direction: Direction,
    /// text, image, document, video, audio, sticker, location, contacts, interactive, button,
    /// reaction, order, system, unsupported, template, …
    pub kind: String,
    pub text: Option<String>,
    pub media: Option<Media>,
    pub at: DateTime<Utc>,
    /// sent, delivered, read or failed; never moves backwards.
    pub delivery_status: Option<String>,
    pub error: Option<String>,
}

impl Message {
    fn from_view(m: &MessageView) -> Self {
        Message {
            message_id: ID(m.message_id.to_string()),
            provider_message_id: m.provider_message_id.clone(),
            direction: if m.inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            kind: m.kind.clone(),
            text: m.text.clone(),
            media: m.media.clone().map(Media::from),
            at: micros(m.at),
            delivery_status: m.delivery_status.clone(),
            error: m.error.clone(),
        }
    }

    fn from_row(row: &DbRow) -> Self {
        let media = row
            .json(5)
            .and_then(|m| serde_json::from_value::<chatledger_core::conversation::Media>(m).ok());
        Message {
            message_id: ID(row.text(0).unwrap_or_default()),
            provider_message_id: row.text(1),
            direction: if row.text(2).as_deref() == Some("OUTBOUND") {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            kind: row.text(3).unwrap_or_default(),
            text: row.text(4),
            media: media.map(Media::from),
            at: row.time(6).unwrap_or_default(),
            delivery_status: row.text(7),
            error: row.text(8),
        }
    }
}

impl From<chatledger_core::conversation::Media> for Media {
    fn from(m: chatledger_core::conversation::Media) -> Self {
        Media {
            id: m.id,
            url: m.url,
            mime_type: m.mime_type,
            sha256: m.sha256,
            caption: m.caption,
            filename: m.filename,
            voice: m.voice,
            animated: m.animated,
        }
    }
}

/// A customer of one stakeholder, with every chat they had (their context history).
pub struct Customer {
    number: String,
    stakeholder: String,
    name: Option<String>,
    context: Value,
}

#[Object]
impl Customer {
    async fn number(&self) -> &str {
        &self.number
    }
    async fn stakeholder(&self) -> &str {
        &self.stakeholder
    }
    async fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    async fn context(&self) -> Json<Value> {
        Json(self.context.clone())
    }
    /// Every ride of the customer, by ride time.
    async fn rides(&self, ctx: &Context<'_>) -> Result<Vec<Ride>, Error> {
        Ride::load(
            ctx,
            "WHERE customer = $1 ORDER BY ride_at LIMIT 200",
            &[(&self.number).into()],
        )
        .await
    }
    /// Oldest first.
    async fn chats(&self, ctx: &Context<'_>) -> Result<Vec<Chat>, Error> {
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!("SELECT {CHAT_COLUMNS} FROM chats WHERE stakeholder = $1 AND customer = $2 ORDER BY position"),
                &[(&self.stakeholder).into(), (&self.number).into()],
            )
            .await
            .map_err(internal)?;
        Ok(rows.iter().map(Chat::from_row).collect())
    }
}

/// A chat's SLA state.
#[derive(SimpleObject, Default, Clone)]
pub struct Sla {
    /// When the unanswered customer message crosses the next threshold (none when answered).
    pub due_at: Option<DateTime<Utc>>,
    pub alerted_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    /// The SLA policy version the clock is measured against.
    pub policy_version: Option<i32>,
    /// Since when a customer message has been waiting for an answer.
    pub waiting_since: Option<DateTime<Utc>>,
}

/// A ride the transaction system told us about.
#[derive(SimpleObject)]
pub struct Ride {
    pub booking_id: ID,
    pub ride_at: DateTime<Utc>,
    /// The transaction system's status (cancelled rides keep their status, e.g. "cancelled").
    pub status: String,
}

impl Ride {
    async fn load(ctx: &Context<'_>, condition: &str, args: &[Arg]) -> Result<Vec<Ride>, Error> {
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!("SELECT booking_id, ride_at, status FROM rides {condition}"),
                args,
            )
            .await
            .map_err(internal)?;
        Ok(rows
            .iter()
            .map(|row| Ride {
                booking_id: ID(row.text(0).unwrap_or_default()),
                ride_at: row.time(1).unwrap_or_default(),
                status: row.text(2).unwrap_or_default(),
            })
            .collect())
    }
}

/// Someone who works chats.
#[derive(Clone)]
pub struct Executive {
    id: String,
    name: String,
    role: String,
    stakeholders: Vec<String>,
    online: bool,
}

const EXECUTIVE_COLUMNS: &str = "executive_id, name, role, stakeholders, online";

impl Executive {
    fn from_row(row: &DbRow) -> Self {
        Executive {
            id: row.text(0).unwrap_or_default(),
            name: row.text(1).unwrap_or_default(),
            role: row.text(2).unwrap_or_default(),
            stakeholders: row
                .json(3)
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
            online: row.i64(4) == Some(1),
        }
    }

    async fn load_from(state: &AppState, id: &str) -> Result<Option<Executive>, Error> {
        let row = state
            .read_side
            .db
            .fetch_optional(
                &format!("SELECT {EXECUTIVE_COLUMNS} FROM executives WHERE executive_id = $1"),
                &[id.into()],
            )
            .await
            .map_err(internal)?;
        Ok(row.as_ref().map(Executive::from_row))
    }

    async fn load(ctx: &Context<'_>, id: &str) -> Result<Option<Executive>, Error> {
        Self::load_from(state(ctx), id).await
    }

    /// The executive as the `/ws` feed shows them.
    pub fn feed_json(&self) -> Value {
        serde_json::json!({"id": self.id, "name": self.name, "online": self.online, "stakeholders": self.stakeholders})
    }

    /// Whether `viewer` may see this executive: they share a stakeholder, or the viewer sees
    /// everything.
    fn visible_to(&self, viewer: &Viewer) -> bool {
        viewer.role.sees_everything()
            || self.stakeholders.iter().any(|s| viewer.sees_stakeholder(s))
    }
}

#[Object]
impl Executive {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn role(&self) -> &str {
        &self.role
    }
    async fn stakeholders(&self) -> &[String] {
        &self.stakeholders
    }
    async fn online(&self) -> bool {
        self.online
    }
    /// Whether they may log in (an admin deactivates and reactivates).
    async fn active(&self, ctx: &Context<'_>) -> bool {
        Uuid::parse_str(&self.id)
            .ok()
            .and_then(|id| state(ctx).sessions.active(id))
            .unwrap_or(true)
    }
    /// Chats assigned to them that are not resolved or closed.
    async fn open_chats(&self, ctx: &Context<'_>) -> Result<i32, Error> {
        let row = state(ctx)
            .read_side
            .db
            .fetch_optional(
                "SELECT COUNT(*) FROM chats WHERE assigned_to = $1 AND status NOT IN ('RESOLVED', 'CLOSED')",
                &[(&self.id).into()],
            )
            .await
            .map_err(internal)?;
        Ok(row.and_then(|r| r.i64(0)).unwrap_or(0) as i32)
    }
}

#[derive(SimpleObject)]
pub struct PageInfo {
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

#[derive(SimpleObject)]
pub struct ChatConnection {
    pub nodes: Vec<Chat>,
    pub page_info: PageInfo,
}

/// One event of the log, as stored.
#[derive(SimpleObject)]
pub struct Event {
    pub event_id: ID,
    pub position: i64,
    pub stream: String,
    pub version: i64,
    #[graphql(name = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub data: Json<Value>,
    /// Who caused it (actor), why (correlation, causation), when it reached us.
    pub metadata: Json<Value>,
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 over the stream's previous hash and this event's canonical bytes.
    pub hash: String,
}

impl From<RecordedEvent> for Event {
    fn from(e: RecordedEvent) -> Self {
        Event {
            event_id: ID(e.event_id.to_string()),
            position: e.position as i64,
            stream: e.stream,
            version: e.version as i64,
            event_type: e.event_type,
            schema_version: e.schema_version as i32,
            data: Json(e.data),
            metadata: Json(serde_json::to_value(&e.metadata).unwrap_or_default()),
            recorded_at: e.recorded_at,
            hash: e.hash.to_string(),
        }
    }
}

#[derive(SimpleObject)]
pub struct EventConnection {
    pub nodes: Vec<Event>,
    /// The position of the last event here: pass as `after` for the next page.
    pub end_cursor: Option<i64>,
    pub has_next_page: bool,
}

#[derive(SimpleObject)]
pub struct LoginPayload {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub executive: Executive,
}

/// The customer number as stored: E.164 when it reads as a number, else as given (a user id).
fn customer_key(state: &AppState, number: &str) -> String {
    state
        .whatsapp
        .phones
        .any(number)
        .unwrap_or_else(|| number.trim().to_owned())
}

/// A WHERE clause built up with numbered placeholders.
#[derive(Default)]
struct Conditions {
    conditions: Vec<String>,
    args: Vec<Arg>,
}

impl Conditions {
    /// Adds an argument and returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Adds a condition whose `?` stands for `arg`.
    fn push(&mut self, condition: &str, arg: Arg) {
        let placeholder = self.arg(arg);
        self.conditions.push(condition.replace('?', &placeholder));
    }
}

pub struct Query;

#[Object]
impl Query {
    /// Chats newest first, filtered, a page at a time.
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity")]
    async fn chats(
        &self,
        ctx: &Context<'_>,
        filter: Option<ChatFilter>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<ChatConnection, Error> {
        let viewer = viewer(ctx)?;
        let state = state(ctx);
        let first = page_size(first, 50)?;
        let filter = filter.unwrap_or_default();
        let mut q = Conditions::default();
        if let Some(stakeholder) = &filter.stakeholder {
            let stakeholder = &stakeholder_name(stakeholder);
            if !viewer.sees_stakeholder(stakeholder) {
                return Err(coded(
                    format!("you do not work {stakeholder} chats"),
                    "FORBIDDEN",
                ));
            }
            q.push("stakeholder = ?", stakeholder.into());
        } else if !viewer.role.sees_everything() {
            if viewer.stakeholders.is_empty() {
                return Ok(ChatConnection {
                    nodes: vec![],
                    page_info: PageInfo {
                        end_cursor: None,
                        has_next_page: false,
                    },
                });
            }
            let placeholders: Vec<String> = viewer
                .stakeholders
                .iter()
                .map(|s| q.arg(s.into()))
                .collect();
            q.conditions
                .push(format!("stakeholder IN ({})", placeholders.join(", ")));
        }
        if let Some(status) = filter.status {
            q.push("status = ?", status.stored().into());
        }
        if let Some(executive) = &filter.assigned_to {
            q.push("assigned_to = ?", executive.as_str().into());
        }
        if let Some(tag) = &filter.tag {
            if tag == AWAITING_CUSTOMER_TAG {
                q.conditions.push("last_direction = 'OUTBOUND'".to_owned());
            } else {
                q.push(
                    "chat_id IN (SELECT chat_id FROM chat_tags WHERE tag = ?)",
                    tag.into(),
                );
            }
        }
        if let Some(number) = &filter.customer_number {
            q.push("customer = ?", customer_key(state, number).into());
        }
        if let Some(after) = cursor(after.as_deref())? {
            q.push("position < ?", after.into());
        }
        let limit = q.arg((first + 1).into());
        let where_clause = if q.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", q.conditions.join(" AND "))
        };
        let args = q.args;
        let rows = state
            .read_side
            .db
            .fetch_all(&format!("SELECT {CHAT_COLUMNS} FROM chats {where_clause} ORDER BY position DESC LIMIT {limit}"), &args)
            .await
            .map_err(internal)?;
        let mut nodes: Vec<Chat> = rows.iter().map(Chat::from_row).collect();
        let has_next_page = nodes.len() as i64 > first;
        nodes.truncate(first as usize);
        let selected = ctx.look_ahead().field("nodes");
        Chat::prefetch(
            state,
            &mut nodes,
            selected.field("tags").exists(),
            selected.field("assignedTo").exists(),
        )
        .await?;
        Ok(ChatConnection {
            page_info: PageInfo {
                end_cursor: nodes.last().map(|c| c.position.to_string()),
                has_next_page,
            },
            nodes,
        })
    }

    /// One chat, if the viewer may see it.
    async fn chat(&self, ctx: &Context<'_>, chat_id: ID) -> Result<Option<Chat>, Error> {
        let viewer = viewer(ctx)?;
        Ok(load_chat(state(ctx), chat_id.as_str())
            .await?
            .filter(|c| viewer.sees_stakeholder(&c.stakeholder)))
    }

    /// The chat exactly as it stood at `at`: folded from its conversation stream up to that
    /// instant by the same fold the live system decides with. Null when it did not exist yet.
    async fn chat_as_of(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        at: DateTime<Utc>,
    ) -> Result<Option<Chat>, Error> {
        let viewer = viewer(ctx)?;
        let state = state(ctx);
        let Ok(id) = Uuid::parse_str(chat_id.as_str()) else {
            return Err(coded(
                format!("{} is not a chat id", chat_id.as_str()),
                "BAD_USER_INPUT",
            ));
        };
        let Some(stream) = state
            .read_side
            .db
            .fetch_optional(
                "SELECT stream FROM chats WHERE chat_id = $1",
                &[chat_id.as_str().into()],
            )
            .await
            .map_err(internal)?
            .and_then(|row| row.text(0))
        else {
            return Ok(None);
        };
        let policies: Vec<(u64, u64, SlaPolicy)> =
            read_stream_until(state, SLA_POLICY_STREAM, Some(at))
                .await?
                .into_iter()
                .filter(|e| e.event_type == SLA_POLICY_EVENT)
                .filter_map(|e| {
                    serde_json::from_value(e.data.clone())
                        .ok()
                        .map(|p| (e.position, e.version, p))
                })
                .collect();
        let mut fold = ChatAsOf::new(id);
        for recorded in read_stream_until(state, &stream, Some(at)).await? {
            let Some(event) = ConversationEvent::from_recorded(&recorded).map_err(internal)? else {
                continue;
            };
            let policy = policies
                .iter()
                .rev()
                .find(|(position, _, _)| *position < recorded.position)
                .map(|(_, version, policy)| (*version, policy));
            fold.apply(&recorded, &event, policy);
        }
        Ok(fold
            .view()
            .filter(|view| viewer.sees_stakeholder(&view.stakeholder))
            .map(|view| Chat::from_view(view, at)))
    }

    /// A customer of a stakeholder, by number in any common shape (or by user id).
    async fn customer(
        &self,
        ctx: &Context<'_>,
        stakeholder: String,
        number: String,
    ) -> Result<Option<Customer>, Error> {
        let viewer = viewer(ctx)?;
        let stakeholder = stakeholder_name(&stakeholder);
        if !viewer.sees_stakeholder(&stakeholder) {
            return Err(coded(
                format!("you do not work {stakeholder} chats"),
                "FORBIDDEN",
            ));
        }
        let state = state(ctx);
        let key = customer_key(state, &number);
        let row = state
            .read_side
            .db
            .fetch_optional(
                "SELECT customer, stakeholder, name, context FROM customers WHERE stakeholder = $1 AND customer = $2",
                &[stakeholder.into(), key.into()],
            )
            .await
            .map_err(internal)?;
        Ok(row.map(|row| Customer {
            number: row.text(0).unwrap_or_default(),
            stakeholder: row.text(1).unwrap_or_default(),
            name: row.text(2),
            context: row.json(3).unwrap_or(Value::Object(Default::default())),
        }))
    }

    /// The log itself, for auditors and admins: every event (or one stream's) after a
    /// position, in order.
    #[graphql(complexity = "first.unwrap_or(100).max(0) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        stream: Option<String>,
        after: Option<i64>,
        #[graphql(default = 100)] first: Option<i32>,
    ) -> Result<EventConnection, Error> {
        let viewer = viewer(ctx)?;
        if !viewer.role.sees_everything() {
            return Err(coded("the log is open to auditors and admins", "FORBIDDEN"));
        }
        let first = page_size(first, 100)? as usize;
        let after = after.unwrap_or(0).max(0) as u64;
        // As stored and hashed: personal data stays sealed.
        let store = state(ctx).personal.stored();
        let mut events = match &stream {
            None => store.read_all(after, first + 1).await.map_err(internal)?,
            Some(stream) => {
                let mut found = Vec::new();
                let mut version = 0;
                while found.len() <= first {
                    let batch = store
                        .read_stream(stream, version, 1000)
                        .await
                        .map_err(internal)?;
                    let Some(last) = batch.last() else { break };
                    version = last.version + 1;
                    found.extend(batch.into_iter().filter(|e| e.position > after));
                }
                found
            }
        };
        let has_next_page = events.len() > first;
        events.truncate(first);
        Ok(EventConnection {
            end_cursor: events.last().map(|e| e.position as i64),
            has_next_page,
            nodes: events.into_iter().map(Event::from).collect(),
        })
    }

    /// Chats whose customer is waiting for an answer, most urgent first.
    async fn sla_board(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<Vec<Chat>, Error> {
        let viewer = viewer(ctx)?;
        if let Some(s) = &stakeholder {
            if !viewer.sees_stakeholder(s) {
                return Err(coded(format!("you do not work {s} chats"), "FORBIDDEN"));
            }
        }
        let columns = CHAT_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!(
                    "SELECT {columns} FROM chats c JOIN sla s ON s.chat_id = c.chat_id
                     WHERE s.running = 1 AND ($1 = '' OR c.stakeholder = $1)
                     ORDER BY s.next_due_at IS NULL, s.next_due_at, s.clock_started_at LIMIT {MAX_PAGE}"
                ),
                &[stakeholder.clone().unwrap_or_default().into()],
            )
            .await
            .map_err(internal)?;
        Ok(rows
            .iter()
            .map(Chat::from_row)
            .filter(|c| viewer.sees_stakeholder(&c.stakeholder))
            .collect())
    }

    /// The tags executives of a stakeholder may apply.
    async fn tag_catalog(
        &self,
        ctx: &Context<'_>,
        stakeholder: String,
    ) -> Result<Vec<String>, Error> {
        let viewer = viewer(ctx)?;
        if !viewer.sees_stakeholder(&stakeholder) {
            return Err(coded(
                format!("you do not work {stakeholder} chats"),
                "FORBIDDEN",
            ));
        }
        Ok(state(ctx).tags.of(&stakeholder))
    }

    /// The executives of a stakeholder (or all the viewer may see), with presence and load.
    async fn executives(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<Vec<Executive>, Error> {
        let viewer = viewer(ctx)?;
        if let Some(s) = &stakeholder {
            if !viewer.sees_stakeholder(s) {
                return Err(coded(format!("you do not work {s} chats"), "FORBIDDEN"));
            }
        }
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!("SELECT {EXECUTIVE_COLUMNS} FROM executives ORDER BY name"),
                &[],
            )
            .await
            .map_err(internal)?;
        Ok(rows
            .iter()
            .map(Executive::from_row)
            .filter(|e| e.visible_to(viewer))
            .filter(|e| {
                stakeholder
                    .as_ref()
                    .is_none_or(|s| e.stakeholders.contains(s))
            })
            .collect())
    }

    /// Businesses' official WhatsApp credentials (all, or one business's). Never the token.
    async fn credentials(
        &self,
        ctx: &Context<'_>,
        business_id: Option<ID>,
    ) -> Result<Vec<Credential>, Error> {
        let viewer = viewer(ctx)?;
        if !(viewer.role.sees_everything() || viewer.role == Role::Lead) {
            return Err(coded(
                "credentials are open to leads, admins and auditors",
                "FORBIDDEN",
            ));
        }
        let (condition, args) = match &business_id {
            Some(id) => ("WHERE c.business_id = $1", vec![Arg::from(id.as_str())]),
            None => ("", vec![]),
        };
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!(
                    "SELECT c.business_id, c.waba_id, c.phone_number_id, c.display_phone_number, c.channel_key,
                            c.api_provider, c.status, c.token_expires_at, c.connected_at, c.last_refresh_at,
                            c.refresh_failures, c.last_error, b.integration, c.updated_at
                     FROM credentials c LEFT JOIN businesses b ON b.business_id = c.business_id
                     {condition} ORDER BY c.business_id"
                ),
                &args,
            )
            .await
            .map_err(internal)?;
        Ok(rows.iter().map(Credential::from_row).collect())
    }

    /// Who is asking.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<Executive>, Error> {
        match &viewer(ctx)?.executive_id {
            Some(id) => Executive::load(ctx, id).await,
            None => Ok(None),
        }
    }
}

/// A business's official WhatsApp credential, as the dashboard shows it (never the token).
#[derive(SimpleObject, Clone, Debug)]
pub struct Credential {
    business_id: ID,
    waba_id: String,
    phone_number_id: String,
    /// The number as WhatsApp shows it, once onboarding read it.
    display_phone_number: Option<String>,
    /// The channel its webhooks route to.
    channel: Option<String>,
    /// `meta`, or the BSP the Graph API is reached through.
    api_provider: String,
    /// `pending`, `connected`, `disconnected` or `suspended`.
    status: String,
    token_expires_at: Option<DateTime<Utc>>,
    connected_at: Option<DateTime<Utc>>,
    last_refreshed_at: Option<DateTime<Utc>>,
    /// Failed renewals since the last success.
    refresh_failures: i32,
    /// What went wrong last (a failed step, a failed renewal, a refused token).
    last_error: Option<String>,
    /// True when the business must run Embedded Signup again.
    needs_reauthorisation: bool,
    /// The business's integration choice: `official`, `unofficial`, or none yet.
    integration: Option<String>,
    updated_at: DateTime<Utc>,
}

impl Credential {
    fn from_row(row: &DbRow) -> Self {
        let status = row.text(6).unwrap_or_default();
        Credential {
            business_id: ID(row.text(0).unwrap_or_default()),
            waba_id: row.text(1).unwrap_or_default(),
            phone_number_id: row.text(2).unwrap_or_default(),
            display_phone_number: row.text(3),
            channel: row.text(4),
            api_provider: row.text(5).unwrap_or_default(),
            needs_reauthorisation: status == "disconnected",
            status,
            token_expires_at: row.time(7),
            connected_at: row.time(8),
            last_refreshed_at: row.time(9),
            refresh_failures: row.i64(10).unwrap_or(0) as i32,
            last_error: row.text(11),
            integration: row.text(12),
            updated_at: row.time(13).unwrap_or_default(),
        }
    }
}

/// A started Embedded Signup: pass `state` through the flow to the callback.
#[derive(SimpleObject, Clone, Debug)]
pub struct OfficialSignup {
    business_id: ID,
    /// One-time, bound to the business; good until `expiresAt`.
    state: String,
    expires_at: DateTime<Utc>,
    /// The Meta app the frontend's `FB.init` uses.
    app_id: String,
}

fn onboarding_error(e: crate::onboarding::OnboardingError) -> Error {
    use crate::onboarding::OnboardingError as E;
    let code = match &e {
        E::Invalid(_) => "BAD_USER_INPUT",
        E::Unavailable(_) => "UNAVAILABLE",
        E::Store(_) => return internal(&e),
        _ => "CONFLICT",
    };
    coded(e.to_string(), code)
}

fn admin<'a>(ctx: &Context<'a>, what: &str) -> Result<&'a Viewer, Error> {
    let viewer = changer(ctx)?;
    if viewer.role != Role::Admin {
        return Err(coded(format!("only admins {what}"), "FORBIDDEN"));
    }
    Ok(viewer)
}

/// Who made a change, for its metadata.
fn actor(viewer: &Viewer) -> String {
    match &viewer.executive_id {
        Some(id) => format!("executive:{id}"),
        None => "admin-token".to_owned(),
    }
}

fn executive_ref(id: &ID) -> Result<Uuid, Error> {
    Uuid::parse_str(id.as_str()).map_err(|_| {
        coded(
            format!("{:?} is not an executive id", id.as_str()),
            "BAD_USER_INPUT",
        )
    })
}

fn executive_error(e: crate::executives::ExecutiveError) -> Error {
    use crate::executives::ExecutiveError;
    match e {
        ExecutiveError::NotFound(_) => coded(e.to_string(), "NOT_FOUND"),
        ExecutiveError::Refused(_) => coded(e.to_string(), "BAD_USER_INPUT"),
        ExecutiveError::Store(e) => internal(e),
    }
}

/// The executive as the read models hold them once they have applied everything recorded.
async fn executive_now(ctx: &Context<'_>, id: Uuid) -> Result<Executive, Error> {
    let state = state(ctx);
    if let Ok(head) = state.store.head_position().await {
        let _ = tokio::time::timeout(Duration::from_secs(5), state.read_side.wait_for(head)).await;
        state.sessions.wait_for(head).await;
    }
    Executive::load(ctx, &id.to_string())
        .await?
        .ok_or_else(|| coded("no such executive", "NOT_FOUND"))
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Logs an executive in; the token goes in `Authorization: Bearer …`.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<LoginPayload, Error> {
        let client = ctx.data_opt::<ClientAddress>().map(|c| c.0);
        login(state(ctx), &email, &password, client)
            .await
            .map_err(|e| {
                let code = match &e {
                    AuthError::NotConfigured | AuthError::Unavailable(_) => "UNAVAILABLE",
                    AuthError::RefusedInput(_) => "BAD_USER_INPUT",
                    AuthError::TooManyAttempts(_) => "RATE_LIMITED",
                    _ => "UNAUTHENTICATED",
                };
                coded(e.to_string(), code)
            })
    }

    /// Tags a chat with a tag of its stakeholder's catalog.
    async fn apply_tag(&self, ctx: &Context<'_>, chat_id: ID, tag: String) -> Result<Chat, Error> {
        change_tag(ctx, chat_id, tag, true).await
    }

    /// Removes a tag from a chat.
    async fn remove_tag(&self, ctx: &Context<'_>, chat_id: ID, tag: String) -> Result<Chat, Error> {
        change_tag(ctx, chat_id, tag, false).await
    }

    /// Queues a free-form reply; refused outside the 24-hour customer service window (send a
    /// template then). The answer is the queued message; its delivery status follows.
    async fn send_reply(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        text: String,
    ) -> Result<Message, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let message_id = Uuid::new_v4();
        let command = ConversationCommand::SendReply {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            message_id,
            text,
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        queue_message(ctx, &chat, &viewer, command, message_id).await
    }

    /// Queues a WhatsApp template message (allowed at any time).
    async fn send_template(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        name: String,
        language: String,
        params: Option<Vec<String>>,
    ) -> Result<Message, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let message_id = Uuid::new_v4();
        let command = ConversationCommand::SendTemplate {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            message_id,
            template: Template {
                name,
                language,
                params: params.unwrap_or_default(),
            },
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        queue_message(ctx, &chat, &viewer, command, message_id).await
    }

    /// Resolves a chat and asks the customer for a rating ("Hope we resolved your query. Rate
    /// 1-5."; the rating template outside the 24-hour window). A reply 1-5 becomes the rating.
    async fn resolve_chat(&self, ctx: &Context<'_>, chat_id: ID) -> Result<Chat, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let command = ConversationCommand::Resolve {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            rating_message_id: Uuid::new_v4(),
            rating_template: (*state(ctx).rating_template).clone(),
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        run_on_chat(ctx, &chat, &viewer, command).await
    }

    /// A lead gives a chat to an online executive of its stakeholder.
    async fn assign_chat(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        executive_id: ID,
    ) -> Result<Chat, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        if !matches!(viewer.role, Role::Lead | Role::Admin) {
            return Err(coded(
                "only leads and admins assign chats by hand",
                "FORBIDDEN",
            ));
        }
        let executive = Executive::load(ctx, executive_id.as_str())
            .await?
            .ok_or_else(|| {
                coded(
                    format!("there is no executive {}", executive_id.as_str()),
                    "BAD_USER_INPUT",
                )
            })?;
        if !executive.stakeholders.contains(&chat.stakeholder) {
            return Err(coded(
                format!(
                    "{} does not work {} chats",
                    executive.name, chat.stakeholder
                ),
                "BAD_USER_INPUT",
            ));
        }
        if !executive.online {
            return Err(coded(
                format!(
                    "{} is offline; chats go only to executives who are online",
                    executive.name
                ),
                "BAD_USER_INPUT",
            ));
        }
        let chosen = ExecutiveRef {
            id: Uuid::parse_str(&executive.id).map_err(internal)?,
            name: executive.name.clone(),
        };
        let command = ConversationCommand::Assign {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            executive: Some(chosen.clone()),
            rule: AssignmentRule::Manual,
            candidates: vec![chosen],
            by: Some(viewer.name.clone()),
            cause: Uuid::new_v4(),
            now: state(ctx).clock.now(),
        };
        run_on_chat(ctx, &chat, &viewer, command).await
    }

    /// Records how a business's messages leave: `official` (Cloud API with its own
    /// credential) or `unofficial` (each channel's configured gateway).
    async fn choose_integration(
        &self,
        ctx: &Context<'_>,
        business_id: ID,
        kind: String,
    ) -> Result<bool, Error> {
        let viewer = admin(ctx, "choose a business's integration")?;
        let state = state(ctx);
        state
            .onboarding
            .choose_integration(business_id.as_str(), &kind, &viewer.name, state.clock.now())
            .await
            .map_err(onboarding_error)?;
        Ok(true)
    }

    /// Starts a business's Embedded Signup: a one-time `state` for the callback. The
    /// onboarded number will serve `stakeholder`.
    async fn start_official_signup(
        &self,
        ctx: &Context<'_>,
        business_id: ID,
        #[graphql(default_with = "String::from(\"customer\")")] stakeholder: String,
    ) -> Result<OfficialSignup, Error> {
        let viewer = admin(ctx, "start an official signup")?;
        let state = state(ctx);
        let started = state
            .onboarding
            .start_signup(
                business_id.as_str(),
                &stakeholder,
                &viewer.name,
                state.clock.now(),
            )
            .await
            .map_err(onboarding_error)?;
        Ok(OfficialSignup {
            business_id,
            state: started.state,
            expires_at: micros(started.expires_at),
            app_id: started.app_id,
        })
    }

    /// Ends the token this request came with (and no other): it is refused from then on, on
    /// every transport.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool, Error> {
        let viewer = viewer(ctx)?;
        let token = ctx.data_opt::<TokenFacts>();
        let state = state(ctx);
        let recorded = crate::executives::log_out(state.store.as_ref(), viewer, token, Utc::now())
            .await
            .map_err(executive_error)?;
        // Refused by this process from the moment the answer comes (the others follow the
        // log within moments).
        if let Some(position) = recorded {
            state.sessions.wait_for(position).await;
        }
        Ok(true)
    }

    /// Registers an executive (admins).
    async fn register_executive(
        &self,
        ctx: &Context<'_>,
        email: String,
        name: String,
        role: String,
        stakeholders: Vec<String>,
        password: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "register executives")?;
        let role: Role = role
            .parse()
            .map_err(|e: String| coded(e, "BAD_USER_INPUT"))?;
        let state = state(ctx);
        let registered = crate::executives::register(
            state.store.as_ref(),
            &email,
            &name,
            role,
            &stakeholders,
            &password,
            &actor(by),
        )
        .await
        .map_err(executive_error)?;
        executive_now(ctx, registered.executive_id).await
    }

    /// Stops an executive from logging in: their tokens stop working at once, on every
    /// transport, and their open chats are handed on (admins).
    async fn deactivate_executive(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "deactivate executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::deactivate(state.store.as_ref(), id, &reason, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Lets a deactivated executive log in again (admins).
    async fn reactivate_executive(&self, ctx: &Context<'_>, id: ID) -> Result<Executive, Error> {
        let by = admin(ctx, "reactivate executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::reactivate(state.store.as_ref(), id, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Gives an executive another role and stakeholders; their tokens end, and chats of
    /// stakeholders they no longer work are handed on (admins).
    async fn change_executive_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: String,
        stakeholders: Vec<String>,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "change roles")?;
        let id = executive_ref(&id)?;
        let role: Role = role
            .parse()
            .map_err(|e: String| coded(e, "BAD_USER_INPUT"))?;
        let state = state(ctx);
        crate::executives::change_role(
            state.store.as_ref(),
            id,
            role,
            &stakeholders,
            &actor(by),
            Utc::now(),
        )
        .await
        .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Renames an executive (admins).
    async fn rename_executive(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "rename executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::rename(state.store.as_ref(), id, &name, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Sets an executive's password anew; their tokens end (admins).
    async fn reset_executive_password(
        &self,
        ctx: &Context<'_>,
        id: ID,
        password: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "reset passwords")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::reset_password(
            state.store.as_ref(),
            id,
            &password,
            &actor(by),
            Utc::now(),
        )
        .await
        .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Goes online (receives chats) or offline.
    async fn set_my_status(&self, ctx: &Context<'_>, online: bool) -> Result<Executive, Error> {
        let viewer = changer(ctx)?;
        let Some(id) = &viewer.executive_id else {
            return Err(coded(
                "the admin token is not an executive",
                "BAD_USER_INPUT",
            ));
        };
        let executive_id = Uuid::parse_str(id)
            .map_err(|_| coded("the token names no executive", "UNAUTHENTICATED"))?;
        let state = state(ctx);
        let changed = ExecutiveStatusChanged {
            executive_id,
            online,
            at: state.clock.now(),
        };
        let result = state
            .store
            .append(
                &executive_stream(executive_id),
                ExpectedVersion::Any,
                vec![changed.to_new_event(Uuid::new_v4(), Metadata::by(format!("executive:{id}")))],
            )
            .await
            .map_err(internal)?;
        if let Some(stored) = result.stored.last() {
            let wait = state.read_side.wait_for(stored.position);
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        Executive::load(ctx, id)
            .await?
            .ok_or_else(|| coded("no such executive", "NOT_FOUND"))
    }
}

/// Checks an executive's email and password and issues a token. `client` is the address
/// the attempt came from, for the failure counts (see [`crate::login`]).
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    client: Option<std::net::IpAddr>,
) -> Result<LoginPayload, AuthError> {
    use chatledger_core::validate::{text, NAME_MAX, TEXT_MAX};
    text("email", email, NAME_MAX).map_err(|r| AuthError::RefusedInput(r.to_string()))?;
    text("password", password, TEXT_MAX).map_err(|r| AuthError::RefusedInput(r.to_string()))?;
    let attempt = crate::login::Attempt::new(email, client);
    state
        .logins
        .admit(&attempt)
        .map_err(|wait| AuthError::TooManyAttempts(wait.as_secs().max(1)))?;
    let row = state
        .read_side
        .db
        .fetch_optional(
            &format!("SELECT {EXECUTIVE_COLUMNS}, password_hash FROM executives WHERE email = $1"),
            &[email.trim().to_lowercase().into()],
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "reading executives for a login failed");
            AuthError::Unavailable("the executives cannot be read from the database".into())
        })?;
    // Verify against a real hash even for an unknown email, so both take the same time and
    // the answer does not tell which emails exist.
    static UNKNOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let unknown =
        UNKNOWN.get_or_init(|| crate::auth::hash_password("no such executive").unwrap_or_default());
    let hash = row
        .as_ref()
        .and_then(|r| r.text(5))
        .unwrap_or_else(|| unknown.clone());
    let matches = state.logins.verify(hash, password.to_owned()).await;
    let Some(row) = row.filter(|_| matches) else {
        state.logins.failed(&attempt);
        return Err(AuthError::BadCredentials);
    };
    state.logins.succeeded(&attempt);
    let mut executive = Executive::from_row(&row);
    let executive_id = Uuid::parse_str(&executive.id).map_err(|_| AuthError::BadCredentials)?;
    state.sessions.ready().await?;
    if state.sessions.active(executive_id) == Some(false) {
        return Err(AuthError::Deactivated);
    }
    // "Default OFFLINE on login": the executive goes online when they say so.
    match crate::executives::start_offline(state.store.as_ref(), executive_id, Utc::now()).await {
        // The dashboard reads the executive offline as soon as the login answers.
        Ok(Some(position)) => {
            let wait = state.read_side.wait_for(position);
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(executive = %executive_id, error = %e, "could not record the executive offline at login")
        }
    }
    executive.online = false;
    let viewer = Viewer {
        role: executive
            .role
            .parse()
            .map_err(|_| AuthError::BadCredentials)?,
        executive_id: Some(executive.id.clone()),
        name: executive.name.clone(),
        stakeholders: executive.stakeholders.clone(),
    };
    let generation = state.sessions.generation(executive_id);
    let (token, expires_at) = state.auth.issue_in(&viewer, generation, Utc::now())?;
    Ok(LoginPayload {
        token,
        expires_at,
        executive,
    })
}

/// Where a received message belongs and whether `viewer` may see it: waits (briefly) for the
/// read models to reach the event, then reads the message as queries would.
pub async fn visible_message(
    state: &AppState,
    viewer: &Viewer,
    event: &RecordedEvent,
) -> Option<(String, Message)> {
    if event.event_type != "MessageReceived" {
        return None;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.read_side.wait_for(event.position),
    )
    .await;
    let db = &state.read_side.db;
    let chat_id = event.data.get("chat_id")?.as_str()?;
    let stakeholder = db
        .fetch_optional(
            "SELECT stakeholder FROM chats WHERE chat_id = $1",
            &[chat_id.into()],
        )
        .await
        .ok()??
        .text(0)?;
    if !viewer.sees_stakeholder(&stakeholder) {
        return None;
    }
    let row = db
        .fetch_optional(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE message_id = $1"),
            &[event.event_id.to_string().into()],
        )
        .await
        .ok()??;
    Some((stakeholder, Message::from_row(&row)))
}

/// The chat an assignment event is about, when `viewer` may see it (after the read models
/// have applied the event).
pub async fn visible_chat(
    state: &AppState,
    viewer: &Viewer,
    event: &RecordedEvent,
) -> Option<Chat> {
    let chat_id = event.data.get("chat_id")?.as_str()?;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.read_side.wait_for(event.position),
    )
    .await;
    load_chat(state, chat_id)
        .await
        .ok()?
        .filter(|c| viewer.sees_stakeholder(&c.stakeholder))
}

/// The executive a presence event is about, when `viewer` may see them.
pub async fn visible_executive(
    state: &AppState,
    viewer: &Viewer,
    event: &RecordedEvent,
) -> Option<Executive> {
    let id = event.data.get("executive_id")?.as_str()?;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.read_side.wait_for(event.position),
    )
    .await;
    Executive::load_from(state, id)
        .await
        .ok()?
        .filter(|e| e.visible_to(viewer))
}

fn chats_of_type(
    ctx: &Context<'_>,
    event_types: &'static [&'static str],
) -> Result<impl Stream<Item = Chat>, Error> {
    let viewer = viewer(ctx)?.clone();
    let state = state(ctx).clone();
    Ok(
        crate::live::events(state.live.subscribe()).filter_map(move |event| {
            let (state, viewer) = (state.clone(), viewer.clone());
            async move {
                if !event_types.contains(&event.event_type.as_str()) {
                    return None;
                }
                visible_chat(&state, &viewer, &event).await
            }
        }),
    )
}

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Chats that got an assignee.
    async fn chat_assigned(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(ctx, &["ChatAssigned"])
    }

    /// Chats whose assignee changed (or that went back to waiting).
    async fn chat_reassigned(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(ctx, &["ChatReassigned"])
    }

    /// Chats whose customer waited past an SLA threshold (alert or escalation), of one
    /// stakeholder if given.
    async fn sla_alert(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<impl Stream<Item = Chat>, Error> {
        let chats = chats_of_type(ctx, &["SlaAlertRaised", "SlaEscalated"])?;
        Ok(chats.filter(move |c| {
            let keep = stakeholder.as_ref().is_none_or(|s| *s == c.stakeholder);
            async move { keep }
        }))
    }

    /// Chats whose tags changed.
    async fn tag_updated(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(ctx, &["TagApplied", "TagRemoved"])
    }

    /// Executives going online or offline.
    async fn executive_status(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Executive>, Error> {
        let viewer = viewer(ctx)?.clone();
        let state = state(ctx).clone();
        Ok(
            crate::live::events(state.live.subscribe()).filter_map(move |event| {
                let (state, viewer) = (state.clone(), viewer.clone());
                async move {
                    if event.event_type != ExecutiveStatusChanged::EVENT_TYPE {
                        return None;
                    }
                    visible_executive(&state, &viewer, &event).await
                }
            }),
        )
    }

    /// Every message customers send from now on (of one stakeholder, if given) that the
    /// viewer may see.
    async fn message_received(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<impl Stream<Item = Message>, Error> {
        let viewer = viewer(ctx)?.clone();
        let state = state(ctx).clone();
        let live = state.live.subscribe();
        let wanted = Arc::new(stakeholder);
        Ok(crate::live::events(live).filter_map(move |event| {
            let (state, viewer, wanted) = (state.clone(), viewer.clone(), wanted.clone());
            async move {
                let (stakeholder, message) = visible_message(&state, &viewer, &event).await?;
                match wanted.as_deref() {
                    Some(w) if w != stakeholder => None,
                    _ => Some(message),
                }
            }
        }))
    }
}

use futures_util::StreamExt as _;

#[cfg(test)]
mod tests {
    /// The contract clients are written against: schema/chatledger.graphql must be exactly
    /// what the server serves.
    #[test]
    fn schema_snapshot_is_current() {
        let served = super::build(None).sdl();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema/chatledger.graphql");
        let stored = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            stored == served,
            "schema/chatledger.graphql differs from the schema the server serves.\n\
             If the change is intended, update it with:\n    cargo run -q -- schema > schema/chatledger.graphql"
        );
    }
}
