//! Recording what a webhook carried: messages and receipts into the customers'
//! conversation streams, notices onto the channel's stream.

use crate::conversations::{CommandError, Conversations};
use chatledger_adapters::whatsapp::{ChannelNotice, InboundItem};
use chatledger_core::channel::{channel_stream, ProviderNoticeReceived};
use chatledger_core::conversation::{new_id, stream_name, ConversationCommand, ConversationRef};
use chatledger_core::{EventStore, ExpectedVersion, Metadata};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// What one webhook request recorded.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Recorded {
    pub messages: usize,
    pub receipts: usize,
    pub notices: usize,
    /// Items already in the log (a redelivery), recorded nothing new.
    pub duplicates: usize,
    /// Meta's reports on business accounts among the notices (recorded now or before), for
    /// the credentials they concern.
    #[serde(skip)]
    pub account_updates: Vec<AccountUpdate>,
}

/// An `account_update` notice: the account (WABA) it is about and what Meta said.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountUpdate {
    /// The notice's event id.
    pub notice: Uuid,
    pub account_id: String,
    /// The change's `value`.
    pub value: serde_json::Value,
}

/// An item of a webhook refused before anything was recorded, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RefusedItem {
    /// The provider's id of the message or receipt (shortened, made printable).
    pub id: String,
    /// The field at fault, in the request's terms (`text`, `from.name`, `timestamp`).
    pub field: String,
    pub problem: String,
}

/// The items of a webhook that can be recorded (each with its tag), and those refused.
pub type Screened<T> = (Vec<(T, InboundItem)>, Vec<RefusedItem>);

/// Splits `items` into those that can be recorded and those refused (a NUL character, a value
/// far past the provider's documented limits, a time outside the accepted window): the valid
/// items of a batch are kept, in order, each with its `tag` (where it is routed, say); the
/// refused ones are reported.
pub fn screen<T>(items: Vec<(T, InboundItem)>) -> Screened<T> {
    let mut kept = Vec::with_capacity(items.len());
    let mut refused = Vec::new();
    for (tag, item) in items {
        let checked = match &item {
            InboundItem::Message(message) => message
                .check()
                .map_err(|r| (r, &message.provider_message_id)),
            InboundItem::Receipt(receipt) => receipt
                .check()
                .map_err(|r| (r, &receipt.provider_message_id)),
            InboundItem::Notice(_) => Ok(()),
        };
        match checked {
            Ok(()) => kept.push((tag, item)),
            Err((r, id)) => refused.push(RefusedItem {
                id: id.chars().filter(|c| !c.is_control()).take(80).collect(),
                field: r.field,
                problem: r.problem,
            }),
        }
    }
    (kept, refused)
}

/// Where a request came from, for the events' metadata.
pub struct Source<'a> {
    /// The channel's key; `app` for app-level notices that name no number.
    pub channel_key: &'a str,
    /// Our number on the channel.
    pub channel_number: &'a str,
    /// The stakeholder the channel serves.
    pub stakeholder: &'a str,
    pub provider: &'a str,
    pub request_id: Uuid,
    pub received_at: DateTime<Utc>,
}

impl Source<'_> {
    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::by(format!("provider:{}", self.provider));
        metadata.correlation_id = Some(self.request_id);
        metadata.received_at = Some(self.received_at);
        metadata
            .extra
            .insert("channel".into(), json!(self.channel_key));
        metadata
            .extra
            .insert("provider".into(), json!(self.provider));
        metadata
    }
}

/// Records `items` for the channel of `source`. Items for one customer are decided together and
/// appended at once; the answer comes only after everything is committed.
pub async fn record(
    conversations: &Conversations,
    store: &dyn EventStore,
    source: &Source<'_>,
    items: Vec<InboundItem>,
) -> Result<Recorded, CommandError> {
    let metadata = source.metadata();
    let mut recorded = Recorded::default();
    // Commands per stream, streams in the order they first appear.
    let mut streams: Vec<(String, Vec<ConversationCommand>)> = Vec::new();
    let mut notices: Vec<ChannelNotice> = Vec::new();
    for item in items {
        // Parsers only produce messages and receipts with a phone or a user id.
        let (stream, command) = match item {
            InboundItem::Message(message) => {
                let Some(customer) = message.customer.key() else {
                    continue;
                };
                let conversation = ConversationRef {
                    channel: source.channel_key.to_owned(),
                    channel_number: source.channel_number.to_owned(),
                    stakeholder: source.stakeholder.to_owned(),
                    customer,
                };
                let stream = conversation.stream();
                let command = ConversationCommand::ReceiveMessage {
                    conversation,
                    message,
                    new_chat_id: new_id(),
                    now: source.received_at,
                };
                (stream, command)
            }
            InboundItem::Receipt(receipt) => {
                let Some(customer) = receipt.recipient.key() else {
                    continue;
                };
                let command = ConversationCommand::RecordReceipt {
                    receipt,
                    now: source.received_at,
                };
                (stream_name(source.channel_key, &customer), command)
            }
            InboundItem::Notice(notice) => {
                notices.push(notice);
                continue;
            }
        };
        match streams.iter_mut().find(|(s, _)| *s == stream) {
            Some((_, commands)) => commands.push(command),
            None => streams.push((stream, vec![command])),
        }
    }
    for (stream, commands) in streams {
        // Each command records exactly one message or receipt when it is new, and nothing
        // when it was already recorded.
        let given = commands.len();
        let handled = conversations.handle(&stream, commands, &metadata).await?;
        let mut new = 0;
        for event in &handled.recorded {
            match event.event_type() {
                "MessageReceived" => recorded.messages += 1,
                "ReceiptRecorded" => recorded.receipts += 1,
                _ => continue,
            }
            new += 1;
        }
        recorded.duplicates += given - new;
    }
    if !notices.is_empty() {
        let stream = channel_stream(source.channel_key);
        let events = notices
            .into_iter()
            .map(|notice| {
                let event = ProviderNoticeReceived {
                    provider: source.provider.to_owned(),
                    kind: notice.kind,
                    errors: notice.errors,
                    raw: notice.raw,
                    received_at: source.received_at,
                    account_id: notice.account_id,
                };
                let new = event.to_new_event(&stream, metadata.clone());
                if let (true, Some(account_id)) =
                    (event.kind == "field:account_update", &event.account_id)
                {
                    recorded.account_updates.push(AccountUpdate {
                        notice: new.event_id,
                        account_id: account_id.clone(),
                        value: event.raw.get("value").cloned().unwrap_or_default(),
                    });
                }
                new
            })
            .collect();
        let result = store.append(&stream, ExpectedVersion::Any, events).await?;
        recorded.notices += result.stored.len();
        recorded.duplicates += result.duplicates.len();
    }
    Ok(recorded)
}
