//! The query root: what the dashboard and auditors read.

use super::*;

/// The customer number as stored: E.164 when it reads as a number, else as given (a user id).
pub(super) fn customer_key(state: &AppState, number: &str) -> String {
    state
        .whatsapp
        .phones
        .any(number)
        .unwrap_or_else(|| number.trim().to_owned())
}

/// A WHERE clause built up with numbered placeholders.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) conditions: Vec<String>,
    pub(super) args: Vec<Arg>,
}

impl Conditions {
    /// Adds an argument and returns its placeholder.
    pub(super) fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    /// Adds a condition whose `?` stands for `arg`.
    pub(super) fn push(&mut self, condition: &str, arg: Arg) {
        let placeholder = self.arg(arg);
        self.conditions.push(condition.replace('?', &placeholder));
    }
}

pub struct Query;

#[Object]
impl Query {
    /// Chats newest first, filtered, a page at a time.
    #[graphql(complexity = "first.unwrap_or(50).max(0) as usize * child_complexity")]
    async fn chats(
        &self,
        ctx: &Context<'_>,
        filter: Option<ChatFilter>,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<ChatConnection, Error> {
        let viewer = viewer(ctx)?;
        let state = state(ctx);
        let first = page_size(first, 50)?;
        let filter = filter.unwrap_or_default();
        let mut q = Conditions::default();
        if let Some(stakeholder) = &filter.stakeholder {
            let stakeholder = &stakeholder_name(stakeholder);
            if !viewer.sees_stakeholder(stakeholder) {
                return Err(coded(
                    format!("you do not work {stakeholder} chats"),
                    "FORBIDDEN",
                ));
            }
            q.push("stakeholder = ?", stakeholder.into());
        } else if !viewer.role.sees_everything() {
            if viewer.stakeholders.is_empty() {
                return Ok(ChatConnection {
                    nodes: vec![],
                    page_info: PageInfo {
                        end_cursor: None,
                        has_next_page: false,
                    },
                });
            }
            let placeholders: Vec<String> = viewer
                .stakeholders
                .iter()
                .map(|s| q.arg(s.into()))
                .collect();
            q.conditions
                .push(format!("stakeholder IN ({})", placeholders.join(", ")));
        }
        if let Some(status) = filter.status {
            q.push("status = ?", status.stored().into());
        }
        if let Some(executive) = &filter.assigned_to {
            q.push("assigned_to = ?", executive.as_str().into());
        }
        if let Some(tag) = &filter.tag {
            if tag == AWAITING_CUSTOMER_TAG {
                q.conditions.push("last_direction = 'OUTBOUND'".to_owned());
            } else {
                q.push(
                    "chat_id IN (SELECT chat_id FROM chat_tags WHERE tag = ?)",
                    tag.into(),
                );
            }
        }
        if let Some(number) = &filter.customer_number {
            q.push("customer = ?", customer_key(state, number).into());
        }
        if let Some(after) = cursor(after.as_deref())? {
            q.push("position < ?", after.into());
        }
        let limit = q.arg((first + 1).into());
        let where_clause = if q.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", q.conditions.join(" AND "))
        };
        let args = q.args;
        let rows = state
            .read_side
            .db
            .fetch_all(&format!("SELECT {CHAT_COLUMNS} FROM chats {where_clause} ORDER BY position DESC LIMIT {limit}"), &args)
            .await
            .map_err(internal)?;
        let mut nodes: Vec<Chat> = rows.iter().map(Chat::from_row).collect();
        let has_next_page = nodes.len() as i64 > first;
        nodes.truncate(first as usize);
        let selected = ctx.look_ahead().field("nodes");
        Chat::prefetch(
            state,
            &mut nodes,
            selected.field("tags").exists(),
            selected.field("assignedTo").exists(),
        )
        .await?;
        Ok(ChatConnection {
            page_info: PageInfo {
                end_cursor: nodes.last().map(|c| c.position.to_string()),
                has_next_page,
            },
            nodes,
        })
    }

    /// One chat, if the viewer may see it.
    async fn chat(&self, ctx: &Context<'_>, chat_id: ID) -> Result<Option<Chat>, Error> {
        let viewer = viewer(ctx)?;
        Ok(load_chat(state(ctx), chat_id.as_str())
            .await?
            .filter(|c| viewer.sees_stakeholder(&c.stakeholder)))
    }

    /// The chat exactly as it stood at `at`: folded from its conversation stream up to that
    /// instant by the same fold the live system decides with. Null when it did not exist yet.
    async fn chat_as_of(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        at: DateTime<Utc>,
    ) -> Result<Option<Chat>, Error> {
        let viewer = viewer(ctx)?;
        let state = state(ctx);
        let Ok(id) = Uuid::parse_str(chat_id.as_str()) else {
            return Err(coded(
                format!("{} is not a chat id", chat_id.as_str()),
                "BAD_USER_INPUT",
            ));
        };
        let Some(stream) = state
            .read_side
            .db
            .fetch_optional(
                "SELECT stream FROM chats WHERE chat_id = $1",
                &[chat_id.as_str().into()],
            )
            .await
            .map_err(internal)?
            .and_then(|row| row.text(0))
        else {
            return Ok(None);
        };
        let policies: Vec<(u64, u64, SlaPolicy)> =
            read_stream_until(state, SLA_POLICY_STREAM, Some(at))
                .await?
                .into_iter()
                .filter(|e| e.event_type == SLA_POLICY_EVENT)
                .filter_map(|e| {
                    serde_json::from_value(e.data.clone())
                        .ok()
                        .map(|p| (e.position, e.version, p))
                })
                .collect();
        let mut fold = ChatAsOf::new(id);
        for recorded in read_stream_until(state, &stream, Some(at)).await? {
            let Some(event) = ConversationEvent::from_recorded(&recorded).map_err(internal)? else {
                continue;
            };
            let policy = policies
                .iter()
                .rev()
                .find(|(position, _, _)| *position < recorded.position)
                .map(|(_, version, policy)| (*version, policy));
            fold.apply(&recorded, &event, policy);
        }
        Ok(fold
            .view()
            .filter(|view| viewer.sees_stakeholder(&view.stakeholder))
            .map(|view| Chat::from_view(view, at)))
    }

    /// A customer of a stakeholder, by number in any common shape (or by user id).
    async fn customer(
        &self,
        ctx: &Context<'_>,
        stakeholder: String,
        number: String,
    ) -> Result<Option<Customer>, Error> {
        let viewer = viewer(ctx)?;
        let stakeholder = stakeholder_name(&stakeholder);
        if !viewer.sees_stakeholder(&stakeholder) {
            return Err(coded(
                format!("you do not work {stakeholder} chats"),
                "FORBIDDEN",
            ));
        }
        let state = state(ctx);
        let key = customer_key(state, &number);
        let row = chatledger_projections::read_models::customers::customer(
            &state.read_side.db,
            &stakeholder,
            &key,
        )
        .await
        .map_err(internal)?;
        Ok(row.map(|row| Customer {
            number: row.customer,
            stakeholder: row.stakeholder,
            name: row.name,
            context: row.context,
        }))
    }

    /// The log itself, for auditors and admins: every event (or one stream's) after a
    /// position, in order.
    #[graphql(complexity = "first.unwrap_or(100).max(0) as usize * child_complexity")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        stream: Option<String>,
        after: Option<i64>,
        #[graphql(default = 100)] first: Option<i32>,
    ) -> Result<EventConnection, Error> {
        let viewer = viewer(ctx)?;
        if !viewer.role.sees_everything() {
            return Err(coded("the log is open to auditors and admins", "FORBIDDEN"));
        }
        let first = page_size(first, 100)? as usize;
        let after = after.unwrap_or(0).max(0) as u64;
        // As stored and hashed: personal data stays sealed.
        let store = state(ctx).personal.stored();
        let mut events = match &stream {
            None => store.read_all(after, first + 1).await.map_err(internal)?,
            Some(stream) => {
                let mut found = Vec::new();
                let mut version = 0;
                while found.len() <= first {
                    let batch = store
                        .read_stream(stream, version, 1000)
                        .await
                        .map_err(internal)?;
                    let Some(last) = batch.last() else { break };
                    version = last.version + 1;
                    found.extend(batch.into_iter().filter(|e| e.position > after));
                }
                found
            }
        };
        let has_next_page = events.len() > first;
        events.truncate(first);
        Ok(EventConnection {
            end_cursor: events.last().map(|e| e.position as i64),
            has_next_page,
            nodes: events.into_iter().map(Event::from).collect(),
        })
    }

    /// Chats whose customer is waiting for an answer, most urgent first.
    async fn sla_board(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<Vec<Chat>, Error> {
        let viewer = viewer(ctx)?;
        if let Some(s) = &stakeholder {
            if !viewer.sees_stakeholder(s) {
                return Err(coded(format!("you do not work {s} chats"), "FORBIDDEN"));
            }
        }
        let columns = CHAT_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = state(ctx)
            .read_side
            .db
            .fetch_all(
                &format!(
                    "SELECT {columns} FROM chats c JOIN sla s ON s.chat_id = c.chat_id
                     WHERE s.running = 1 AND ($1 = '' OR c.stakeholder = $1)
                     ORDER BY s.next_due_at IS NULL, s.next_due_at, s.clock_started_at LIMIT {MAX_PAGE}"
                ),
                &[stakeholder.clone().unwrap_or_default().into()],
            )
            .await
            .map_err(internal)?;
        Ok(rows
            .iter()
            .map(Chat::from_row)
            .filter(|c| viewer.sees_stakeholder(&c.stakeholder))
            .collect())
    }

    /// The tags executives of a stakeholder may apply.
    async fn tag_catalog(
        &self,
        ctx: &Context<'_>,
        stakeholder: String,
    ) -> Result<Vec<String>, Error> {
        let viewer = viewer(ctx)?;
        if !viewer.sees_stakeholder(&stakeholder) {
            return Err(coded(
                format!("you do not work {stakeholder} chats"),
                "FORBIDDEN",
            ));
        }
        Ok(state(ctx).tags.of(&stakeholder))
    }

    /// The executives of a stakeholder (or all the viewer may see), with presence and load.
    async fn executives(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<Vec<Executive>, Error> {
        let viewer = viewer(ctx)?;
        if let Some(s) = &stakeholder {
            if !viewer.sees_stakeholder(s) {
                return Err(coded(format!("you do not work {s} chats"), "FORBIDDEN"));
            }
        }
        let rows = chatledger_projections::read_models::executives::all_executives(
            &state(ctx).read_side.db,
        )
        .await
        .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(Executive::from)
            .filter(|e| e.visible_to(viewer))
            .filter(|e| {
                stakeholder
                    .as_ref()
                    .is_none_or(|s| e.stakeholders.contains(s))
            })
            .collect())
    }

    /// Businesses' official WhatsApp credentials (all, or one business's). Never the token.
    async fn credentials(
        &self,
        ctx: &Context<'_>,
        business_id: Option<ID>,
    ) -> Result<Vec<Credential>, Error> {
        let viewer = viewer(ctx)?;
        if !(viewer.role.sees_everything() || viewer.role == Role::Lead) {
            return Err(coded(
                "credentials are open to leads, admins and auditors",
                "FORBIDDEN",
            ));
        }
        let (condition, args) = match &business_id {
            Some(id) => ("WHERE c.business_id = $1", vec![Arg::from(id.as_str())]),
            None => ("", vec![]),
        };
        let rows = state(ctx)
            .read_side
            .db
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
            .await
            .map_err(internal)?;
        Ok(rows.iter().map(Credential::from_row).collect())
    }

    /// Who is asking.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<Executive>, Error> {
        match &viewer(ctx)?.executive_id {
            Some(id) => Executive::load(ctx, id).await,
            None => Ok(None),
        }
    }
}
