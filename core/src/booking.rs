//! Bookings, as the transaction system posts them. Stream: `booking-{booking_id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::canonical::canonical_json_string;
use crate::conversation::EVENT_ID_NAMESPACE;
use crate::event::{Metadata, NewEvent};

/// What happened to a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookingChange {
    Created,
    Modified,
    Cancelled,
}

impl BookingChange {
    /// The stored event type.
    pub fn event_type(&self) -> &'static str {
        match self {
            BookingChange::Created => "BookingCreated",
            BookingChange::Modified => "BookingModified",
            BookingChange::Cancelled => "BookingCancelled",
        }
    }

    pub fn from_event_type(t: &str) -> Option<Self> {
        match t {
            "BookingCreated" => Some(BookingChange::Created),
            "BookingModified" => Some(BookingChange::Modified),
            "BookingCancelled" => Some(BookingChange::Cancelled),
            _ => None,
        }
    }
}

/// A booking event's facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub booking_id: String,
    /// E.164.
    pub customer: String,
    pub ride_at: DateTime<Utc>,
    pub ride_status: String,
    /// The payload as posted.
    pub raw: Value,
}

/// The stream of one booking.
pub fn booking_stream(booking_id: &str) -> String {
    format!("booking-{booking_id}")
}

impl Booking {
    /// The envelope; its id derives from the booking, the change and the payload, so the same
    /// post twice is stored once.
    pub fn to_new_event(&self, change: BookingChange, metadata: Metadata) -> NewEvent {
        let id = Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!(
                "{}/{}/{}",
                change.event_type(),
                self.booking_id,
                canonical_json_string(&self.raw)
            )
            .as_bytes(),
        );
        NewEvent::new(
            id,
            change.event_type(),
            serde_json::to_value(self).unwrap_or_default(),
            metadata,
        )
    }
}
