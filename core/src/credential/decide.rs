//! What onboarding and the credential's upkeep decide, before and after each call to the
//! Graph API: which requests are refused (nothing recorded) and which events record an
//! outcome. The calls themselves, and sealing, are the application's; their answers come in
//! here as plain facts.

use super::*;

/// Why onboarding refuses a request before anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnboardingRefusal {
    /// The request itself is malformed: which field, and why.
    #[error("{0}")]
    Invalid(String),
    /// The signup `state` presented is not good for this business now.
    #[error(transparent)]
    State(#[from] StateRefusal),
}

/// What the frontend posts after Embedded Signup.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignupResult {
    pub business_id: String,
    pub code: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub state: String,
}

/// Refuses a business id that cannot name a stream.
pub fn check_business_id(business_id: &str) -> Result<(), OnboardingRefusal> {
    if valid_business_id(business_id) {
        Ok(())
    } else {
        Err(OnboardingRefusal::Invalid(format!(
            "{business_id:?} is not a business id (1–64 letters, digits, _ or -)"
        )))
    }
}

/// A business choosing its integration (`kind` as the request spells it) when it stands at
/// `current`: the event to record, or `None` when it already is so.
pub fn choose_integration(
    current: Option<IntegrationKind>,
    business_id: &str,
    kind: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<Option<BusinessEvent>, OnboardingRefusal> {
    check_business_id(business_id)?;
    let kind = IntegrationKind::parse(kind).ok_or_else(|| {
        OnboardingRefusal::Invalid(format!(
            "kind must be \"official\" or \"unofficial\", not {kind:?}"
        ))
    })?;
    if current == Some(kind) {
        return Ok(None);
    }
    Ok(Some(BusinessEvent::IntegrationChosen {
        business_id: business_id.to_owned(),
        kind,
        by: by.to_owned(),
        at,
    }))
}

/// Starting a signup with the one-time `state` the application drew (a signup may start
/// again while one is under way, or after a connection): the event that keeps its digest
/// (never the state itself) until `expires_at`.
pub fn start_signup(
    business_id: &str,
    stakeholder: &str,
    state: &str,
    expires_at: DateTime<Utc>,
    by: &str,
    at: DateTime<Utc>,
) -> Result<CredentialEvent, OnboardingRefusal> {
    check_business_id(business_id)?;
    if stakeholder.trim().is_empty() {
        return Err(OnboardingRefusal::Invalid(
            "stakeholder must not be empty".into(),
        ));
    }
    Ok(CredentialEvent::OfficialSignupStarted {
        business_id: business_id.to_owned(),
        state_sha256: state_digest(state),
        stakeholder: stakeholder.trim().to_owned(),
        expires_at,
        by: by.to_owned(),
        at,
    })
}

impl Credential {
    /// The callback's request, checked: its fields, then its `state` against those issued.
    /// Returns what the state was issued with (the stakeholder) and the event that opens the
    /// attempt; the Graph API's steps follow it.
    pub fn attempt(
        &self,
        result: &SignupResult,
        attempt_id: Uuid,
        api_provider: &str,
        at: DateTime<Utc>,
    ) -> Result<(IssuedState, CredentialEvent), OnboardingRefusal> {
        check_business_id(&result.business_id)?;
        for (name, value) in [
            ("code", &result.code),
            ("waba_id", &result.waba_id),
            ("phone_number_id", &result.phone_number_id),
            ("state", &result.state),
        ] {
            if value.trim().is_empty() {
                return Err(OnboardingRefusal::Invalid(format!(
                    "{name} must not be empty"
                )));
            }
        }
        for (name, value) in [
            ("waba_id", &result.waba_id),
            ("phone_number_id", &result.phone_number_id),
        ] {
            if !value.chars().all(|c| c.is_ascii_digit()) || value.len() > 32 {
                return Err(OnboardingRefusal::Invalid(format!(
                    "{name} must be Meta's numeric id, not {value:?}"
                )));
            }
        }
        let issued = self
            .check_state(&result.business_id, &result.state, at)?
            .clone();
        let event = CredentialEvent::OnboardingAttempted {
            attempt_id,
            state_sha256: issued.sha256.clone(),
            waba_id: result.waba_id.clone(),
            phone_number_id: result.phone_number_id.clone(),
            api_provider: api_provider.to_owned(),
            at,
        };
        Ok((issued, event))
    }

    /// A renewal that failed with `error`: the failure, and after `max_attempts` failures
    /// in a row, the disconnection that asks for a new signup.
    pub fn refresh_failed(
        &self,
        error: GraphError,
        max_attempts: u32,
        at: DateTime<Utc>,
    ) -> Vec<CredentialEvent> {
        let attempt = self.refresh_failures + 1;
        let mut events = vec![CredentialEvent::TokenRefreshFailed {
            attempt,
            error: error.clone(),
            at,
        }];
        if attempt >= max_attempts {
            events.push(CredentialEvent::CredentialDisconnected {
                reason: format!(
                    "the token could not be renewed in {attempt} attempts (last: {error}); re-run Embedded Signup"
                ),
                error: Some(error),
                at,
            });
        }
        events
    }

    /// Meta refused the token on a send: the disconnection to record, or `None` when the
    /// credential is not connected (already disconnected, or never was).
    pub fn token_refused(&self, error: GraphError, at: DateTime<Utc>) -> Option<CredentialEvent> {
        self.is_connected()
            .then(|| CredentialEvent::CredentialDisconnected {
                reason: format!(
                    "Meta refused the token when sending ({error}); re-run Embedded Signup to re-authorise"
                ),
                error: Some(error),
                at,
            })
    }
}
