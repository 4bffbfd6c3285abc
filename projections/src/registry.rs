//! The `projections` registry: each read model's live generation and checkpoint.

use std::collections::HashMap;

use chatledger_core::Position;

use crate::read_db::{placeholders, Arg, DbError, ReadTx};

/// Where a projector stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration {
    pub generation: i64,
    pub checkpoint: Position,
}

impl Registration {
    pub fn suffix(&self) -> String {
        suffix(self.generation)
    }
}

pub(crate) fn suffix(generation: i64) -> String {
    format!("_g{generation}")
}

/// The registry rows of `names` (one statement, each row locked until commit).
pub(crate) async fn read_registrations(
    tx: &mut ReadTx,
    names: &[&str],
) -> Result<HashMap<String, Registration>, DbError> {
    let sql = format!(
        "SELECT name, generation, checkpoint FROM projections WHERE name IN ({}){}",
        placeholders(names.len()),
        tx.lock_suffix()
    );
    let args: Vec<Arg> = names.iter().map(|name| (*name).into()).collect();
    Ok(tx
        .fetch_all(&sql, &args)
        .await?
        .into_iter()
        .filter_map(|row| {
            let registration = Registration {
                generation: row.i64(1).unwrap_or(1),
                checkpoint: row.i64(2).unwrap_or(0) as u64,
            };
            Some((row.text(0)?, registration))
        })
        .collect())
}

pub(crate) async fn read_registration(
    tx: &mut ReadTx,
    name: &str,
) -> Result<Option<Registration>, DbError> {
    let sql = format!(
        "SELECT generation, checkpoint FROM projections WHERE name = $1{}",
        tx.lock_suffix()
    );
    Ok(tx
        .fetch_optional(&sql, &[name.into()])
        .await?
        .map(|row| Registration {
            generation: row.i64(0).unwrap_or(1),
            checkpoint: row.i64(1).unwrap_or(0) as u64,
        }))
}

/// Every read model's checkpoint as recorded (the live generation's), by name: what
/// `chatledger cluster` reports beside the log's head.
pub async fn checkpoints(
    db: &crate::read_db::ReadDb,
) -> Result<std::collections::BTreeMap<String, Position>, sqlx::Error> {
    let rows = db
        .fetch_all(
            "SELECT name, checkpoint FROM projections ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((row.text(0)?, row.i64(1).unwrap_or(0) as Position)))
        .collect())
}
