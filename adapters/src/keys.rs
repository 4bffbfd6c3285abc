//! What the SQLite and PostgreSQL key stores share: how a key is kept in `subject_keys`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chatledger_core::{StoreError, SubjectKey};

/// The streams that have a key and whose name ends with `$1`, with their key ids.
pub(crate) const STREAMS_ENDING: &str = "SELECT stream, key_id FROM subject_keys
     WHERE substr(stream, length(stream) - length($1) + 1) = $1 ORDER BY stream";

/// A key as the `key` column holds it.
pub(crate) fn encode(key: &[u8; 32]) -> String {
    BASE64.encode(key)
}

/// A stored key back; `owner` names it in the error when it is unreadable.
pub(crate) fn decode(owner: &str, key_id: String, text: &str) -> Result<SubjectKey, StoreError> {
    let key = BASE64
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("the key of {owner} is unreadable")))?;
    Ok(SubjectKey { key_id, key })
}

/// The keys `asked` for, in that order, from the `(key_id, key)` rows found: `None` for an id
/// with no row (destroyed, or never made).
pub(crate) fn found_by_id(
    asked: &[String],
    rows: Vec<(String, String)>,
) -> Result<chatledger_core::store::FoundKeys, StoreError> {
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for (key_id, text) in rows {
        let key = decode(&key_id, key_id.clone(), &text)?.key;
        found.insert(key_id, key);
    }
    Ok(asked
        .iter()
        .map(|key_id| (key_id.clone(), found.get(key_id).copied()))
        .collect())
}
