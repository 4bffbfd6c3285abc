use chatledger_core::credential::{BusinessEvent, CredentialEvent, CredentialStatus};
use chatledger_core::RecordedEvent;

use super::*;

/// `credentials` (one row per business with a credential stream) and `businesses` (each
/// business's integration choice).
pub struct Credentials;

fn unreadable(event: &RecordedEvent) -> impl Fn(serde_json::Error) -> ProjectionError + '_ {
    move |e| ProjectionError::Event {
        position: event.position,
        reason: e.to_string(),
    }
}

#[async_trait]
impl Projector for Credentials {
    fn name(&self) -> &'static str {
        "credentials"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["credentials", "businesses"]
    }

    fn wants(&self, event_type: &str) -> bool {
        BusinessEvent::TYPES.contains(&event_type) || CredentialEvent::TYPES.contains(&event_type)
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE credentials{s} (
                    business_id TEXT PRIMARY KEY,
                    status TEXT NOT NULL,
                    waba_id TEXT NOT NULL DEFAULT '',
                    phone_number_id TEXT NOT NULL DEFAULT '',
                    display_phone_number TEXT,
                    channel_key TEXT,
                    api_provider TEXT NOT NULL DEFAULT '',
                    token_expires_at TEXT,
                    pending_token_expires_at TEXT,
                    connected_at TEXT,
                    last_refresh_at TEXT,
                    refresh_failures BIGINT NOT NULL DEFAULT 0,
                    last_error TEXT,
                    updated_at TEXT NOT NULL,
                    position BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE businesses{s} (
                    business_id TEXT PRIMARY KEY,
                    integration TEXT NOT NULL,
                    chosen_by TEXT NOT NULL,
                    chosen_at TEXT NOT NULL
                )"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        if let Some(business) = event.stream.strip_prefix("business-") {
            if let Some(BusinessEvent::IntegrationChosen { kind, by, at, .. }) =
                BusinessEvent::from_recorded(event).map_err(unreadable(event))?
            {
                tx.execute(
                    &format!(
                        "INSERT INTO businesses{s} (business_id, integration, chosen_by, chosen_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (business_id) DO UPDATE SET integration = $2, chosen_by = $3, chosen_at = $4"
                    ),
                    &[business.into(), kind.as_str().into(), by.into(), at.into()],
                )
                .await?;
            }
            return Ok(());
        }
        let Some(business) = event.stream.strip_prefix("credential-") else {
            return Ok(());
        };
        let Some(credential) = CredentialEvent::from_recorded(event).map_err(unreadable(event))?
        else {
            return Ok(());
        };
        tx.execute(
            &format!(
                "INSERT INTO credentials{s} (business_id, status, updated_at, position) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (business_id) DO UPDATE SET updated_at = $3, position = $4"
            ),
            &[
                business.into(),
                CredentialStatus::Pending.as_str().into(),
                event.recorded_at.into(),
                event.position.into(),
            ],
        )
        .await?;
        use CredentialEvent as E;
        let (sql, args): (&str, Vec<crate::read_db::Arg>) = match credential {
            E::OfficialSignupStarted { .. } | E::AppSubscribed { .. } | E::NumberRegistered { .. } | E::SecretsResealed { .. } => {
                return Ok(())
            }
            E::OnboardingAttempted { waba_id, phone_number_id, api_provider, .. } => (
                "UPDATE credentials{s} SET waba_id = $2, phone_number_id = $3, api_provider = $4
                 WHERE business_id = $1 AND status <> 'connected'",
                vec![waba_id.into(), phone_number_id.into(), api_provider.into()],
            ),
            E::OnboardingStepFailed { step, error, .. } => (
                "UPDATE credentials{s} SET last_error = $2 WHERE business_id = $1",
                vec![format!("{} failed: {error}", step.as_str()).into()],
            ),
            E::TokenIssued { expires_at, .. } => (
                "UPDATE credentials{s} SET pending_token_expires_at = $2 WHERE business_id = $1",
                vec![expires_at.into()],
            ),
            E::CredentialConnected { waba_id, phone_number_id, display_phone_number, channel_key, at, .. } => (
                "UPDATE credentials{s} SET status = 'connected', waba_id = $2, phone_number_id = $3,
                    display_phone_number = $4, channel_key = $5, connected_at = $6,
                    token_expires_at = pending_token_expires_at, pending_token_expires_at = NULL,
                    refresh_failures = 0, last_error = NULL
                 WHERE business_id = $1",
                vec![waba_id.into(), phone_number_id.into(), display_phone_number.into(), channel_key.into(), at.into()],
            ),
            E::TokenRefreshed { expires_at, at, .. } => (
                "UPDATE credentials{s} SET token_expires_at = $2, last_refresh_at = $3, refresh_failures = 0,
                    last_error = NULL WHERE business_id = $1",
                vec![expires_at.into(), at.into()],
            ),
            E::TokenRefreshFailed { attempt, error, .. } => (
                "UPDATE credentials{s} SET refresh_failures = $2, last_error = $3 WHERE business_id = $1",
                vec![i64::from(attempt).into(), format!("token refresh failed: {error}").into()],
            ),
            E::CredentialDisconnected { reason, .. } => (
                "UPDATE credentials{s} SET status = 'disconnected', last_error = $2 WHERE business_id = $1",
                vec![reason.into()],
            ),
            E::CredentialSuspended { reason, .. } => (
                "UPDATE credentials{s} SET status = 'suspended', last_error = $2 WHERE business_id = $1",
                vec![reason.into()],
            ),
            E::CredentialReinstated { status, .. } => (
                "UPDATE credentials{s} SET status = $2, last_error = NULL WHERE business_id = $1",
                vec![status.as_str().into()],
            ),
        };
        let mut all = vec![business.into()];
        all.extend(args);
        tx.execute(&sql.replace("{s}", s), &all).await?;
        Ok(())
    }
}

/// A business's credential as `credentials` keeps it, with the business's integration choice
/// from `businesses`. Never a token.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialRow {
    pub business_id: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub display_phone_number: Option<String>,
    pub channel_key: Option<String>,
    pub api_provider: String,
    /// `pending`, `connected`, `disconnected` or `suspended`.
    pub status: String,
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub connected_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_refresh_at: Option<chrono::DateTime<chrono::Utc>>,
    pub refresh_failures: i64,
    pub last_error: Option<String>,
    /// `official`, `unofficial`, or none chosen yet.
    pub integration: Option<String>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Every business's credential (or one business's), by business id.
pub async fn credentials(
    db: &crate::read_db::ReadDb,
    business_id: Option<&str>,
) -> Result<Vec<CredentialRow>, sqlx::Error> {
    let (condition, args) = match business_id {
        Some(id) => ("WHERE c.business_id = $1", vec![Arg::from(id)]),
        None => ("", vec![]),
    };
    let rows = db
        .fetch_all(
            &format!(
                "SELECT c.business_id, c.waba_id, c.phone_number_id, c.display_phone_number, c.channel_key,
                        c.api_provider, c.status, c.token_expires_at, c.connected_at, c.last_refresh_at,
                        c.refresh_failures, c.last_error, b.integration, c.updated_at
                 FROM credentials c LEFT JOIN businesses b ON b.business_id = c.business_id
                 {condition} ORDER BY c.business_id"
            ),
            &args,
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| CredentialRow {
            business_id: row.text(0).unwrap_or_default(),
            waba_id: row.text(1).unwrap_or_default(),
            phone_number_id: row.text(2).unwrap_or_default(),
            display_phone_number: row.text(3),
            channel_key: row.text(4),
            api_provider: row.text(5).unwrap_or_default(),
            status: row.text(6).unwrap_or_default(),
            token_expires_at: row.time(7),
            connected_at: row.time(8),
            last_refresh_at: row.time(9),
            refresh_failures: row.i64(10).unwrap_or(0),
            last_error: row.text(11),
            integration: row.text(12),
            updated_at: row.time(13).unwrap_or_default(),
        })
        .collect())
}
