//! Executives as the dashboard sees them, and what admins change about them.

use super::*;

/// Someone who works chats.
#[derive(Clone)]
pub struct Executive {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) role: String,
    pub(super) stakeholders: Vec<String>,
    pub(super) online: bool,
}

impl From<chatledger_projections::read_models::executives::ExecutiveRow> for Executive {
    fn from(row: chatledger_projections::read_models::executives::ExecutiveRow) -> Self {
        Executive {
            id: row.executive_id,
            name: row.name,
            role: row.role,
            stakeholders: row.stakeholders,
            online: row.online,
        }
    }
}

impl Executive {
    pub(super) async fn load_from(state: &AppState, id: &str) -> Result<Option<Executive>, Error> {
        let row =
            chatledger_projections::read_models::executives::executive(&state.read_side.db, id)
                .await
                .map_err(internal)?;
        Ok(row.map(Executive::from))
    }

    pub(super) async fn load(ctx: &Context<'_>, id: &str) -> Result<Option<Executive>, Error> {
        Self::load_from(state(ctx), id).await
    }

    /// The executive as the `/ws` feed shows them.
    pub fn feed_json(&self) -> Value {
        serde_json::json!({"id": self.id, "name": self.name, "online": self.online, "stakeholders": self.stakeholders})
    }

    /// Whether `viewer` may see this executive: they share a stakeholder, or the viewer sees
    /// everything.
    pub(super) fn visible_to(&self, viewer: &Viewer) -> bool {
        viewer.role.sees_everything()
            || self.stakeholders.iter().any(|s| viewer.sees_stakeholder(s))
    }
}

#[Object]
impl Executive {
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn role(&self) -> &str {
        &self.role
    }
    async fn stakeholders(&self) -> &[String] {
        &self.stakeholders
    }
    async fn online(&self) -> bool {
        self.online
    }
    /// Whether they may log in (an admin deactivates and reactivates).
    async fn active(&self, ctx: &Context<'_>) -> bool {
        Uuid::parse_str(&self.id)
            .ok()
            .and_then(|id| state(ctx).sessions.active(id))
            .unwrap_or(true)
    }
    /// Until when the account is locked after failed logins (null: not locked); from the
    /// log, so a lock recorded by any process shows at once.
    async fn locked_until(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>, Error> {
        let Ok(id) = Uuid::parse_str(&self.id) else {
            return Ok(None);
        };
        let state = state(ctx);
        match crate::executives::load(state.store.as_ref(), id).await {
            Ok((executive, _)) => Ok(executive.locked_at(state.clock.now())),
            Err(crate::executives::ExecutiveError::NotFound(_)) => Ok(None),
            Err(e) => Err(executive_error(e)),
        }
    }
    /// Chats assigned to them that are not resolved or closed.
    async fn open_chats(&self, ctx: &Context<'_>) -> Result<i32, Error> {
        let open = read_models::chats::open_chats_of(&state(ctx).read_side.db, &self.id)
            .await
            .map_err(internal)?;
        Ok(open as i32)
    }
}

pub(super) fn executive_ref(id: &ID) -> Result<Uuid, Error> {
    Uuid::parse_str(id.as_str()).map_err(|_| {
        coded(
            format!("{:?} is not an executive id", id.as_str()),
            "BAD_USER_INPUT",
        )
    })
}

pub(super) fn executive_error(e: crate::executives::ExecutiveError) -> Error {
    use crate::executives::ExecutiveError;
    match e {
        ExecutiveError::NotFound(_) => coded(e.to_string(), "NOT_FOUND"),
        ExecutiveError::Refused(_) => coded(e.to_string(), "BAD_USER_INPUT"),
        ExecutiveError::Store(e) => internal(e),
    }
}

/// The executive as the read models hold them once they have applied everything recorded.
pub(super) async fn executive_now(ctx: &Context<'_>, id: Uuid) -> Result<Executive, Error> {
    let state = state(ctx);
    if let Ok(head) = state.store.head_position().await {
        let _ = tokio::time::timeout(Duration::from_secs(5), state.read_side.wait_for(head)).await;
        state.sessions.wait_for(head).await;
    }
    Executive::load(ctx, &id.to_string())
        .await?
        .ok_or_else(|| coded("no such executive", "NOT_FOUND"))
}
