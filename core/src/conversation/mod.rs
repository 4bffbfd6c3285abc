//! The conversation between one customer and one of our numbers: its events, its state (the
//! fold), and the decisions taken on it.
//!
//! Stream: `conversation-{channel}-{customer}` ([`stream_name`]). The decider is pure: the
//! command carries the time and any new id, and the decision returns events.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

mod attachments;
mod bridge;
mod commands;
mod decide;
mod decoded;
mod desk;
mod events;
mod inbound;
mod outbound;
mod state;
#[cfg(test)]
mod tests;
mod values;

pub use commands::*;
pub use decoded::*;
pub use events::*;
pub use state::*;
pub use values::*;

use crate::canonical::canonical_json_string;
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::media::{kind_of_mime, MediaError, MediaSource, StoredMedia};

/// The namespace of every event id chatledger derives (UUIDv5).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1d_2b8e_4f0a_5c3d_9e7f_1a2b_3c4d_5e6f);
