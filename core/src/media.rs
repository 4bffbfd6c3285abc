//! Media: what a provider's attachment is, where its bytes are kept, the limits WhatsApp sets,
//! what a file's first bytes say it is, and the port that fetches inbound attachments.
//!
//! The log records only references to media (`MediaStored`: key, sha256, size, type, file
//! name), never bytes. Objects are content-addressed under their conversation
//! ([`object_key`]): forgetting a customer deletes the folders of their conversations.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One attachment of an inbound message, as its provider described it: what the media
/// reactor fetches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaSource {
    /// Which attachment of the message (0: the first; Twilio sends up to 10).
    pub index: u32,
    /// image, video, audio, document, sticker.
    pub kind: String,
    /// Meta's media id (resolved through `GET /{media-id}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A URL to fetch it from (Twilio's `MediaUrl{N}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// The hash the provider declared (hex or base64; checked when it reads as 32 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Twilio's account the message came through (the user of its media URLs' Basic auth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub animated: Option<bool>,
}

/// The WhatsApp message kind a MIME type travels as.
pub fn kind_of_mime(mime: Option<&str>) -> &'static str {
    match mime.and_then(|m| m.split('/').next()) {
        Some("image") if mime == Some("image/webp") => "sticker",
        Some("image") => "image",
        Some("video") => "video",
        Some("audio") => "audio",
        _ => "document",
    }
}

/// Where an object of the conversation `stream` with content hash `sha256` (hex) is kept.
pub fn object_key(stream: &str, sha256: &str) -> String {
    format!("{}/{sha256}", folder(stream))
}

/// The folder of a conversation's objects: everything of that customer on that number.
pub fn folder(stream: &str) -> String {
    stream.to_owned()
}

/// The folder executives' uploads wait in until they are sent.
pub const UPLOADS: &str = "uploads";

/// The most bytes WhatsApp carries for a kind of media (Meta's documented limits), and the
/// limit in words.
pub fn size_limit(kind: &str, animated: bool) -> (u64, &'static str) {
    const MB: u64 = 1024 * 1024;
    match kind {
        "image" => (5 * MB, "5 MB for images"),
        "audio" => (16 * MB, "16 MB for audio"),
        "video" => (16 * MB, "16 MB for video"),
        "sticker" if animated => (500 * 1024, "500 KB for animated stickers"),
        "sticker" => (100 * 1024, "100 KB for stickers"),
        _ => (100 * MB, "100 MB for documents"),
    }
}

/// The types WhatsApp accepts for each kind of media sent (Meta's documented list).
pub fn accepted_types(kind: &str) -> &'static [&'static str] {
    match kind {
        "image" => &["image/jpeg", "image/png"],
        "audio" => &[
            "audio/aac",
            "audio/amr",
            "audio/mpeg",
            "audio/mp4",
            "audio/ogg",
        ],
        "video" => &["video/mp4", "video/3gpp"],
        "sticker" => &["image/webp"],
        _ => &[
            "application/pdf",
            "text/plain",
            "application/zip",
            "application/msword",
            "application/vnd.ms-excel",
            "application/vnd.ms-powerpoint",
        ],
    }
}

/// What a file's first bytes say it is (a MIME type), whatever its name claims. `None` when
/// they match nothing WhatsApp carries.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if starts(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        return Some("image/webp");
    }
    if starts(b"%PDF-") {
        return Some("application/pdf");
    }
    if starts(b"OggS") {
        return Some("audio/ogg");
    }
    if starts(b"#!AMR") {
        return Some("audio/amr");
    }
    if starts(b"ID3") || (head.len() > 1 && head[0] == 0xFF && head[1] & 0xE0 == 0xE0) {
        // MPEG audio: an ID3 tag, or a frame sync. ADTS (AAC) is a frame sync with layer 0.
        if head.len() > 1 && head[0] == 0xFF && head[1] & 0xF6 == 0xF0 {
            return Some("audio/aac");
        }
        return Some("audio/mpeg");
    }
    if head.get(4..8) == Some(b"ftyp") {
        let brand = head.get(8..12).unwrap_or_default();
        return Some(match brand {
            b"3gp4" | b"3gp5" | b"3gp6" | b"3gp7" | b"3g2a" => "video/3gpp",
            b"M4A " | b"M4B " => "audio/mp4",
            _ => "video/mp4",
        });
    }
    if starts(b"PK\x03\x04") {
        return Some("application/zip");
    }
    if starts(&[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) {
        return Some("application/msword");
    }
    if !head.is_empty() && !head.contains(&0) && std::str::from_utf8(head).is_ok() {
        return Some("text/plain");
    }
    None
}

/// The type an upload is kept and sent as: what its bytes say, refined by the declared type
/// only where the bytes cannot tell (office files are zip or OLE containers; a UTF-8 cut in
/// the middle of a character still reads as text).
pub fn upload_type(head: &[u8], declared: Option<&str>) -> Option<String> {
    let declared = declared.map(|d| d.split(';').next().unwrap_or(d).trim().to_ascii_lowercase());
    let sniffed = sniff(head).or_else(|| {
        // A text file cut in the middle of a character.
        let valid = match std::str::from_utf8(head) {
            Ok(_) => head.len(),
            Err(e) => e.valid_up_to(),
        };
        (head.len() - valid < 4 && valid > 0 && !head.contains(&0)).then_some("text/plain")
    })?;
    let office = |d: &str| {
        d.starts_with("application/vnd.openxmlformats-officedocument.")
            || d.starts_with("application/vnd.ms-")
            || d == "application/msword"
    };
    Some(match (sniffed, declared.as_deref()) {
        ("application/zip" | "application/msword", Some(d)) if office(d) => d.to_owned(),
        _ => sniffed.to_owned(),
    })
}

/// Whether a declared `sha256` (hex or base64) names these bytes. `None` when it does not
/// read as a SHA-256 at all (some providers' examples carry shortened values): nothing to
/// check against.
pub fn declared_hash_matches(declared: &str, actual: &[u8; 32]) -> Option<bool> {
    let declared = declared.trim();
    if let Ok(bytes) = hex::decode(declared) {
        if bytes.len() == 32 {
            return Some(bytes == actual);
        }
    }
    let bytes = base64_decode(declared)?;
    (bytes.len() == 32).then(|| bytes == actual)
}

/// Standard or URL-safe base64, padded or not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

/// An attachment kept in the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMedia {
    /// Its key in the object store (`{conversation}/{sha256}`).
    pub key: String,
    /// Hex.
    pub sha256: String,
    pub size: u64,
    pub mime: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// Why an attachment could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", code.map(|c| format!("({c}) ")).unwrap_or_default())]
pub struct MediaError {
    /// The provider's error code, when it gave one.
    pub code: Option<i64>,
    pub reason: String,
    /// Worth trying again (the provider busy or unreachable, a link that expired).
    pub retryable: bool,
}

impl MediaError {
    pub fn permanent(reason: impl Into<String>) -> Self {
        MediaError {
            code: None,
            reason: reason.into(),
            retryable: false,
        }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        MediaError {
            code: None,
            reason: reason.into(),
            retryable: true,
        }
    }
}

/// Where an attachment stands: being fetched, kept, or given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MediaStatus {
    Pending,
    Stored,
    Failed,
}

impl MediaStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            MediaStatus::Pending => "PENDING",
            MediaStatus::Stored => "STORED",
            MediaStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "STORED" => MediaStatus::Stored,
            "FAILED" => MediaStatus::Failed,
            _ => MediaStatus::Pending,
        }
    }
}

/// One attachment of a message as the dashboard shows it: the one rule for what the media
/// events mean, shared by the read model and the chat as it stood at any instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    pub index: u32,
    pub status: MediaStatus,
    pub stored: Option<StoredMedia>,
    /// Why the last try failed (kept while a retry is pending; the reason it was given up).
    pub failure: Option<String>,
}

impl MediaFile {
    /// An attachment nothing has been recorded about yet.
    pub fn pending(index: u32) -> Self {
        MediaFile {
            index,
            status: MediaStatus::Pending,
            stored: None,
            failure: None,
        }
    }

    /// An attachment kept in the store.
    pub fn stored(index: u32, media: StoredMedia) -> Self {
        MediaFile {
            index,
            status: MediaStatus::Stored,
            stored: Some(media),
            failure: None,
        }
    }

    /// What a failed try says: still pending when it is tried again, else failed.
    pub fn failed(&mut self, code: Option<i64>, reason: &str, retryable: bool) {
        if self.status == MediaStatus::Stored {
            return;
        }
        self.failure = Some(failure_text(code, reason));
        self.status = if retryable {
            MediaStatus::Pending
        } else {
            MediaStatus::Failed
        };
    }
}

/// A failed fetch in words: the provider's code, then its reason.
pub fn failure_text(code: Option<i64>, reason: &str) -> String {
    match code {
        Some(code) => format!("({code}) {reason}"),
        None => reason.to_owned(),
    }
}

/// Fetches inbound attachments from the provider of a channel into the object store.
#[async_trait]
pub trait MediaFetcher: Send + Sync + 'static {
    /// Fetches `source`, an attachment of a message on `channel` in the conversation
    /// `stream`, checks it against WhatsApp's limits and the declared hash, and keeps it
    /// under the conversation's folder.
    async fn fetch(
        &self,
        channel: &str,
        stream: &str,
        source: &MediaSource,
    ) -> Result<StoredMedia, MediaError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_types_are_told_by_their_bytes() {
        assert_eq!(
            sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Some("image/jpeg")
        );
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"\0\0\0\x18ftypmp42"), Some("video/mp4"));
        assert_eq!(sniff(b"\0\0\0\x18ftyp3gp4"), Some("video/3gpp"));
        assert_eq!(sniff(b"OggS\0\x02"), Some("audio/ogg"));
        assert_eq!(sniff(b"plain words"), Some("text/plain"));
        assert_eq!(
            sniff(b"MZ\x90\0\x03\0\0\0"),
            None,
            "an executable is nothing we send"
        );
        // A name or a declared type does not make an executable a PDF.
        assert_eq!(
            upload_type(b"MZ\x90\0\x03\0\0\0", Some("application/pdf")),
            None
        );
        let docx = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
        assert_eq!(
            upload_type(b"PK\x03\x04rest", Some(docx)).as_deref(),
            Some(docx)
        );
        assert_eq!(
            upload_type(b"PK\x03\x04rest", Some("image/png")).as_deref(),
            Some("application/zip")
        );
    }

    #[test]
    fn declared_hashes_are_checked_when_they_read_as_sha256() {
        let actual: [u8; 32] = sha2_of(b"hello");
        let hex_form = hex::encode(actual);
        assert_eq!(declared_hash_matches(&hex_form, &actual), Some(true));
        let b64 = "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=";
        assert_eq!(declared_hash_matches(b64, &actual), Some(true));
        assert_eq!(declared_hash_matches(&"0".repeat(64), &actual), Some(false));
        // Meta's example image carries a shortened value: nothing to check it against.
        assert_eq!(declared_hash_matches("4654+8g=", &actual), None);
    }

    fn sha2_of(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }

    #[test]
    fn limits_follow_the_kind() {
        assert_eq!(size_limit("image", false).0, 5 * 1024 * 1024);
        assert_eq!(size_limit("sticker", true).0, 500 * 1024);
        assert_eq!(size_limit("document", false).0, 100 * 1024 * 1024);
        assert_eq!(kind_of_mime(Some("audio/ogg; codecs=opus")), "audio");
    }
}
