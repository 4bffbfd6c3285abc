//! Keeping tokens fresh: renewal, refusal, and the reactor that renews ahead of expiry.

use super::*;

impl Onboarding {
    /// Renews the business's token (`fb_exchange_token`, then `debug_token` for its expiry)
    /// and records the outcome; after the configured failures, disconnects the credential.
    /// `Ok(false)`: nothing to do, or another process did it first.
    pub async fn refresh(
        &self,
        business_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, OnboardingError> {
        let (keyring, app) = self.ready()?;
        let credential = self.load(business_id).await?;
        let Some(sealed) = credential
            .token
            .as_ref()
            .filter(|_| credential.is_connected())
        else {
            return Ok(false);
        };
        let token = keyring
            .open(sealed, &token_context(business_id))
            .map_err(|e| OnboardingError::Unavailable(e.to_string()))?;
        let renewed = async {
            let token = Secret::new(self.graph.extend_token(app, token.expose()).await?);
            let info = self.graph.debug_token(app, token.expose()).await?;
            if !info.is_valid {
                return Err(GraphError::local(
                    "debug_token says the renewed token is not valid",
                ));
            }
            Ok((token, info.expires_at))
        }
        .await;
        let mut recorder = self.recorder(
            business_id,
            &credential,
            Metadata::by("reactor:token-refresher"),
        );
        let outcome = match renewed {
            Ok((token, expires_at)) => {
                tracing::info!(business = %business_id, "token renewed");
                recorder
                    .record(CredentialEvent::TokenRefreshed {
                        token: keyring.seal(&token, &token_context(business_id)),
                        expires_at,
                        at: now,
                    })
                    .await
            }
            Err(error) => {
                tracing::warn!(business = %business_id, attempt = credential.refresh_failures + 1,
                    error = %error, "token renewal failed");
                let max_attempts = self.settings.refresh.max_attempts;
                let mut recorded = Ok(());
                for event in credential.refresh_failed(error, max_attempts, now) {
                    recorded = recorder.record(event).await;
                    if recorded.is_err() {
                        break;
                    }
                }
                recorded
            }
        };
        match outcome {
            Ok(()) => {
                self.settle(recorder.position).await;
                Ok(true)
            }
            Err(StoreError::WrongExpectedVersion { .. }) => Ok(false),
            Err(e) => Err(OnboardingError::Store(e)),
        }
    }

    /// Meta refused the business's token on a send: the credential needs a new signup.
    pub async fn token_refused(&self, business_id: &str, error: GraphError, now: DateTime<Utc>) {
        let credential = match self.load(business_id).await {
            Ok(credential) => credential,
            Err(e) => {
                tracing::error!(business = %business_id, error = %e, "cannot read the credential to mark it");
                return;
            }
        };
        let Some(event) = credential.token_refused(error, now) else {
            return;
        };
        let mut recorder = self.recorder(business_id, &credential, Metadata::by("sender"));
        match recorder.record(event).await {
            Ok(()) => {
                tracing::warn!(business = %business_id, "credential disconnected: the token was refused");
                self.settle(recorder.position).await;
            }
            Err(StoreError::WrongExpectedVersion { .. }) => {}
            Err(e) => {
                tracing::error!(business = %business_id, error = %e, "recording a refused token failed")
            }
        }
    }
}

/// The reactor that renews tokens `margin` before they expire.
pub struct Refresher {
    onboarding: Arc<Onboarding>,
    clock: Arc<dyn Clock>,
    ownership: Ownership,
}

impl Refresher {
    pub fn new(onboarding: Arc<Onboarding>, clock: Arc<dyn Clock>) -> Self {
        Refresher {
            onboarding,
            clock,
            ownership: Ownership::local(),
        }
    }

    /// Renews only the tokens of businesses whose credential stream this process owns
    /// (default: all), so that a token is exchanged with Meta once, not once per process.
    pub fn owned_by(mut self, ownership: Ownership) -> Self {
        self.ownership = ownership;
        self
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let policy = self.onboarding.settings.refresh;
        let mut changes = self.onboarding.integrations.subscribe();
        // Businesses whose renewal could not even be tried, and when to look again.
        let mut held: HashMap<String, DateTime<Utc>> = HashMap::new();
        // Shared ownership changes under the reactor: look again every round.
        let shared = self.ownership.is_shared();
        loop {
            let next = self
                .onboarding
                .integrations
                .credentials()
                .into_iter()
                .filter(|(business, _)| self.ownership.owns(&credential_stream(business)))
                .filter_map(|(business, credential)| {
                    let due = credential.refresh_due(policy.margin, policy.retry_every)?;
                    let due = held.get(&business).map_or(due, |h| due.max(*h));
                    Some((due, business))
                })
                .min();
            let wake = async {
                match &next {
                    Some((due, _)) => self.clock.sleep_until(*due).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wake => {
                    let Some((_, business)) = next else { continue };
                    // Held until the renewal is recorded; the view may lag the log, which the
                    // renewal's expected version takes care of.
                    let Some(_held) = self.ownership.hold(&credential_stream(&business), Position::MAX).await else {
                        continue;
                    };
                    let now = self.clock.now();
                    match self.onboarding.refresh(&business, now).await {
                        Ok(true) => {
                            held.remove(&business);
                        }
                        // Another process renewed it, or this view is behind the log: look
                        // again once the view has caught up, not in a tight loop.
                        Ok(false) => {
                            held.insert(business, chatledger_core::time::later(now, policy.retry_every));
                        }
                        Err(e) => {
                            tracing::error!(business = %business, error = %e, "token renewal could not be tried");
                            held.insert(business, chatledger_core::time::later(now, policy.retry_every));
                        }
                    }
                }
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(chatledger_projections::ownership::ROUND), if shared => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
