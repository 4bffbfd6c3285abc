//! A customer's consent over GraphQL: where it stands, its history, and an executive's
//! change.

use super::*;

/// Where one category of a customer's consent stands.
#[derive(SimpleObject, Clone, Debug)]
pub struct ConsentState {
    /// `service` or `marketing`.
    pub category: String,
    pub granted: bool,
    /// How: `keyword`, `user_preferences`, `form`, `agent`, `api`.
    pub method: String,
    pub at: DateTime<Utc>,
}

/// One change of a customer's consent.
#[derive(SimpleObject, Clone, Debug)]
pub struct ConsentChange {
    pub granted: bool,
    pub categories: Vec<String>,
    pub method: String,
    pub wording_version: Option<String>,
    /// The message or submission that shows it.
    pub evidence: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
    /// The change in words, as `chatledger consent` prints it.
    pub summary: String,
}

impl ConsentChange {
    /// As the log records it (for its words).
    fn recorded(&self) -> Option<chatledger_core::consent::ConsentEvent> {
        use chatledger_core::consent::{ConsentChange as Change, ConsentEvent};
        let change = Change {
            categories: serde_json::from_value(serde_json::json!(self.categories)).ok()?,
            method: serde_json::from_value(serde_json::json!(self.method)).ok()?,
            wording_version: self.wording_version.clone(),
            evidence: self.evidence.clone(),
            actor: self.actor.clone(),
            at: self.at,
        };
        Some(if self.granted {
            ConsentEvent::ConsentGranted(change)
        } else {
            ConsentEvent::ConsentWithdrawn(change)
        })
    }
}

pub(super) async fn consent_history(
    ctx: &Context<'_>,
    customer: &str,
) -> Result<Vec<ConsentChange>, Error> {
    let rows = chatledger_projections::read_models::consent::history_of(
        &state(ctx).read_side.db,
        customer,
        500,
    )
    .await
    .map_err(internal)?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut change = ConsentChange {
                granted: row.granted,
                categories: row.categories,
                method: row.method,
                wording_version: row.wording_version,
                evidence: row.evidence,
                actor: row.actor,
                at: row.at,
                summary: String::new(),
            };
            change.summary = change.recorded().map(|e| e.in_words()).unwrap_or_default();
            change
        })
        .collect())
}

/// The customer a number names, in any common shape (or a WhatsApp user id).
fn customer_ref(state: &AppState, number: &str) -> chatledger_core::conversation::CustomerKey {
    use chatledger_core::conversation::CustomerKey;
    match state.whatsapp.phones.any(number) {
        Some(phone) => CustomerKey::Phone(phone),
        None => CustomerKey::UserId(number.trim().to_owned()),
    }
}

/// A customer's consent as the log holds it now ([`AppState::consent_of`]).
pub(super) async fn customer_consent(
    ctx: &Context<'_>,
    customer: &str,
) -> Result<chatledger_core::consent::Consent, Error> {
    let key = customer_ref(state(ctx), customer);
    state(ctx).consent_of(&key).await.map_err(internal)
}

/// Records consent as an executive took it (see `Mutation::set_consent`).
pub(super) async fn set_consent(
    ctx: &Context<'_>,
    customer_number: String,
    category: String,
    granted: bool,
    reason: String,
    wording_version: Option<String>,
) -> Result<Vec<ConsentState>, Error> {
    use chatledger_core::consent::{consent_stream, Category, ConsentChange, Method};
    let viewer = changer(ctx)?.clone();
    let category = match category.to_ascii_lowercase().as_str() {
        "marketing" => Category::Marketing,
        "service" => Category::Service,
        other => {
            return Err(coded(
                format!("category {other:?} is not one of marketing, service"),
                "BAD_USER_INPUT",
            ))
        }
    };
    if reason.trim().is_empty() {
        return Err(coded("a consent change needs its reason", "BAD_USER_INPUT"));
    }
    let consent = customer_consent(ctx, &customer_number).await?;
    let key = customer_ref(state(ctx), &customer_number);
    let change = ConsentChange {
        categories: vec![category],
        method: Method::Agent,
        wording_version,
        evidence: Some(reason),
        actor: viewer
            .executive_id
            .as_deref()
            .map_or("admin".to_owned(), |id| format!("executive:{id}")),
        at: state(ctx).clock.now(),
    };
    let mut standing = consent.clone();
    if let Some(event) = consent.decide(granted, change) {
        let stream = consent_stream(&key);
        state(ctx)
            .store
            .append(
                &stream,
                ExpectedVersion::Any,
                vec![event.to_new_event(&stream, Metadata::by(viewer.name.clone()))],
            )
            .await
            .map_err(internal)?;
        standing.evolve(&event);
    }
    Ok(standing
        .categories
        .iter()
        .map(|(category, s)| ConsentState {
            category: category.as_str().to_owned(),
            granted: s.granted,
            method: serde_json::to_value(s.method)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            at: s.at,
        })
        .collect())
}
