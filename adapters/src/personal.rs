//! Customers' personal data, sealed in the log with a key per conversation, and forgotten
//! by destroying that key (crypto-shredding).
//!
//! [`PersonalData`] wraps the log. On append, the personal fields of a conversation event
//! ([`chatledger_core::personal`]) are taken out of its data and sealed with
//! XChaCha20-Poly1305 under the conversation's key, bound to the event id; the event is
//! stored, and hash-chained, in that sealed form. On read they are opened and put back, so
//! everything above the log sees whole events. Once a key is destroyed (`forget`), its
//! events read with "[erased]" in place of text and names, and the chain still verifies,
//! because the stored bytes never change.
//!
//! Keys live beside the log, outside it (the store's [`KeyStore`]), so they can be destroyed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chatledger_core::conversation::{ConversationEvent, CustomerKey};
use chatledger_core::personal::{erased_value, put_back, take_personal, SEALED_FIELD};
use chatledger_core::{
    AppendResult, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
    StoreError, SubjectKey,
};
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

type Key = [u8; 32];

/// How a sealed event keeps its personal data.
#[derive(Debug, Serialize, Deserialize)]
struct Sealed {
    key_id: String,
    /// JSON pointers of the fields sealed, in order.
    fields: Vec<String>,
    nonce: String,
    ciphertext: String,
}

/// Whether a stream's events carry a customer's personal data.
fn is_conversation(stream: &str) -> bool {
    stream.starts_with("conversation-")
}

/// The log, with conversations' personal data sealed in it.
#[derive(Clone)]
pub struct PersonalData {
    inner: Arc<Inner>,
}

struct Inner {
    log: Arc<dyn EventStore>,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_stream: HashMap<String, (String, Key)>,
    /// `None`: the key was destroyed.
    by_id: HashMap<String, Option<Key>>,
}

/// How many keys each map keeps at most: beyond, it starts again empty and keys are read
/// again from the key store as they are needed, so that a process reading a long log (a
/// replay, a reactor folding it) does not grow with the number of conversations.
const KEYS_KEPT: usize = 100_000;

impl Keys {
    /// Makes room for `more` keys in each map.
    fn make_room(&mut self, more: usize) {
        if self.by_id.len() + more > KEYS_KEPT {
            self.by_id.clear();
        }
        if self.by_stream.len() + more > KEYS_KEPT {
            self.by_stream.clear();
        }
    }
}

fn no_key_store() -> StoreError {
    StoreError::Backend("this event store keeps no keys, so it cannot hold personal data".into())
}

impl PersonalData {
    /// Wraps `log`; keys are kept in its key store.
    pub fn new(log: Arc<dyn EventStore>) -> Self {
        PersonalData {
            inner: Arc::new(Inner {
                log,
                keys: Mutex::new(Keys::default()),
            }),
        }
    }

    /// The log as stored: personal data sealed, as the hash chain covers it.
    pub fn stored(&self) -> Arc<dyn EventStore> {
        self.inner.log.clone()
    }

    /// Destroys the keys of every conversation of `customer` and records the erasure on each
    /// of them. Returns the streams erased. Forgetting again finds nothing more to destroy.
    pub async fn forget(
        &self,
        customer: &CustomerKey,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let inner = &self.inner;
        let keys = inner.log.keys().ok_or_else(no_key_store)?;
        let suffix = format!("-{customer}");
        let mut erased = Vec::new();
        for (stream, key_id) in keys.keyed_streams_ending(&suffix).await? {
            if !is_conversation(&stream) {
                continue;
            }
            keys.destroy_stream_key(&stream).await?;
            inner.evict(&stream, &key_id);
            let event = ConversationEvent::PersonalDataErased {
                customer: customer.clone(),
                key_id,
                by: by.to_owned(),
                erased_at: now,
            };
            inner
                .log
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![event.to_new_event(&stream, Metadata::by(by))],
                )
                .await?;
            erased.push(stream);
        }
        if let Err(e) = keys.purge_destroyed_keys().await {
            tracing::warn!(error = %e, "could not tidy up after forgetting; the keys are deleted");
        }
        Ok(erased)
    }
}

impl Inner {
    fn evict(&self, stream: &str, key_id: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.by_stream.remove(stream);
            keys.make_room(1);
            keys.by_id.insert(key_id.to_owned(), None);
        }
    }

    /// The key of `stream` this process already knows.
    fn known_key(&self, stream: &str) -> Option<(String, Key)> {
        self.keys
            .lock()
            .ok()
            .and_then(|k| k.by_stream.get(stream).cloned())
    }

    fn remember(&self, stream: &str, key: &SubjectKey) {
        if let Ok(mut cache) = self.keys.lock() {
            cache.make_room(1);
            cache
                .by_stream
                .insert(stream.to_owned(), (key.key_id.clone(), key.key));
            cache.by_id.insert(key.key_id.clone(), Some(key.key));
        }
    }

    /// Seals the personal data of `events` under `stream`'s key and appends them. A stream
    /// without a key gets one in the same write as its events.
    async fn append_sealed(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let seal_all = |events: &mut Vec<NewEvent>, key_id: &str, key: &Key| {
            events.iter_mut().try_for_each(|e| seal(e, key_id, key))
        };
        if let Some((key_id, key)) = self.known_key(stream) {
            seal_all(&mut events, &key_id, &key)?;
            return self.log.append(stream, expected, events).await;
        }
        let keys = self.log.keys().ok_or_else(no_key_store)?;
        // A caller appending to a stream it believes empty is starting a conversation: its key
        // is new too, so there is nothing to look up first.
        let stored = match expected {
            ExpectedVersion::NoStream => None,
            _ => keys.stream_key(stream).await?,
        };
        let key = match stored {
            Some(key) => key,
            None => {
                let fresh = SubjectKey {
                    key_id: uuid::Uuid::new_v4().to_string(),
                    key: XChaCha20Poly1305::generate_key(&mut OsRng).into(),
                };
                let mut sealed = events.clone();
                seal_all(&mut sealed, &fresh.key_id, &fresh.key)?;
                if let Some(result) = keys
                    .append_with_new_key(stream, expected, sealed, fresh.clone())
                    .await?
                {
                    self.remember(stream, &fresh);
                    return Ok(result);
                }
                // The stream got a key meanwhile: seal with that one.
                keys.stream_key(stream).await?.ok_or_else(|| {
                    StoreError::Backend(format!("the key of {stream} disappeared"))
                })?
            }
        };
        self.remember(stream, &key);
        seal_all(&mut events, &key.key_id, &key.key)?;
        self.log.append(stream, expected, events).await
    }

    /// A key by id; `None` once destroyed.
    async fn key_by_id(&self, key_id: &str) -> Result<Option<Key>, StoreError> {
        if let Some(found) = self
            .keys
            .lock()
            .ok()
            .and_then(|k| k.by_id.get(key_id).copied())
        {
            return Ok(found);
        }
        let keys = self.log.keys().ok_or_else(no_key_store)?;
        let key = keys.key_by_id(key_id).await?;
        if let Ok(mut cache) = self.keys.lock() {
            cache.make_room(1);
            cache.by_id.insert(key_id.to_owned(), key);
        }
        Ok(key)
    }

    /// Reads the keys that `events` are sealed with and that are not known yet, in one go.
    async fn fetch_keys(&self, events: &[RecordedEvent]) -> Result<(), StoreError> {
        let mut missing: Vec<String> = {
            let Ok(cache) = self.keys.lock() else {
                return Ok(());
            };
            events
                .iter()
                .filter_map(|e| e.data.get(SEALED_FIELD)?.get("key_id")?.as_str())
                .filter(|key_id| !cache.by_id.contains_key(*key_id))
                .map(str::to_owned)
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        let keys = self.log.keys().ok_or_else(no_key_store)?;
        let found = keys.keys_by_id(&missing).await?;
        if let Ok(mut cache) = self.keys.lock() {
            cache.make_room(found.len());
            cache.by_id.extend(found);
        }
        Ok(())
    }

    /// Opens the personal data of a stored event, or marks it erased.
    async fn open(&self, mut event: RecordedEvent) -> Result<RecordedEvent, StoreError> {
        if event.event_type == "PersonalDataErased" {
            if let Some(key_id) = event.data.get("key_id").and_then(Value::as_str) {
                self.evict(&event.stream, key_id);
            }
        }
        let Some(sealed) = event
            .data
            .as_object_mut()
            .and_then(|o| o.remove(SEALED_FIELD))
        else {
            return Ok(event);
        };
        let Ok(sealed) = serde_json::from_value::<Sealed>(sealed) else {
            // One event's malformed seal must not stop every reader of the log: it is read
            // without its personal data, and whoever folds it decides (a read model
            // quarantines what it cannot apply, a reactor passes over it).
            tracing::error!(position = event.position, stream = %event.stream,
                "an event's sealed personal data is malformed; it is read without it");
            return Ok(event);
        };
        let opened = match self.key_by_id(&sealed.key_id).await? {
            Some(key) => unseal(&sealed, &key, &event),
            None => None,
        };
        match opened {
            Some(values) => {
                for (pointer, value) in sealed.fields.iter().zip(values) {
                    put_back(&mut event.data, pointer, value);
                }
            }
            None => {
                for pointer in &sealed.fields {
                    put_back(&mut event.data, pointer, erased_value(pointer));
                }
            }
        }
        Ok(event)
    }
}

fn seal(event: &mut NewEvent, key_id: &str, key: &Key) -> Result<(), StoreError> {
    let taken = take_personal(&event.event_type, &mut event.data);
    if taken.is_empty() {
        return Ok(());
    }
    let (fields, values): (Vec<_>, Vec<_>) = taken.into_iter().unzip();
    let plaintext = serde_json::to_vec(&values).map_err(|e| StoreError::Invalid(e.to_string()))?;
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: event.event_id.as_bytes(),
            },
        )
        .map_err(|_| StoreError::Invalid("personal data could not be sealed".into()))?;
    let sealed = Sealed {
        key_id: key_id.to_owned(),
        fields: fields.into_iter().map(str::to_owned).collect(),
        nonce: BASE64.encode(nonce),
        ciphertext: BASE64.encode(ciphertext),
    };
    if let Some(object) = event.data.as_object_mut() {
        object.insert(
            SEALED_FIELD.to_owned(),
            serde_json::to_value(sealed).unwrap_or_default(),
        );
    }
    Ok(())
}

/// The sealed values, or `None` when they do not open with `key` (not this event's, or
/// altered).
fn unseal(sealed: &Sealed, key: &Key, event: &RecordedEvent) -> Option<Vec<Value>> {
    let nonce = BASE64.decode(&sealed.nonce).ok()?;
    let ciphertext = BASE64.decode(&sealed.ciphertext).ok()?;
    if nonce.len() != 24 {
        return None;
    }
    let plaintext = XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: event.event_id.as_bytes(),
            },
        )
        .ok()?;
    let values: Vec<Value> = serde_json::from_slice(&plaintext).ok()?;
    (values.len() == sealed.fields.len()).then_some(values)
}

#[async_trait]
impl EventStore for PersonalData {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let personal = is_conversation(stream)
            && events.iter().any(|e| {
                chatledger_core::personal::personal_fields(&e.event_type)
                    .iter()
                    .any(|p| e.data.pointer(p).is_some_and(|v| !v.is_null()))
            });
        if personal {
            return self.inner.append_sealed(stream, expected, events).await;
        }
        self.inner.log.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut opened = Vec::new();
        for event in self
            .inner
            .log
            .read_stream(stream, from_version, limit)
            .await?
        {
            opened.push(self.inner.open(event).await?);
        }
        Ok(opened)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.log.read_all(after, limit).await?;
        self.inner.fetch_keys(&events).await?;
        let mut opened = Vec::with_capacity(events.len());
        for event in events {
            opened.push(self.inner.open(event).await?);
        }
        Ok(opened)
    }

    async fn head_position(&self) -> Result<Position, StoreError> {
        self.inner.log.head_position().await
    }

    fn follow(&self, after: Position) -> BoxStream<'static, Result<RecordedEvent, StoreError>> {
        let inner = self.inner.clone();
        self.inner
            .log
            .follow(after)
            .then(move |item| {
                let inner = inner.clone();
                async move { inner.open(item?).await }
            })
            .boxed()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.log.ping().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_cache_stays_bounded_and_a_batch_always_fits() {
        let mut keys = Keys::default();
        for n in 0..KEYS_KEPT {
            keys.make_room(1);
            keys.by_id.insert(n.to_string(), Some([1; 32]));
        }
        assert_eq!(keys.by_id.len(), KEYS_KEPT);
        keys.make_room(5_000);
        assert!(keys.by_id.is_empty(), "full: it starts again");
        keys.by_id.insert("a".into(), None);
        keys.make_room(5_000);
        assert_eq!(keys.by_id.len(), 1, "room enough: kept");
    }
}
