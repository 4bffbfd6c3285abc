//! `chatledger cluster`: which processes share the work, which partitions each owns, and how
//! far the read models have got, read from the database itself.

use super::*;

/// Prints the processes sharing this database's work as one JSON object: the log's head,
/// each member with its connection name and partitions, the partitions nobody owns (a
/// process just died, or none runs), and each read model's checkpoint and lag.
pub(super) async fn cluster(database_url: Option<&str>) -> Result<(), CliError> {
    let location = StoreLocation::from_database_url(database_url)?;
    let (store, db) = open_for_command(database_url).await?;
    let head = store
        .head_position()
        .await
        .map_err(|e| CliError::Io(format!("reading the log's head failed: {e}")))?;
    let checkpoints = chatledger_projections::registry::checkpoints(&db)
        .await
        .map_err(|e| CliError::Io(format!("reading the read models' checkpoints failed: {e}")))?;
    let read_models: serde_json::Map<String, serde_json::Value> = checkpoints
        .into_iter()
        .map(|(name, checkpoint)| {
            (
                name,
                serde_json::json!({"checkpoint": checkpoint, "lag": head.saturating_sub(checkpoint)}),
            )
        })
        .collect();
    let mut report = serde_json::json!({
        "store": location.describe(),
        "head_position": head,
        "partitions": ownership::PARTITIONS,
        "read_models": read_models,
    });
    match location {
        StoreLocation::Sqlite(_) => {
            report["mode"] = "local".into();
            report["note"] = "SQLite: one process serves the file and owns every partition".into();
        }
        StoreLocation::Postgres(url) => {
            let config = ownership::connection_config(&url, None)
                .map_err(|e| CliError::Config(format!("DATABASE_URL: {e}")))?;
            let cluster = ownership::cluster(&config).await.map_err(|e| {
                CliError::Io(format!("reading who owns what from PostgreSQL failed: {e}"))
            })?;
            report["mode"] = "postgres".into();
            report["members"] = serde_json::json!(cluster.members);
            report["unowned"] = serde_json::json!(cluster.unowned);
        }
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&report).map_err(|e| CliError::Io(e.to_string()))?
    );
    Ok(())
}
