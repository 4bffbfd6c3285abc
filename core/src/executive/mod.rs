//! Executives: the people (and roles) that use the dashboard.
//!
//! Stream: `executive-{id}`. An executive's id is derived from their email, so registering
//! the same email twice is a conflict on the same stream, not a second person.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::conversation::EVENT_ID_NAMESPACE;
use crate::event::{Metadata, NewEvent};

/// What an executive may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Works the chats of their stakeholders.
    Executive,
    /// An executive who also reassigns chats and watches SLAs.
    Lead,
    /// Everything.
    Admin,
    /// Reads everything, changes nothing.
    Auditor,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Executive => "executive",
            Role::Lead => "lead",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }

    /// Whether this role sees every stakeholder's chats.
    pub fn sees_everything(&self) -> bool {
        matches!(self, Role::Admin | Role::Auditor)
    }

    /// Whether this role may change anything.
    pub fn may_change(&self) -> bool {
        !matches!(self, Role::Auditor)
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    /// In any case, with surrounding spaces.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_lowercase().as_str() {
            "executive" => Ok(Role::Executive),
            "lead" => Ok(Role::Lead),
            "admin" => Ok(Role::Admin),
            "auditor" => Ok(Role::Auditor),
            other => Err(format!(
                "{other:?} is not a role: executive, lead, admin or auditor"
            )),
        }
    }
}

/// The id of the executive with this email (case-insensitive).
pub fn executive_id(email: &str) -> Uuid {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("executive/{}", email.trim().to_lowercase()).as_bytes(),
    )
}

/// The stream of one executive.
pub fn executive_stream(id: Uuid) -> String {
    format!("executive-{id}")
}

/// An executive was registered. The password is kept only as an argon2 hash (PHC string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveRegistered {
    pub executive_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// The stakeholders whose chats they work.
    pub stakeholders: Vec<String>,
    pub password_hash: String,
}

impl ExecutiveRegistered {
    pub const EVENT_TYPE: &'static str = "ExecutiveRegistered";

    pub fn to_new_event(&self, metadata: Metadata) -> NewEvent {
        let id = Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!("{}/{}", Self::EVENT_TYPE, self.executive_id).as_bytes(),
        );
        NewEvent::new(
            id,
            Self::EVENT_TYPE,
            serde_json::to_value(self).unwrap_or_default(),
            metadata,
        )
    }
}

/// An executive went online or offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveStatusChanged {
    pub executive_id: Uuid,
    pub online: bool,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl ExecutiveStatusChanged {
    pub const EVENT_TYPE: &'static str = "ExecutiveStatusChanged";

    /// `id` must be new for each change (the caller draws it).
    pub fn to_new_event(&self, id: Uuid, metadata: Metadata) -> NewEvent {
        NewEvent::new(
            id,
            Self::EVENT_TYPE,
            serde_json::to_value(self).unwrap_or_default(),
            metadata,
        )
    }
}

/// What an admin changed about an executive, one event type each, all on `executive-{id}`.
/// Each says when; who did it is in the event's metadata.
pub trait ExecutiveChange: Serialize {
    const EVENT_TYPE: &'static str;

    /// `id` must be new for each change (the caller draws it).
    fn to_new_event(&self, id: Uuid, metadata: Metadata) -> NewEvent {
        NewEvent::new(
            id,
            Self::EVENT_TYPE,
            serde_json::to_value(self).unwrap_or_default(),
            metadata,
        )
    }
}

/// The executive may no longer log in; their tokens stop working and their chats are handed
/// on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveDeactivated {
    pub executive_id: Uuid,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A deactivated executive may log in again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveReactivated {
    pub executive_id: Uuid,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The executive's role and stakeholders are now these; tokens issued before say otherwise
/// and stop working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveRoleChanged {
    pub executive_id: Uuid,
    pub role: Role,
    pub stakeholders: Vec<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The executive's name is now this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveRenamed {
    pub executive_id: Uuid,
    pub name: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The executive's password was set anew (kept only as an argon2 hash); tokens issued before
/// stop working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutivePasswordReset {
    pub executive_id: Uuid,
    pub password_hash: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The executive logged out: the token with this id stops working (the others do not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveLoggedOut {
    pub executive_id: Uuid,
    pub token_id: String,
    /// When the token would have expired anyway: it need not be remembered after.
    pub token_expires_at: chrono::DateTime<chrono::Utc>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A login named this executive with a wrong password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginFailed {
    pub executive_id: Uuid,
    /// The address the attempt came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Failed logins in a row, this one counted.
    pub failures_in_a_row: u32,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Too many failed logins in a row: no login, even with the right password, until `until`
/// or until an admin unlocks the account. Tokens already issued stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountLocked {
    pub executive_id: Uuid,
    pub failures_in_a_row: u32,
    pub until: chrono::DateTime<chrono::Utc>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// An admin lifted a lock before its time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountUnlocked {
    pub executive_id: Uuid,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The executive logged in: a token with this id was issued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveLoggedIn {
    pub executive_id: Uuid,
    pub token_id: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

impl ExecutiveChange for LoginFailed {
    const EVENT_TYPE: &'static str = "LoginFailed";
}
impl ExecutiveChange for AccountLocked {
    const EVENT_TYPE: &'static str = "AccountLocked";
}
impl ExecutiveChange for AccountUnlocked {
    const EVENT_TYPE: &'static str = "AccountUnlocked";
}
impl ExecutiveChange for ExecutiveLoggedIn {
    const EVENT_TYPE: &'static str = "ExecutiveLoggedIn";
}
impl ExecutiveChange for ExecutiveDeactivated {
    const EVENT_TYPE: &'static str = "ExecutiveDeactivated";
}
impl ExecutiveChange for ExecutiveReactivated {
    const EVENT_TYPE: &'static str = "ExecutiveReactivated";
}
impl ExecutiveChange for ExecutiveRoleChanged {
    const EVENT_TYPE: &'static str = "ExecutiveRoleChanged";
}
impl ExecutiveChange for ExecutiveRenamed {
    const EVENT_TYPE: &'static str = "ExecutiveRenamed";
}
impl ExecutiveChange for ExecutivePasswordReset {
    const EVENT_TYPE: &'static str = "ExecutivePasswordReset";
}
impl ExecutiveChange for ExecutiveLoggedOut {
    const EVENT_TYPE: &'static str = "ExecutiveLoggedOut";
}

/// Any event of an executive's stream, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecutiveEvent {
    Registered(ExecutiveRegistered),
    StatusChanged(ExecutiveStatusChanged),
    Deactivated(ExecutiveDeactivated),
    Reactivated(ExecutiveReactivated),
    RoleChanged(ExecutiveRoleChanged),
    Renamed(ExecutiveRenamed),
    PasswordReset(ExecutivePasswordReset),
    LoggedOut(ExecutiveLoggedOut),
    LoginFailed(LoginFailed),
    Locked(AccountLocked),
    Unlocked(AccountUnlocked),
    LoggedIn(ExecutiveLoggedIn),
}

impl ExecutiveEvent {
    /// Every event type of an executive's stream.
    pub const TYPES: [&'static str; 12] = [
        ExecutiveRegistered::EVENT_TYPE,
        ExecutiveStatusChanged::EVENT_TYPE,
        ExecutiveDeactivated::EVENT_TYPE,
        ExecutiveReactivated::EVENT_TYPE,
        ExecutiveRoleChanged::EVENT_TYPE,
        ExecutiveRenamed::EVENT_TYPE,
        ExecutivePasswordReset::EVENT_TYPE,
        ExecutiveLoggedOut::EVENT_TYPE,
        LoginFailed::EVENT_TYPE,
        AccountLocked::EVENT_TYPE,
        AccountUnlocked::EVENT_TYPE,
        ExecutiveLoggedIn::EVENT_TYPE,
    ];

    /// Whether `event_type` is one of an executive's.
    pub fn is_one(event_type: &str) -> bool {
        Self::TYPES.contains(&event_type)
    }

    /// The event, when `event_type` is an executive's: `None` for other types, an error for
    /// data that does not read as its type.
    pub fn decode(
        event_type: &str,
        data: &serde_json::Value,
    ) -> Option<Result<Self, serde_json::Error>> {
        fn read<T: serde::de::DeserializeOwned>(
            data: &serde_json::Value,
            wrap: fn(T) -> ExecutiveEvent,
        ) -> Option<Result<ExecutiveEvent, serde_json::Error>> {
            Some(T::deserialize(data).map(wrap))
        }
        match event_type {
            ExecutiveRegistered::EVENT_TYPE => read(data, ExecutiveEvent::Registered),
            ExecutiveStatusChanged::EVENT_TYPE => read(data, ExecutiveEvent::StatusChanged),
            ExecutiveDeactivated::EVENT_TYPE => read(data, ExecutiveEvent::Deactivated),
            ExecutiveReactivated::EVENT_TYPE => read(data, ExecutiveEvent::Reactivated),
            ExecutiveRoleChanged::EVENT_TYPE => read(data, ExecutiveEvent::RoleChanged),
            ExecutiveRenamed::EVENT_TYPE => read(data, ExecutiveEvent::Renamed),
            ExecutivePasswordReset::EVENT_TYPE => read(data, ExecutiveEvent::PasswordReset),
            ExecutiveLoggedOut::EVENT_TYPE => read(data, ExecutiveEvent::LoggedOut),
            LoginFailed::EVENT_TYPE => read(data, ExecutiveEvent::LoginFailed),
            AccountLocked::EVENT_TYPE => read(data, ExecutiveEvent::Locked),
            AccountUnlocked::EVENT_TYPE => read(data, ExecutiveEvent::Unlocked),
            ExecutiveLoggedIn::EVENT_TYPE => read(data, ExecutiveEvent::LoggedIn),
            _ => None,
        }
    }

    /// The executive it is about.
    pub fn executive_id(&self) -> Uuid {
        match self {
            ExecutiveEvent::Registered(e) => e.executive_id,
            ExecutiveEvent::StatusChanged(e) => e.executive_id,
            ExecutiveEvent::Deactivated(e) => e.executive_id,
            ExecutiveEvent::Reactivated(e) => e.executive_id,
            ExecutiveEvent::RoleChanged(e) => e.executive_id,
            ExecutiveEvent::Renamed(e) => e.executive_id,
            ExecutiveEvent::PasswordReset(e) => e.executive_id,
            ExecutiveEvent::LoggedOut(e) => e.executive_id,
            ExecutiveEvent::LoginFailed(e) => e.executive_id,
            ExecutiveEvent::Locked(e) => e.executive_id,
            ExecutiveEvent::Unlocked(e) => e.executive_id,
            ExecutiveEvent::LoggedIn(e) => e.executive_id,
        }
    }

    /// Whether every token issued before this event stops working: what a token says (role,
    /// stakeholders) or what it proves (the password, the right to log in) changed.
    pub fn ends_sessions(&self) -> bool {
        matches!(
            self,
            ExecutiveEvent::Deactivated(_)
                | ExecutiveEvent::RoleChanged(_)
                | ExecutiveEvent::PasswordReset(_)
        )
    }
}

/// An executive as their stream tells it. Serialized for reactors' snapshots, without the
/// password hash (which stays in the log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutiveState {
    pub executive_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub stakeholders: Vec<String>,
    #[serde(skip)]
    pub password_hash: String,
    pub active: bool,
    pub online: bool,
    /// How many times every token was ended ([`ExecutiveEvent::ends_sessions`]): a token
    /// carries the number at its issue and stands only while it is still the same.
    pub session_generation: u64,
    /// Failed logins since the last login, lock or unlock.
    #[serde(default)]
    pub failures_in_a_row: u32,
    /// Locked (after too many failed logins) until then, unless unlocked first.
    #[serde(default)]
    pub locked_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl ExecutiveState {
    /// Folds an executive's stream, in order; `None` before it is registered.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a ExecutiveEvent>) -> Option<Self> {
        let mut state: Option<ExecutiveState> = None;
        for event in events {
            ExecutiveState::apply(&mut state, event);
        }
        state
    }

    /// Folds one event into `state`.
    pub fn apply(state: &mut Option<Self>, event: &ExecutiveEvent) {
        if let ExecutiveEvent::Registered(r) = event {
            if state.is_none() {
                *state = Some(ExecutiveState {
                    executive_id: r.executive_id,
                    email: r.email.clone(),
                    name: r.name.clone(),
                    role: r.role,
                    stakeholders: r.stakeholders.clone(),
                    password_hash: r.password_hash.clone(),
                    active: true,
                    online: false,
                    session_generation: 0,
                    failures_in_a_row: 0,
                    locked_until: None,
                });
            }
            return;
        }
        let Some(s) = state.as_mut() else { return };
        if event.ends_sessions() {
            s.session_generation += 1;
        }
        match event {
            ExecutiveEvent::Registered(_) | ExecutiveEvent::LoggedOut(_) => {}
            ExecutiveEvent::StatusChanged(e) => s.online = e.online,
            ExecutiveEvent::Deactivated(_) => {
                s.active = false;
                s.online = false;
            }
            ExecutiveEvent::Reactivated(_) => s.active = true,
            ExecutiveEvent::RoleChanged(e) => {
                s.role = e.role;
                s.stakeholders = e.stakeholders.clone();
            }
            ExecutiveEvent::Renamed(e) => s.name = e.name.clone(),
            ExecutiveEvent::PasswordReset(e) => s.password_hash = e.password_hash.clone(),
            ExecutiveEvent::LoginFailed(_) => s.failures_in_a_row += 1,
            ExecutiveEvent::Locked(e) => {
                s.locked_until = Some(e.until);
                s.failures_in_a_row = 0;
            }
            ExecutiveEvent::Unlocked(_) => {
                s.locked_until = None;
                s.failures_in_a_row = 0;
            }
            ExecutiveEvent::LoggedIn(_) => s.failures_in_a_row = 0,
        }
    }

    /// Until when the account is locked, if it is at `now`.
    pub fn locked_at(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.locked_until.filter(|until| *until > now)
    }

    /// What a failed login records: the failure, and a lock when it is the `lock_after`th in
    /// a row (an account already locked is not locked again: its lock keeps its end).
    pub fn login_failed(
        &self,
        client: Option<String>,
        now: chrono::DateTime<chrono::Utc>,
        lock_after: u32,
        lock_for: chrono::Duration,
    ) -> (LoginFailed, Option<AccountLocked>) {
        let failures_in_a_row = self.failures_in_a_row + 1;
        let failed = LoginFailed {
            executive_id: self.executive_id,
            client,
            failures_in_a_row,
            at: now,
        };
        let lock = (failures_in_a_row >= lock_after && self.locked_at(now).is_none()).then(|| {
            AccountLocked {
                executive_id: self.executive_id,
                failures_in_a_row,
                until: now + lock_for,
                at: now,
            }
        });
        (failed, lock)
    }

    /// Whether this executive is assigned chats of `stakeholder` when online.
    pub fn works(&self, stakeholder: &str) -> bool {
        self.active
            && matches!(self.role, Role::Executive | Role::Lead)
            && self.stakeholders.iter().any(|s| s == stakeholder)
    }
}

#[cfg(test)]
mod tests;
