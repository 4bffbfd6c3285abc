//! `chatledger secrets rotate`.

use super::*;

/// What `chatledger secrets rotate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub resealed: usize,
    pub already_current: usize,
}

/// Seals every live token and PIN again under the current key, reading with the old keys.
pub async fn rotate_secrets(
    store: Arc<dyn EventStore>,
    keyring: &Keyring,
    now: DateTime<Utc>,
) -> Result<Rotation, String> {
    let integrations = Integrations::default();
    let (_never, mut shutdown) = watch::channel(false);
    chatledger_projections::reactor::fold_log(
        store.as_ref(),
        0,
        |e| integrations.apply(e),
        &mut shutdown,
        "secrets rotate",
    )
    .await;
    let mut rotation = Rotation::default();
    for (business_id, credential) in integrations.credentials() {
        let Some(token) = &credential.token else {
            continue;
        };
        let current = keyring.current_key_id();
        let pin_current = credential.pin.as_ref().is_none_or(|p| p.key_id == current);
        if token.key_id == current && pin_current {
            rotation.already_current += 1;
            continue;
        }
        let reseal = |sealed: &SealedSecret, context: &str| {
            keyring
                .open(sealed, context)
                .map(|plain| keyring.seal(&plain, context))
                .map_err(|e| format!("business {business_id}: {e}"))
        };
        let event = CredentialEvent::SecretsResealed {
            token: reseal(token, &token_context(&business_id))?,
            pin: credential
                .pin
                .as_ref()
                .map(|p| reseal(p, &pin_context(&business_id)))
                .transpose()?,
            from_key_id: token.key_id.clone(),
            at: now,
        };
        store
            .append(
                &credential_stream(&business_id),
                ExpectedVersion::from_current(credential.version),
                vec![event.to_new_event(Uuid::new_v4(), Metadata::by("cli:secrets rotate"))],
            )
            .await
            .map_err(|e| format!("business {business_id}: {e}"))?;
        rotation.resealed += 1;
    }
    Ok(rotation)
}
