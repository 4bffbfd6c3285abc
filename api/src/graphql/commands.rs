//! Running a conversation command on one chat for a viewer, and what its failure answers.

use super::*;

/// A chat the viewer may change, for a mutation: NOT_FOUND when there is none they may see.
pub(super) async fn chat_for_change(
    ctx: &Context<'_>,
    chat_id: &ID,
) -> Result<(Chat, Viewer), Error> {
    let viewer = changer(ctx)?.clone();
    let not_found = || {
        coded(
            format!("there is no chat {}", chat_id.as_str()),
            "NOT_FOUND",
        )
    };
    let chat = load_chat(state(ctx), chat_id.as_str())
        .await?
        .ok_or_else(not_found)?;
    if !viewer.sees_stakeholder(&chat.stakeholder) {
        return Err(not_found());
    }
    Ok((chat, viewer))
}

/// Runs a command on a chat's conversation for a mutation and answers with the chat after it.
pub(super) async fn run_on_chat(
    ctx: &Context<'_>,
    chat: &Chat,
    viewer: &Viewer,
    command: ConversationCommand,
) -> Result<Chat, Error> {
    let state = state(ctx);
    let actor = viewer
        .executive_id
        .as_deref()
        .map_or("admin".to_owned(), |id| format!("executive:{id}"));
    state
        .conversations
        .handle(&chat.stream, vec![command], &Metadata::by(actor))
        .await
        .map_err(command_error)?;
    settle(state).await;
    load_chat(state, &chat.chat_id)
        .await?
        .ok_or_else(|| coded(format!("there is no chat {}", chat.chat_id), "NOT_FOUND"))
}

/// A command's failure as GraphQL answers it: a rejection is the client's to fix
/// (`BAD_USER_INPUT`), except the cases clients must act on: a reply outside the 24-hour
/// window (`OUTSIDE_SERVICE_WINDOW`: offer templates instead) and a marketing template to a
/// customer who withdrew it (`CONSENT_WITHDRAWN`).
pub(super) fn command_error(e: CommandError) -> Error {
    match e {
        CommandError::Rejected(rejection) => {
            let code = match rejection.code() {
                "OUTSIDE_SERVICE_WINDOW" => "OUTSIDE_SERVICE_WINDOW",
                "CONSENT_WITHDRAWN" => "CONSENT_WITHDRAWN",
                _ => "BAD_USER_INPUT",
            };
            coded(rejection.to_string(), code)
        }
        other => internal(other),
    }
}

/// Runs a command that queues an outbound message and answers with that message.
pub(super) async fn queue_message(
    ctx: &Context<'_>,
    chat: &Chat,
    viewer: &Viewer,
    command: ConversationCommand,
    message_id: Uuid,
) -> Result<Message, Error> {
    run_on_chat(ctx, chat, viewer, command).await?;
    let row = chatledger_projections::read_models::messages::message(
        &state(ctx).read_side.db,
        &message_id.to_string(),
    )
    .await
    .map_err(internal)?;
    let message = row.map(Message::from_row).ok_or_else(|| {
        coded(
            "the message was queued but is not visible yet",
            "UNAVAILABLE",
        )
    })?;
    Ok(with_files(ctx, vec![message]).await?.remove(0))
}

pub(super) async fn change_tag(
    ctx: &Context<'_>,
    chat_id: ID,
    tag: String,
    apply: bool,
) -> Result<Chat, Error> {
    let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
    let chat_uuid = Uuid::parse_str(&chat.chat_id).map_err(internal)?;
    let (by, now) = (viewer.name.clone(), state(ctx).clock.now());
    let command = if apply {
        ConversationCommand::ApplyTag {
            chat_id: chat_uuid,
            tag,
            catalog: state(ctx).tags.of(&chat.stakeholder),
            by,
            now,
        }
    } else {
        ConversationCommand::RemoveTag {
            chat_id: chat_uuid,
            tag,
            by,
            now,
        }
    };
    run_on_chat(ctx, &chat, &viewer, command).await
}

/// Waits (briefly) until the read models have applied everything in the log, so that a
/// mutation's answer shows its own effect.
pub(super) async fn settle(state: &AppState) {
    if let Ok(head) = state.store.head_position().await {
        let _ = tokio::time::timeout(Duration::from_secs(5), state.read_side.wait_for(head)).await;
        state.sessions.wait_for(head).await;
    }
}
