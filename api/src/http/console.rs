//! The operations console: one page, its script and its style, built into the binary (no
//! network at run time, nothing to install). It speaks only the GraphQL contract (and reads
//! the audit head), as any dashboard would; ADR 19 says why it is plain JavaScript.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::AppState;

const INDEX: &str = include_str!("../../console/index.html");
const APP: &str = include_str!("../../console/app.js");
const STYLE: &str = include_str!("../../console/style.css");

/// Scripts and styles only from here; data only from this origin (and its WebSocket);
/// images, audio and video also from the object store's presigned links.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    connect-src 'self' ws: wss:; img-src 'self' data: blob: http: https:; \
    media-src 'self' blob: http: https:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // A new binary serves a new console: the browser asks again each time.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
