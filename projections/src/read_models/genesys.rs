use super::*;

/// `genesys_chats` (the Genesys conversation of each routed chat) and `genesys_messages`
/// (each message that went to or came from Genesys: Genesys's id, and where it stands).
pub struct Genesys;

/// Where a message that crossed the bridge stands.
pub mod status {
    /// A customer's message Genesys took.
    pub const FORWARDED: &str = "FORWARDED";
    /// A customer's message Genesys refused (the reason beside it).
    pub const FAILED: &str = "FAILED";
    /// An agent's message queued for WhatsApp.
    pub const QUEUED: &str = "QUEUED";
}

#[async_trait]
impl Projector for Genesys {
    fn name(&self) -> &'static str {
        "genesys"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["genesys_chats", "genesys_messages"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "GenesysConversationMapped"
                | "ForwardedToAgent"
                | "ForwardToAgentFailed"
                | "ReplyQueued"
                | "ReceiptForwardedToAgent"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE genesys_chats{s} (
                    chat_id TEXT PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    conversation_id TEXT NOT NULL,
                    position BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE genesys_messages{s} (
                    stream TEXT NOT NULL,
                    message TEXT NOT NULL,
                    chat_id TEXT NOT NULL,
                    genesys_message_id TEXT,
                    status TEXT NOT NULL,
                    reason TEXT,
                    position BIGINT NOT NULL,
                    PRIMARY KEY (stream, message)
                )"
            ),
        ]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE INDEX genesys_messages{s}_by_chat ON genesys_messages{s} (chat_id)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let upsert = format!(
            "INSERT INTO genesys_messages{s} (stream, message, chat_id, genesys_message_id, status, reason, position)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (stream, message) DO UPDATE SET genesys_message_id = COALESCE($4, genesys_messages{s}.genesys_message_id),
                status = $5, reason = $6, position = $7"
        );
        let (chat_id, message, genesys_id, status, reason) = match conversation_event(event)? {
            Some(ConversationEvent::GenesysConversationMapped {
                chat_id,
                tenant,
                conversation_id,
                ..
            }) => {
                tx.execute(
                    &format!(
                        "INSERT INTO genesys_chats{s} (chat_id, tenant, conversation_id, position) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (chat_id) DO UPDATE SET tenant = $2, conversation_id = $3, position = $4"
                    ),
                    &[chat_id.to_string().into(), tenant.into(), conversation_id.into(), event.position.into()],
                )
                .await?;
                return Ok(());
            }
            Some(ConversationEvent::ForwardedToAgent {
                chat_id,
                message,
                genesys_message_id,
                ..
            }) => (
                chat_id,
                message.clone(),
                genesys_message_id.clone(),
                status::FORWARDED.to_owned(),
                None,
            ),
            Some(ConversationEvent::ForwardToAgentFailed {
                chat_id,
                message,
                code,
                reason,
                ..
            }) => (
                chat_id,
                message.clone(),
                None,
                status::FAILED.to_owned(),
                Some(match code {
                    Some(code) => format!("({code}) {reason}"),
                    None => reason.clone(),
                }),
            ),
            Some(ConversationEvent::ReplyQueued {
                chat_id,
                message_id,
                ..
            }) => {
                let Some(genesys_id) = event
                    .metadata
                    .extra
                    .get("genesys_message_id")
                    .and_then(Value::as_str)
                else {
                    return Ok(());
                };
                (
                    chat_id,
                    message_id.to_string(),
                    Some(genesys_id.to_owned()),
                    status::QUEUED.to_owned(),
                    None,
                )
            }
            // What Genesys was told of an agent's message; a receipt it refused keeps the
            // last status it heard, with why it did not hear this one.
            Some(ConversationEvent::ReceiptForwardedToAgent {
                chat_id,
                message_id,
                status,
                accepted,
                reason,
                ..
            }) => {
                if !accepted {
                    tx.execute(
                        &format!("UPDATE genesys_messages{s} SET reason = $3 WHERE stream = $1 AND message = $2"),
                        &[(&event.stream).into(), message_id.to_string().into(), reason.clone().into()],
                    )
                    .await?;
                    return Ok(());
                }
                (
                    chat_id,
                    message_id.to_string(),
                    None,
                    status.to_uppercase(),
                    None,
                )
            }
            _ => return Ok(()),
        };
        tx.execute(
            &upsert,
            &[
                (&event.stream).into(),
                message.into(),
                chat_id.to_string().into(),
                genesys_id.into(),
                status.into(),
                reason.into(),
                event.position.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// The Genesys conversation a chat's messages go to, once Genesys named it.
pub async fn conversation_of(
    db: &crate::read_db::ReadDb,
    chat_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row = db
        .fetch_optional(
            "SELECT conversation_id FROM genesys_chats WHERE chat_id = $1",
            &[chat_id.into()],
        )
        .await?;
    Ok(row.and_then(|r| r.text(0)))
}

/// How a message crossed the bridge, as `genesys_messages` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenesysMessageRow {
    pub chat_id: String,
    /// The message's provider id (or our id, for an agent's message).
    pub message: String,
    pub genesys_message_id: Option<String>,
    /// One of [`status`].
    pub status: String,
    pub reason: Option<String>,
}

/// Every message of these chats that crossed the bridge.
pub async fn messages_of(
    db: &crate::read_db::ReadDb,
    chat_ids: &[String],
) -> Result<Vec<GenesysMessageRow>, sqlx::Error> {
    if chat_ids.is_empty() {
        return Ok(vec![]);
    }
    let args: Vec<crate::read_db::Arg> = chat_ids.iter().map(|c| c.as_str().into()).collect();
    let rows = db
        .fetch_all(
            &format!(
                "SELECT chat_id, message, genesys_message_id, status, reason FROM genesys_messages WHERE chat_id IN ({})",
                crate::read_db::placeholders(args.len())
            ),
            &args,
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| GenesysMessageRow {
            chat_id: row.text(0).unwrap_or_default(),
            message: row.text(1).unwrap_or_default(),
            genesys_message_id: row.text(2),
            status: row.text(3).unwrap_or_default(),
            reason: row.text(4),
        })
        .collect())
}
