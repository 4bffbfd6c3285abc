//! Businesses' official credentials, as the dashboard shows them.

use super::*;

/// A business's official WhatsApp credential, as the dashboard shows it (never the token).
#[derive(SimpleObject, Clone, Debug)]
pub struct Credential {
    pub(super) business_id: ID,
    pub(super) waba_id: String,
    pub(super) phone_number_id: String,
    /// The number as WhatsApp shows it, once onboarding read it.
    pub(super) display_phone_number: Option<String>,
    /// The channel its webhooks route to.
    pub(super) channel: Option<String>,
    /// `meta`, or the BSP the Graph API is reached through.
    pub(super) api_provider: String,
    /// `pending`, `connected`, `disconnected` or `suspended`.
    pub(super) status: String,
    pub(super) token_expires_at: Option<DateTime<Utc>>,
    pub(super) connected_at: Option<DateTime<Utc>>,
    pub(super) last_refreshed_at: Option<DateTime<Utc>>,
    /// Failed renewals since the last success.
    pub(super) refresh_failures: i32,
    /// What went wrong last (a failed step, a failed renewal, a refused token).
    pub(super) last_error: Option<String>,
    /// True when the business must run Embedded Signup again.
    pub(super) needs_reauthorisation: bool,
    /// The business's integration choice: `official`, `unofficial`, or none yet.
    pub(super) integration: Option<String>,
    pub(super) updated_at: DateTime<Utc>,
}

impl From<read_models::credentials::CredentialRow> for Credential {
    fn from(row: read_models::credentials::CredentialRow) -> Self {
        Credential {
            business_id: ID(row.business_id),
            waba_id: row.waba_id,
            phone_number_id: row.phone_number_id,
            display_phone_number: row.display_phone_number,
            channel: row.channel_key,
            api_provider: row.api_provider,
            needs_reauthorisation: row.status == "disconnected",
            status: row.status,
            token_expires_at: row.token_expires_at,
            connected_at: row.connected_at,
            last_refreshed_at: row.last_refresh_at,
            refresh_failures: row.refresh_failures as i32,
            last_error: row.last_error,
            integration: row.integration,
            updated_at: row.updated_at,
        }
    }
}

/// A started Embedded Signup: pass `state` through the flow to the callback.
#[derive(SimpleObject, Clone, Debug)]
pub struct OfficialSignup {
    pub(super) business_id: ID,
    /// One-time, bound to the business; good until `expiresAt`.
    pub(super) state: String,
    pub(super) expires_at: DateTime<Utc>,
    /// The Meta app the frontend's `FB.init` uses.
    pub(super) app_id: String,
}
