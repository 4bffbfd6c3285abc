//! Media over HTTP: executives' uploads (`POST /api/media`) and the filesystem store's
//! signed, expiring download route (`GET /api/media/{token}`).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chatledger_adapters::media::{KeepError, LinkError};
use chatledger_core::executive::Role;
use chatledger_core::media::{accepted_types, kind_of_mime, size_limit, upload_type, UPLOADS};
use futures_util::TryStreamExt;
use serde::Deserialize;
use serde_json::json;

use super::ApiError;
use crate::config::UPLOAD_LIMIT;
use crate::state::AppState;

/// How long an upload's body may take to arrive (other bodies get `BODY_TIMEOUT_SECONDS`).
pub const UPLOAD_BODY_TIMEOUT: Duration = Duration::from_secs(600);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/media", post(upload))
        .route("/api/media/{token}", get(download))
}

#[derive(Deserialize)]
struct UploadQuery {
    filename: Option<String>,
}

/// Takes a file an executive will send: the body is the file, its type is told by its bytes
/// (the declared `Content-Type` only refines a container, such as an office document), the
/// size is held to WhatsApp's limit for that type, and nothing is kept of a refused file.
/// Answers 201 with the `mediaRef` that `sendMedia` sends it by.
async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let viewer = super::signed_in(&state, &headers).await?;
    state.rates.admit(
        crate::rate::Limit::Media,
        &crate::rate::key(Some(&viewer), None),
    )?;
    if viewer.role == Role::Auditor {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "auditors read; they do not send files",
        ));
    }
    let too_large = |limit: &str| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the file is larger than WhatsApp allows ({limit})"),
        )
    };
    let declared_size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let overall = size_limit("document", false);
    if declared_size.is_some_and(|size| size > UPLOAD_LIMIT) {
        return Err(too_large(overall.1));
    }
    let filename = query
        .filename
        .filter(|name| !name.trim().is_empty())
        .map(|name| {
            chatledger_core::validate::text("filename", &name, 255)
                .map(|()| name)
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
        })
        .transpose()?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut mime = None;
    let stream = body.into_data_stream();
    let kept = state
        .media
        .store
        .keep(UPLOADS, stream, (UPLOAD_LIMIT, overall.1), |head| {
            let found = upload_type(head, declared.as_deref()).ok_or_else(|| {
                "the file's bytes are of no type WhatsApp carries (images: JPEG, PNG; audio: AAC, AMR, MP3, M4A, OGG; video: MP4, 3GP; documents: PDF, text, office files)".to_owned()
            })?;
            let kind = kind_of_mime(Some(&found));
            let accepted = accepted_types(kind);
            let office = found.starts_with("application/vnd.");
            if !accepted.contains(&found.as_str()) && !office {
                return Err(format!(
                    "WhatsApp does not carry {found} as {kind}; it takes {}",
                    accepted.join(", ")
                ));
            }
            mime = Some(found);
            Ok(())
        })
        .await
        .map_err(|e| match e {
            KeepError::TooLarge(limit) => too_large(&limit),
            KeepError::Refused(reason) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                reason,
            ),
            KeepError::Source(reason) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the upload did not arrive whole: {reason}"),
            ),
            KeepError::Store(reason) => {
                tracing::error!(error = %reason, "the object store refused an upload");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the object store cannot take the file now; try again",
                )
            }
        })?;
    let mime = mime.unwrap_or_else(|| "application/octet-stream".into());
    let kind = kind_of_mime(Some(&mime));
    // An image over 5 MB is a document's size but not an image's.
    let limit = size_limit(kind, false);
    if kept.size > limit.0 {
        return Err(too_large(limit.1));
    }
    let stored = chatledger_core::media::StoredMedia {
        key: kept.key,
        sha256: kept.sha256,
        size: kept.size,
        mime,
        filename,
    };
    let reference = state.media.store.upload_ref(&stored);
    tracing::info!(size = stored.size, mime = %stored.mime, by = %viewer.name, "an upload was kept");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "mediaRef": reference,
            "kind": kind,
            "mimeType": stored.mime,
            "size": stored.size,
            "sha256": stored.sha256,
            "filename": stored.filename,
        })),
    )
        .into_response())
}

/// Types a browser may show inline; anything else downloads (a page or a script sent as a
/// document must not run on our origin).
fn inline(mime: &str) -> bool {
    ["image/jpeg", "image/png", "image/webp", "application/pdf"].contains(&mime)
        || mime.starts_with("audio/")
        || mime.starts_with("video/")
}

/// Serves a file of the filesystem store to whoever holds an unaltered, unexpired token
/// (issued only with messages of chats the viewer may see).
async fn download(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let (key, mime) = state.media.store.open_token(&token).map_err(|e| {
        let code = match e {
            LinkError::Expired => "link_expired",
            LinkError::Invalid => "link_invalid",
        };
        ApiError::new(StatusCode::FORBIDDEN, code, e.to_string())
    })?;
    // Each link is held to the rate (a provider fetching many files through one address is
    // not held back; one link fetched over and over is).
    state
        .rates
        .admit(crate::rate::Limit::Media, &format!("link:{token}"))?;
    let found = state.media.store.get(&key).await.map_err(|e| {
        tracing::error!(error = %e, "the object store failed a download");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "the object store cannot serve the file now; try again",
        )
    })?;
    let Some((size, stream)) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the file is no longer kept (its customer may have been forgotten)",
        ));
    };
    let body = Body::from_stream(stream.map_err(std::io::Error::other));
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    let content_type = if inline(&mime) {
        mime.as_str()
    } else {
        "application/octet-stream"
    };
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static(if inline(&mime) {
            "inline"
        } else {
            "attachment"
        }),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    Ok(response)
}
