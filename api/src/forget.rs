//! Forgetting a customer: their keys destroyed (the log keeps only sealed personal data), and
//! the files of all their conversations deleted from the object store.

use chatledger_adapters::media::MediaStore;
use chatledger_adapters::personal::PersonalData;
use chatledger_core::conversation::CustomerKey;

/// What forgetting a customer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    /// The conversations whose keys were destroyed now.
    pub erased: Vec<String>,
    /// Files deleted from the object store.
    pub files: usize,
}

/// Forgets `customer`. Files are deleted for every conversation of the customer, erased now
/// or before (a file fetched after an earlier `forget` goes too). Forgetting again finds
/// nothing more.
pub async fn forget_customer(
    personal: &PersonalData,
    media: &MediaStore,
    customer: &CustomerKey,
    by: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Forgotten, String> {
    let erased = personal
        .forget(customer, by, now)
        .await
        .map_err(|e| e.to_string())?;
    let mut files = 0;
    let folders = media
        .folders_ending(&format!("-{customer}"))
        .await
        .map_err(|e| format!("listing the object store failed: {e}"))?;
    for folder in folders.iter().filter(|f| f.starts_with("conversation-")) {
        files += media
            .delete_folder(folder)
            .await
            .map_err(|e| format!("deleting the files of {folder} failed: {e}"))?;
    }
    Ok(Forgotten { erased, files })
}
