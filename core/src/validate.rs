//! What the edge refuses before anything is recorded: values no store, index or fold can take.
//!
//! A message that is recorded must be storable and foldable by every read model and reactor,
//! on every backend: PostgreSQL refuses a NUL character in text, an index refuses a key of
//! thousands of characters, and a timestamp near the end of chrono's range overflows the
//! first addition made to it. Such values are not messages a customer could have sent; they
//! are refused with the field named, and nothing is recorded for them. Each limit is well
//! above what the provider itself documents, so no real message is ever refused by them.
//!
//! The read side does not rely on this alone: an event that still cannot be applied is
//! quarantined there (ADR 10).

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::conversation::{Customer, InboundMessage, Media, ProviderError, Receipt};

/// Ids: a provider's message or status id (a `wamid` is about 60 characters, a Twilio SID
/// 34), a business-scoped user id, a booking id.
pub const ID_MAX: usize = 256;
/// Short words and names: a message kind, a receipt status, a profile name (WhatsApp allows
/// 25 characters), a MIME type, a context field's name.
pub const NAME_MAX: usize = 256;
/// One text: a message body, a caption, a provider's error text. WhatsApp caps a message at
/// 65,536 characters.
pub const TEXT_MAX: usize = 65_536;

/// A value refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Refused {
    /// Where the value was, in the request's terms (`text`, `customer.name`, `booking_id`).
    pub field: String,
    pub problem: String,
}

impl Refused {
    fn new(field: &str, problem: impl Into<String>) -> Self {
        Refused {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }
}

/// A text no store refuses: no NUL character, at most `max` characters.
pub fn text(field: &str, value: &str, max: usize) -> Result<(), Refused> {
    if value.contains('\0') {
        return Err(Refused::new(
            field,
            "contains a NUL character (U+0000), which cannot be stored",
        ));
    }
    // Bytes bound characters from above: count only when it could matter.
    if value.len() > max {
        let chars = value.chars().count();
        if chars > max {
            return Err(Refused::new(
                field,
                format!("is {chars} characters long; at most {max} are accepted"),
            ));
        }
    }
    Ok(())
}

fn optional(field: &str, value: Option<&str>, max: usize) -> Result<(), Refused> {
    value.map_or(Ok(()), |v| text(field, v, max))
}

/// An instant from outside, inside [`crate::time::accepted_range`].
pub fn time(field: &str, at: DateTime<Utc>) -> Result<(), Refused> {
    if crate::time::is_accepted(at) {
        Ok(())
    } else {
        Err(Refused::new(
            field,
            format!("{at} is outside the accepted range (the years 2000 to 2099)"),
        ))
    }
}

/// Every key and string in `value`, at any depth, as a [`text`] of at most `max` characters;
/// the field named is the path to the first refused one (`context.note`, `details.rows[2]`).
pub fn json(field: &str, value: &Value, max: usize) -> Result<(), Refused> {
    match value {
        Value::String(s) => text(field, s, max),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| json(&format!("{field}[{i}]"), item, max)),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            let path = if field.is_empty() {
                key.clone()
            } else {
                format!("{field}.{key}")
            };
            text(&format!("{path} (its name)"), key, NAME_MAX)?;
            json(&path, item, max)
        }),
        _ => Ok(()),
    }
}

fn customer(field: &str, customer: &Customer) -> Result<(), Refused> {
    optional(&format!("{field}.phone"), customer.phone.as_deref(), ID_MAX)?;
    optional(
        &format!("{field}.user_id"),
        customer.user_id.as_deref(),
        ID_MAX,
    )?;
    optional(&format!("{field}.name"), customer.name.as_deref(), NAME_MAX)
}

fn errors(errors: &[ProviderError]) -> Result<(), Refused> {
    errors.iter().try_for_each(|e| {
        optional("errors.title", e.title.as_deref(), TEXT_MAX)?;
        optional("errors.message", e.message.as_deref(), TEXT_MAX)?;
        optional("errors.details", e.details.as_deref(), TEXT_MAX)
    })
}

fn media(media: &Media) -> Result<(), Refused> {
    optional("media.id", media.id.as_deref(), ID_MAX)?;
    optional("media.url", media.url.as_deref(), TEXT_MAX)?;
    optional("media.mime_type", media.mime_type.as_deref(), NAME_MAX)?;
    optional("media.sha256", media.sha256.as_deref(), NAME_MAX)?;
    optional("media.caption", media.caption.as_deref(), TEXT_MAX)?;
    optional("media.filename", media.filename.as_deref(), TEXT_MAX)
}

impl InboundMessage {
    /// Whether every part of the message can be recorded, stored and folded.
    pub fn check(&self) -> Result<(), Refused> {
        text("id", &self.provider_message_id, ID_MAX)?;
        text("type", &self.kind, NAME_MAX)?;
        customer("from", &self.customer)?;
        // Media first: a caption is also the message's text, and is named as the caption.
        if let Some(m) = &self.media {
            media(m)?;
        }
        optional("text", self.text.as_deref(), TEXT_MAX)?;
        for (field, value) in [
            ("details", &self.details),
            ("context", &self.context),
            ("referral", &self.referral),
        ] {
            if let Some(value) = value {
                json(field, value, TEXT_MAX)?;
            }
        }
        if let Some(at) = self.sent_at {
            time("timestamp", at)?;
        }
        errors(&self.errors)
    }
}

impl Receipt {
    /// Whether every part of the receipt can be recorded, stored and folded.
    pub fn check(&self) -> Result<(), Refused> {
        text("id", &self.provider_message_id, ID_MAX)?;
        text("status", &self.status, NAME_MAX)?;
        customer("recipient", &self.recipient)?;
        if let Some(at) = self.at {
            time("timestamp", at)?;
        }
        errors(&self.errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts() {
        assert!(text("text", "hello \u{202e}olleh", 100).is_ok());
        let nul = text("text", "a\u{0}b", 100).unwrap_err();
        assert_eq!(nul.field, "text");
        assert!(nul.problem.contains("NUL"), "{nul}");
        assert!(text("id", &"x".repeat(256), ID_MAX).is_ok());
        let long = text("id", &"x".repeat(10_000), ID_MAX).unwrap_err();
        assert_eq!(
            long.to_string(),
            "id: is 10000 characters long; at most 256 are accepted"
        );
        // Characters, not bytes: 256 four-byte characters pass.
        assert!(text("id", &"😮".repeat(256), ID_MAX).is_ok());
    }

    #[test]
    fn json_paths_name_the_field() {
        let value = json!({"documents_status": "Approved", "nested": {"list": ["ok", "a\u{0}b"]}});
        let refused = json("context", &value, TEXT_MAX).unwrap_err();
        assert_eq!(refused.field, "context.nested.list[1]");
        let key = json("context", &json!({"a\u{0}": 1}), TEXT_MAX).unwrap_err();
        assert!(key.field.ends_with("(its name)"), "{key}");
    }

    #[test]
    fn times() {
        let end = DateTime::from_timestamp(8_210_266_876_799, 0).unwrap();
        assert_eq!(time("timestamp", end).unwrap_err().field, "timestamp");
        assert!(time("timestamp", Utc::now()).is_ok());
    }
}
