//! Businesses and credentials, downstream of the log.
//!
//! - [`Integrations`]: this process's view of every business (integration choice, onboarded
//!   channels) and credential, folded from `business-*` and `credential-*`. Webhook routing,
//!   the sender and the refresh reactor read it; whoever appends to those streams waits for
//!   it to catch up ([`Integrations::wait_for`]) before answering.
//! - [`Credentials`]: the `credentials` and `businesses` read models. They hold the status,
//!   expiry, last refresh and last error, never a token.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use chatledger_core::channel::Channel;
use chatledger_core::conversation::DecodedEvent;
use chatledger_core::credential::{
    BusinessEvent, Credential, CredentialEvent, CredentialStatus, IntegrationKind,
};
use chatledger_core::{Position, RecordedEvent};
use tokio::sync::watch;

use crate::projector::{ProjectionError, Projector};
use crate::read_db::ReadTx;
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

/// `credentials` (one row per business with a credential stream) and `businesses` (each
/// business's integration choice).
pub struct Credentials;

fn unreadable(event: &RecordedEvent) -> impl Fn(serde_json::Error) -> ProjectionError + '_ {
    move |e| ProjectionError::Event {
        position: event.position,
        reason: e.to_string(),
    }
}

#[async_trait]
impl Projector for Credentials {
    fn name(&self) -> &'static str {
        "credentials"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["credentials", "businesses"]
    }

    fn schema(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE credentials{s} (
                    business_id TEXT PRIMARY KEY,
                    status TEXT NOT NULL,
                    waba_id TEXT NOT NULL DEFAULT '',
                    phone_number_id TEXT NOT NULL DEFAULT '',
                    display_phone_number TEXT,
                    channel_key TEXT,
                    api_provider TEXT NOT NULL DEFAULT '',
                    token_expires_at TEXT,
                    pending_token_expires_at TEXT,
                    connected_at TEXT,
                    last_refresh_at TEXT,
                    refresh_failures BIGINT NOT NULL DEFAULT 0,
                    last_error TEXT,
                    updated_at TEXT NOT NULL,
                    position BIGINT NOT NULL
                )"
            ),
            format!(
                "CREATE TABLE businesses{s} (
                    business_id TEXT PRIMARY KEY,
                    integration TEXT NOT NULL,
                    chosen_by TEXT NOT NULL,
                    chosen_at TEXT NOT NULL
                )"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ReadTx,
        s: &str,
        event: &DecodedEvent,
    ) -> Result<(), ProjectionError> {
        if let Some(business) = event.stream.strip_prefix("business-") {
            if let Some(BusinessEvent::IntegrationChosen { kind, by, at, .. }) =
                BusinessEvent::from_recorded(event).map_err(unreadable(event))?
            {
                tx.execute(
                    &format!(
                        "INSERT INTO businesses{s} (business_id, integration, chosen_by, chosen_at) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (business_id) DO UPDATE SET integration = $2, chosen_by = $3, chosen_at = $4"
                    ),
                    &[business.into(), kind.as_str().into(), by.into(), at.into()],
                )
                .await?;
            }
            return Ok(());
        }
        let Some(business) = event.stream.strip_prefix("credential-") else {
            return Ok(());
        };
        let Some(credential) = CredentialEvent::from_recorded(event).map_err(unreadable(event))?
        else {
            return Ok(());
        };
        tx.execute(
            &format!(
                "INSERT INTO credentials{s} (business_id, status, updated_at, position) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (business_id) DO UPDATE SET updated_at = $3, position = $4"
            ),
            &[
                business.into(),
                CredentialStatus::Pending.as_str().into(),
                event.recorded_at.into(),
                event.position.into(),
            ],
        )
        .await?;
        use CredentialEvent as E;
        let (sql, args): (&str, Vec<crate::read_db::Arg>) = match credential {
            E::OfficialSignupStarted { .. } | E::AppSubscribed { .. } | E::NumberRegistered { .. } | E::SecretsResealed { .. } => {
                return Ok(())
            }
            E::OnboardingAttempted { waba_id, phone_number_id, api_provider, .. } => (
                "UPDATE credentials{s} SET waba_id = $2, phone_number_id = $3, api_provider = $4
                 WHERE business_id = $1 AND status <> 'connected'",
                vec![waba_id.into(), phone_number_id.into(), api_provider.into()],
            ),
            E::OnboardingStepFailed { step, error, .. } => (
                "UPDATE credentials{s} SET last_error = $2 WHERE business_id = $1",
                vec![format!("{} failed: {error}", step.as_str()).into()],
            ),
            E::TokenIssued { expires_at, .. } => (
                "UPDATE credentials{s} SET pending_token_expires_at = $2 WHERE business_id = $1",
                vec![expires_at.into()],
            ),
            E::CredentialConnected { waba_id, phone_number_id, display_phone_number, channel_key, at, .. } => (
                "UPDATE credentials{s} SET status = 'connected', waba_id = $2, phone_number_id = $3,
                    display_phone_number = $4, channel_key = $5, connected_at = $6,
                    token_expires_at = pending_token_expires_at, pending_token_expires_at = NULL,
                    refresh_failures = 0, last_error = NULL
                 WHERE business_id = $1",
                vec![waba_id.into(), phone_number_id.into(), display_phone_number.into(), channel_key.into(), at.into()],
            ),
            E::TokenRefreshed { expires_at, at, .. } => (
                "UPDATE credentials{s} SET token_expires_at = $2, last_refresh_at = $3, refresh_failures = 0,
                    last_error = NULL WHERE business_id = $1",
                vec![expires_at.into(), at.into()],
            ),
            E::TokenRefreshFailed { attempt, error, .. } => (
                "UPDATE credentials{s} SET refresh_failures = $2, last_error = $3 WHERE business_id = $1",
                vec![i64::from(attempt).into(), format!("token refresh failed: {error}").into()],
            ),
            E::CredentialDisconnected { reason, .. } => (
                "UPDATE credentials{s} SET status = 'disconnected', last_error = $2 WHERE business_id = $1",
                vec![reason.into()],
            ),
            E::CredentialSuspended { reason, .. } => (
                "UPDATE credentials{s} SET status = 'suspended', last_error = $2 WHERE business_id = $1",
                vec![reason.into()],
            ),
            E::CredentialReinstated { status, .. } => (
                "UPDATE credentials{s} SET status = $2, last_error = NULL WHERE business_id = $1",
                vec![status.as_str().into()],
            ),
        };
        let mut all = vec![business.into()];
        all.extend(args);
        tx.execute(&sql.replace("{s}", s), &all).await?;
        Ok(())
    }
}
