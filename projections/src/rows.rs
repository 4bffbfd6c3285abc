//! Many rows in one statement: a read model that folds a batch of events in memory reads the
//! rows it needs and writes the rows it changed a statement each, whatever the batch's size.
//! Keys and rows travel as one JSON parameter (an array of keys, or an array of rows, each an
//! array of values in the columns' order), so a statement's text, and the plan prepared for it,
//! stay the same for every batch. On SQLite, which runs in this process, rows are written a
//! statement each (still once per batch, not once per event).

use serde_json::Value;

use crate::read_db::{DbError, ReadTx};
use crate::sql::Arg;

/// A column a batch writes: its name, and whether it holds integers (read from the JSON row
/// with a cast) rather than text.
pub(crate) type Column = (&'static str, bool);

/// What a row already there under the same key becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Replaced by the batch's row (the fold started from it).
    Replace,
    /// Kept as it is (the batch's row is only what to insert when there is none).
    Keep,
}

/// The JSON the values of one row travel as.
fn json_value(arg: &Arg) -> Value {
    match arg {
        Arg::Int(v) => Value::from(*v),
        Arg::Text(v) => Value::String(v.clone()),
        Arg::Null => Value::Null,
    }
}

/// `values` as the JSON parameter of [`ReadTx::json_texts`] or of a row source.
pub(crate) fn json_param<'a>(values: impl IntoIterator<Item = &'a Arg>) -> Arg {
    Arg::Text(Value::Array(values.into_iter().map(json_value).collect()).to_string())
}

impl ReadTx {
    /// A row source over the JSON array of arrays bound to `param`, named `r`: `r.value ->> N`
    /// is the Nth value of a row, as text or integer.
    pub(crate) fn json_rows(&self, param: &str) -> String {
        if self.is_postgres() {
            format!("jsonb_array_elements({param}::jsonb) AS r(value)")
        } else {
            format!("json_each({param}) AS r")
        }
    }

    /// A subquery listing the texts of the JSON array bound to `param`: `key IN (…)`.
    pub(crate) fn json_texts(&self, param: &str) -> String {
        if self.is_postgres() {
            format!("SELECT jsonb_array_elements_text({param}::jsonb)")
        } else {
            format!("SELECT value FROM json_each({param})")
        }
    }

    /// Writes `rows` (a value per column of `columns`, in their order) into `table` in one
    /// statement; a row whose `key` is there already is replaced or kept (`on_conflict`). With
    /// [`OnConflict::Replace`] a key must not come twice.
    pub(crate) async fn write_rows(
        &mut self,
        table: &str,
        columns: &[Column],
        key: &[&str],
        on_conflict: OnConflict,
        rows: &[Vec<Arg>],
    ) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let values: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, int))| {
                if *int {
                    format!("CAST(r.value ->> {i} AS BIGINT)")
                } else {
                    format!("r.value ->> {i}")
                }
            })
            .collect();
        let action = match on_conflict {
            OnConflict::Keep => "NOTHING".to_owned(),
            OnConflict::Replace => format!(
                "UPDATE SET {}",
                names
                    .iter()
                    .filter(|name| !key.contains(name))
                    .map(|name| format!("{name} = excluded.{name}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        if !self.is_postgres() {
            // SQLite runs in this process: a statement costs little more than its row's work,
            // and reading rows back out of JSON would cost more than it saves.
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO {action}",
                names.join(", "),
                crate::sql::placeholders(names.len()),
                key.join(", "),
            );
            for row in rows {
                self.execute(&sql, row).await?;
            }
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO {action}",
            names.join(", "),
            values.join(", "),
            self.json_rows("$1"),
            key.join(", "),
        );
        let param = Arg::Text(
            Value::Array(
                rows.iter()
                    .map(|row| Value::Array(row.iter().map(json_value).collect()))
                    .collect(),
            )
            .to_string(),
        );
        self.execute(&sql, &[param]).await
    }
}
