//! The subscription root, and what a viewer may see of a live event.

use super::*;

/// Where a received message belongs and whether `viewer` may see it: waits (briefly) for the
/// read models to reach the event, then reads the message as queries would.
pub async fn visible_message(
    state: &AppState,
    viewer: &Viewer,
    event: &RecordedEvent,
) -> Option<(String, Message)> {
    if event.event_type != "MessageReceived" {
        return None;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.read_side.wait_for(event.position),
    )
    .await;
    let db = &state.read_side.db;
    let chat_id = event.data.get("chat_id")?.as_str()?;
    let stakeholder = read_models::chats::place_of(db, chat_id)
        .await
        .ok()??
        .stakeholder;
    if !viewer.sees_stakeholder(&stakeholder) {
        return None;
    }
    let row = read_models::messages::message(db, &event.event_id.to_string())
        .await
        .ok()??;
    Some((stakeholder, Message::from_row(row)))
}

/// The chat an assignment event is about, when `viewer` may see it (after the read models
/// have applied the event).
pub async fn visible_chat(
    state: &AppState,
    viewer: &Viewer,
    event: &RecordedEvent,
) -> Option<Chat> {
    let chat_id = event.data.get("chat_id")?.as_str()?;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.read_side.wait_for(event.position),
    )
    .await;
    load_chat(state, chat_id)
        .await
        .ok()?
        .filter(|c| viewer.sees_stakeholder(&c.stakeholder))
}

/// The executive a presence event is about, when `viewer` may see them.
pub async fn visible_executive(
    state: &AppState,
    viewer: &Viewer,
    event: &RecordedEvent,
) -> Option<Executive> {
    let id = event.data.get("executive_id")?.as_str()?;
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        state.read_side.wait_for(event.position),
    )
    .await;
    Executive::load_from(state, id)
        .await
        .ok()?
        .filter(|e| e.visible_to(viewer))
}

pub(super) fn chats_of_type(
    ctx: &Context<'_>,
    event_types: &'static [&'static str],
) -> Result<impl Stream<Item = Chat>, Error> {
    let viewer = viewer(ctx)?.clone();
    let state = state(ctx).clone();
    Ok(
        crate::live::events(state.live.subscribe()).filter_map(move |event| {
            let (state, viewer) = (state.clone(), viewer.clone());
            async move {
                if !event_types.contains(&event.event_type.as_str()) {
                    return None;
                }
                visible_chat(&state, &viewer, &event).await
            }
        }),
    )
}

pub struct SubscriptionRoot;

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Chats that got an assignee.
    async fn chat_assigned(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(ctx, &["ChatAssigned"])
    }

    /// Chats whose assignee changed (or that went back to waiting).
    async fn chat_reassigned(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(ctx, &["ChatReassigned"])
    }

    /// Chats whose customer waited past an SLA threshold (alert or escalation), of one
    /// stakeholder if given.
    async fn sla_alert(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<impl Stream<Item = Chat>, Error> {
        let chats = chats_of_type(ctx, &["SlaAlertRaised", "SlaEscalated"])?;
        Ok(chats.filter(move |c| {
            let keep = stakeholder.as_ref().is_none_or(|s| *s == c.stakeholder);
            async move { keep }
        }))
    }

    /// Chats whose tags changed.
    async fn tag_updated(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(ctx, &["TagApplied", "TagRemoved"])
    }

    /// Chats that changed in any way the dashboard shows: a message in or out, a delivery
    /// receipt, a file landed, an assignment, a tag, an SLA alert, resolved, rated.
    async fn chat_updated(&self, ctx: &Context<'_>) -> Result<impl Stream<Item = Chat>, Error> {
        chats_of_type(
            ctx,
            &[
                "ChatOpened",
                "MessageReceived",
                "ReplyQueued",
                "MessageDispatched",
                "MessageDispatchFailed",
                "DispatchRetrying",
                "ReceiptRecorded",
                "MediaStored",
                "MediaFetchFailed",
                "ChatAssigned",
                "ChatReassigned",
                "TagApplied",
                "TagRemoved",
                "SlaAlertRaised",
                "SlaEscalated",
                "ChatResolved",
                "ChatRated",
            ],
        )
    }

    /// Executives going online or offline.
    async fn executive_status(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Executive>, Error> {
        let viewer = viewer(ctx)?.clone();
        let state = state(ctx).clone();
        Ok(
            crate::live::events(state.live.subscribe()).filter_map(move |event| {
                let (state, viewer) = (state.clone(), viewer.clone());
                async move {
                    if event.event_type != ExecutiveStatusChanged::EVENT_TYPE {
                        return None;
                    }
                    visible_executive(&state, &viewer, &event).await
                }
            }),
        )
    }

    /// Every message customers send from now on (of one stakeholder, if given) that the
    /// viewer may see.
    async fn message_received(
        &self,
        ctx: &Context<'_>,
        stakeholder: Option<String>,
    ) -> Result<impl Stream<Item = Message>, Error> {
        let viewer = viewer(ctx)?.clone();
        let state = state(ctx).clone();
        let live = state.live.subscribe();
        let wanted = Arc::new(stakeholder);
        Ok(crate::live::events(live).filter_map(move |event| {
            let (state, viewer, wanted) = (state.clone(), viewer.clone(), wanted.clone());
            async move {
                let (stakeholder, message) = visible_message(&state, &viewer, &event).await?;
                match wanted.as_deref() {
                    Some(w) if w != stakeholder => None,
                    _ => Some(message),
                }
            }
        }))
    }
}

use futures_util::StreamExt as _;
