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

impl Credential {
    pub(super) fn from_row(row: &DbRow) -> Self {
        let status = row.text(6).unwrap_or_default();
        Credential {
            business_id: ID(row.text(0).unwrap_or_default()),
            waba_id: row.text(1).unwrap_or_default(),
            phone_number_id: row.text(2).unwrap_or_default(),
            display_phone_number: row.text(3),
            channel: row.text(4),
            api_provider: row.text(5).unwrap_or_default(),
            needs_reauthorisation: status == "disconnected",
            status,
            token_expires_at: row.time(7),
            connected_at: row.time(8),
            last_refreshed_at: row.time(9),
            refresh_failures: row.i64(10).unwrap_or(0) as i32,
            last_error: row.text(11),
            integration: row.text(12),
            updated_at: row.time(13).unwrap_or_default(),
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
