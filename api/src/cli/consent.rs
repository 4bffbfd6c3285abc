//! `chatledger consent`: a customer's consent record, as an auditor exports it.

use super::*;

pub(super) async fn consent_record(
    database_url: Option<&str>,
    config_dir: &Path,
    customer: &str,
) -> Result<(), CliError> {
    use chatledger_core::consent::{consent_stream, ConsentEvent};
    use std::io::Write;
    let env = |name: &str| std::env::var(name).ok();
    let whatsapp = crate::config::WhatsAppSettings::load(&config_dir.join("channels.yaml"), &env)
        .map_err(|e| CliError::Config(e.to_string()))?;
    let key = match whatsapp.phones.any(customer) {
        Some(phone) => chatledger_core::conversation::CustomerKey::Phone(phone),
        None => chatledger_core::conversation::CustomerKey::UserId(customer.trim().to_owned()),
    };
    let store = open_store(database_url).await?;
    let events = store
        .read_stream(&consent_stream(&key), 0, usize::MAX)
        .await
        .map_err(|e| CliError::Io(e.to_string()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for event in &events {
        let line = match ConsentEvent::from_recorded(event) {
            Some(Ok(change)) => serde_json::json!({
                "customer": key.to_string(),
                "position": event.position,
                "version": event.version,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "recorded_at": event.recorded_at,
                "hash": event.hash.to_string(),
                "granted": matches!(change, ConsentEvent::ConsentGranted(_)),
                "change": change.change(),
                "summary": change.in_words(),
            }),
            // Kept as recorded: an auditor sees it, whatever it is.
            _ => serde_json::json!({
                "customer": key.to_string(),
                "position": event.position,
                "version": event.version,
                "event_id": event.event_id,
                "event_type": event.event_type,
                "recorded_at": event.recorded_at,
                "hash": event.hash.to_string(),
                "data": event.data,
            }),
        };
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
