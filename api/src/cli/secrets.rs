//! `chatledger secrets rotate`: live secrets sealed again under a new key.

use super::*;

pub(super) async fn rotate_secrets(database_url: Option<&str>) -> Result<(), CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let keyring = chatledger_adapters::secrets::Keyring::from_env(&env)
        .map_err(|e| CliError::Config(e.to_string()))?
        .ok_or_else(|| {
            CliError::Config(
                "set CHATLEDGER_SECRETS_KEY to the new key and CHATLEDGER_SECRETS_OLD_KEYS to the old ones".into(),
            )
        })?;
    let (store, _) = open_for_command(database_url).await?;
    let rotation = crate::onboarding::rotate_secrets(store, &keyring, chrono::Utc::now())
        .await
        .map_err(CliError::Io)?;
    println!(
        "resealed the secrets of {} credential(s) under key {}; {} already were",
        rotation.resealed,
        keyring.current_key_id(),
        rotation.already_current
    );
    Ok(())
}
