//! A credential folded from its stream, and what is decided on it.

use super::*;

/// Why a presented signup `state` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateRefusal {
    #[error("the state was not issued by chatledger")]
    Unknown,
    #[error("the state was issued for another business")]
    OtherBusiness,
    #[error("the state was already used by a completed signup; start a new signup")]
    Used,
    #[error("the state expired at {0}; start a new signup")]
    Expired(DateTime<Utc>),
}

/// A `state` issued for a signup, as the fold keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedState {
    pub sha256: String,
    pub stakeholder: String,
    pub expires_at: DateTime<Utc>,
    pub used: bool,
}

/// The onboarding attempt under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub attempt_id: Uuid,
    pub state_sha256: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub api_provider: String,
    pub token: Option<SealedSecret>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A credential folded from its stream (serialized for snapshots of the views that keep it:
/// its token and PIN only ever in their sealed form).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Credential {
    pub business_id: String,
    /// `None` before anything was recorded.
    pub status: Option<CredentialStatus>,
    pub states: Vec<IssuedState>,
    pub attempt: Option<Attempt>,
    pub waba_id: Option<String>,
    pub phone_number_id: Option<String>,
    pub display_phone_number: Option<String>,
    pub channel_key: Option<String>,
    pub api_provider: Option<String>,
    /// The token messages go out with (the connected one).
    pub token: Option<SealedSecret>,
    pub pin: Option<SealedSecret>,
    pub token_expires_at: Option<DateTime<Utc>>,
    pub connected_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Refresh failures since the last success.
    pub refresh_failures: u32,
    pub last_refresh_failure_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What Meta stopped, while it lasts.
    pub suspension: Option<Suspension>,
    /// The stream's version after the last event folded in.
    pub version: Option<u64>,
}

/// A restriction or disabling Meta reported on the account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspension {
    pub cause: SuspensionCause,
    pub reason: String,
    pub restrictions: Vec<String>,
    pub until: Option<DateTime<Utc>>,
    /// The status before it, to return to.
    pub status_before: CredentialStatus,
}

impl Credential {
    /// Folds one event of the stream in.
    pub fn apply(&mut self, event: &CredentialEvent) {
        use CredentialEvent as E;
        match event {
            E::OfficialSignupStarted {
                business_id,
                state_sha256,
                stakeholder,
                expires_at,
                ..
            } => {
                self.business_id = business_id.clone();
                self.states.push(IssuedState {
                    sha256: state_sha256.clone(),
                    stakeholder: stakeholder.clone(),
                    expires_at: *expires_at,
                    used: false,
                });
                self.status.get_or_insert(CredentialStatus::Pending);
            }
            E::OnboardingAttempted {
                attempt_id,
                state_sha256,
                waba_id,
                phone_number_id,
                api_provider,
                ..
            } => {
                self.attempt = Some(Attempt {
                    attempt_id: *attempt_id,
                    state_sha256: state_sha256.clone(),
                    waba_id: waba_id.clone(),
                    phone_number_id: phone_number_id.clone(),
                    api_provider: api_provider.clone(),
                    token: None,
                    expires_at: None,
                });
                self.status.get_or_insert(CredentialStatus::Pending);
            }
            E::OnboardingStepFailed { step, error, .. } => {
                self.last_error = Some(format!("{} failed: {error}", step.as_str()));
            }
            E::TokenIssued {
                attempt_id,
                token,
                expires_at,
                ..
            } => {
                if let Some(attempt) = self
                    .attempt
                    .as_mut()
                    .filter(|a| a.attempt_id == *attempt_id)
                {
                    attempt.token = Some(token.clone());
                    attempt.expires_at = *expires_at;
                }
            }
            E::AppSubscribed { .. } => {}
            E::NumberRegistered { pin, .. } => self.pin = Some(pin.clone()),
            E::CredentialConnected {
                attempt_id,
                state_sha256,
                waba_id,
                phone_number_id,
                display_phone_number,
                channel_key,
                at,
                ..
            } => {
                if let Some(state) = self.states.iter_mut().find(|s| &s.sha256 == state_sha256) {
                    state.used = true;
                }
                if let Some(attempt) = self.attempt.take().filter(|a| a.attempt_id == *attempt_id) {
                    self.token = attempt.token;
                    self.token_expires_at = attempt.expires_at;
                    self.api_provider = Some(attempt.api_provider);
                }
                self.waba_id = Some(waba_id.clone());
                self.phone_number_id = Some(phone_number_id.clone());
                self.display_phone_number = Some(display_phone_number.clone());
                self.channel_key = Some(channel_key.clone());
                self.status = Some(CredentialStatus::Connected);
                self.connected_at = Some(*at);
                self.refresh_failures = 0;
                self.last_refresh_failure_at = None;
                self.last_error = None;
                // Meta's suspension is of the account, not of the token: it stands.
                if let Some(suspension) = &mut self.suspension {
                    suspension.status_before = CredentialStatus::Connected;
                    self.status = Some(CredentialStatus::Suspended);
                    self.last_error = Some(suspension.reason.clone());
                }
            }
            E::TokenRefreshed {
                token,
                expires_at,
                at,
            } => {
                self.token = Some(token.clone());
                self.token_expires_at = *expires_at;
                self.last_refresh_at = Some(*at);
                self.refresh_failures = 0;
                self.last_refresh_failure_at = None;
                self.last_error = None;
            }
            E::TokenRefreshFailed { attempt, error, at } => {
                self.refresh_failures = *attempt;
                self.last_refresh_failure_at = Some(*at);
                self.last_error = Some(format!("token refresh failed: {error}"));
            }
            E::CredentialDisconnected { reason, .. } => {
                self.status = Some(CredentialStatus::Disconnected);
                self.last_error = Some(reason.clone());
                // A suspension still stands, over a credential that must sign up again.
                if let Some(suspension) = &mut self.suspension {
                    suspension.status_before = CredentialStatus::Disconnected;
                }
            }
            E::CredentialSuspended {
                cause,
                reason,
                restrictions,
                until,
                ..
            } => {
                let status_before = match &self.suspension {
                    Some(earlier) => earlier.status_before,
                    None => self.status.unwrap_or(CredentialStatus::Pending),
                };
                self.suspension = Some(Suspension {
                    cause: *cause,
                    reason: reason.clone(),
                    restrictions: restrictions.clone(),
                    until: *until,
                    status_before,
                });
                self.status = Some(CredentialStatus::Suspended);
                self.last_error = Some(reason.clone());
            }
            E::CredentialReinstated { cause, status, .. } => {
                if self.suspension.as_ref().is_some_and(|s| s.cause == *cause) {
                    self.suspension = None;
                    self.status = Some(*status);
                    self.last_error = None;
                }
            }
            E::SecretsResealed { token, pin, .. } => {
                self.token = Some(token.clone());
                if let Some(pin) = pin {
                    self.pin = Some(pin.clone());
                }
            }
        }
    }

    /// Folds a recorded event of the stream in (others are ignored).
    pub fn apply_recorded(&mut self, event: &RecordedEvent) {
        if let Ok(Some(credential)) = CredentialEvent::from_recorded(event) {
            self.apply(&credential);
        }
        self.version = Some(event.version);
    }

    /// Checks a `state` presented with a signup's result for this business at `now`, and
    /// returns what it was issued with.
    pub fn check_state(
        &self,
        business_id: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<&IssuedState, StateRefusal> {
        if state_business(state).is_some_and(|b| b != business_id) {
            return Err(StateRefusal::OtherBusiness);
        }
        let digest = state_digest(state);
        let issued = self
            .states
            .iter()
            .find(|s| s.sha256 == digest)
            .ok_or(StateRefusal::Unknown)?;
        if issued.used {
            return Err(StateRefusal::Used);
        }
        if now >= issued.expires_at {
            return Err(StateRefusal::Expired(issued.expires_at));
        }
        Ok(issued)
    }

    /// Whether the credential is connected: onboarded and not disconnected, whether or not
    /// Meta suspended some kinds of messages (its token is kept fresh all the same).
    pub fn is_connected(&self) -> bool {
        match self.status {
            Some(CredentialStatus::Connected) => true,
            Some(CredentialStatus::Suspended) => self
                .suspension
                .as_ref()
                .is_some_and(|s| s.status_before == CredentialStatus::Connected),
            _ => false,
        }
    }

    /// Why a message (a template, or not) may not go out through this credential at `now`:
    /// Meta restricted or disabled the account. `None` when nothing stops it here.
    pub fn refuses(&self, template: bool, now: DateTime<Utc>) -> Option<String> {
        let suspension = self.suspension.as_ref()?;
        crate::standing::stops(&suspension.restrictions, suspension.until, template, now).then(
            || {
                format!(
                    "not sent: {}; the {} cannot go out through this account until Meta lifts it",
                    suspension.reason,
                    if template { "template" } else { "reply" }
                )
            },
        )
    }

    /// What an `account_update` that reports `standing` changes, as the event to record:
    /// nothing when the credential already stands so, when a restriction already ended, or
    /// when a restriction would hide a disabling (which only its reinstatement lifts).
    pub fn standing_change(
        &self,
        waba_id: &str,
        standing: crate::standing::AccountStanding,
        notice: Uuid,
        at: DateTime<Utc>,
    ) -> Option<CredentialEvent> {
        use crate::standing::AccountStanding;
        match standing {
            AccountStanding::Suspended {
                cause,
                reason,
                restrictions,
                until,
            } => {
                if until.is_some_and(|until| until <= at) {
                    return None;
                }
                if let Some(current) = &self.suspension {
                    let same = current.cause == cause
                        && current.restrictions == restrictions
                        && current.until == until;
                    let hides_disabling = current.cause == SuspensionCause::Disabled
                        && cause == SuspensionCause::Restriction;
                    if same || hides_disabling {
                        return None;
                    }
                }
                Some(CredentialEvent::CredentialSuspended {
                    waba_id: waba_id.to_owned(),
                    cause,
                    reason,
                    restrictions,
                    until,
                    notice,
                    at,
                })
            }
            AccountStanding::Lifted { cause, reason } => {
                let current = self.suspension.as_ref().filter(|s| s.cause == cause)?;
                Some(CredentialEvent::CredentialReinstated {
                    waba_id: waba_id.to_owned(),
                    cause,
                    reason,
                    status: current.status_before,
                    notice,
                    at,
                })
            }
        }
    }

    /// When the token should be refreshed, given the margin before expiry and the wait
    /// between failed attempts; `None` when it never expires or is not in use.
    pub fn refresh_due(
        &self,
        margin: chrono::Duration,
        retry_every: chrono::Duration,
    ) -> Option<DateTime<Utc>> {
        if !self.is_connected() || self.token.is_none() {
            return None;
        }
        use crate::time::{earlier, later};
        let mut due = earlier(self.token_expires_at?, margin);
        // A renewal that came back still inside the margin is not repeated at once.
        if let Some(last) = self.last_refresh_at {
            due = due.max(later(last, retry_every));
        }
        if let Some(failed) = self.last_refresh_failure_at {
            due = due.max(later(failed, retry_every));
        }
        Some(due)
    }
}
