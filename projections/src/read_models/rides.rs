use super::*;

/// `rides`: each booking's latest state, by customer.
pub struct Rides;

#[async_trait]
impl Projector for Rides {
    fn name(&self) -> &'static str {
        "rides"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rides"]
    }

    fn wants(&self, event_type: &str) -> bool {
        BookingChange::from_event_type(event_type).is_some()
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE rides{s} (
                    booking_id TEXT PRIMARY KEY,
                    customer TEXT NOT NULL,
                    ride_at TEXT NOT NULL,
                    status TEXT NOT NULL,
                    cancelled BIGINT NOT NULL DEFAULT 0,
                    position BIGINT NOT NULL
                )"
        )]
    }

    fn query_indexes(&self, s: &str) -> Vec<String> {
        vec![format!(
            "CREATE INDEX rides{s}_by_customer ON rides{s} (customer, ride_at)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        let Some(change) = BookingChange::from_event_type(&event.event_type) else {
            return Ok(());
        };
        let booking: Booking =
            serde_json::from_value(event.data.clone()).map_err(|e| ProjectionError::Event {
                position: event.position,
                reason: e.to_string(),
            })?;
        let cancelled = i64::from(change == BookingChange::Cancelled);
        tx.execute(
            &format!(
                "INSERT INTO rides{s} (booking_id, customer, ride_at, status, cancelled, position)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (booking_id) DO UPDATE SET customer = $2, ride_at = $3, status = $4, cancelled = $5, position = $6"
            ),
            &[
                booking.booking_id.into(),
                booking.customer.into(),
                booking.ride_at.into(),
                booking.ride_status.into(),
                cancelled.into(),
                event.position.into(),
            ],
        )
        .await?;
        Ok(())
    }
}

/// A ride as `rides` keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct RideRow {
    pub booking_id: String,
    pub ride_at: chrono::DateTime<chrono::Utc>,
    pub status: String,
}

async fn rides_where(
    db: &crate::read_db::ReadDb,
    condition: &str,
    args: &[Arg],
) -> Result<Vec<RideRow>, sqlx::Error> {
    let rows = db
        .fetch_all(
            &format!("SELECT booking_id, ride_at, status FROM rides {condition}"),
            args,
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| RideRow {
            booking_id: row.text(0).unwrap_or_default(),
            ride_at: row.time(1).unwrap_or_default(),
            status: row.text(2).unwrap_or_default(),
        })
        .collect())
}

/// Every ride of a customer, by ride time (the first 200).
pub async fn rides_of(
    db: &crate::read_db::ReadDb,
    customer: &str,
) -> Result<Vec<RideRow>, sqlx::Error> {
    rides_where(
        db,
        "WHERE customer = $1 ORDER BY ride_at LIMIT 200",
        &[customer.into()],
    )
    .await
}

/// A customer's rides from `now` on, soonest first, cancelled ones left out (the first 20).
pub async fn upcoming_rides_of(
    db: &crate::read_db::ReadDb,
    customer: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RideRow>, sqlx::Error> {
    rides_where(
        db,
        "WHERE customer = $1 AND cancelled = 0 AND ride_at >= $2 ORDER BY ride_at LIMIT 20",
        &[customer.into(), now.into()],
    )
    .await
}
