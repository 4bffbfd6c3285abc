//! Pages, the log as events, and the login answer.

use super::*;

#[derive(SimpleObject)]
pub struct PageInfo {
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
    pub has_next_page: bool,
}

#[derive(SimpleObject)]
pub struct ChatConnection {
    pub nodes: Vec<Chat>,
    pub page_info: PageInfo,
}

/// One event of the log, as stored.
#[derive(SimpleObject)]
pub struct Event {
    pub event_id: ID,
    pub position: i64,
    pub stream: String,
    pub version: i64,
    #[graphql(name = "type")]
    pub event_type: String,
    pub schema_version: i32,
    pub data: Json<Value>,
    /// Who caused it (actor), why (correlation, causation), when it reached us.
    pub metadata: Json<Value>,
    pub recorded_at: DateTime<Utc>,
    /// SHA-256 over the stream's previous hash and this event's canonical bytes.
    pub hash: String,
}

impl From<RecordedEvent> for Event {
    fn from(e: RecordedEvent) -> Self {
        Event {
            event_id: ID(e.event_id.to_string()),
            position: e.position as i64,
            stream: e.stream,
            version: e.version as i64,
            event_type: e.event_type,
            schema_version: e.schema_version as i32,
            data: Json(e.data),
            metadata: Json(serde_json::to_value(&e.metadata).unwrap_or_default()),
            recorded_at: e.recorded_at,
            hash: e.hash.to_string(),
        }
    }
}

#[derive(SimpleObject)]
pub struct EventConnection {
    pub nodes: Vec<Event>,
    /// The position of the last event here: pass as `after` for the next page.
    pub end_cursor: Option<i64>,
    pub has_next_page: bool,
}

#[derive(SimpleObject)]
pub struct LoginPayload {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub executive: Executive,
}
