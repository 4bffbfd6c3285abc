//! How `messages` folds a batch: each message and each receipt read once, receipts settling
//! the delivery status of messages recorded before or after them, the changes written once.

use std::collections::{HashMap, HashSet};

use crate::rows::{Folded, OnConflict, RowValues};

use super::*;

/// Erases the texts of a stream's messages: text becomes "[erased]" (a template's name is not
/// personal); captions and file names inside media too, exactly as a replay reads them.
async fn erase(tx: &mut ReadTx, s: &str, stream: &str) -> Result<(), ProjectionError> {
    tx.execute(
        &format!(
            "UPDATE messages{s} SET text = $2
             WHERE stream = $1 AND text IS NOT NULL AND NOT (direction = 'OUTBOUND' AND kind = 'template')"
        ),
        &[stream.into(), ERASED.into()],
    )
    .await?;
    let with_media = tx
        .fetch_all(
            &format!(
                "SELECT message_id, media FROM messages{s} WHERE stream = $1 AND media IS NOT NULL"
            ),
            &[stream.into()],
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
    Ok(())
}

/// A message's provider id within its stream: what receipts name.
type ProviderKey = (String, String);

/// A receipt as the fold needs it to settle a message's delivery status.
#[derive(Debug, Clone)]
struct KnownReceipt {
    status: String,
    rank: i64,
    error: Option<String>,
}

/// The messages and receipts a batch touches, in memory: read from the tables at most once
/// each, changed event by event, written back together.
#[derive(Default)]
pub(super) struct MessagesFold {
    /// Messages by id.
    rows: Folded<String, Stored>,
    /// The messages in `rows` by their provider id.
    by_provider: HashMap<ProviderKey, Vec<String>>,
    /// Provider ids whose messages have been read.
    providers_read: HashSet<ProviderKey>,
    /// Receipts by provider id: the table's (for the ids read) and the batch's.
    receipts: HashMap<ProviderKey, Vec<KnownReceipt>>,
    /// The batch's receipts, as rows of `message_receipts`.
    new_receipts: Vec<Vec<Arg>>,
}

/// A row of `messages` as the table stores it.
#[derive(Debug, Clone)]
struct Stored {
    message_id: String,
    chat_id: String,
    stream: String,
    direction: String,
    kind: String,
    text: Option<String>,
    media: Option<String>,
    provider_message_id: Option<String>,
    at: String,
    delivery_status: Option<String>,
    status_rank: i64,
    error: Option<String>,
    position: i64,
}

/// The columns of `messages`, in [`Stored::values`]' order; `true` for integers.
const STORED: [crate::rows::Column; 13] = [
    ("message_id", false),
    ("chat_id", false),
    ("stream", false),
    ("direction", false),
    ("kind", false),
    ("text", false),
    ("media", false),
    ("provider_message_id", false),
    ("at", false),
    ("delivery_status", false),
    ("status_rank", true),
    ("error", false),
    ("position", true),
];

/// The columns of `message_receipts`, in the order the fold writes them.
const RECEIPTS: [crate::rows::Column; 7] = [
    ("stream", false),
    ("provider_message_id", false),
    ("status", false),
    ("status_rank", true),
    ("at", false),
    ("error", false),
    ("position", true),
];

impl Stored {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        let text = |i| row.text(i).unwrap_or_default();
        Stored {
            message_id: text(0),
            chat_id: text(1),
            stream: text(2),
            direction: text(3),
            kind: text(4),
            text: row.text(5),
            media: row.text(6),
            provider_message_id: row.text(7),
            at: text(8),
            delivery_status: row.text(9),
            status_rank: row.i64(10).unwrap_or_default(),
            error: row.text(11),
            position: row.i64(12).unwrap_or_default(),
        }
    }

    fn provider_key(&self) -> Option<ProviderKey> {
        Some((self.stream.clone(), self.provider_message_id.clone()?))
    }
}

impl RowValues for Stored {
    fn values(&self) -> Vec<Arg> {
        vec![
            (&self.message_id).into(),
            (&self.chat_id).into(),
            (&self.stream).into(),
            (&self.direction).into(),
            (&self.kind).into(),
            self.text.as_ref().into(),
            self.media.as_ref().into(),
            self.provider_message_id.as_ref().into(),
            (&self.at).into(),
            self.delivery_status.as_ref().into(),
            self.status_rank.into(),
            self.error.as_ref().into(),
            self.position.into(),
        ]
    }
}

/// The error a receipt reports, as the read model shows it.
fn receipt_error(receipt: &chatledger_core::conversation::Receipt) -> Option<String> {
    receipt.errors.first().map(|e| match &e.title {
        Some(title) => format!("{}: {title}", e.code),
        None => e.code.to_string(),
    })
}

#[async_trait]
impl BatchFold for MessagesFold {
    /// Reads what `events` need that is not in memory yet: the messages they name, the
    /// messages their receipts are about, and the receipts already there for the messages
    /// they record or dispatch.
    async fn read(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        let mut ids: Vec<Arg> = Vec::new();
        let mut providers: Vec<ProviderKey> = Vec::new();
        let mut receipts_of: Vec<ProviderKey> = Vec::new();
        let mut want_id = |rows: &mut Folded<String, Stored>, id: String| {
            if rows.unread(&id) {
                ids.push(Arg::Text(id));
            }
        };
        for event in events {
            match conversation_event(event)? {
                Some(ConversationEvent::MessageReceived { message, .. }) => {
                    want_id(&mut self.rows, event.event_id.to_string());
                    receipts_of.push((event.stream.clone(), message.provider_message_id.clone()));
                }
                Some(ConversationEvent::ReplyQueued { message_id, .. })
                | Some(ConversationEvent::MessageDispatchFailed { message_id, .. }) => {
                    want_id(&mut self.rows, message_id.to_string());
                }
                Some(ConversationEvent::MessageDispatched {
                    message_id,
                    provider_message_id,
                    ..
                }) => {
                    want_id(&mut self.rows, message_id.to_string());
                    receipts_of.push((event.stream.clone(), provider_message_id.clone()));
                }
                Some(ConversationEvent::ReceiptRecorded { receipt, .. }) => {
                    let key = (event.stream.clone(), receipt.provider_message_id.clone());
                    if self.providers_read.insert(key.clone()) {
                        providers.push(key);
                    }
                }
                _ => {}
            }
        }
        let columns: Vec<&str> = STORED.iter().map(|(name, _)| *name).collect();
        let columns = columns.join(", ");
        if !ids.is_empty() {
            let sql = format!(
                "SELECT {columns} FROM messages{s} WHERE message_id IN ({})",
                tx.json_texts("$1")
            );
            for row in tx
                .fetch_keys(&sql, crate::rows::json_param(&ids), ids.len())
                .await?
            {
                self.keep(Stored::from_row(&row));
            }
        }
        if !providers.is_empty() {
            let sql = format!(
                "SELECT {} FROM {} JOIN messages{s} m
                    ON m.stream = r.value ->> 0 AND m.provider_message_id = r.value ->> 1",
                STORED.map(|(name, _)| format!("m.{name}")).join(", "),
                tx.json_rows("$1")
            );
            for row in tx
                .fetch_keys(&sql, pairs(&providers), providers.len())
                .await?
            {
                self.keep(Stored::from_row(&row));
            }
        }
        receipts_of.retain(|key| !self.receipts.contains_key(key));
        receipts_of.sort();
        receipts_of.dedup();
        if !receipts_of.is_empty() {
            for key in &receipts_of {
                self.receipts.insert(key.clone(), Vec::new());
            }
            let sql = format!(
                "SELECT x.stream, x.provider_message_id, x.status, x.status_rank, x.error
                 FROM {} JOIN message_receipts{s} x
                    ON x.stream = r.value ->> 0 AND x.provider_message_id = r.value ->> 1",
                tx.json_rows("$1")
            );
            for row in tx
                .fetch_keys(&sql, pairs(&receipts_of), receipts_of.len())
                .await?
            {
                let key = (
                    row.text(0).unwrap_or_default(),
                    row.text(1).unwrap_or_default(),
                );
                self.receipts.entry(key).or_default().push(KnownReceipt {
                    status: row.text(2).unwrap_or_default(),
                    rank: row.i64(3).unwrap_or_default(),
                    error: row.text(4),
                });
            }
        }
        Ok(())
    }

    /// One event's change to the messages and receipts.
    fn evolve(&mut self, event: &DecodedEvent, change: &ConversationEvent) {
        match change {
            ConversationEvent::MessageReceived {
                chat_id,
                received_at,
                message,
            } => {
                // A receipt may have arrived before the message it is about.
                let key = (event.stream.clone(), message.provider_message_id.clone());
                let best = self.best_receipt(&key).cloned();
                self.record(Stored {
                    message_id: event.event_id.to_string(),
                    chat_id: chat_id.to_string(),
                    stream: event.stream.clone(),
                    direction: "INBOUND".into(),
                    kind: message.kind.clone(),
                    text: message.text.clone(),
                    media: message
                        .media
                        .as_ref()
                        .map(|m| serde_json::to_string(m).unwrap_or_default()),
                    provider_message_id: Some(message.provider_message_id.clone()),
                    at: time_text(message_time(message, *received_at)),
                    delivery_status: best.as_ref().map(|b| b.status.clone()),
                    status_rank: best.as_ref().map_or(0, |b| b.rank),
                    error: best.and_then(|b| b.error),
                    position: event.position as i64,
                });
            }
            ConversationEvent::ReplyQueued {
                chat_id,
                message_id,
                kind,
                text,
                template,
                media,
                queued_at,
                ..
            } => {
                let described = media.as_ref().map(|m| {
                    serde_json::to_string(&Media::described(m, text.clone())).unwrap_or_default()
                });
                let text = text
                    .clone()
                    .or(template.as_ref().map(|t| format!("[template {}]", t.name)));
                self.record(Stored {
                    message_id: message_id.to_string(),
                    chat_id: chat_id.to_string(),
                    stream: event.stream.clone(),
                    direction: "OUTBOUND".into(),
                    kind: kind.clone(),
                    text,
                    media: described,
                    provider_message_id: None,
                    at: time_text(*queued_at),
                    delivery_status: Some("queued".into()),
                    status_rank: status_rank("queued"),
                    error: None,
                    position: event.position as i64,
                });
            }
            ConversationEvent::MessageDispatched {
                message_id,
                provider_message_id,
                ..
            } => {
                let message_id = message_id.to_string();
                let Some(row) = self.change(&message_id) else {
                    return;
                };
                let old = row.provider_key();
                row.provider_message_id = Some(provider_message_id.clone());
                let key = (row.stream.clone(), provider_message_id.clone());
                // Receipts may have come before the outcome was recorded.
                let best = self.best_receipt(&key).cloned();
                if let Some(row) = self.rows.change(&message_id) {
                    row.delivery_status = Some(
                        best.as_ref()
                            .map_or("accepted".into(), |b| b.status.clone()),
                    );
                    row.status_rank = best.map_or(status_rank("accepted"), |b| b.rank);
                }
                if let Some(ids) = old.and_then(|old| self.by_provider.get_mut(&old)) {
                    ids.retain(|id| *id != message_id);
                }
                self.by_provider.entry(key).or_default().push(message_id);
            }
            ConversationEvent::MessageDispatchFailed {
                message_id,
                code,
                error,
                ..
            } => {
                if let Some(row) = self.change(&message_id.to_string()) {
                    row.delivery_status = Some("failed".into());
                    row.status_rank = status_rank("failed");
                    row.error = Some(dispatch_error(*code, error));
                }
            }
            ConversationEvent::ReceiptRecorded { receipt, .. } => {
                let rank = status_rank(&receipt.status);
                let error = receipt_error(receipt);
                let key = (event.stream.clone(), receipt.provider_message_id.clone());
                let known = self.receipts.entry(key.clone()).or_default();
                if !known.iter().any(|r| r.status == receipt.status) {
                    known.push(KnownReceipt {
                        status: receipt.status.clone(),
                        rank,
                        error: error.clone(),
                    });
                }
                self.new_receipts.push(vec![
                    (&event.stream).into(),
                    (&receipt.provider_message_id).into(),
                    (&receipt.status).into(),
                    rank.into(),
                    receipt.at.map(time_text).into(),
                    error.clone().into(),
                    event.position.into(),
                ]);
                for message_id in self.by_provider.get(&key).cloned().unwrap_or_default() {
                    let behind = self
                        .rows
                        .get(&message_id)
                        .is_some_and(|row| row.status_rank < rank);
                    if !behind {
                        continue;
                    }
                    if let Some(row) = self.change(&message_id) {
                        row.delivery_status = Some(receipt.status.clone());
                        row.status_rank = rank;
                        if error.is_some() {
                            row.error = error.clone();
                        }
                    }
                }
            }
            // Other events do not change these tables.
            _ => {}
        }
    }

    /// Writes the changed messages and the new receipts (a statement each) and starts new
    /// lists of changes.
    async fn write(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError> {
        self.rows
            .write_changed(tx, &format!("messages{s}"), &STORED, &["message_id"])
            .await?;
        tx.write_rows(
            &format!("message_receipts{s}"),
            &RECEIPTS,
            &["stream", "provider_message_id", "status"],
            OnConflict::Keep,
            std::mem::take(&mut self.new_receipts),
        )
        .await?;
        Ok(())
    }

    async fn erase(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        stream: &str,
    ) -> Result<(), ProjectionError> {
        erase(tx, s, stream).await?;
        self.rows.forget(|row| row.stream == stream);
        self.by_provider.retain(|(s, _), _| s != stream);
        self.providers_read.retain(|(s, _)| s != stream);
        Ok(())
    }
}

impl MessagesFold {
    /// A message read from the table (unless it is in memory already).
    fn keep(&mut self, stored: Stored) {
        if self.rows.get(&stored.message_id).is_some() {
            return;
        }
        self.index(&stored);
        self.rows.found(stored.message_id.clone(), stored);
    }

    /// A message recorded by this batch (unless it is there already).
    fn record(&mut self, stored: Stored) {
        if self.rows.get(&stored.message_id).is_some() {
            return;
        }
        self.index(&stored);
        self.rows.add(stored.message_id.clone(), stored);
    }

    /// Finds `stored` by its provider id from now on.
    fn index(&mut self, stored: &Stored) {
        if let Some(key) = stored.provider_key() {
            self.by_provider
                .entry(key)
                .or_default()
                .push(stored.message_id.clone());
        }
    }

    /// The row of `message_id`, when the message is in the table (or recorded in this batch),
    /// marked changed.
    fn change(&mut self, message_id: &str) -> Option<&mut Stored> {
        self.rows.change(&message_id.to_owned())
    }

    /// The highest-ranked receipt recorded for a provider id, if any.
    fn best_receipt(&self, key: &ProviderKey) -> Option<&KnownReceipt> {
        let mut best: Option<&KnownReceipt> = None;
        for receipt in self.receipts.get(key).into_iter().flatten() {
            if best.is_none_or(|b| receipt.rank > b.rank) {
                best = Some(receipt);
            }
        }
        best
    }
}

/// Provider ids as the JSON parameter of a row source: `[[stream, id], …]`.
fn pairs(keys: &[ProviderKey]) -> Arg {
    Arg::Text(
        Value::Array(
            keys.iter()
                .map(|(stream, id)| Value::Array(vec![stream.clone().into(), id.clone().into()]))
                .collect(),
        )
        .to_string(),
    )
}
