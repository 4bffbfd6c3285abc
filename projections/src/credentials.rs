//! Businesses and credentials, downstream of the log.
//!
//! - [`Integrations`]: this process's view of every business (integration choice, onboarded
//!   channels) and credential, folded from `business-*` and `credential-*`. Webhook routing,
//!   the sender and the refresh reactor read it; whoever appends to those streams waits for
//!   it to catch up ([`Integrations::wait_for`]) before answering.
//!
//! The `credentials` and `businesses` read models are in
//! [`crate::read_models::credentials`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chatledger_core::channel::Channel;
use chatledger_core::credential::{BusinessEvent, Credential, IntegrationKind};
use chatledger_core::{Position, RecordedEvent};
use tokio::sync::watch;

use crate::tail::LogTail;

/// One business as this process knows it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Business {
    pub integration: Option<IntegrationKind>,
    /// Channels official onboarding registered.
    pub channels: Vec<Channel>,
    pub credential: Credential,
    version: Option<u64>,
}

#[derive(Default, serde::Serialize, serde::Deserialize)]
struct View {
    businesses: HashMap<String, Business>,
}

/// The businesses and credentials of the log, kept current by [`Integrations::run`].
#[derive(Clone)]
pub struct Integrations {
    view: Arc<RwLock<View>>,
    /// The last position applied.
    position: watch::Sender<Position>,
    /// Bumped whenever a business or credential changes.
    changes: watch::Sender<u64>,
}

impl Default for Integrations {
    fn default() -> Self {
        Integrations {
            view: Arc::default(),
            position: watch::Sender::new(0),
            changes: watch::Sender::new(0),
        }
    }
}

impl Integrations {
    /// Applies one event of the log, in order. Events of other streams only move the position;
    /// an event already applied (by version) changes nothing.
    pub fn apply(&self, event: &RecordedEvent) {
        let changed = if let Some(id) = event.stream.strip_prefix("credential-") {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let credential = &mut view.businesses.entry(id.to_owned()).or_default().credential;
            if credential.version.is_some_and(|v| v >= event.version) {
                false
            } else {
                credential.apply_recorded(event);
                true
            }
        } else if let Some(id) = event.stream.strip_prefix("business-") {
            let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
            let business = view.businesses.entry(id.to_owned()).or_default();
            if business.version.is_some_and(|v| v >= event.version) {
                false
            } else {
                business.version = Some(event.version);
                match BusinessEvent::from_recorded(event) {
                    Ok(Some(BusinessEvent::IntegrationChosen { kind, .. })) => {
                        business.integration = Some(kind);
                    }
                    Ok(Some(BusinessEvent::ChannelRegistered { channel, .. })) => {
                        business.channels.retain(|c| c.key != channel.key);
                        business.channels.push(*channel);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(position = event.position, error = %e, "a business event is unreadable; skipped");
                    }
                }
                true
            }
        } else {
            false
        };
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        self.position.send_if_modified(|p| {
            let moved = event.position > *p;
            *p = (*p).max(event.position);
            moved
        });
    }

    /// Folds the log (after its last snapshot in `snapshots`, if given), then follows it,
    /// until `shutdown` turns true.
    pub async fn run(
        self,
        tail: LogTail,
        shutdown: watch::Receiver<bool>,
        snapshots: Option<crate::snapshots::Snapshots>,
    ) {
        let position = self.position.clone();
        let keeping = snapshots.map(|snapshots| crate::reactor::Keeping {
            snapshots,
            format: 1,
            take: Box::new(|| {
                let view = self.view.read().unwrap_or_else(|e| e.into_inner());
                serde_json::to_value(&*view).unwrap_or_default()
            }),
            put: Box::new(|kept| match serde_json::from_value::<View>(kept) {
                Ok(view) => {
                    *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
                    self.changes.send_modify(|n| *n += 1);
                    true
                }
                Err(_) => false,
            }),
        });
        crate::reactor::fold_and_follow(
            tail,
            "integrations",
            shutdown,
            |e| self.apply(e),
            |folded| {
                position.send_if_modified(|p| {
                    let moved = folded > *p;
                    *p = (*p).max(folded);
                    moved
                });
            },
            keeping,
        )
        .await;
    }

    /// Waits until everything up to `position` is applied.
    pub async fn wait_for(&self, position: Position) {
        let mut rx = self.position.subscribe();
        let _ = rx.wait_for(|p| *p >= position).await;
    }

    /// Changes whenever a business or credential does.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn business(&self, id: &str) -> Business {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .businesses
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// Every business with a credential stream.
    pub fn credentials(&self) -> Vec<(String, Credential)> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .businesses
            .iter()
            .filter(|(_, b)| b.credential.version.is_some())
            .map(|(id, b)| (id.clone(), b.credential.clone()))
            .collect()
    }

    /// An onboarded channel by its key.
    pub fn channel(&self, key: &str) -> Option<Channel> {
        self.find_channel(|c| c.key == key)
    }

    /// An onboarded channel by Meta's phone number id.
    pub fn channel_by_phone_number_id(&self, id: &str) -> Option<Channel> {
        self.find_channel(|c| c.phone_number_id.as_deref() == Some(id))
    }

    fn find_channel(&self, matches: impl Fn(&Channel) -> bool) -> Option<Channel> {
        self.view
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .businesses
            .values()
            .flat_map(|b| b.channels.iter())
            .find(|c| matches(c))
            .cloned()
    }
}
