//! Messages of a chat and their media.

use async_graphql::ComplexObject;
use chatledger_adapters::media::Link;
use chatledger_core::media::{MediaFile, MediaStatus as CoreMediaStatus};

use super::*;

/// Where an attachment stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MediaStatus {
    /// Being fetched from the provider (or tried again after a failure).
    Pending,
    /// Kept in the object store: `downloadUrl` opens it.
    Stored,
    /// Given up: `failureReason` says why.
    Failed,
}

impl From<CoreMediaStatus> for MediaStatus {
    fn from(status: CoreMediaStatus) -> Self {
        match status {
            CoreMediaStatus::Pending => MediaStatus::Pending,
            CoreMediaStatus::Stored => MediaStatus::Stored,
            CoreMediaStatus::Failed => MediaStatus::Failed,
        }
    }
}

/// An attachment: as the provider described it (`url` is the provider's own link), and as
/// chatledger keeps it.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Media {
    pub id: Option<String>,
    pub url: Option<String>,
    pub mime_type: Option<String>,
    pub sha256: Option<String>,
    pub caption: Option<String>,
    pub filename: Option<String>,
    pub voice: bool,
    pub animated: bool,
    /// The size of the file kept, in bytes.
    pub size: Option<i64>,
    pub status: MediaStatus,
    /// Why the last try at fetching it failed (while it is tried again, or since it was
    /// given up).
    pub failure_reason: Option<String>,
    /// Its key in the object store, for [`Media::download_url`].
    #[graphql(skip)]
    pub key: Option<String>,
}

#[ComplexObject]
impl Media {
    /// A short-lived link to the file kept (`MEDIA_LINK_TTL_SECONDS`): presigned by the S3
    /// service, or chatledger's own signed route on the filesystem store. Only messages of
    /// chats the viewer may see carry one.
    async fn download_url(&self, ctx: &Context<'_>) -> Result<Option<String>, Error> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let media = &state(ctx).media;
        let link = media
            .store
            .link(key, media.link_ttl, self.mime_type.as_deref())
            .await
            .map_err(internal)?;
        Ok(Some(match link {
            Link::Presigned(url) => url,
            Link::Route(token) => format!("/api/media/{token}"),
        }))
    }
}

impl Media {
    /// The provider's description of an attachment, with where `file` stands.
    fn new(
        described: Option<chatledger_core::conversation::Media>,
        file: Option<&MediaFile>,
    ) -> Self {
        let m = described.unwrap_or_default();
        let stored = file.and_then(|f| f.stored.as_ref());
        Media {
            id: m.id,
            url: m.url,
            mime_type: m.mime_type.or_else(|| stored.map(|s| s.mime.clone())),
            sha256: m.sha256.or_else(|| stored.map(|s| s.sha256.clone())),
            caption: m.caption,
            filename: m
                .filename
                .or_else(|| stored.and_then(|s| s.filename.clone())),
            voice: m.voice,
            animated: m.animated,
            size: stored.map(|s| s.size as i64),
            status: file.map_or(MediaStatus::Pending, |f| f.status.into()),
            failure_reason: file.and_then(|f| f.failure.clone()),
            key: stored.map(|s| s.key.clone()),
        }
    }
}

/// A message that went to or came from Genesys.
#[derive(SimpleObject, Clone, Debug)]
pub struct GenesysMessage {
    /// Genesys's id for it.
    pub message_id: Option<String>,
    /// A customer's message: FORWARDED or FAILED. An agent's: QUEUED, then what Genesys was
    /// told of it (DELIVERED, READ, FAILED).
    pub status: String,
    /// Why Genesys refused it, or would not hear of its last status.
    pub reason: Option<String>,
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
    /// Its (first) attachment.
    pub media: Option<Media>,
    /// Every attachment, in order (Twilio carries up to 10 on one message).
    pub attachments: Vec<Media>,
    /// Its way through Genesys, when its chat's channel routes to Genesys.
    pub genesys: Option<GenesysMessage>,
    pub at: DateTime<Utc>,
    /// sent, delivered, read or failed; never moves backwards.
    pub delivery_status: Option<String>,
    pub error: Option<String>,
    /// How `message_media` names it: the chat, and the provider's id inbound, ours outbound.
    #[graphql(skip)]
    pub media_name: (String, String),
}

impl Message {
    pub(super) fn from_view(m: &MessageView) -> Self {
        let mut message = Message {
            message_id: ID(m.message_id.to_string()),
            provider_message_id: m.provider_message_id.clone(),
            direction: if m.inbound {
                Direction::Inbound
            } else {
                Direction::Outbound
            },
            kind: m.kind.clone(),
            text: m.text.clone(),
            media: None,
            attachments: vec![],
            genesys: None,
            at: micros(m.at),
            delivery_status: m.delivery_status.clone(),
            error: m.error.clone(),
            media_name: Default::default(),
        };
        message.set_files(m.media.clone(), &m.files);
        message
    }

    pub(super) fn from_row(row: chatledger_projections::read_models::messages::MessageRow) -> Self {
        let media_name = (
            row.chat_id,
            if row.outbound {
                row.message_id.clone()
            } else {
                row.provider_message_id.clone().unwrap_or_default()
            },
        );
        Message {
            media_name,
            message_id: ID(row.message_id),
            provider_message_id: row.provider_message_id,
            direction: if row.outbound {
                Direction::Outbound
            } else {
                Direction::Inbound
            },
            kind: row.kind,
            text: row.text,
            // Until the files are read: the provider's description only.
            media: row.media.map(|m| Media::new(Some(m), None)),
            attachments: vec![],
            genesys: None,
            at: row.at,
            delivery_status: row.delivery_status,
            error: row.error,
        }
    }

    /// Sets the message's media from the provider's description and its files.
    fn set_files(
        &mut self,
        described: Option<chatledger_core::conversation::Media>,
        files: &[MediaFile],
    ) {
        let first = files.iter().find(|f| f.index == 0);
        if described.is_none() && files.is_empty() {
            return;
        }
        self.media = Some(Media::new(described.clone(), first));
        self.attachments = files
            .iter()
            .map(|f| {
                Media::new(
                    if f.index == 0 {
                        described.clone()
                    } else {
                        None
                    },
                    Some(f),
                )
            })
            .collect();
        if self.attachments.is_empty() {
            self.attachments = self.media.iter().cloned().collect();
        }
    }
}

/// Reads what is kept beside `messages`: their files (where each stands in the object
/// store) and their way through Genesys.
pub(super) async fn with_files(
    ctx: &Context<'_>,
    messages: Vec<Message>,
) -> Result<Vec<Message>, Error> {
    let messages = with_genesys(ctx, messages).await?;
    with_media(ctx, messages).await
}

async fn with_genesys(
    ctx: &Context<'_>,
    mut messages: Vec<Message>,
) -> Result<Vec<Message>, Error> {
    use chatledger_projections::read_models::genesys;
    let chats: Vec<String> = messages
        .iter()
        .map(|m| m.media_name.0.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = genesys::messages_of(&state(ctx).read_side.db, &chats)
        .await
        .map_err(internal)?;
    let mut found: HashMap<(String, String), GenesysMessage> = rows
        .into_iter()
        .map(|row| {
            (
                (row.chat_id, row.message),
                GenesysMessage {
                    message_id: row.genesys_message_id,
                    status: row.status,
                    reason: row.reason,
                },
            )
        })
        .collect();
    for message in &mut messages {
        message.genesys = found.remove(&message.media_name);
    }
    Ok(messages)
}

/// Sets the media of `messages` from their files.
async fn with_media(ctx: &Context<'_>, mut messages: Vec<Message>) -> Result<Vec<Message>, Error> {
    let names: Vec<&str> = messages
        .iter()
        .filter(|m| m.media.is_some())
        .map(|m| m.media_name.1.as_str())
        .collect();
    if names.is_empty() {
        return Ok(messages);
    }
    let files = read_models::media::files_of_messages(&state(ctx).read_side.db, &names)
        .await
        .map_err(internal)?;
    for message in &mut messages {
        let Some(found) = files.get(&message.media_name) else {
            continue;
        };
        let described = message
            .media
            .take()
            .map(|m| chatledger_core::conversation::Media {
                id: m.id,
                url: m.url,
                mime_type: m.mime_type,
                sha256: m.sha256,
                caption: m.caption,
                filename: m.filename,
                voice: m.voice,
                animated: m.animated,
            });
        message.set_files(described, found);
    }
    Ok(messages)
}
