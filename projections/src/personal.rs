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
//! Keys live in `subject_keys`, outside the log, so they can be deleted.

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
    StoreError,
};
use chrono::{DateTime, Utc};
use futures_core::stream::BoxStream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::read_db::{time_text, ReadDb};

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
    db: ReadDb,
    keys: Mutex<Keys>,
}

#[derive(Default)]
struct Keys {
    by_stream: HashMap<String, (String, Key)>,
    /// `None`: the key was destroyed.
    by_id: HashMap<String, Option<Key>>,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("the key store: {e}"))
}

impl PersonalData {
    /// Wraps `log`; keys are kept in `db` (the log's own database).
    pub fn new(log: Arc<dyn EventStore>, db: ReadDb) -> Self {
        PersonalData {
            inner: Arc::new(Inner {
                log,
                db,
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
        let suffix = format!("-{customer}");
        let rows = inner
            .db
            .fetch_all(
                "SELECT stream, key_id FROM subject_keys
                 WHERE stream LIKE 'conversation-%' AND substr(stream, length(stream) - length($1) + 1) = $1
                 ORDER BY stream",
                &[suffix.into()],
            )
            .await
            .map_err(unavailable)?;
        let mut erased = Vec::new();
        for row in rows {
            let (Some(stream), Some(key_id)) = (row.text(0), row.text(1)) else {
                continue;
            };
            inner
                .db
                .execute(
                    "DELETE FROM subject_keys WHERE stream = $1",
                    &[(&stream).into()],
                )
                .await
                .map_err(unavailable)?;
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
        // Leave no copy of a deleted key behind where the database can reach it: SQLite's
        // write-ahead log is emptied (deleted rows are zeroed, `secure_delete`); PostgreSQL
        // drops the dead row versions.
        let tidy = match inner.db.kind() {
            "sqlite" => "PRAGMA wal_checkpoint(TRUNCATE)",
            _ => "VACUUM subject_keys",
        };
        if let Err(e) = inner.db.execute(tidy, &[]).await {
            tracing::warn!(error = %e, "could not tidy up after forgetting; the keys are deleted");
        }
        Ok(erased)
    }
}

impl Inner {
    fn evict(&self, stream: &str, key_id: &str) {
        if let Ok(mut keys) = self.keys.lock() {
            keys.by_stream.remove(stream);
            keys.by_id.insert(key_id.to_owned(), None);
        }
    }

    /// The key of `stream`, created on first use.
    async fn key_for_stream(&self, stream: &str) -> Result<(String, Key), StoreError> {
        if let Some(found) = self
            .keys
            .lock()
            .ok()
            .and_then(|k| k.by_stream.get(stream).cloned())
        {
            return Ok(found);
        }
        let select = "SELECT key_id, key FROM subject_keys WHERE stream = $1";
        let mut row = self
            .db
            .fetch_optional(select, &[stream.into()])
            .await
            .map_err(unavailable)?;
        if row.is_none() {
            let key = XChaCha20Poly1305::generate_key(&mut OsRng);
            // Two processes may create one at once: the first row stays, both use it.
            self.db
                .execute(
                    "INSERT INTO subject_keys (stream, key_id, key, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (stream) DO NOTHING",
                    &[
                        stream.into(),
                        uuid::Uuid::new_v4().to_string().into(),
                        BASE64.encode(key).into(),
                        time_text(Utc::now()).into(),
                    ],
                )
                .await
                .map_err(unavailable)?;
            row = self
                .db
                .fetch_optional(select, &[stream.into()])
                .await
                .map_err(unavailable)?;
        }
        let row = row.ok_or_else(|| StoreError::Backend(format!("no key for {stream}")))?;
        let key_id = row.text(0).unwrap_or_default();
        let key = decode_key(&row.text(1).unwrap_or_default())
            .ok_or_else(|| StoreError::Corrupt(format!("the key of {stream} is unreadable")))?;
        if let Ok(mut keys) = self.keys.lock() {
            keys.by_stream
                .insert(stream.to_owned(), (key_id.clone(), key));
            keys.by_id.insert(key_id.clone(), Some(key));
        }
        Ok((key_id, key))
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
        let key = self
            .db
            .fetch_optional(
                "SELECT key FROM subject_keys WHERE key_id = $1",
                &[key_id.into()],
            )
            .await
            .map_err(unavailable)?
            .and_then(|row| row.text(0))
            .and_then(|text| decode_key(&text));
        if let Ok(mut keys) = self.keys.lock() {
            keys.by_id.insert(key_id.to_owned(), key);
        }
        Ok(key)
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
            return Err(StoreError::Corrupt(format!(
                "event at position {}: its sealed personal data is malformed",
                event.position
            )));
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

fn decode_key(text: &str) -> Option<Key> {
    BASE64.decode(text).ok()?.try_into().ok()
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
        mut events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let personal = is_conversation(stream)
            && events.iter().any(|e| {
                chatledger_core::personal::personal_fields(&e.event_type)
                    .iter()
                    .any(|p| e.data.pointer(p).is_some_and(|v| !v.is_null()))
            });
        if personal {
            let (key_id, key) = self.inner.key_for_stream(stream).await?;
            for event in &mut events {
                seal(event, &key_id, &key)?;
            }
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
        let mut opened = Vec::new();
        for event in self.inner.log.read_all(after, limit).await? {
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
