//! The integration choice, the signup `state`, and the callback's steps.

use super::*;

impl Onboarding {
    /// Records `kind` as the business's integration; `false` when it already was.
    pub async fn choose_integration(
        &self,
        business_id: &str,
        kind: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, OnboardingError> {
        let current = self.integrations.business(business_id).integration;
        let Some(event) = choose_integration(current, business_id, kind, by, now)? else {
            return Ok(false);
        };
        let result = self
            .store
            .append(
                &business_stream(business_id),
                ExpectedVersion::Any,
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by(by))],
            )
            .await?;
        if let Some(stored) = result.stored.last() {
            self.settle(stored.position).await;
        }
        Ok(true)
    }

    /// Issues a one-time `state` for the business's Embedded Signup.
    pub async fn start_signup(
        &self,
        business_id: &str,
        stakeholder: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<StartedSignup, OnboardingError> {
        let (_, app) = self.ready()?;
        let state = format!(
            "{business_id}.{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        let expires_at = chatledger_core::time::later(now, self.settings.state_ttl);
        let event = chatledger_core::credential::start_signup(
            business_id,
            stakeholder,
            &state,
            expires_at,
            by,
            now,
        )?;
        let result = self
            .store
            .append(
                &credential_stream(business_id),
                ExpectedVersion::Any,
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by(by))],
            )
            .await?;
        if let Some(stored) = result.stored.last() {
            self.settle(stored.position).await;
        }
        Ok(StartedSignup {
            state,
            expires_at,
            app_id: app.id.clone(),
        })
    }

    /// The callback: checks `state`, then exchanges, inspects, subscribes, registers and
    /// connects, recording each step. Nothing is recorded when the request itself is refused.
    pub async fn complete(
        &self,
        result: &SignupResult,
        now: DateTime<Utc>,
    ) -> Result<Connected, OnboardingError> {
        let (keyring, app) = self.ready()?;
        let business_id = result.business_id.as_str();
        check_business_id(business_id)?;
        let credential = self.load(business_id).await?;
        let attempt_id = Uuid::new_v4();
        let (issued, attempted) =
            credential.attempt(result, attempt_id, &self.settings.provider.name, now)?;
        let status = credential.status.map_or("pending", |s| s.as_str());
        let mut metadata = Metadata::by("onboarding");
        metadata.correlation_id = Some(attempt_id);
        metadata.received_at = Some(now);
        let mut recorder = self.recorder(business_id, &credential, metadata);
        recorder.record(attempted).await?;
        let outcome = self
            .steps(
                keyring,
                app,
                result,
                &issued.stakeholder,
                attempt_id,
                &mut recorder,
                now,
            )
            .await;
        let connected = match outcome {
            Ok(connected) => connected,
            Err(Failed::Store(e)) => return Err(e.into()),
            Err(Failed::Step(step, error)) => {
                tracing::warn!(business = %business_id, step = step.as_str(), error = %error, "official onboarding failed");
                recorder
                    .record(CredentialEvent::OnboardingStepFailed {
                        attempt_id,
                        step,
                        error: error.clone(),
                        at: now,
                    })
                    .await?;
                self.settle(recorder.position).await;
                return Err(OnboardingError::Step {
                    step,
                    error: Box::new(error),
                    status,
                });
            }
        };
        self.settle(recorder.position).await;
        tracing::info!(business = %business_id, phone_number_id = %connected.phone_number_id,
            channel = %connected.channel, "official onboarding completed");
        Ok(connected)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn steps(
        &self,
        keyring: &Keyring,
        app: &App,
        result: &SignupResult,
        stakeholder: &str,
        attempt_id: Uuid,
        recorder: &mut Recorder<'_>,
        now: DateTime<Utc>,
    ) -> Result<Connected, Failed> {
        let business_id = result.business_id.as_str();
        let stored = Failed::Store;
        let token = Secret::new(
            self.graph
                .exchange_code(app, &result.code)
                .await
                .map_err(|e| Failed::Step(OnboardingStep::ExchangeCode, e))?,
        );
        let info = self
            .graph
            .debug_token(app, token.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::InspectToken, e))?;
        if !info.is_valid {
            return Err(Failed::Step(
                OnboardingStep::InspectToken,
                GraphError::local("debug_token says the issued token is not valid"),
            ));
        }
        recorder
            .record(CredentialEvent::TokenIssued {
                attempt_id,
                token: keyring.seal(&token, &token_context(business_id)),
                expires_at: info.expires_at,
                token_type: info.token_type,
                scopes: info.scopes,
                at: now,
            })
            .await
            .map_err(stored)?;
        self.graph
            .subscribe_app(&result.waba_id, token.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::SubscribeApp, e))?;
        recorder
            .record(CredentialEvent::AppSubscribed {
                attempt_id,
                waba_id: result.waba_id.clone(),
                at: now,
            })
            .await
            .map_err(stored)?;
        let pin = Secret::new(format!("{:06}", Uuid::new_v4().as_u128() % 1_000_000));
        self.graph
            .register(&result.phone_number_id, token.expose(), pin.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::RegisterNumber, e))?;
        recorder
            .record(CredentialEvent::NumberRegistered {
                attempt_id,
                phone_number_id: result.phone_number_id.clone(),
                pin: keyring.seal(&pin, &pin_context(business_id)),
                at: now,
            })
            .await
            .map_err(stored)?;
        let number = self
            .graph
            .phone_number(&result.phone_number_id, token.expose())
            .await
            .map_err(|e| Failed::Step(OnboardingStep::ReadNumber, e))?;
        let channel_key = self
            .register_channel(
                business_id,
                stakeholder,
                result,
                &number.display_phone_number,
                now,
            )
            .await
            .map_err(stored)?;
        recorder
            .record(CredentialEvent::CredentialConnected {
                attempt_id,
                state_sha256: chatledger_core::credential::state_digest(&result.state),
                waba_id: result.waba_id.clone(),
                phone_number_id: result.phone_number_id.clone(),
                display_phone_number: number.display_phone_number.clone(),
                verified_name: number.verified_name,
                channel_key: channel_key.clone(),
                at: now,
            })
            .await
            .map_err(stored)?;
        Ok(Connected {
            status: CredentialStatus::Connected.as_str(),
            business_id: business_id.to_owned(),
            waba_id: result.waba_id.clone(),
            phone_number_id: result.phone_number_id.clone(),
            display_phone_number: number.display_phone_number,
            channel: channel_key,
            api_provider: self.settings.provider.name.clone(),
            token_expires_at: info.expires_at,
        })
    }

    /// The channel the onboarded number routes to: a configured channel with this phone
    /// number id, one onboarding registered before, or a new one keyed by the number.
    pub(super) async fn register_channel(
        &self,
        business_id: &str,
        stakeholder: &str,
        result: &SignupResult,
        number: &str,
        now: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let id = result.phone_number_id.as_str();
        if let Some(configured) = self.whatsapp.channel_by_phone_number_id(id) {
            return Ok(configured.key.clone());
        }
        if let Some(onboarded) = self
            .integrations
            .channel_by_phone_number_id(id)
            .filter(|c| c.business == business_id)
        {
            return Ok(onboarded.key);
        }
        let taken = |key: &str| {
            self.whatsapp.channel(key).is_some() || self.integrations.channel(key).is_some()
        };
        let key = if taken(number) {
            id.to_owned()
        } else {
            number.to_owned()
        };
        let event = BusinessEvent::ChannelRegistered {
            business_id: business_id.to_owned(),
            channel: Box::new(Channel {
                key: key.clone(),
                number: number.to_owned(),
                stakeholder: stakeholder.to_owned(),
                business: business_id.to_owned(),
                provider: Provider::Meta,
                phone_number_id: Some(id.to_owned()),
                auth: ChannelAuth {
                    meta_signature: true,
                    ..ChannelAuth::default()
                },
                send: Default::default(),
            }),
            at: now,
        };
        let appended = self
            .store
            .append(
                &business_stream(business_id),
                ExpectedVersion::Any,
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by("onboarding"))],
            )
            .await?;
        if let Some(stored) = appended.stored.last() {
            self.settle(stored.position).await;
        }
        Ok(key)
    }
}
