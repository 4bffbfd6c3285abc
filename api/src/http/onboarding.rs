//! `POST /api/onboarding/whatsapp/official/callback`: what the frontend posts after Embedded
//! Signup. The one-time `state` a signup start issued is what authorises it.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chatledger_core::credential::StateRefusal;

use super::{read_body, require_content_type, ApiError};
use crate::onboarding::{OnboardingError, SignupResult};
use crate::state::AppState;

/// A callback body is small; anything larger is not one.
const BODY_LIMIT: usize = 16 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/onboarding/whatsapp/official/callback",
        post(official_callback),
    )
}

impl From<OnboardingError> for ApiError {
    fn from(e: OnboardingError) -> Self {
        let message = e.to_string();
        let (status, code) = match &e {
            OnboardingError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            OnboardingError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "onboarding_unavailable")
            }
            OnboardingError::State(StateRefusal::Unknown) => {
                (StatusCode::BAD_REQUEST, "unknown_state")
            }
            OnboardingError::State(StateRefusal::Used) => (StatusCode::BAD_REQUEST, "state_used"),
            OnboardingError::State(StateRefusal::Expired(_)) => {
                (StatusCode::BAD_REQUEST, "state_expired")
            }
            OnboardingError::State(StateRefusal::OtherBusiness) => {
                (StatusCode::FORBIDDEN, "state_for_another_business")
            }
            OnboardingError::Step { .. } => (StatusCode::BAD_GATEWAY, "graph_api_error"),
            OnboardingError::Conflict => (StatusCode::CONFLICT, "conflict"),
            OnboardingError::Store(e) => {
                tracing::error!(error = %e, "recording onboarding failed");
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the onboarding could not be recorded right now; retry later",
                );
            }
        };
        ApiError::new(status, code, message)
    }
}

async fn official_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_content_type(&headers, "application/json")?;
    let bytes = read_body(body, &headers, BODY_LIMIT).await?;
    let result: SignupResult = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_payload",
            format!("the body must be {{business_id, code, waba_id, phone_number_id, state}}: {e}"),
        )
    })?;
    let connected = state
        .onboarding
        .complete(&result, state.clock.now())
        .await?;
    Ok(Json(connected).into_response())
}
