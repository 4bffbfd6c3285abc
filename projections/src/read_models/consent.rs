use chatledger_core::consent::ConsentEvent;

use super::*;

/// `consent_changes`: every change of every customer's consent, in order (the current
/// standing of a category is its latest change).
pub struct Consents;

#[async_trait]
impl Projector for Consents {
    fn name(&self) -> &'static str {
        "consent"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["consent_changes"]
    }

    fn wants(&self, event_type: &str) -> bool {
        ConsentEvent::TYPES.contains(&event_type)
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE consent_changes{s} (
                    position BIGINT PRIMARY KEY,
                    customer TEXT NOT NULL,
                    granted BIGINT NOT NULL,
                    categories TEXT NOT NULL,
                    method TEXT NOT NULL,
                    wording_version TEXT,
                    evidence TEXT,
                    actor TEXT NOT NULL,
                    at TEXT NOT NULL
                )"
        )]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![format!("CREATE INDEX consent_changes{s}_by_customer ON consent_changes{s} (customer, position)")]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(decoded) = ConsentEvent::from_recorded(event) else {
            return Ok(());
        };
        let consent = decoded.map_err(|e| ProjectionError::Event {
            position: event.position,
            reason: e.to_string(),
        })?;
        let change = consent.change();
        let customer = event
            .stream
            .strip_prefix("consent-")
            .unwrap_or(&event.stream);
        let categories: Vec<&str> = change.categories.iter().map(|c| c.as_str()).collect();
        tx.execute(
            &format!(
                "INSERT INTO consent_changes{s} (position, customer, granted, categories, method, wording_version, evidence, actor, at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (position) DO NOTHING"
            ),
            &[
                event.position.into(),
                customer.into(),
                i64::from(matches!(consent, ConsentEvent::ConsentGranted(_))).into(),
                categories.join(",").into(),
                serde_json::to_value(change.method)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .into(),
                change.wording_version.clone().into(),
                change.evidence.clone().into(),
                (&change.actor).into(),
                change.at.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// One change as `consent_changes` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentChangeRow {
    pub granted: bool,
    pub categories: Vec<String>,
    pub method: String,
    pub wording_version: Option<String>,
    pub evidence: Option<String>,
    pub actor: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A customer's changes, in the order they were recorded (at most `limit`).
pub async fn history_of(
    db: &crate::read_db::ReadDb,
    customer: &str,
    limit: usize,
) -> Result<Vec<ConsentChangeRow>, sqlx::Error> {
    let rows = db
        .fetch_all(
            &format!(
                "SELECT granted, categories, method, wording_version, evidence, actor, at
                 FROM consent_changes WHERE customer = $1 ORDER BY position LIMIT {limit}"
            ),
            &[customer.into()],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ConsentChangeRow {
            granted: row.i64(0) == Some(1),
            categories: row
                .text(1)
                .unwrap_or_default()
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            method: row.text(2).unwrap_or_default(),
            wording_version: row.text(3),
            evidence: row.text(4),
            actor: row.text(5).unwrap_or_default(),
            at: row.time(6).unwrap_or_default(),
        })
        .collect())
}
