//! Messages of a chat and their media.

use super::*;

pub(super) const MESSAGE_COLUMNS: &str = "message_id, provider_message_id, direction, kind, text, media, at, delivery_status, error, position";

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
    pub(super) fn from_view(m: &MessageView) -> Self {
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

    pub(super) fn from_row(row: &DbRow) -> Self {
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
