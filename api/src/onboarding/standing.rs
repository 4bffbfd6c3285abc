//! What Meta's reports on business accounts change for their credentials.

use super::*;

impl Onboarding {
    /// Records what Meta's reports on business accounts change for the credentials of those
    /// accounts: a restriction of messaging or a disabling suspends sends through it
    /// (`CredentialSuspended`), its end reinstates them (`CredentialReinstated`). Each event's
    /// id derives from the notice it was read from, so a redelivered webhook records nothing
    /// new. An account no credential has stays the notice it is.
    pub async fn note_account_updates(
        &self,
        updates: &[chatledger_application::ingest::AccountUpdate],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for update in updates {
            let Some(standing) = chatledger_core::standing::account_standing(&update.value) else {
                continue;
            };
            let businesses: Vec<String> = self
                .integrations
                .credentials()
                .into_iter()
                .filter(|(_, c)| c.waba_id.as_deref() == Some(update.account_id.as_str()))
                .map(|(business, _)| business)
                .collect();
            if businesses.is_empty() {
                tracing::info!(waba = %update.account_id,
                    "Meta reported on an account no credential has; kept as a notice");
            }
            for business in businesses {
                let event_id = Uuid::new_v5(
                    &chatledger_core::conversation::EVENT_ID_NAMESPACE,
                    format!("standing/{}/{business}", update.notice).as_bytes(),
                );
                let mut metadata = Metadata::by("meta:account_update");
                metadata.causation_id = Some(update.notice);
                // Decided on the stream as it stands; decided again if it moved meanwhile.
                for _ in 0..3 {
                    let credential = self.load(&business).await?;
                    let Some(event) = credential.standing_change(
                        &update.account_id,
                        standing.clone(),
                        update.notice,
                        at,
                    ) else {
                        break;
                    };
                    match self
                        .store
                        .append(
                            &credential_stream(&business),
                            ExpectedVersion::from_current(credential.version),
                            vec![event.to_new_event(event_id, metadata.clone())],
                        )
                        .await
                    {
                        Ok(result) => {
                            match &event {
                                CredentialEvent::CredentialSuspended { reason, .. } => {
                                    tracing::warn!(business = %business, reason = %reason, "credential suspended by Meta")
                                }
                                _ => {
                                    tracing::info!(business = %business, "credential reinstated by Meta")
                                }
                            }
                            if let Some(stored) = result.stored.last() {
                                self.settle(stored.position).await;
                            }
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { .. }) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}
