//! What is recorded on `credential-{business_id}`, and its stored form.

use super::*;

/// What is recorded on `credential-{business_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CredentialEvent {
    /// A one-time `state` was issued for the business's Embedded Signup.
    OfficialSignupStarted {
        business_id: String,
        state_sha256: String,
        /// The stakeholder the onboarded number will serve.
        stakeholder: String,
        expires_at: DateTime<Utc>,
        by: String,
        at: DateTime<Utc>,
    },
    /// The frontend posted the signup's result with a good `state`.
    OnboardingAttempted {
        attempt_id: Uuid,
        state_sha256: String,
        waba_id: String,
        phone_number_id: String,
        api_provider: String,
        at: DateTime<Utc>,
    },
    OnboardingStepFailed {
        attempt_id: Uuid,
        step: OnboardingStep,
        error: GraphError,
        at: DateTime<Utc>,
    },
    /// The code was exchanged for a token.
    TokenIssued {
        attempt_id: Uuid,
        token: SealedSecret,
        /// `None`: it never expires (`expires_at: 0` in `debug_token`).
        expires_at: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_type: Option<String>,
        #[serde(default)]
        scopes: Vec<String>,
        at: DateTime<Utc>,
    },
    AppSubscribed {
        attempt_id: Uuid,
        waba_id: String,
        at: DateTime<Utc>,
    },
    NumberRegistered {
        attempt_id: Uuid,
        phone_number_id: String,
        /// The two-step verification PIN the number was registered with.
        pin: SealedSecret,
        at: DateTime<Utc>,
    },
    /// Every step done: messages can go out with this credential.
    CredentialConnected {
        attempt_id: Uuid,
        state_sha256: String,
        waba_id: String,
        phone_number_id: String,
        display_phone_number: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verified_name: Option<String>,
        /// The channel the number routes to.
        channel_key: String,
        at: DateTime<Utc>,
    },
    TokenRefreshed {
        token: SealedSecret,
        expires_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    TokenRefreshFailed {
        /// 1 for the first failure since the last success.
        attempt: u32,
        error: GraphError,
        at: DateTime<Utc>,
    },
    /// The credential no longer works; the business must sign up again.
    CredentialDisconnected {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<GraphError>,
        at: DateTime<Utc>,
    },
    /// Meta restricted or disabled the account (an `account_update` webhook): messages of
    /// the kinds `restrictions` names are refused while it lasts.
    CredentialSuspended {
        waba_id: String,
        cause: SuspensionCause,
        /// Meta's report in words: what is restricted, and until when.
        reason: String,
        /// Meta's restriction types that stop messages, or `DISABLED`.
        restrictions: Vec<String>,
        /// When Meta said it ends (`None`: until Meta reports otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
        /// The notice (`ProviderNoticeReceived`) it was read from.
        notice: Uuid,
        at: DateTime<Utc>,
    },
    /// Meta reported that what `cause` stopped ended: messages go out again.
    CredentialReinstated {
        waba_id: String,
        cause: SuspensionCause,
        reason: String,
        /// The status the credential returns to.
        status: CredentialStatus,
        notice: Uuid,
        at: DateTime<Utc>,
    },
    /// The live secrets were sealed again under a new key (`chatledger secrets rotate`).
    SecretsResealed {
        token: SealedSecret,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<SealedSecret>,
        from_key_id: String,
        at: DateTime<Utc>,
    },
}

impl CredentialEvent {
    /// Every stored type name of a credential stream: the one list folds read by.
    pub const TYPES: [&'static str; 13] = [
        "OfficialSignupStarted",
        "OnboardingAttempted",
        "OnboardingStepFailed",
        "TokenIssued",
        "AppSubscribed",
        "NumberRegistered",
        "CredentialConnected",
        "TokenRefreshed",
        "TokenRefreshFailed",
        "CredentialDisconnected",
        "SecretsResealed",
        "CredentialSuspended",
        "CredentialReinstated",
    ];

    pub fn event_type(&self) -> &'static str {
        match self {
            CredentialEvent::OfficialSignupStarted { .. } => "OfficialSignupStarted",
            CredentialEvent::OnboardingAttempted { .. } => "OnboardingAttempted",
            CredentialEvent::OnboardingStepFailed { .. } => "OnboardingStepFailed",
            CredentialEvent::TokenIssued { .. } => "TokenIssued",
            CredentialEvent::AppSubscribed { .. } => "AppSubscribed",
            CredentialEvent::NumberRegistered { .. } => "NumberRegistered",
            CredentialEvent::CredentialConnected { .. } => "CredentialConnected",
            CredentialEvent::TokenRefreshed { .. } => "TokenRefreshed",
            CredentialEvent::TokenRefreshFailed { .. } => "TokenRefreshFailed",
            CredentialEvent::CredentialDisconnected { .. } => "CredentialDisconnected",
            CredentialEvent::SecretsResealed { .. } => "SecretsResealed",
            CredentialEvent::CredentialSuspended { .. } => "CredentialSuspended",
            CredentialEvent::CredentialReinstated { .. } => "CredentialReinstated",
        }
    }

    pub fn to_new_event(&self, event_id: Uuid, metadata: Metadata) -> NewEvent {
        NewEvent::new(event_id, self.event_type(), untagged_data(self), metadata)
    }

    /// `None` for an event type this release does not know.
    pub fn from_recorded(event: &RecordedEvent) -> Result<Option<Self>, serde_json::Error> {
        if !Self::TYPES.contains(&event.event_type.as_str()) {
            return Ok(None);
        }
        tagged(event).map(Some)
    }
}

pub(super) fn untagged_data(event: &impl Serialize) -> Value {
    match serde_json::to_value(event) {
        Ok(Value::Object(mut tagged)) => tagged.remove("data").unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

pub(super) fn tagged<T: serde::de::DeserializeOwned>(
    event: &RecordedEvent,
) -> Result<T, serde_json::Error> {
    serde_json::from_value(serde_json::json!({"type": event.event_type, "data": event.data}))
}
