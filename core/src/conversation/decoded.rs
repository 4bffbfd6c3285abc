//! Stored conversation events read back: into their type, borrowed or moved out of the
//! stored data, and the decoded form every read model and reactor shares.

use super::*;

impl ConversationEvent {
    /// Reads a stored event back; `None` for a type this fold does not know (a newer
    /// release's event), which the fold then skips. This is the one place old schema
    /// versions would be upcast.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if !Self::TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        Self::from_tagged(&event.event_type, &event.data).map(Some)
    }

    /// As [`ConversationEvent::from_recorded`], moving the data into the typed event (its
    /// texts and payloads are not copied); a conversation event's data is null after.
    fn take_from_recorded(event: &mut RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if !Self::TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        Self::from_tagged(&event.event_type, std::mem::take(&mut event.data)).map(Some)
    }

    /// Reads an event of `event_type` straight from its stored `data` (borrowed or owned), the
    /// tag first, so that nothing is cloned or buffered on the way (an adjacently tagged enum
    /// met in the stored key order, data before type, would be).
    fn from_tagged<'de, D>(event_type: &'de str, data: D) -> Result<Self, serde_json::Error>
    where
        D: serde::de::Deserializer<'de, Error = serde_json::Error>,
    {
        let tagged = Tagged {
            event_type,
            data: Some(data),
            read: 0,
        };
        ConversationEvent::deserialize(serde::de::value::MapAccessDeserializer::new(tagged))
    }
}

/// An event read from the log, with its conversation event decoded once, on first use, for
/// every read model and reactor that looks at it.
#[derive(Debug)]
pub struct DecodedEvent {
    recorded: RecordedEvent,
    conversation: std::sync::OnceLock<Result<Option<ConversationEvent>, String>>,
}

impl DecodedEvent {
    pub fn new(recorded: RecordedEvent) -> Self {
        DecodedEvent {
            recorded,
            conversation: std::sync::OnceLock::new(),
        }
    }

    /// `recorded` with its conversation event decoded at once, the data moved into it rather
    /// than copied: a conversation event's `data` reads null after. For readers that look at
    /// conversation events only through [`DecodedEvent::conversation`], as read models do (a
    /// rebuild reads the whole log this way); other events keep their data.
    pub fn decoded_now(mut recorded: RecordedEvent) -> Self {
        let decoded =
            ConversationEvent::take_from_recorded(&mut recorded).map_err(|e| e.to_string());
        DecodedEvent {
            recorded,
            conversation: std::sync::OnceLock::from(decoded),
        }
    }

    /// The conversation event, if this is one (see [`ConversationEvent::from_recorded`]);
    /// the error says why it could not be read.
    pub fn conversation(&self) -> Result<Option<&ConversationEvent>, &str> {
        match self.conversation.get_or_init(|| {
            ConversationEvent::from_recorded(&self.recorded).map_err(|e| e.to_string())
        }) {
            Ok(event) => Ok(event.as_ref()),
            Err(e) => Err(e.as_str()),
        }
    }

    /// The stored event.
    pub fn recorded(&self) -> &RecordedEvent {
        &self.recorded
    }
}

impl std::ops::Deref for DecodedEvent {
    type Target = RecordedEvent;

    fn deref(&self) -> &RecordedEvent {
        &self.recorded
    }
}

impl From<RecordedEvent> for DecodedEvent {
    fn from(recorded: RecordedEvent) -> Self {
        DecodedEvent::new(recorded)
    }
}

/// A stored event seen as `{"type": …, "data": …}`, in that order, without copying it: `data`
/// is the stored data, borrowed or owned.
struct Tagged<'a, D> {
    event_type: &'a str,
    data: Option<D>,
    /// Entries handed out so far.
    read: u8,
}

impl<'de, D> serde::de::MapAccess<'de> for Tagged<'de, D>
where
    D: serde::de::Deserializer<'de, Error = serde_json::Error>,
{
    type Error = serde_json::Error;

    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.read {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.read += 1;
        match self.read {
            1 => seed.deserialize(serde::de::value::BorrowedStrDeserializer::new(
                self.event_type,
            )),
            _ => match self.data.take() {
                Some(data) => seed.deserialize(data),
                None => Err(serde::de::Error::custom("an event's data read twice")),
            },
        }
    }
}
