//! The canonical bytes of an event and the per-stream hash chain.
//!
//! An event's canonical bytes are one compact JSON object with these keys, in this (byte-wise
//! sorted) order, and nothing else:
//!
//! ```text
//! {"data":…,"event_id":"…","event_type":"…","metadata":…,"recorded_at":"…","schema_version":N,"stream":"…","version":N}
//! ```
//!
//! - every object, at any depth, has its keys sorted by their UTF-8 bytes; no whitespace;
//! - strings are escaped as JSON requires (`"`, `\`, control characters) and nothing more:
//!   other characters are written as UTF-8;
//! - numbers are written as serde_json writes them (shortest round-trip form);
//! - `event_id` is the lowercase hyphenated UUID;
//! - `recorded_at` is RFC 3339 in UTC with exactly six fraction digits and `Z`.
//!
//! The global position is not part of it: the chain is per stream, computed where the
//! stream's version is checked anyway, so it needs no global lock. The order across streams
//! is sealed separately.
//!
//! `hash = SHA-256(previous hash of the same stream ‖ canonical bytes)`, where the previous
//! hash of a stream's first event is 32 zero bytes. The unit tests below hold a vector that
//! another tool can check itself against.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use crate::event::HashedFields;
pub use crate::hash::{BadHash, EventHash};

/// `recorded_at` as the canonical form writes it.
pub fn format_recorded_at(at: DateTime<Utc>) -> String {
    crate::time::micros_text(at)
}

/// Cuts a time to whole microseconds, the precision every backend stores.
pub fn truncate_to_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// The canonical bytes of an event (see the module documentation).
pub fn canonical_bytes(fields: &HashedFields<'_>) -> Vec<u8> {
    let (data, metadata) = canonical_parts(fields.data, fields.metadata);
    canonical_bytes_with(fields, &data, &metadata)
}

/// The canonical JSON of an event's data and metadata: what a store keeps, and what the
/// canonical bytes embed. They depend on nothing but the event itself (not its version or
/// time), so a store may write them before it knows those.
pub fn canonical_parts(data: &Value, metadata: &crate::event::Metadata) -> (String, String) {
    let metadata = serde_json::to_value(metadata).unwrap_or(Value::Null);
    (
        canonical_json_string(data),
        canonical_json_string(&metadata),
    )
}

/// The canonical bytes, given the canonical JSON of the data and metadata already written
/// (so that an append writes each once). The document's keys, sorted: data, event_id,
/// event_type, metadata, recorded_at, schema_version, stream, version.
pub fn canonical_bytes_with(fields: &HashedFields<'_>, data: &str, metadata: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + metadata.len() + 256);
    out.extend_from_slice(b"{\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b",\"event_id\":");
    write_json_string(&fields.event_id.hyphenated().to_string(), &mut out);
    out.extend_from_slice(b",\"event_type\":");
    write_json_string(fields.event_type, &mut out);
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(metadata.as_bytes());
    out.extend_from_slice(b",\"recorded_at\":");
    write_json_string(&format_recorded_at(fields.recorded_at), &mut out);
    out.extend_from_slice(b",\"schema_version\":");
    out.extend_from_slice(fields.schema_version.to_string().as_bytes());
    out.extend_from_slice(b",\"stream\":");
    write_json_string(fields.stream, &mut out);
    out.extend_from_slice(b",\"version\":");
    out.extend_from_slice(fields.version.to_string().as_bytes());
    out.push(b'}');
    out
}

/// `SHA-256(previous ‖ canonical bytes)`.
pub fn chain_hash(previous: &EventHash, fields: &HashedFields<'_>) -> EventHash {
    let (data, metadata) = canonical_parts(fields.data, fields.metadata);
    chain_hash_with(previous, fields, &data, &metadata)
}

/// [`chain_hash`], given the canonical JSON of the data and metadata already written.
pub fn chain_hash_with(
    previous: &EventHash,
    fields: &HashedFields<'_>,
    data: &str,
    metadata: &str,
) -> EventHash {
    let mut hasher = Sha256::new();
    hasher.update(previous.0);
    hasher.update(canonical_bytes_with(fields, data, metadata));
    EventHash(hasher.finalize().into())
}

/// Writes `value` as canonical JSON: keys sorted at every depth, no whitespace.
///
/// Written out here rather than left to serde_json's map order, which changes when any crate
/// in the build enables serde_json's `preserve_order` feature.
pub fn write_canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_json_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_string(key, out);
                out.push(b':');
                write_canonical_json(item, out);
            }
            out.push(b'}');
        }
    }
}

/// The canonical JSON text of `value`.
pub fn canonical_json_string(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical_json(value, &mut out);
    // Only valid UTF-8 is ever written: JSON punctuation and serde_json's string escaping.
    String::from_utf8(out).unwrap_or_default()
}

fn write_json_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly `"`, `\` and control characters, and writes the rest as UTF-8.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Metadata;
    use serde_json::json;
    use uuid::Uuid;

    fn sample_metadata() -> Metadata {
        let mut metadata = Metadata::by("provider:meta");
        metadata.correlation_id =
            Some(Uuid::parse_str("6a1f4c1e-0000-4000-8000-000000000001").unwrap());
        metadata.received_at = Some(
            DateTime::parse_from_rfc3339("2026-11-22T10:00:00.5Z")
                .unwrap()
                .into(),
        );
        metadata.extra.insert("channel".into(), json!("9099039188"));
        metadata
    }

    fn sample_fields<'a>(data: &'a Value, metadata: &'a Metadata) -> HashedFields<'a> {
        HashedFields {
            event_id: Uuid::parse_str("0b7e1c2a-3d4f-5a6b-8c9d-0e1f2a3b4c5d").unwrap(),
            stream: "conversation-9099039188-+919638120888",
            version: 0,
            event_type: "MessageReceived",
            schema_version: 1,
            data,
            metadata,
            recorded_at: DateTime::parse_from_rfc3339("2026-11-22T10:00:01.123456Z")
                .unwrap()
                .into(),
        }
    }

    #[test]
    fn canonical_bytes_sort_keys_at_every_depth_and_keep_utf8() {
        let data = json!({"z": 1, "a": {"y": [true, null, 1.5], "b": "😮 \"q\""}});
        let metadata = sample_metadata();
        let bytes = canonical_bytes(&sample_fields(&data, &metadata));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            concat!(
                r#"{"data":{"a":{"b":"😮 \"q\"","y":[true,null,1.5]},"z":1},"#,
                r#""event_id":"0b7e1c2a-3d4f-5a6b-8c9d-0e1f2a3b4c5d","event_type":"MessageReceived","#,
                r#""metadata":{"actor":"provider:meta","channel":"9099039188","#,
                r#""correlation_id":"6a1f4c1e-0000-4000-8000-000000000001","received_at":"2026-11-22T10:00:00.500Z"},"#,
                r#""recorded_at":"2026-11-22T10:00:01.123456Z","schema_version":1,"#,
                r#""stream":"conversation-9099039188-+919638120888","version":0}"#
            )
        );
    }

    /// The published test vector (docs/adr/0002-hash-chain.md): another implementation of
    /// the canonical form must reproduce these two hashes.
    #[test]
    fn hash_chain_test_vector() {
        let data = json!({"text": "hello"});
        let metadata = Metadata::by("test");
        let first = sample_fields(&data, &metadata);
        let h0 = chain_hash(&EventHash::GENESIS, &first);
        let second = HashedFields {
            version: 1,
            ..first
        };
        let h1 = chain_hash(&h0, &second);
        assert_eq!(
            h0.to_string(),
            "a5af9f328ae884d70d522cb51664ae4043ac35260f4334ce774580511693c03c"
        );
        assert_eq!(
            h1.to_string(),
            "e92ce559214e2b2f3eb68df40de838a02fed9131da6d248807d36d57ada72776"
        );
    }

    #[test]
    fn changing_any_covered_field_changes_the_hash() {
        let data = json!({"text": "hello"});
        let metadata = Metadata::by("test");
        let base = sample_fields(&data, &metadata);
        let h = chain_hash(&EventHash::GENESIS, &base);
        let other_data = json!({"text": "hellO"});
        let other_meta = Metadata::by("someone else");
        let variants = [
            HashedFields { version: 1, ..base },
            HashedFields {
                stream: "other",
                ..base
            },
            HashedFields {
                event_type: "Other",
                ..base
            },
            HashedFields {
                schema_version: 2,
                ..base
            },
            HashedFields {
                data: &other_data,
                ..base
            },
            HashedFields {
                metadata: &other_meta,
                ..base
            },
            HashedFields {
                recorded_at: base.recorded_at + chrono::Duration::microseconds(1),
                ..base
            },
            HashedFields {
                event_id: Uuid::nil(),
                ..base
            },
        ];
        for variant in variants {
            assert_ne!(chain_hash(&EventHash::GENESIS, &variant), h, "{variant:?}");
        }
        assert_ne!(chain_hash(&h, &base), h, "the previous hash is covered too");
    }

    #[test]
    fn hash_round_trips_through_hex() {
        let h = EventHash([0xab; 32]);
        assert_eq!(h.to_string().parse::<EventHash>().unwrap(), h);
        assert!("xyz".parse::<EventHash>().is_err());
    }
}

fn unsealed_cause(sealed: u64, found: u64, seal_position: u64) -> String {
    let seal = format!("the seal at position {seal_position}");
    match found.cmp(&sealed) {
        std::cmp::Ordering::Less => format!(
            "{} sealed events are missing ({seal} counts {sealed} up to here, the log holds {found}): an event or a whole stream was removed",
            sealed - found
        ),
        std::cmp::Ordering::Greater => format!(
            "{} events were inserted ({seal} counts {sealed} up to here, the log holds {found})",
            found - sealed
        ),
        std::cmp::Ordering::Equal => format!(
            "the events are not those {seal} vouches for: events were reordered or replaced across streams"
        ),
    }
}

/// Where and how the record breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    /// The event's hash is not what its content and its stream's previous hash give: the
    /// event (or one before it in its stream) was edited.
    #[error("position {position}: event {version} of {stream} was edited (its hash does not match its content)")]
    Edited {
        position: u64,
        stream: String,
        version: u64,
    },
    /// Versions of the stream are missing before this event; `after` is the position of
    /// the stream's previous event (0 when its first events are gone).
    #[error("position {position}: {stream} jumps from version {expected} to {found}: events are missing between positions {after} and {position}")]
    Missing {
        position: u64,
        after: u64,
        stream: String,
        expected: u64,
        found: u64,
    },
    /// The running digest a seal recorded does not match the log as it is now: events sealed
    /// there were removed (a whole stream, or a stream's last events), inserted, or
    /// reordered across streams. `from` is the last position a seal still vouches for.
    #[error("between positions {from} and {position}: {}", unsealed_cause(*sealed_events, *found_events, *seal_position))]
    Unsealed {
        from: u64,
        position: u64,
        seal_position: u64,
        sealed_events: u64,
        found_events: u64,
    },
    /// The running digest at a position an auditor noted earlier is not what they noted.
    #[error("position {position}: the log up to here digests to {found}, not to {noted} as noted: it changed since")]
    NotAsNoted {
        position: u64,
        noted: EventHash,
        found: EventHash,
    },
    /// A version of the stream comes again or out of order.
    #[error("position {position}: {stream} has version {found} where {expected} was due: events are reordered or repeated")]
    Reordered {
        position: u64,
        stream: String,
        expected: u64,
        found: u64,
    },
}

impl ChainBreak {
    /// The first and last position between which the record breaks: the tampered event
    /// lies there.
    pub fn window(&self) -> (u64, u64) {
        match self {
            ChainBreak::Edited { position, .. } | ChainBreak::Reordered { position, .. } => {
                (*position, *position)
            }
            ChainBreak::Missing {
                position, after, ..
            } => (after + 1, *position),
            ChainBreak::Unsealed { from, position, .. } => (from + 1, *position),
            ChainBreak::NotAsNoted { position, .. } => (1, *position),
        }
    }
}

/// The running digest over a log's event hashes in global order:
/// `digest = SHA-256(previous digest ‖ event hash)`, starting from 32 zero bytes. It names
/// the whole log up to a position: a stream removed whole, or events reordered across
/// streams, change it even where every stream's own chain still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunningDigest {
    /// The digest over every hash so far.
    pub digest: [u8; 32],
    /// How many events it covers.
    pub events: u64,
    /// The position of the last event it covers (0 before the first).
    pub position: u64,
}

impl RunningDigest {
    /// Takes the next event of the log in.
    pub fn add(&mut self, position: u64, hash: &EventHash) {
        let mut digest = Sha256::new();
        digest.update(self.digest);
        digest.update(hash.0);
        self.digest = digest.finalize().into();
        self.events += 1;
        self.position = position;
    }

    /// The digest as a hash.
    pub fn head(&self) -> EventHash {
        EventHash(self.digest)
    }
}

/// Walks the log in global order and checks every stream's hash chain and version sequence,
/// keeping a [`RunningDigest`] over all hashes.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    /// Each stream's last version, hash and position.
    streams: std::collections::HashMap<String, (u64, EventHash, u64)>,
    running: RunningDigest,
}

impl ChainVerifier {
    /// Checks the next event of the log.
    pub fn check(&mut self, event: &crate::event::RecordedEvent) -> Result<(), ChainBreak> {
        let (expected, previous, after) = self
            .streams
            .get(&event.stream)
            .map(|(v, h, p)| (v + 1, *h, *p))
            .unwrap_or((0, EventHash::GENESIS, 0));
        let at = |found| (event.position, event.stream.clone(), expected, found);
        if event.version > expected {
            let (position, stream, expected, found) = at(event.version);
            return Err(ChainBreak::Missing {
                position,
                after,
                stream,
                expected,
                found,
            });
        }
        if event.version < expected {
            let (position, stream, expected, found) = at(event.version);
            return Err(ChainBreak::Reordered {
                position,
                stream,
                expected,
                found,
            });
        }
        if chain_hash(&previous, &event.hashed_fields()) != event.hash {
            return Err(ChainBreak::Edited {
                position: event.position,
                stream: event.stream.clone(),
                version: event.version,
            });
        }
        self.streams.insert(
            event.stream.clone(),
            (event.version, event.hash, event.position),
        );
        self.running.add(event.position, &event.hash);
        Ok(())
    }

    /// The running digest over every hash so far, with its count and position.
    pub fn running(&self) -> RunningDigest {
        self.running
    }
}

#[cfg(test)]
mod verifier_tests {
    use super::*;
    use crate::event::{Metadata, RecordedEvent};
    use serde_json::json;
    use uuid::Uuid;

    fn chain(stream: &str, n: u64, first_position: u64) -> Vec<RecordedEvent> {
        let mut previous = EventHash::GENESIS;
        (0..n)
            .map(|version| {
                let mut event = RecordedEvent {
                    event_id: Uuid::from_u128(u128::from(first_position + version)),
                    stream: stream.into(),
                    version,
                    position: first_position + version,
                    event_type: "Happened".into(),
                    schema_version: 1,
                    data: json!({"n": version}),
                    metadata: Metadata::by("test"),
                    recorded_at: "2026-11-22T10:00:00Z".parse().unwrap(),
                    hash: EventHash::GENESIS,
                };
                event.hash = chain_hash(&previous, &event.hashed_fields());
                previous = event.hash;
                event
            })
            .collect()
    }

    fn verify(events: &[RecordedEvent]) -> Result<ChainVerifier, ChainBreak> {
        let mut verifier = ChainVerifier::default();
        for event in events {
            verifier.check(event)?;
        }
        Ok(verifier)
    }

    #[test]
    fn an_intact_log_verifies_with_a_stable_head() {
        let log = chain("s", 3, 1);
        let a = verify(&log).unwrap();
        let head = a.running();
        assert_eq!((head.events, head.position), (3, 3));
        assert_eq!(head.head(), verify(&log).unwrap().running().head());
        assert_ne!(head.head(), verify(&log[..2]).unwrap().running().head());
    }

    #[test]
    fn edits_gaps_and_reorders_are_found_where_they_are() {
        let mut edited = chain("s", 3, 1);
        edited[1].data = json!({"n": 99});
        assert!(matches!(
            verify(&edited),
            Err(ChainBreak::Edited { position: 2, .. })
        ));
        let mut missing = chain("s", 3, 1);
        missing.remove(1);
        assert!(matches!(
            verify(&missing),
            Err(ChainBreak::Missing {
                position: 3,
                expected: 1,
                found: 2,
                ..
            })
        ));
        let mut swapped = chain("s", 3, 1);
        swapped.swap(1, 2);
        assert!(matches!(
            verify(&swapped),
            Err(ChainBreak::Missing { .. }) | Err(ChainBreak::Reordered { .. })
        ));
    }
}
