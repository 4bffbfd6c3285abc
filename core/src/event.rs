//! The events the log stores: what a caller appends and what a reader gets back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::hash::EventHash;

/// Who and what caused an event, stored beside its data.
///
/// `extra` keeps any further fields (the provider and channel of a webhook, say), so that a
/// reader never drops metadata it does not know about.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together every event caused by one outside request or one decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The event (or request) that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Who or what caused it: a provider, an executive id, the transaction system, a reactor.
    #[serde(default)]
    pub actor: String,
    /// When the outside input behind this event reached us, if it came from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<DateTime<Utc>>,
    /// Any further metadata, kept as it was given.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Metadata {
    /// Metadata naming only the actor.
    pub fn by(actor: impl Into<String>) -> Self {
        Metadata {
            actor: actor.into(),
            ..Metadata::default()
        }
    }
}

/// An event a caller asks the store to append. The store gives it its stream version,
/// global position, `recorded_at` and hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Globally unique. Derived from the outside id where there is one (a `wamid`, a booking
    /// event), so that a redelivery appends nothing new.
    pub event_id: Uuid,
    /// The event's type name, in the past tense (`MessageReceived`). Stored data: never renamed.
    pub event_type: String,
    /// The version of this type's data layout, for upcasting old events.
    pub schema_version: u32,
    /// The event's facts.
    pub data: Value,
    /// Who and what caused it.
    pub metadata: Metadata,
}

impl NewEvent {
    /// A new event of schema version 1.
    pub fn new(
        event_id: Uuid,
        event_type: impl Into<String>,
        data: Value,
        metadata: Metadata,
    ) -> Self {
        NewEvent {
            event_id,
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata,
        }
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Globally unique id.
    pub event_id: Uuid,
    /// The stream it belongs to (`conversation-{channel}-{customer}`, …).
    pub stream: String,
    /// Its place in its stream, from 0, without gaps.
    pub version: u64,
    /// Its place in the one global order: strictly increasing in the order readers see
    /// events, possibly with gaps.
    pub position: u64,
    /// The event's type name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The version of this type's data layout.
    pub schema_version: u32,
    /// The event's facts.
    pub data: Value,
    /// Who and what caused it.
    pub metadata: Metadata,
    /// When the store recorded it, to the microsecond.
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 over the previous hash of its stream and its canonical bytes.
    pub hash: EventHash,
}

impl RecordedEvent {
    /// The fields its hash covers, for recomputing the chain.
    pub fn hashed_fields(&self) -> HashedFields<'_> {
        HashedFields {
            event_id: self.event_id,
            stream: &self.stream,
            version: self.version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: &self.data,
            metadata: &self.metadata,
            recorded_at: self.recorded_at,
        }
    }
}

/// The fields of an event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct HashedFields<'a> {
    pub event_id: Uuid,
    pub stream: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: u32,
    pub data: &'a Value,
    pub metadata: &'a Metadata,
    pub recorded_at: DateTime<Utc>,
}
