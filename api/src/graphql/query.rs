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
        let mut page = read_models::chats::ChatsFilter::default();
        if let Some(stakeholder) = &filter.stakeholder {
            let stakeholder = stakeholder_name(stakeholder);
            if !viewer.sees_stakeholder(&stakeholder) {
                return Err(coded(
                    format!("you do not work {stakeholder} chats"),
                    "FORBIDDEN",
                ));
            }
            page.stakeholders = Some(vec![stakeholder]);
        } else if !viewer.role.sees_everything() {
            page.stakeholders = Some(viewer.stakeholders.to_vec());
        }
        page.status = filter.status.map(CoreChatStatus::from);
        page.assigned_to = filter.assigned_to.map(|id| id.0);
        page.tag = filter.tag;
        page.customer = filter.customer_number.map(|n| customer_key(state, &n));
        page.before_position = cursor(after.as_deref())?;
        let rows = read_models::chats::chats_page(&state.read_side.db, &page, first + 1)
            .await
            .map_err(internal)?;
        let mut nodes: Vec<Chat> = rows.into_iter().map(Chat::from).collect();
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
        let Some(stream) = read_models::chats::place_of(&state.read_side.db, chat_id.as_str())
            .await
            .map_err(internal)?
            .map(|place| place.stream)
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
        let rows = read_models::chats::sla_board(
            &state(ctx).read_side.db,
            stakeholder.as_deref(),
            MAX_PAGE.into(),
        )
        .await
        .map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(Chat::from)
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
        let rows = read_models::credentials::credentials(
            &state(ctx).read_side.db,
            business_id.as_ref().map(|id| id.as_str()),
        )
        .await
        .map_err(internal)?;
        Ok(rows.into_iter().map(Credential::from).collect())
    }

    /// Who is asking.
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<Executive>, Error> {
        match &viewer(ctx)?.executive_id {
            Some(id) => Executive::load(ctx, id).await,
            None => Ok(None),
        }
    }
}
