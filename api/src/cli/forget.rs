//! `chatledger forget`: a customer's personal data erased by destroying their keys.

use super::*;

pub(super) async fn forget(
    database_url: Option<&str>,
    config_dir: &Path,
    customer: &str,
    by: &str,
) -> Result<(), CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let whatsapp = crate::config::WhatsAppSettings::load(&config_dir.join("channels.yaml"), &env)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let key = match whatsapp.phones.any(customer) {
        Some(phone) => chatledger_core::conversation::CustomerKey::Phone(phone),
        None => chatledger_core::conversation::CustomerKey::UserId(customer.trim().to_owned()),
    };
    let (store, _) = open_personal(database_url).await?;
    let erased = store
        .forget(&key, by, chrono::Utc::now())
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    if erased.is_empty() {
        println!("nothing to erase: no conversation of {key} holds sealed personal data");
    } else {
        println!(
            "erased the personal data of {key} in {} conversation(s): {}",
            erased.len(),
            erased.join(", ")
        );
    }
    Ok(())
}
