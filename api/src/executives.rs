//! Managing executives, the one place the command line and the GraphQL mutations go through:
//! registering, deactivating and reactivating, a new role or stakeholders, a new name, a new
//! password, logging out, going offline at login, and failed logins with the lock they bring
//! (and an admin's unlock).
//!
//! Each change is decided against the executive's stream as it stands (folded with
//! [`ExecutiveState`]) and appended at the version it was decided on, so two admins changing
//! one executive at once cannot both win on a stale view. Who made the change is the event's
//! metadata actor.

use chatledger_core::channel::stakeholder_name;
use chatledger_core::executive::{
    executive_id, executive_stream, AccountLocked, AccountUnlocked, ExecutiveChange,
    ExecutiveDeactivated, ExecutiveEvent, ExecutiveLoggedIn, ExecutiveLoggedOut,
    ExecutivePasswordReset, ExecutiveReactivated, ExecutiveRegistered, ExecutiveRenamed,
    ExecutiveRoleChanged, ExecutiveState, ExecutiveStatusChanged, Role,
};
use chatledger_core::{EventStore, ExpectedVersion, Metadata, NewEvent, StoreError};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::auth::{TokenFacts, Viewer};

/// The shortest password accepted.
pub const MIN_PASSWORD_LENGTH: usize = 10;
/// The longest name accepted.
const NAME_MAX: usize = 120;

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ExecutiveError {
    #[error("no executive {0}")]
    NotFound(String),
    /// The change is not valid as asked (the message says why).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which executive: by id or by email.
pub fn find(id_or_email: &str) -> Uuid {
    Uuid::parse_str(id_or_email.trim()).unwrap_or_else(|_| executive_id(id_or_email))
}

/// An executive's stream folded, and the version it was folded at.
pub async fn load(
    store: &dyn EventStore,
    id: Uuid,
) -> Result<(ExecutiveState, u64), ExecutiveError> {
    let stream = executive_stream(id);
    let mut events = Vec::new();
    let (mut from, mut version) = (0, 0);
    loop {
        let batch = store.read_stream(&stream, from, 500).await?;
        let Some(last) = batch.last() else { break };
        version = last.version;
        from = last.version + 1;
        events.extend(
            batch
                .iter()
                .filter_map(|e| ExecutiveEvent::decode(&e.event_type, &e.data)?.ok()),
        );
    }
    let state =
        ExecutiveState::fold(&events).ok_or_else(|| ExecutiveError::NotFound(id.to_string()))?;
    Ok((state, version))
}

/// Appends `events` to the executive's stream if it is still at `version`; the position of
/// the last one recorded.
async fn record(
    store: &dyn EventStore,
    id: Uuid,
    version: u64,
    events: Vec<NewEvent>,
) -> Result<Option<u64>, ExecutiveError> {
    match store
        .append(
            &executive_stream(id),
            ExpectedVersion::Exact(version),
            events,
        )
        .await
    {
        Ok(result) => Ok(result.stored.last().map(|e| e.position)),
        Err(StoreError::WrongExpectedVersion { .. }) => Err(ExecutiveError::Refused(
            "the executive was changed meanwhile; look again and retry".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

fn metadata(by: &str) -> Metadata {
    Metadata::by(by)
}

/// Stakeholder names in their one form, without empties; an executive or lead needs one.
fn stakeholders_for(role: Role, stakeholders: &[String]) -> Result<Vec<String>, ExecutiveError> {
    let mut names: Vec<String> = stakeholders
        .iter()
        .map(|s| stakeholder_name(s))
        .filter(|s| !s.is_empty())
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() && !role.sees_everything() {
        return Err(ExecutiveError::Refused(format!(
            "an {} needs at least one stakeholder whose chats they work",
            role.as_str()
        )));
    }
    Ok(names)
}

/// A change that needs its reason: the reason, trimmed, or a refusal saying so.
fn reason_for(reason: &str) -> Result<String, ExecutiveError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ExecutiveError::Refused("say why (a reason)".into()));
    }
    Ok(reason.to_owned())
}

fn name_for(name: &str) -> Result<String, ExecutiveError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.contains('\0') {
        return Err(ExecutiveError::Refused(format!(
            "a name has 1 to {NAME_MAX} characters"
        )));
    }
    Ok(name.to_owned())
}

fn password_hash_for(password: &str) -> Result<String, ExecutiveError> {
    if password.chars().count() < MIN_PASSWORD_LENGTH {
        return Err(ExecutiveError::Refused(format!(
            "the password must have at least {MIN_PASSWORD_LENGTH} characters"
        )));
    }
    crate::auth::hash_password(password).map_err(ExecutiveError::Refused)
}

/// Registers an executive; refused when the email is taken.
pub async fn register(
    store: &dyn EventStore,
    email: &str,
    name: &str,
    role: Role,
    stakeholders: &[String],
    password: &str,
    by: &str,
) -> Result<ExecutiveRegistered, ExecutiveError> {
    let email = email.trim().to_lowercase();
    if !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ExecutiveError::Refused(format!(
            "{email:?} is not an email address"
        )));
    }
    let registered = ExecutiveRegistered {
        executive_id: executive_id(&email),
        email: email.clone(),
        name: name_for(name)?,
        role,
        stakeholders: stakeholders_for(role, stakeholders)?,
        password_hash: password_hash_for(password)?,
    };
    let taken = || {
        ExecutiveError::Refused(format!(
            "an executive with the email {email} is already registered"
        ))
    };
    match store
        .append(
            &executive_stream(registered.executive_id),
            ExpectedVersion::NoStream,
            vec![registered.to_new_event(metadata(by))],
        )
        .await
    {
        // The event's id derives from the executive's: registering an email again is a
        // duplicate of the first registration.
        Ok(result) if result.is_duplicate() => Err(taken()),
        Ok(_) => Ok(registered),
        Err(StoreError::WrongExpectedVersion { .. }) => Err(taken()),
        Err(e) => Err(e.into()),
    }
}

/// Decides one change against the executive as their stream stands (`decide` answers the
/// event to record, or `None` when nothing would change), records it at that version, and
/// answers the executive as they are afterwards.
async fn change<E: ExecutiveChange>(
    store: &dyn EventStore,
    id: Uuid,
    by: &str,
    decide: impl FnOnce(&ExecutiveState) -> Result<Option<E>, ExecutiveError>,
) -> Result<ExecutiveState, ExecutiveError> {
    let (state, version) = load(store, id).await?;
    let Some(change) = decide(&state)? else {
        return Ok(state);
    };
    let event = change.to_new_event(Uuid::new_v4(), metadata(by));
    record(store, id, version, vec![event]).await?;
    Ok(load(store, id).await?.0)
}

/// Deactivates an executive: no more logins, every token ends, open chats are handed on.
pub async fn deactivate(
    store: &dyn EventStore,
    id: Uuid,
    reason: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<ExecutiveState, ExecutiveError> {
    change(store, id, by, |state| {
        if !state.active {
            return Err(ExecutiveError::Refused(format!(
                "{} is already deactivated",
                state.email
            )));
        }
        let reason = reason_for(reason)?;
        Ok(Some(ExecutiveDeactivated {
            executive_id: id,
            reason,
            at,
        }))
    })
    .await
}

/// Lets a deactivated executive log in again (offline, as every login starts).
pub async fn reactivate(
    store: &dyn EventStore,
    id: Uuid,
    by: &str,
    at: DateTime<Utc>,
) -> Result<ExecutiveState, ExecutiveError> {
    change(store, id, by, |state| {
        if state.active {
            return Err(ExecutiveError::Refused(format!(
                "{} is active",
                state.email
            )));
        }
        Ok(Some(ExecutiveReactivated {
            executive_id: id,
            at,
        }))
    })
    .await
}

/// Gives an executive another role and stakeholders; their tokens end (they say otherwise)
/// and chats of stakeholders they no longer work are handed on.
pub async fn change_role(
    store: &dyn EventStore,
    id: Uuid,
    role: Role,
    stakeholders: &[String],
    by: &str,
    at: DateTime<Utc>,
) -> Result<ExecutiveState, ExecutiveError> {
    let stakeholders = stakeholders_for(role, stakeholders)?;
    change(store, id, by, |state| {
        let same = state.role == role && state.stakeholders == stakeholders;
        Ok((!same).then_some(ExecutiveRoleChanged {
            executive_id: id,
            role,
            stakeholders,
            at,
        }))
    })
    .await
}

/// Renames an executive (their tokens stand).
pub async fn rename(
    store: &dyn EventStore,
    id: Uuid,
    name: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<ExecutiveState, ExecutiveError> {
    let name = name_for(name)?;
    change(store, id, by, |state| {
        Ok((state.name != name).then_some(ExecutiveRenamed {
            executive_id: id,
            name,
            at,
        }))
    })
    .await
}

/// Sets a new password; every token issued before ends.
pub async fn reset_password(
    store: &dyn EventStore,
    id: Uuid,
    password: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<ExecutiveState, ExecutiveError> {
    let password_hash = password_hash_for(password)?;
    change(store, id, by, |_| {
        Ok(Some(ExecutivePasswordReset {
            executive_id: id,
            password_hash,
            at,
        }))
    })
    .await
}

/// Ends the token a request came with (and no other); the position that records it.
pub async fn log_out(
    store: &dyn EventStore,
    viewer: &Viewer,
    token: Option<&TokenFacts>,
    at: DateTime<Utc>,
) -> Result<Option<u64>, ExecutiveError> {
    let (Some(id), Some(token)) = (&viewer.executive_id, token) else {
        return Err(ExecutiveError::Refused(
            "only an executive's login token can log out (the admin token cannot)".into(),
        ));
    };
    let id = Uuid::parse_str(id).map_err(|_| ExecutiveError::NotFound(id.clone()))?;
    let change = ExecutiveLoggedOut {
        executive_id: id,
        token_id: token.token_id.clone(),
        token_expires_at: token.expires_at,
        at,
    };
    // The event's id derives from the token's: logging out twice records once.
    let event_id = Uuid::new_v5(
        &chatledger_core::conversation::EVENT_ID_NAMESPACE,
        format!("logout/{}", token.token_id).as_bytes(),
    );
    let result = store
        .append(
            &executive_stream(id),
            ExpectedVersion::Any,
            vec![change.to_new_event(event_id, metadata(&format!("executive:{id}")))],
        )
        .await?;
    // A second logout of the same token records nothing and waits for nothing.
    Ok(result.stored.last().map(|e| e.position))
}

/// A login starts offline: records the executive going offline if they were online (their
/// chats are handed on as at any going offline); the position recorded, if anything was.
pub async fn start_offline(
    store: &dyn EventStore,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<u64>, ExecutiveError> {
    let (state, version) = load(store, id).await?;
    if !state.online {
        return Ok(None);
    }
    let change = ExecutiveStatusChanged {
        executive_id: id,
        online: false,
        at,
    };
    let mut metadata = metadata(&format!("executive:{id}"));
    metadata
        .extra
        .insert("reason".into(), serde_json::json!("login"));
    match record(
        store,
        id,
        version,
        vec![change.to_new_event(Uuid::new_v4(), metadata)],
    )
    .await
    {
        // Changed meanwhile (another login, a status change): whatever it was, it is newer.
        Err(ExecutiveError::Refused(_)) => Ok(None),
        other => other,
    }
}

/// Records a failed login of executive `id` from `client`, and the lock it brings when it is
/// the `lock_after`th in a row (`LOGIN_LOCK_AFTER`); the lock, if this one was recorded.
/// Decided against the stream as it stands, so failures in several processes count together.
pub async fn login_failed(
    store: &dyn EventStore,
    id: Uuid,
    client: Option<String>,
    at: DateTime<Utc>,
    lock_after: u32,
    lock_for: chrono::Duration,
) -> Result<Option<AccountLocked>, ExecutiveError> {
    for _ in 0..8 {
        let (state, version) = load(store, id).await?;
        let (failed, lock) = state.login_failed(client.clone(), at, lock_after, lock_for);
        let mut events = vec![failed.to_new_event(Uuid::new_v4(), metadata("login"))];
        if let Some(lock) = &lock {
            events.push(lock.to_new_event(Uuid::new_v4(), metadata("login")));
        }
        match record(store, id, version, events).await {
            Ok(_) => return Ok(lock),
            // Another failure (or login) was recorded meanwhile: count this one after it.
            Err(ExecutiveError::Refused(_)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ExecutiveError::Refused(
        "too many logins of this account at once".into(),
    ))
}

/// Records a login: the token `token_id` was issued (and the failures in a row end).
pub async fn logged_in(
    store: &dyn EventStore,
    id: Uuid,
    token_id: &str,
    at: DateTime<Utc>,
) -> Result<(), ExecutiveError> {
    let event_id = Uuid::new_v5(
        &chatledger_core::conversation::EVENT_ID_NAMESPACE,
        format!("login/{token_id}").as_bytes(),
    );
    let change = ExecutiveLoggedIn {
        executive_id: id,
        token_id: token_id.to_owned(),
        at,
    };
    store
        .append(
            &executive_stream(id),
            ExpectedVersion::Any,
            vec![change.to_new_event(event_id, metadata(&format!("executive:{id}")))],
        )
        .await?;
    Ok(())
}

/// Lifts a lock before its time (an admin's, with the reason).
pub async fn unlock(
    store: &dyn EventStore,
    id: Uuid,
    reason: &str,
    by: &str,
    at: DateTime<Utc>,
) -> Result<ExecutiveState, ExecutiveError> {
    change(store, id, by, |state| {
        if state.locked_at(at).is_none() {
            return Err(ExecutiveError::Refused(format!(
                "{} is not locked",
                state.email
            )));
        }
        let reason = reason_for(reason)?;
        Ok(Some(AccountUnlocked {
            executive_id: id,
            reason,
            at,
        }))
    })
    .await
}
