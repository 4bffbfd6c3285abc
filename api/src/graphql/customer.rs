//! A customer with every chat they had, their SLA and their rides.

use super::*;

/// A customer of one stakeholder, with every chat they had (their context history).
pub struct Customer {
    pub(super) number: String,
    pub(super) stakeholder: String,
    pub(super) name: Option<String>,
    pub(super) context: Value,
}

#[Object]
impl Customer {
    async fn number(&self) -> &str {
        &self.number
    }
    async fn stakeholder(&self) -> &str {
        &self.stakeholder
    }
    async fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    async fn context(&self) -> Json<Value> {
        Json(self.context.clone())
    }
    /// Every ride of the customer, by ride time.
    async fn rides(&self, ctx: &Context<'_>) -> Result<Vec<Ride>, Error> {
        let rows = chatledger_projections::read_models::rides::rides_of(
            &state(ctx).read_side.db,
            &self.number,
        )
        .await
        .map_err(internal)?;
        Ok(rows.into_iter().map(Ride::from).collect())
    }
    /// Where each category of the customer's consent stands (its latest change); a category
    /// never changed is not listed.
    async fn consent(&self, ctx: &Context<'_>) -> Result<Vec<ConsentState>, Error> {
        let mut latest: Vec<ConsentState> = Vec::new();
        for change in consent_history(ctx, &self.number).await? {
            for category in &change.categories {
                latest.retain(|s| &s.category != category);
                latest.push(ConsentState {
                    category: category.clone(),
                    granted: change.granted,
                    method: change.method.clone(),
                    at: change.at,
                });
            }
        }
        latest.sort_by(|a, b| a.category.cmp(&b.category));
        Ok(latest)
    }
    /// Every change of the customer's consent, oldest first: what, how, the wording shown,
    /// the evidence, who recorded it and when.
    async fn consent_history(&self, ctx: &Context<'_>) -> Result<Vec<ConsentChange>, Error> {
        consent_history(ctx, &self.number).await
    }
    /// Oldest first.
    async fn chats(&self, ctx: &Context<'_>) -> Result<Vec<Chat>, Error> {
        let rows = read_models::chats::chats_of_customer(
            &state(ctx).read_side.db,
            &self.stakeholder,
            &self.number,
        )
        .await
        .map_err(internal)?;
        Ok(rows.into_iter().map(Chat::from).collect())
    }
}

/// A chat's SLA state.
#[derive(SimpleObject, Default, Clone)]
pub struct Sla {
    /// When the unanswered customer message crosses the next threshold (none when answered).
    pub due_at: Option<DateTime<Utc>>,
    pub alerted_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    /// The SLA policy version the clock is measured against.
    pub policy_version: Option<i32>,
    /// Since when a customer message has been waiting for an answer.
    pub waiting_since: Option<DateTime<Utc>>,
}

/// A ride the transaction system told us about.
#[derive(SimpleObject)]
pub struct Ride {
    pub booking_id: ID,
    pub ride_at: DateTime<Utc>,
    /// The transaction system's status (cancelled rides keep their status, e.g. "cancelled").
    pub status: String,
}

impl From<chatledger_projections::read_models::rides::RideRow> for Ride {
    fn from(row: chatledger_projections::read_models::rides::RideRow) -> Self {
        Ride {
            booking_id: ID(row.booking_id),
            ride_at: row.ride_at,
            status: row.status,
        }
    }
}
