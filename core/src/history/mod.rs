//! One chat as it stood at any moment, and its history in words.
//!
//! [`ChatAsOf`] folds a conversation stream's events, up to an instant, with
//! [`Conversation::evolve`] — the fold the live system decides with — for the chat's status,
//! assignee and tags, and adds what the dashboard shows beside them (messages and their
//! delivery status, SLA deadlines), by the same rules as the read models. [`describe`] says
//! what each event did, and why, in words an auditor reads.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::conversation::service_window_end;
use crate::conversation::{
    AssignmentRule, ChatStatus, Conversation, ConversationEvent, ExecutiveRef, InboundMessage,
    Media, OpenReason, OutboundPurpose, SlaStop,
};
use crate::event::RecordedEvent;
use crate::media::MediaFile;
use crate::sla::{SlaLevel, SlaPolicy};

mod as_of;
#[cfg(test)]
mod tests;
mod words;

pub use as_of::*;
pub use words::*;

/// The order of delivery statuses: a receipt never moves a message's status backwards.
pub fn status_rank(status: &str) -> i64 {
    match status {
        "queued" => 1,
        "accepted" => 2,
        "sent" => 3,
        "delivered" => 4,
        "read" => 5,
        "failed" | "undelivered" => 6,
        _ => 0,
    }
}

/// The longest last-message preview a chat list shows, in characters.
pub const PREVIEW_CHARS: usize = 200;

/// What a message shows as its last-message preview: the start of its text, or its kind.
pub fn preview(text: Option<&str>, kind: &str) -> String {
    match text {
        Some(text) => text.chars().take(PREVIEW_CHARS).collect(),
        None => format!("[{kind}]"),
    }
}

/// An outbound message's text as the dashboard shows it: its text, or the template it is.
pub fn outbound_text(
    text: Option<&str>,
    template: Option<&crate::conversation::Template>,
) -> Option<String> {
    text.map(str::to_owned)
        .or_else(|| template.map(|t| format!("[template {}]", t.name)))
}

/// Why a message failed to go out, as the dashboard shows it: the provider's code and text.
pub fn dispatch_error(code: Option<i64>, error: &str) -> String {
    match code {
        Some(code) => format!("{code}: {error}"),
        None => error.to_owned(),
    }
}

/// When a customer's message was sent: by the provider's clock if it says, else when it
/// reached us.
pub fn message_time(message: &InboundMessage, received_at: DateTime<Utc>) -> DateTime<Utc> {
    message.sent_at.unwrap_or(received_at)
}
