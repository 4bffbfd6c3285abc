//! The HTTP router and the one place errors become statuses and JSON bodies.

mod audit;
mod console;
mod genesys;
mod graphql;
mod health;
pub mod listen;
mod media;
pub mod metrics;
mod onboarding;
mod transaction;
mod whatsapp;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

/// Every route chatledger serves.
pub fn router(state: AppState) -> Router {
    let schema = crate::graphql::build(Some(state.clone()));
    let cors = cors_layer();
    let router = Router::new()
        .merge(health::routes())
        .merge(console::routes())
        .merge(audit::routes())
        .merge(whatsapp::routes())
        .merge(graphql::routes())
        .merge(transaction::routes())
        .merge(onboarding::routes())
        .merge(media::routes())
        .merge(genesys::routes())
        .merge(metrics::routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::Extension(schema))
        // The last line of defence: a handler that panics answers 500 with a JSON body, and
        // the connection and the process go on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(panic = %text, "a request handler panicked");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the server failed on this request; it was logged",
                )
                .into_response()
            },
        ))
        .with_state(state);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// Cross-origin access for the dashboard's origins (`ALLOWED_ORIGINS`, comma-separated).
/// Without it, browsers allow only same-origin requests. `*` allows any origin (requests
/// carry their token in a header, never in cookies, so no credentials are allowed).
fn cors_layer() -> Option<tower_http::cors::CorsLayer> {
    let setting = std::env::var("ALLOWED_ORIGINS").ok()?;
    cors_for(&setting)
}

fn cors_for(setting: &str) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let entries: Vec<&str> = setting
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .collect();
    let allow = if entries.contains(&"*") {
        AllowOrigin::any()
    } else {
        let origins: Vec<axum::http::HeaderValue> = entries
            .iter()
            .filter_map(|o| match o.parse() {
                Ok(origin) => Some(origin),
                Err(_) => {
                    tracing::warn!(origin = %o, "ALLOWED_ORIGINS: not a valid origin; ignored");
                    None
                }
            })
            .collect();
        if origins.is_empty() {
            return None;
        }
        AllowOrigin::list(origins)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                axum::http::header::AUTHORIZATION,
                axum::http::header::CONTENT_TYPE,
            ]),
    )
}

/// The address of the client that sent a request (`None` where the transport does not say).
pub(crate) struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(listen::client_address(&parts.extensions)))
    }
}

/// Whom a request's `Authorization` header names, if its token still stands; 401 saying why
/// (`token_expired` for an expired one) when not.
pub(crate) async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<crate::auth::Viewer, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    state
        .viewer(authorization)
        .await
        .map(|(viewer, _)| viewer)
        .map_err(|e| {
            let code = match e {
                crate::auth::AuthError::Expired => "token_expired",
                _ => "unauthorized",
            };
            ApiError::new(StatusCode::UNAUTHORIZED, code, e.to_string())
        })
}

/// Refuses a body that is not of the `expected` media type (415).
pub(crate) fn require_content_type(headers: &HeaderMap, expected: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be {expected}, not {}",
                if given.is_empty() { "untyped" } else { given }
            ),
        ))
    }
}

/// Whether `T` is `error` or anywhere in its chain of causes (the body's layers wrap what a
/// lower one failed with).
fn caused_by<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<T>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Reads a body up to `limit` bytes (413 beyond); an empty body is a 400.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the {limit}-byte limit"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if caused_by::<http_body_util::LengthLimitError>(e.as_ref()) {
            too_large()
        } else if caused_by::<listen::SlowBody>(e.as_ref()) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time; nothing was recorded",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("the body could not be read: {e}"),
            )
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "empty_body",
            "the body is empty",
        ));
    }
    Ok(bytes)
}

/// An error answered to a client: a status, a stable machine-readable code, and a message
/// that says what is wrong. Internal details are logged where they happen, never sent.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// More of the body, beside `error` and `message` (what each refused item was, say).
    pub details: Option<(&'static str, serde_json::Value)>,
    /// Seconds before trying again, for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// The same error with `key` in its body.
    pub fn with(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.details = Some((key, value));
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some((key, value)) = self.details {
            body[key] = value;
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<chatledger_core::StoreError> for ApiError {
    /// A value the store refused is the client's to fix (400); anything else is the store's
    /// trouble (503, retry later), named without its internals, which are logged.
    fn from(e: chatledger_core::StoreError) -> Self {
        use chatledger_core::StoreError;
        match e {
            StoreError::Invalid(reason) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_value",
                format!("the event store refused a value of this request: {reason}; nothing was recorded"),
            ),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "the event store is unreachable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the event store cannot be reached right now; nothing was recorded, retry later",
                )
            }
            other => {
                tracing::error!(error = %other, "writing to the event store failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the event store failed to record this request; nothing was recorded, retry later",
                )
            }
        }
    }
}

impl From<chatledger_application::conversations::CommandError> for ApiError {
    fn from(e: chatledger_application::conversations::CommandError) -> Self {
        use chatledger_application::conversations::CommandError;
        match e {
            CommandError::Rejected(rejection) => {
                ApiError::new(StatusCode::BAD_REQUEST, "rejected", rejection.to_string())
                    .with("reason", json!(rejection.code()))
            }
            CommandError::Store(e) => e.into(),
        }
    }
}

impl From<crate::rate::RateLimited> for ApiError {
    fn from(refused: crate::rate::RateLimited) -> Self {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            refused.to_string(),
        );
        error.retry_after = Some(refused.retry_after);
        error
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn preflight(setting: &str, origin: &str) -> Option<String> {
        let router = Router::new().route("/graphql", axum::routing::post(|| async { "ok" }));
        let router = match cors_for(setting) {
            Some(cors) => router.layer(cors),
            None => router,
        };
        let request = axum::http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/graphql")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn allowed_origins_star_means_any_origin_without_credentials() {
        assert_eq!(
            preflight("*", "https://anywhere.example").await.as_deref(),
            Some("*")
        );
        assert_eq!(
            preflight("https://dash.example.com, *", "https://x.example")
                .await
                .as_deref(),
            Some("*")
        );
    }

    #[tokio::test]
    async fn allowed_origins_lists_exact_origins_and_ignores_invalid_ones() {
        let setting = "https://dash.example.com, not an origin\n";
        assert_eq!(
            preflight(setting, "https://dash.example.com")
                .await
                .as_deref(),
            Some("https://dash.example.com")
        );
        assert_eq!(preflight(setting, "https://evil.example").await, None);
        assert!(cors_for(" , ").is_none());
    }
}
