//! The mutation root: every change the dashboard makes, and logging in.

use super::*;

pub(super) fn onboarding_error(e: crate::onboarding::OnboardingError) -> Error {
    use crate::onboarding::OnboardingError as E;
    let code = match &e {
        E::Invalid(_) => "BAD_USER_INPUT",
        E::Unavailable(_) => "UNAVAILABLE",
        E::Store(_) => return internal(&e),
        _ => "CONFLICT",
    };
    coded(e.to_string(), code)
}

pub(super) fn admin<'a>(ctx: &Context<'a>, what: &str) -> Result<&'a Viewer, Error> {
    let viewer = changer(ctx)?;
    if viewer.role != Role::Admin {
        return Err(coded(format!("only admins {what}"), "FORBIDDEN"));
    }
    Ok(viewer)
}

/// Who made a change, for its metadata.
pub(super) fn actor(viewer: &Viewer) -> String {
    match &viewer.executive_id {
        Some(id) => format!("executive:{id}"),
        None => "admin-token".to_owned(),
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Logs an executive in; the token goes in `Authorization: Bearer …`.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        password: String,
    ) -> Result<LoginPayload, Error> {
        let client = ctx.data_opt::<ClientAddress>().map(|c| c.0);
        login(state(ctx), &email, &password, client)
            .await
            .map_err(|e| {
                let code = match &e {
                    AuthError::NotConfigured | AuthError::Unavailable(_) => "UNAVAILABLE",
                    AuthError::RefusedInput(_) => "BAD_USER_INPUT",
                    AuthError::TooManyAttempts(_) => "RATE_LIMITED",
                    AuthError::Locked(_) => "ACCOUNT_LOCKED",
                    _ => "UNAUTHENTICATED",
                };
                coded(e.to_string(), code)
            })
    }

    /// Tags a chat with a tag of its stakeholder's catalog.
    async fn apply_tag(&self, ctx: &Context<'_>, chat_id: ID, tag: String) -> Result<Chat, Error> {
        change_tag(ctx, chat_id, tag, true).await
    }

    /// Removes a tag from a chat.
    async fn remove_tag(&self, ctx: &Context<'_>, chat_id: ID, tag: String) -> Result<Chat, Error> {
        change_tag(ctx, chat_id, tag, false).await
    }

    /// Queues a free-form reply; refused outside the 24-hour customer service window (send a
    /// template then). The answer is the queued message; its delivery status follows.
    async fn send_reply(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        text: String,
    ) -> Result<Message, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let message_id = chatledger_core::conversation::new_id();
        let command = ConversationCommand::SendReply {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            message_id,
            text,
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        queue_message(ctx, &chat, &viewer, command, message_id).await
    }

    /// Queues an attachment uploaded with `POST /api/media` (its `mediaRef`), with an
    /// optional caption: like text, only within 24 hours of the customer's last message.
    async fn send_media(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        media_ref: ID,
        caption: Option<String>,
    ) -> Result<Message, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let media = &state(ctx).media;
        let upload = media
            .store
            .open_upload_ref(media_ref.as_str())
            .map_err(|e| {
                coded(
                    format!("mediaRef: {e} (upload the file again with POST /api/media)"),
                    "BAD_USER_INPUT",
                )
            })?;
        // Kept with the conversation from now on: forgetting its customer deletes it too.
        let key = chatledger_core::media::object_key(&chat.stream, &upload.sha256);
        media.store.copy(&upload.key, &key).await.map_err(|e| {
            coded(
                format!("mediaRef: the upload cannot be read from the object store ({e}); upload it again"),
                "BAD_USER_INPUT",
            )
        })?;
        let message_id = chatledger_core::conversation::new_id();
        let command = ConversationCommand::SendMedia {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            message_id,
            media: chatledger_core::media::StoredMedia { key, ..upload },
            caption,
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        queue_message(ctx, &chat, &viewer, command, message_id).await
    }

    /// Queues a WhatsApp template message (allowed at any time). A `category` of
    /// `marketing` is refused (`CONSENT_WITHDRAWN`) for a customer who withdrew marketing
    /// consent; `utility` (the default) and `authentication` templates are not marketing.
    async fn send_template(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        name: String,
        language: String,
        params: Option<Vec<String>>,
        category: Option<String>,
    ) -> Result<Message, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let marketing = match category.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("utility") | Some("authentication") => false,
            Some("marketing") => true,
            Some(other) => {
                return Err(coded(
                    format!("category {other:?} is not a WhatsApp template category (marketing, utility, authentication)"),
                    "BAD_USER_INPUT",
                ))
            }
        };
        let withdrawn = if marketing {
            customer_consent(ctx, &chat.customer)
                .await?
                .withdrawn(chatledger_core::consent::Category::Marketing)
                .cloned()
        } else {
            None
        };
        let message_id = chatledger_core::conversation::new_id();
        let command = ConversationCommand::SendTemplate {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            message_id,
            template: Template {
                name,
                language,
                params: params.unwrap_or_default(),
            },
            withdrawn,
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        queue_message(ctx, &chat, &viewer, command, message_id).await
    }

    /// Resolves a chat and asks the customer for a rating ("Hope we resolved your query. Rate
    /// 1-5."; the rating template outside the 24-hour window). A reply 1-5 becomes the rating.
    async fn resolve_chat(&self, ctx: &Context<'_>, chat_id: ID) -> Result<Chat, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        let command = ConversationCommand::Resolve {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            rating_message_id: chatledger_core::conversation::new_id(),
            rating_template: (*state(ctx).rating_template).clone(),
            rating_at_most_every: chrono::Duration::from_std(state(ctx).limits.auto_answer_window)
                .unwrap_or(chrono::Duration::MAX),
            by: viewer.name.clone(),
            now: state(ctx).clock.now(),
        };
        run_on_chat(ctx, &chat, &viewer, command).await
    }

    /// A lead gives a chat to an online executive of its stakeholder.
    async fn assign_chat(
        &self,
        ctx: &Context<'_>,
        chat_id: ID,
        executive_id: ID,
    ) -> Result<Chat, Error> {
        let (chat, viewer) = chat_for_change(ctx, &chat_id).await?;
        if !matches!(viewer.role, Role::Lead | Role::Admin) {
            return Err(coded(
                "only leads and admins assign chats by hand",
                "FORBIDDEN",
            ));
        }
        let executive = Executive::load(ctx, executive_id.as_str())
            .await?
            .ok_or_else(|| {
                coded(
                    format!("there is no executive {}", executive_id.as_str()),
                    "BAD_USER_INPUT",
                )
            })?;
        if !executive.stakeholders.contains(&chat.stakeholder) {
            return Err(coded(
                format!(
                    "{} does not work {} chats",
                    executive.name, chat.stakeholder
                ),
                "BAD_USER_INPUT",
            ));
        }
        if !executive.online {
            return Err(coded(
                format!(
                    "{} is offline; chats go only to executives who are online",
                    executive.name
                ),
                "BAD_USER_INPUT",
            ));
        }
        let chosen = ExecutiveRef {
            id: Uuid::parse_str(&executive.id).map_err(internal)?,
            name: executive.name.clone(),
        };
        let command = ConversationCommand::Assign {
            chat_id: Uuid::parse_str(&chat.chat_id).map_err(internal)?,
            executive: Some(chosen.clone()),
            rule: AssignmentRule::Manual,
            candidates: vec![chosen],
            by: Some(viewer.name.clone()),
            cause: Uuid::new_v4(),
            now: state(ctx).clock.now(),
        };
        run_on_chat(ctx, &chat, &viewer, command).await
    }

    /// Records how a business's messages leave: `official` (Cloud API with its own
    /// credential) or `unofficial` (each channel's configured gateway).
    async fn choose_integration(
        &self,
        ctx: &Context<'_>,
        business_id: ID,
        kind: String,
    ) -> Result<bool, Error> {
        let viewer = admin(ctx, "choose a business's integration")?;
        let state = state(ctx);
        state
            .onboarding
            .choose_integration(business_id.as_str(), &kind, &viewer.name, state.clock.now())
            .await
            .map_err(onboarding_error)?;
        Ok(true)
    }

    /// Starts a business's Embedded Signup: a one-time `state` for the callback. The
    /// onboarded number will serve `stakeholder`.
    async fn start_official_signup(
        &self,
        ctx: &Context<'_>,
        business_id: ID,
        #[graphql(default_with = "String::from(\"customer\")")] stakeholder: String,
    ) -> Result<OfficialSignup, Error> {
        let viewer = admin(ctx, "start an official signup")?;
        let state = state(ctx);
        let started = state
            .onboarding
            .start_signup(
                business_id.as_str(),
                &stakeholder,
                &viewer.name,
                state.clock.now(),
            )
            .await
            .map_err(onboarding_error)?;
        Ok(OfficialSignup {
            business_id,
            state: started.state,
            expires_at: micros(started.expires_at),
            app_id: started.app_id,
        })
    }

    /// Ends the token this request came with (and no other): it is refused from then on, on
    /// every transport.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool, Error> {
        let viewer = viewer(ctx)?;
        let token = ctx.data_opt::<TokenFacts>();
        let state = state(ctx);
        let recorded = crate::executives::log_out(state.store.as_ref(), viewer, token, Utc::now())
            .await
            .map_err(executive_error)?;
        // Refused by this process from the moment the answer comes (the others follow the
        // log within moments).
        if let Some(position) = recorded {
            state.sessions.wait_for(position).await;
        }
        Ok(true)
    }

    /// Registers an executive (admins).
    async fn register_executive(
        &self,
        ctx: &Context<'_>,
        email: String,
        name: String,
        role: String,
        stakeholders: Vec<String>,
        password: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "register executives")?;
        let role: Role = role
            .parse()
            .map_err(|e: String| coded(e, "BAD_USER_INPUT"))?;
        let state = state(ctx);
        let registered = crate::executives::register(
            state.store.as_ref(),
            &email,
            &name,
            role,
            &stakeholders,
            &password,
            &actor(by),
        )
        .await
        .map_err(executive_error)?;
        executive_now(ctx, registered.executive_id).await
    }

    /// Stops an executive from logging in: their tokens stop working at once, on every
    /// transport, and their open chats are handed on (admins).
    async fn deactivate_executive(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "deactivate executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::deactivate(state.store.as_ref(), id, &reason, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Lets a deactivated executive log in again (admins).
    async fn reactivate_executive(&self, ctx: &Context<'_>, id: ID) -> Result<Executive, Error> {
        let by = admin(ctx, "reactivate executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::reactivate(state.store.as_ref(), id, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Lifts the lock that failed logins put on an account, before its time (admins).
    async fn unlock_executive(
        &self,
        ctx: &Context<'_>,
        id: ID,
        reason: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "unlock executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::unlock(state.store.as_ref(), id, &reason, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Gives an executive another role and stakeholders; their tokens end, and chats of
    /// stakeholders they no longer work are handed on (admins).
    async fn change_executive_role(
        &self,
        ctx: &Context<'_>,
        id: ID,
        role: String,
        stakeholders: Vec<String>,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "change roles")?;
        let id = executive_ref(&id)?;
        let role: Role = role
            .parse()
            .map_err(|e: String| coded(e, "BAD_USER_INPUT"))?;
        let state = state(ctx);
        crate::executives::change_role(
            state.store.as_ref(),
            id,
            role,
            &stakeholders,
            &actor(by),
            Utc::now(),
        )
        .await
        .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Renames an executive (admins).
    async fn rename_executive(
        &self,
        ctx: &Context<'_>,
        id: ID,
        name: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "rename executives")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::rename(state.store.as_ref(), id, &name, &actor(by), Utc::now())
            .await
            .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Sets an executive's password anew; their tokens end (admins).
    async fn reset_executive_password(
        &self,
        ctx: &Context<'_>,
        id: ID,
        password: String,
    ) -> Result<Executive, Error> {
        let by = admin(ctx, "reset passwords")?;
        let id = executive_ref(&id)?;
        let state = state(ctx);
        crate::executives::reset_password(
            state.store.as_ref(),
            id,
            &password,
            &actor(by),
            Utc::now(),
        )
        .await
        .map_err(executive_error)?;
        executive_now(ctx, id).await
    }

    /// Records a customer's consent as an executive took it (on the phone, in person): a
    /// category (`marketing` or `service`) granted or withdrawn, with the reason (the
    /// evidence) and, when the customer was shown one, the wording's version. Changes nothing
    /// when it stands so already. Answers the customer's consent as it now stands.
    async fn set_consent(
        &self,
        ctx: &Context<'_>,
        customer_number: String,
        category: String,
        granted: bool,
        reason: String,
        wording_version: Option<String>,
    ) -> Result<Vec<ConsentState>, Error> {
        set_consent(
            ctx,
            customer_number,
            category,
            granted,
            reason,
            wording_version,
        )
        .await
    }

    /// Goes online (receives chats) or offline.
    async fn set_my_status(&self, ctx: &Context<'_>, online: bool) -> Result<Executive, Error> {
        let viewer = changer(ctx)?;
        let Some(id) = &viewer.executive_id else {
            return Err(coded(
                "the admin token is not an executive",
                "BAD_USER_INPUT",
            ));
        };
        let executive_id = Uuid::parse_str(id)
            .map_err(|_| coded("the token names no executive", "UNAUTHENTICATED"))?;
        let state = state(ctx);
        let changed = ExecutiveStatusChanged {
            executive_id,
            online,
            at: state.clock.now(),
        };
        let result = state
            .store
            .append(
                &executive_stream(executive_id),
                ExpectedVersion::Any,
                vec![changed.to_new_event(Uuid::new_v4(), Metadata::by(format!("executive:{id}")))],
            )
            .await
            .map_err(internal)?;
        if let Some(stored) = result.stored.last() {
            let wait = state.read_side.wait_for(stored.position);
            let _ = tokio::time::timeout(Duration::from_secs(5), wait).await;
        }
        Executive::load(ctx, id)
            .await?
            .ok_or_else(|| coded("no such executive", "NOT_FOUND"))
    }
}
