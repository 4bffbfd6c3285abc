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
        self.apply_batch(tx, s, &[event]).await
    }

    /// Folds the batch's changes to each customer in memory (from their row, read once) and
    /// writes every changed row with one statement.
    async fn apply_batch(
        &self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        fold_batch::<CustomersFold>(tx, s, events).await
    }
}

/// A customer's key: their stakeholder, and who they are (see [`customer_id`]).
type Key = (String, String);

/// The customers a batch changes.
#[derive(Default)]
struct CustomersFold {
    rows: crate::rows::Folded<Key, Stored>,
    /// The customers in `rows` by their conversation's stream (what a name comes with).
    by_stream: std::collections::HashMap<String, Vec<Key>>,
    /// Streams whose customers have been read.
    streams_read: std::collections::HashSet<String>,
}

/// A row of `customers` as the table stores it.
#[derive(Debug, Clone)]
struct Stored {
    stakeholder: String,
    customer: String,
    channel: String,
    stream: String,
    name: Option<String>,
    context: String,
    /// A JSON array of chat ids, in the order they opened.
    chat_ids: String,
    first_seen_at: String,
    position: i64,
}

/// The columns of `customers`, in [`Stored::values`]' order; `true` for integers.
const STORED: [crate::rows::Column; 9] = [
    ("stakeholder", false),
    ("customer", false),
    ("channel", false),
    ("stream", false),
    ("name", false),
    ("context", false),
    ("chat_ids", false),
    ("first_seen_at", false),
    ("position", true),
];

impl Stored {
    fn from_row(row: &crate::read_db::DbRow) -> Self {
        let text = |i| row.text(i).unwrap_or_default();
        Stored {
            stakeholder: text(0),
            customer: text(1),
            channel: text(2),
            stream: text(3),
            name: row.text(4),
            context: text(5),
            chat_ids: text(6),
            first_seen_at: text(7),
            position: row.i64(8).unwrap_or_default(),
        }
    }

    fn key(&self) -> Key {
        (self.stakeholder.clone(), self.customer.clone())
    }
}

impl crate::rows::RowValues for Stored {
    fn values(&self) -> Vec<Arg> {
        vec![
            (&self.stakeholder).into(),
            (&self.customer).into(),
            (&self.channel).into(),
            (&self.stream).into(),
            self.name.as_ref().into(),
            (&self.context).into(),
            (&self.chat_ids).into(),
            (&self.first_seen_at).into(),
            self.position.into(),
        ]
    }
}

/// The customer an event opens a chat for or changes the context of.
fn key_of(event: &ConversationEvent) -> Option<Key> {
    match event {
        ConversationEvent::ChatOpened { conversation, .. }
        | ConversationEvent::ContextChanged { conversation, .. } => Some((
            conversation.stakeholder.clone(),
            customer_id(&conversation.customer),
        )),
        _ => None,
    }
}

#[async_trait]
impl BatchFold for CustomersFold {
    /// Reads the rows `events` need that are not in memory yet: the customers they open chats
    /// for or change the context of, and the customers of the streams whose messages bring a
    /// name.
    async fn read(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        events: &[&DecodedEvent],
    ) -> Result<(), ProjectionError> {
        let mut keys: Vec<Value> = Vec::new();
        let mut streams: Vec<Arg> = Vec::new();
        for event in events {
            let Some(change) = conversation_event(event)? else {
                continue;
            };
            if let Some(key) = key_of(change) {
                if self.rows.unread(&key) {
                    keys.push(Value::Array(vec![key.0.into(), key.1.into()]));
                }
            }
            if let ConversationEvent::MessageReceived { message, .. } = change {
                if message.customer.name.is_some() && self.streams_read.insert(event.stream.clone())
                {
                    streams.push((&event.stream).into());
                }
            }
        }
        let columns = |prefix: &str| {
            STORED
                .iter()
                .map(|(name, _)| format!("{prefix}{name}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !keys.is_empty() {
            let count = keys.len();
            let sql = format!(
                "SELECT {} FROM {} JOIN customers{s} c
                    ON c.stakeholder = r.value ->> 0 AND c.customer = r.value ->> 1",
                columns("c."),
                tx.json_rows("$1")
            );
            for row in tx
                .fetch_keys(&sql, Arg::Text(Value::Array(keys).to_string()), count)
                .await?
            {
                self.keep(Stored::from_row(&row));
            }
        }
        if !streams.is_empty() {
            let sql = format!(
                "SELECT {} FROM customers{s} WHERE stream IN ({})",
                columns(""),
                tx.json_texts("$1")
            );
            for row in tx
                .fetch_keys(&sql, crate::rows::json_param(&streams), streams.len())
                .await?
            {
                self.keep(Stored::from_row(&row));
            }
        }
        Ok(())
    }

    /// One event's change to its customer's row.
    fn evolve(&mut self, event: &DecodedEvent, change: &ConversationEvent) {
        match change {
            ConversationEvent::ChatOpened {
                chat_id,
                conversation,
                context,
                opened_at,
                ..
            } => {
                // The chat joins the customer's list (a JSON array of ids, in order) unless it
                // is there already.
                let quoted = Value::String(chat_id.to_string()).to_string();
                let key = key_of(change).unwrap_or_default();
                if let Some(row) = self.rows.change(&key) {
                    row.context = context.to_string();
                    row.position = event.position as i64;
                    if !row.chat_ids.contains(&quoted) {
                        row.chat_ids = match row.chat_ids.strip_suffix(']') {
                            Some("[") | None => format!("[{quoted}]"),
                            Some(listed) => format!("{listed},{quoted}]"),
                        };
                    }
                } else {
                    self.add(Stored {
                        stakeholder: key.0,
                        customer: key.1,
                        channel: conversation.channel.clone(),
                        stream: event.stream.clone(),
                        name: None,
                        context: context.to_string(),
                        chat_ids: format!("[{quoted}]"),
                        first_seen_at: time_text(*opened_at),
                        position: event.position as i64,
                    });
                }
            }
            ConversationEvent::MessageReceived { message, .. } => {
                let Some(name) = &message.customer.name else {
                    return;
                };
                for key in self
                    .by_stream
                    .get(&event.stream)
                    .cloned()
                    .unwrap_or_default()
                {
                    if let Some(row) = self.rows.change(&key) {
                        row.name = Some(name.clone());
                    }
                }
            }
            ConversationEvent::ContextChanged {
                conversation,
                context,
                changed_at,
                ..
            } => {
                // A context may arrive before the customer's first chat.
                let key = key_of(change).unwrap_or_default();
                if let Some(row) = self.rows.change(&key) {
                    row.context = context.to_string();
                    row.position = event.position as i64;
                } else {
                    self.add(Stored {
                        stakeholder: key.0,
                        customer: key.1,
                        channel: conversation.channel.clone(),
                        stream: event.stream.clone(),
                        name: None,
                        context: context.to_string(),
                        chat_ids: "[]".into(),
                        first_seen_at: time_text(*changed_at),
                        position: event.position as i64,
                    });
                }
            }
            // Other events do not change these rows.
            _ => {}
        }
    }

    /// Writes the changed rows (one statement) and starts a new list of changes.
    async fn write(&mut self, tx: &mut ReadTx, s: &str) -> Result<(), ProjectionError> {
        self.rows
            .write_changed(
                tx,
                &format!("customers{s}"),
                &STORED,
                &["stakeholder", "customer"],
            )
            .await?;
        Ok(())
    }

    async fn erase(
        &mut self,
        tx: &mut ReadTx,
        s: &str,
        stream: &str,
    ) -> Result<(), ProjectionError> {
        tx.execute(
            &format!("UPDATE customers{s} SET name = $2 WHERE stream = $1 AND name IS NOT NULL"),
            &[stream.into(), ERASED.into()],
        )
        .await?;
        self.rows.forget(|row| row.stream == stream);
        self.by_stream.remove(stream);
        self.streams_read.remove(stream);
        Ok(())
    }
}

impl CustomersFold {
    /// A customer read from the table (unless they are in memory already).
    fn keep(&mut self, stored: Stored) {
        let key = stored.key();
        if self.rows.get(&key).is_some() {
            return;
        }
        self.by_stream
            .entry(stored.stream.clone())
            .or_default()
            .push(key.clone());
        self.rows.found(key, stored);
    }

    /// A customer first seen in this batch.
    fn add(&mut self, stored: Stored) {
        self.by_stream
            .entry(stored.stream.clone())
            .or_default()
            .push(stored.key());
        self.rows.add(stored.key(), stored);
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
