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
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_email_is_one_executive() {
        assert_eq!(
            executive_id("Asha@Example.com "),
            executive_id("asha@example.com")
        );
        assert_ne!(
            executive_id("asha@example.com"),
            executive_id("ravi@example.com")
        );
    }

    #[test]
    fn roles() {
        assert_eq!("auditor".parse::<Role>().unwrap(), Role::Auditor);
        assert!(!Role::Auditor.may_change() && Role::Auditor.sees_everything());
        assert!(Role::Executive.may_change() && !Role::Executive.sees_everything());
        assert!("boss".parse::<Role>().is_err());
    }
}
