use super::*;

/// `customers`: each customer per stakeholder, their context and every chat they had.
pub struct Customers;

#[async_trait]
impl Projector for Customers {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["customers"]
    }

    fn wants(&self, event_type: &str) -> bool {
        matches!(
            event_type,
            "ChatOpened" | "PersonalDataErased" | "MessageReceived" | "ContextChanged"
        )
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE customers{s} (
                stakeholder TEXT NOT NULL,
                customer TEXT NOT NULL,
                channel TEXT NOT NULL,
                stream TEXT NOT NULL,
                name TEXT,
                context TEXT NOT NULL,
                chat_ids TEXT NOT NULL,
                first_seen_at TEXT NOT NULL,
                position BIGINT NOT NULL,
                PRIMARY KEY (stakeholder, customer)
            )"
            ),
            format!("CREATE INDEX customers{s}_by_stream ON customers{s} (stream)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        match conversation_event(event)? {
            Some(ConversationEvent::ChatOpened {
                chat_id,
                conversation,
                context,
                opened_at,
                ..
            }) => {
                // The chat joins the customer's list (a JSON array of ids, in order) unless it
                // is there already, written without reading the row back.
                let quoted = Value::String(chat_id.to_string()).to_string();
                tx.execute(
                    &format!(
                        "INSERT INTO customers{s} (stakeholder, customer, channel, stream, context, chat_ids, first_seen_at, position)
                         VALUES ($1, $2, $3, $8, $4, '[' || $5 || ']', $6, $7)
                         ON CONFLICT (stakeholder, customer) DO UPDATE SET context = $4, position = $7,
                            chat_ids = CASE
                                WHEN customers{s}.chat_ids LIKE '%' || $5 || '%' THEN customers{s}.chat_ids
                                WHEN customers{s}.chat_ids = '[]' THEN '[' || $5 || ']'
                                ELSE substr(customers{s}.chat_ids, 1, length(customers{s}.chat_ids) - 1) || ',' || $5 || ']'
                            END"
                    ),
                    &[
                        (&conversation.stakeholder).into(),
                        customer_id(&conversation.customer).into(),
                        (&conversation.channel).into(),
                        context.to_string().into(),
                        quoted.into(),
                        opened_at.into(),
                        event.position.into(),
                        (&event.stream).into(),
                    ],
                )
                .await?;
            }
            Some(ConversationEvent::PersonalDataErased { .. }) => {
                tx.execute(
                    &format!(
                        "UPDATE customers{s} SET name = $2 WHERE stream = $1 AND name IS NOT NULL"
                    ),
                    &[(&event.stream).into(), ERASED.into()],
                )
                .await?;
            }
            Some(ConversationEvent::MessageReceived { message, .. }) => {
                if let Some(name) = &message.customer.name {
                    tx.execute(
                        &format!("UPDATE customers{s} SET name = $2 WHERE stream = $1"),
                        &[(&event.stream).into(), name.into()],
                    )
                    .await?;
                }
            }
            Some(ConversationEvent::ContextChanged {
                conversation,
                context,
                changed_at,
                ..
            }) => {
                // A context may arrive before the customer's first chat.
                tx.execute(
                    &format!(
                        "INSERT INTO customers{s} (stakeholder, customer, channel, stream, context, chat_ids, first_seen_at, position)
                         VALUES ($1, $2, $3, $4, $5, '[]', $6, $7)
                         ON CONFLICT (stakeholder, customer) DO UPDATE SET context = $5, position = $7"
                    ),
                    &[
                        (&conversation.stakeholder).into(),
                        customer_id(&conversation.customer).into(),
                        (&conversation.channel).into(),
                        (&event.stream).into(),
                        context.to_string().into(),
                        changed_at.into(),
                        event.position.into(),
                    ],
                )
                .await?;
            }
            // Other events do not change these tables.
            _ => {}
        }
        Ok(())
    }
}

/// A customer of a stakeholder as `customers` keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub customer: String,
    pub stakeholder: String,
    pub name: Option<String>,
    pub context: Value,
}

/// The customer `customer` (their key) of `stakeholder`, if known.
pub async fn customer(
    db: &crate::read_db::ReadDb,
    stakeholder: &str,
    customer: &str,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    let row = db
        .fetch_optional(
            "SELECT customer, stakeholder, name, context FROM customers WHERE stakeholder = $1 AND customer = $2",
            &[stakeholder.into(), customer.into()],
        )
        .await?;
    Ok(row.map(|row| CustomerRow {
        customer: row.text(0).unwrap_or_default(),
        stakeholder: row.text(1).unwrap_or_default(),
        name: row.text(2),
        context: row.json(3).unwrap_or(Value::Object(Default::default())),
    }))
}
