//! `chatledger quarantine list | retry`: the events read models set aside (ADR 10).

use std::io::Write;
use std::sync::Arc;

use chatledger_core::EventStore;
use chatledger_projections::quarantine::{self, Retried};
use chatledger_projections::read_db::ReadDb;

use super::CliError;

/// Prints every quarantined event of the live read models as a JSON line.
pub(super) async fn list(db: &ReadDb, read_model: Option<&str>) -> Result<(), CliError> {
    let entries = quarantine::list(db, read_model)
        .await
        .map_err(|e| CliError::Io(format!("reading the quarantine failed: {e}")))?;
    let mut out = std::io::stdout().lock();
    for entry in &entries {
        let line = serde_json::to_string(entry).map_err(|e| CliError::Io(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| CliError::Io(e.to_string()))?;
    }
    if entries.is_empty() {
        eprintln!("no quarantined events");
    }
    Ok(())
}

/// Applies every quarantined event again and says what became of each.
pub(super) async fn retry(store: Arc<dyn EventStore>, db: &ReadDb) -> Result<(), CliError> {
    let projectors = chatledger_projections::read_models::all();
    let results = quarantine::retry(store.as_ref(), db, &projectors)
        .await
        .map_err(|e| CliError::Io(format!("retrying the quarantine failed: {e}")))?;
    let mut still = 0;
    for (entry, outcome) in &results {
        let what = match outcome {
            Retried::Applied => "applied".to_owned(),
            Retried::Gone => "no longer in the log; dropped from the quarantine".to_owned(),
            Retried::StillFails(error) => {
                still += 1;
                format!("still fails: {error}")
            }
        };
        println!(
            "{} position {} ({} on {}): {what}",
            entry.read_model, entry.position, entry.event_type, entry.stream
        );
    }
    println!(
        "{} quarantined event(s) retried, {} applied, {still} still quarantined",
        results.len(),
        results
            .iter()
            .filter(|(_, o)| *o == Retried::Applied)
            .count()
    );
    if still > 0 {
        return Err(CliError::Io(format!(
            "{still} quarantined event(s) still cannot be applied; `chatledger replay NAME` rebuilds a read model whole"
        )));
    }
    Ok(())
}
