//! The read models: chats, messages and their media, customers, executives, rides, SLA,
//! consent, the Genesys bridge, businesses' credentials. Each is its own projector with its own checkpoint and its own
//! file here (chats and messages a folder, their batch fold in a file of its own); adding a read model is adding one more [`Projector`] to [`all`]. The queries
//! that read a table, and the typed rows they return, live beside it; the API maps those rows
//! to its types.

use std::sync::Arc;

use async_trait::async_trait;
use chatledger_core::booking::{Booking, BookingChange};
use chatledger_core::conversation::{
    service_window_end, ConversationEvent, CustomerKey, DecodedEvent, InboundMessage, Media,
};
use chatledger_core::executive::ExecutiveEvent;
use chatledger_core::history::{dispatch_error, message_time, outbound_text, status_rank};
use chatledger_core::personal::ERASED;
use chatledger_core::sla::{SlaLevel, SlaPolicy, SLA_POLICY_EVENT};
use serde_json::Value;

use crate::projector::{ProjectionError, Projector};
use crate::read_db::{time_text, Arg, ReadTx};

pub mod chats;
pub mod consent;
pub mod credentials;
pub mod customers;
pub mod executives;
pub mod genesys;
pub mod media;
pub mod messages;
pub mod rides;
pub mod sla;

pub use {
    chats::Chats, consent::Consents, credentials::Credentials, customers::Customers,
    executives::Executives, genesys::Genesys, media::MessageMedia, messages::Messages,
    rides::Rides, sla::Sla,
};

/// Every read model, in the order they are built.
pub fn all() -> Vec<Arc<dyn Projector>> {
    vec![
        Arc::new(Chats),
        Arc::new(Messages),
        Arc::new(MessageMedia),
        Arc::new(Customers),
        Arc::new(Executives),
        Arc::new(Rides),
        Arc::new(Sla::default()),
        Arc::new(Genesys),
        Arc::new(Consents),
        Arc::new(Credentials),
    ]
}

/// A read model that folds a batch in memory (see [`fold_batch`]).
#[async_trait]
trait BatchFold: Default + Send {
    /// Reads the rows `events` need that are not in memory yet.
    async fn read(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError>;
    /// One event's change to the rows in memory.
    fn evolve(&mut self, event: &DecodedEvent, change: &ConversationEvent);
    /// Writes what changed since the last write.
    async fn write(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError>;
    /// Erases `stream`'s personal data in the tables, rows not read into the batch included,
    /// and forgets the stream's rows in memory.
    async fn erase(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        stream: &str,
    ) -> Result<(), ProjectionError>;
}

/// Applies `events` through a fold `F`: the rows they need read once, every event folded in
/// order, what changed written once. An erasure reaches rows the batch has not read: what is
/// folded so far is written, the erasure runs in the tables, and the stream's rows are read
/// again.
async fn fold_batch<F: BatchFold>(
    tx: &mut ReadTx,
    s: &str,
    events: &[&DecodedEvent],
) -> Result<(), ProjectionError> {
    let mut fold = F::default();
    fold.read(tx, s, events).await?;
    for event in events {
        let Some(change) = conversation_event(event)? else {
            continue;
        };
        if let ConversationEvent::PersonalDataErased { .. } = change {
            fold.write(tx, s).await?;
            fold.erase(tx, s, &event.stream).await?;
            fold.read(tx, s, events).await?;
        } else {
            fold.evolve(event, change);
        }
    }
    fold.write(tx, s).await
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
    chatledger_core::history::preview(message.text.as_deref(), &message.kind)
}
