//! `chatledger consent`: a customer's consent record, as an auditor exports it.

use super::*;

pub(super) async fn consent_record(
    database_url: Option<&str>,
    config_dir: &Path,
    customer: &str,
) -> Result<(), CliError> {
    use chatledger_core::consent::{consent_stream, ConsentEvent};
    use std::io::Write;
    let key = customer_key(config_dir, customer)?;
    let store = open_store(database_url).await?;
    let events = store
        .read_stream(&consent_stream(&key), 0, usize::MAX)
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for event in &events {
        let mut line = serde_json::json!({
            "customer": key.to_string(),
            "position": event.position,
            "version": event.version,
            "event_id": event.event_id,
            "event_type": event.event_type,
            "recorded_at": event.recorded_at,
            "hash": event.hash.to_string(),
        });
        match ConsentEvent::from_recorded(event) {
            Some(Ok(change)) => {
                line["granted"] = matches!(change, ConsentEvent::ConsentGranted(_)).into();
                line["change"] = serde_json::json!(change.change());
                line["summary"] = change.in_words().into();
            }
            // Kept as recorded: an auditor sees it, whatever it is.
            _ => line["data"] = event.data.clone(),
        }
        if writeln!(out, "{line}").is_err() {
            return Ok(());
        }
    }
    let _ = out.flush();
    if events.is_empty() {
        eprintln!("no consent recorded for {key}");
    }
    Ok(())
}
