//! `chatledger forget`: a customer's personal data erased by destroying their keys, and
//! their conversations' files deleted from the object store.

use super::*;

pub(super) async fn forget(
    database_url: Option<&str>,
    config_dir: &Path,
    customer: &str,
    by: &str,
) -> Result<(), CliError> {
    let env = |name: &str| std::env::var(name).ok();
    let key = customer_key(config_dir, customer)?;
    let location = StoreLocation::from_database_url(database_url)?;
    let media = crate::config::open_store(&env, &super::serve::data_dir(&location))
        .map_err(|e| CliError::Config(e.to_string()))?;
    let (store, _) = open_personal(database_url).await?;
    let forgotten = crate::forget::forget_customer(&store, &media, &key, by, chrono::Utc::now())
        .await
        .map_err(CliError::Io)?;
    if forgotten.erased.is_empty() {
        println!("nothing to erase: no conversation of {key} holds sealed personal data");
    } else {
        println!(
            "erased the personal data of {key} in {} conversation(s): {}",
            forgotten.erased.len(),
            forgotten.erased.join(", ")
        );
    }
    println!(
        "deleted {} file(s) of {key} from the object store ({})",
        forgotten.files,
        media.describe()
    );
    Ok(())
}
