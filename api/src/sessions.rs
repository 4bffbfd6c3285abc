//! Which login tokens still stand.
//!
//! A login token names an executive and carries the executive's session generation at its
//! issue, and an id of its own. It stands while the executive is active, the generation is
//! still theirs (no deactivation, new role or new password since: each of those ends every
//! token issued before it), and it was not logged out. Every process keeps this from the log,
//! folded at start and then followed, so an ending recorded by any process takes effect in all
//! of them as soon as they read it; live connections (GraphQL over WebSocket, `/ws`) watch
//! [`Sessions::subscribe`] and close when their token ends.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chatledger_core::conversation::DecodedEvent;
use chatledger_core::executive::ExecutiveEvent;
use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use chatledger_projections::reactor::Keeping;
use chatledger_projections::snapshots::Snapshots;

use crate::auth::{AuthError, TokenFacts, Viewer};

/// How long a check waits for the view to be folded at start before saying so.
const READY_WAIT: Duration = Duration::from_secs(10);

/// One executive, as far as tokens are concerned.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Gate {
    active: bool,
    generation: u64,
    /// Logged-out tokens, until they would have expired anyway.
    logged_out: HashMap<String, DateTime<Utc>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            active: true,
            generation: 0,
            logged_out: HashMap::new(),
        }
    }
}

/// The standing of every executive's tokens, kept current from the log. Cloning shares it.
#[derive(Clone)]
pub struct Sessions {
    gates: Arc<RwLock<HashMap<Uuid, Gate>>>,
    /// True once the log has been folded.
    ready: watch::Sender<bool>,
    /// Bumped whenever a token may have ended.
    ended: watch::Sender<u64>,
    /// The last position applied.
    position: watch::Sender<u64>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            gates: Arc::default(),
            ready: watch::Sender::new(false),
            ended: watch::Sender::new(0),
            position: watch::Sender::new(0),
        }
    }
}

impl Sessions {
    /// Applies one event of the log, in order (other events change nothing).
    pub fn apply(&self, event: &DecodedEvent) {
        self.position.send_if_modified(|p| {
            let moved = event.position > *p;
            *p = (*p).max(event.position);
            moved
        });
        let Some(Ok(change)) = ExecutiveEvent::decode(&event.event_type, &event.data) else {
            return;
        };
        let ends = change.ends_sessions() || matches!(change, ExecutiveEvent::LoggedOut(_));
        {
            let mut gates = self.gates.write().unwrap_or_else(|e| e.into_inner());
            let gate = gates.entry(change.executive_id()).or_default();
            if change.ends_sessions() {
                gate.generation += 1;
            }
            match change {
                ExecutiveEvent::Deactivated(_) => gate.active = false,
                ExecutiveEvent::Reactivated(_) => gate.active = true,
                ExecutiveEvent::LoggedOut(out) => {
                    let now = Utc::now();
                    gate.logged_out.retain(|_, expires| *expires > now);
                    if out.token_expires_at > now {
                        gate.logged_out.insert(out.token_id, out.token_expires_at);
                    }
                }
                _ => {}
            }
        }
        if ends {
            self.ended.send_modify(|n| *n += 1);
        }
    }

    /// Folds the log (after its last snapshot in `snapshots`, if given), then follows it,
    /// until `shutdown` turns true.
    pub async fn run(
        self,
        tail: chatledger_projections::tail::LogTail,
        shutdown: watch::Receiver<bool>,
        snapshots: Option<Snapshots>,
    ) {
        let ready = self.ready.clone();
        let keeping = snapshots.map(|snapshots| Keeping {
            snapshots,
            format: 1,
            take: Box::new(|| {
                let gates = self.gates.read().unwrap_or_else(|e| e.into_inner());
                serde_json::to_value(&*gates).unwrap_or_default()
            }),
            put: Box::new(
                |kept| match serde_json::from_value::<HashMap<Uuid, Gate>>(kept) {
                    Ok(gates) => {
                        *self.gates.write().unwrap_or_else(|e| e.into_inner()) = gates;
                        true
                    }
                    Err(_) => false,
                },
            ),
        });
        chatledger_projections::reactor::fold_and_follow(
            tail,
            "sessions",
            shutdown,
            |e| self.apply(e),
            |_| {
                ready.send_replace(true);
            },
            keeping,
        )
        .await;
    }

    /// Waits (a while) until everything up to `position` is applied.
    pub async fn wait_for(&self, position: u64) {
        let mut applied = self.position.subscribe();
        let _ = tokio::time::timeout(READY_WAIT, applied.wait_for(|p| *p >= position)).await;
    }

    /// Changes whenever a token may have ended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Whether the executive may log in (`None`: unknown here, e.g. just registered).
    pub fn active(&self, executive_id: Uuid) -> Option<bool> {
        self.gates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&executive_id)
            .map(|g| g.active)
    }

    /// The executive's session generation now: what a token issued now carries.
    pub fn generation(&self, executive_id: Uuid) -> u64 {
        self.gates
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&executive_id)
            .map_or(0, |g| g.generation)
    }

    /// Waits (a while) until the log has been folded.
    pub async fn ready(&self) -> Result<(), AuthError> {
        let mut ready = self.ready.subscribe();
        let folded = tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok());
        if folded {
            Ok(())
        } else {
            Err(AuthError::Unavailable(
                "the executives' sessions are still being read from the log".into(),
            ))
        }
    }

    /// Whether a token that names `viewer` (with `facts`, for a login token) still stands.
    /// The admin token always does.
    pub fn standing(&self, viewer: &Viewer, facts: Option<&TokenFacts>) -> Result<(), AuthError> {
        let (Some(id), Some(facts)) = (&viewer.executive_id, facts) else {
            return Ok(());
        };
        let id = Uuid::parse_str(id).map_err(|_| AuthError::Invalid)?;
        let gates = self.gates.read().unwrap_or_else(|e| e.into_inner());
        let Some(gate) = gates.get(&id) else {
            // Not seen here yet: only a token of the first generation can be this new.
            return if facts.generation == 0 {
                Ok(())
            } else {
                Err(AuthError::Invalid)
            };
        };
        if !gate.active {
            Err(AuthError::Ended("the executive was deactivated"))
        } else if facts.generation != gate.generation {
            Err(AuthError::Ended(
                "the executive's role, stakeholders or password changed",
            ))
        } else if gate.logged_out.contains_key(&facts.token_id) {
            Err(AuthError::Ended("logged out"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatledger_core::executive::{
        ExecutiveChange, ExecutiveDeactivated, ExecutiveLoggedOut, ExecutivePasswordReset,
        ExecutiveReactivated,
    };
    use chatledger_core::{Metadata, RecordedEvent};

    fn recorded(event: chatledger_core::NewEvent, position: u64) -> DecodedEvent {
        DecodedEvent::new(RecordedEvent {
            position,
            stream: "executive-x".into(),
            version: position,
            event_id: event.event_id,
            event_type: event.event_type,
            schema_version: 1,
            data: event.data,
            metadata: event.metadata,
            recorded_at: Utc::now(),
            hash: chatledger_core::EventHash::GENESIS,
        })
    }

    #[test]
    fn tokens_end_by_logout_deactivation_and_new_passwords() {
        let sessions = Sessions::default();
        let id = Uuid::new_v4();
        let viewer = Viewer {
            role: chatledger_core::executive::Role::Executive,
            executive_id: Some(id.to_string()),
            name: "Asha".into(),
            stakeholders: vec![],
        };
        let token = |token_id: &str, generation| TokenFacts {
            token_id: token_id.into(),
            generation,
            expires_at: Utc::now() + chrono::Duration::hours(1),
        };
        let at = Utc::now();
        let meta = || Metadata::by("test");
        assert!(sessions.standing(&viewer, Some(&token("a", 0))).is_ok());
        sessions.apply(&recorded(
            ExecutiveLoggedOut {
                executive_id: id,
                token_id: "a".into(),
                token_expires_at: at + chrono::Duration::hours(1),
                at,
            }
            .to_new_event(Uuid::new_v4(), meta()),
            1,
        ));
        assert_eq!(
            sessions.standing(&viewer, Some(&token("a", 0))),
            Err(AuthError::Ended("logged out"))
        );
        assert!(
            sessions.standing(&viewer, Some(&token("b", 0))).is_ok(),
            "only that token"
        );
        sessions.apply(&recorded(
            ExecutivePasswordReset {
                executive_id: id,
                password_hash: "h".into(),
                at,
            }
            .to_new_event(Uuid::new_v4(), meta()),
            2,
        ));
        assert!(sessions.standing(&viewer, Some(&token("b", 0))).is_err());
        assert!(sessions.standing(&viewer, Some(&token("c", 1))).is_ok());
        sessions.apply(&recorded(
            ExecutiveDeactivated {
                executive_id: id,
                reason: "left".into(),
                at,
            }
            .to_new_event(Uuid::new_v4(), meta()),
            3,
        ));
        assert_eq!(sessions.active(id), Some(false));
        assert!(sessions.standing(&viewer, Some(&token("c", 1))).is_err());
        assert!(
            sessions.standing(&viewer, Some(&token("d", 2))).is_err(),
            "inactive"
        );
        sessions.apply(&recorded(
            ExecutiveReactivated {
                executive_id: id,
                at,
            }
            .to_new_event(Uuid::new_v4(), meta()),
            4,
        ));
        assert!(sessions.standing(&viewer, Some(&token("d", 2))).is_ok());
        assert!(sessions.standing(&viewer, None).is_ok(), "the admin token");
    }
}
