//! Many rows in one statement: a read model that folds a batch of events in memory reads the
//! rows it needs and writes the rows it changed a statement each, whatever the batch's size.
//! Keys travel as one JSON parameter (an array of keys, or of key pairs), rows written on
//! PostgreSQL as one array per column, so a statement's text, and the plan prepared for it,
//! stay the same for every batch. On SQLite, which runs in this process, rows are written a
//! statement each (still once per batch, not once per event).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde_json::Value;

use crate::read_db::{DbError, ReadTx};
use crate::sql::Arg;

/// Keys from which a batch's read is planned afresh (see [`ReadTx::fetch_keys`]).
const PLANNED_FROM_KEYS: usize = 64;

/// A column a batch writes: its name, and whether it holds integers (a `bigint[]` on
/// PostgreSQL) rather than text.
pub(crate) type Column = (&'static str, bool);

/// A row a batch writes: its values, in its table's columns' order.
pub(crate) trait RowValues {
    fn values(&self) -> Vec<Arg>;
}

/// What a row already there under the same key becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnConflict {
    /// Replaced by the batch's row (the fold started from it).
    Replace,
    /// Kept as it is (the batch's row is only what to insert when there is none).
    Keep,
    /// There is none: the batch's read found no row under these keys, and only one
    /// transaction writes a read model's batch at a time. A plain insert, without the
    /// speculative insertion an `ON CONFLICT` clause costs each row (200,000 rows: 1.09–1.20 s
    /// against 1.55–1.59 s on PostgreSQL); a key already there fails the statement, which the
    /// runner takes as refused values (the batch applied event by event, what still fails
    /// quarantined), never as a reason to stop.
    New,
}

/// The JSON the values of one row travel as.
fn json_value(arg: &Arg) -> Value {
    match arg {
        Arg::Int(v) => Value::from(*v),
        Arg::Text(v) => Value::String(v.clone()),
        Arg::Null => Value::Null,
        Arg::Ints(v) => Value::from(v.clone()),
        Arg::Texts(v) => Value::from(v.clone()),
    }
}

/// A column of a batch's rows, built up row by row into one array parameter.
enum ColumnValues {
    Ints(Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
}

impl ColumnValues {
    fn new(int: bool, rows: usize) -> Self {
        if int {
            ColumnValues::Ints(Vec::with_capacity(rows))
        } else {
            ColumnValues::Texts(Vec::with_capacity(rows))
        }
    }

    /// Adds a row's value; an integer in a text column is written as its digits (as the
    /// database would cast it), a text in an integer column must be one.
    fn push(&mut self, value: Arg, column: &str) -> Result<(), DbError> {
        match (self, value) {
            (ColumnValues::Ints(v), Arg::Int(n)) => v.push(Some(n)),
            (ColumnValues::Ints(v), Arg::Null) => v.push(None),
            (ColumnValues::Ints(v), Arg::Text(text)) => match text.parse() {
                Ok(n) => v.push(Some(n)),
                Err(_) => {
                    return Err(DbError::Refused(format!(
                        "column {column} holds integers, not {text:?}"
                    )))
                }
            },
            (ColumnValues::Texts(v), Arg::Text(text)) => v.push(Some(text)),
            (ColumnValues::Texts(v), Arg::Int(n)) => v.push(Some(n.to_string())),
            (ColumnValues::Texts(v), Arg::Null) => v.push(None),
            (_, Arg::Ints(_) | Arg::Texts(_)) => {
                return Err(DbError::Refused(format!(
                    "column {column} takes one value per row, not an array"
                )))
            }
        }
        Ok(())
    }

    fn into_arg(self) -> Arg {
        match self {
            ColumnValues::Ints(v) => Arg::Ints(v),
            ColumnValues::Texts(v) => Arg::Texts(v),
        }
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

    /// The rows `sql` reads for a batch's `count` keys (bound to `$1`, see [`json_param`]). A
    /// large batch's are planned for the table as it is now: PostgreSQL keeps a prepared
    /// statement's generic plan once it has one, and the plan made while a rebuild's tables
    /// were still empty scans the whole table, for every batch after (measured: 124 scans of
    /// `messages` in one replay). A few keys, as live batches have, keep the cached plan:
    /// planning each time costs more than their lookups, and live tables are analysed as
    /// they grow, which makes the server plan again.
    pub(crate) async fn fetch_keys(
        &mut self,
        sql: &str,
        keys: Arg,
        count: usize,
    ) -> Result<Vec<crate::read_db::DbRow>, DbError> {
        if !self.is_postgres() || count < PLANNED_FROM_KEYS {
            return self.fetch_all(sql, &[keys]).await;
        }
        self.execute(
            "SELECT set_config('plan_cache_mode', 'force_custom_plan', true)",
            &[],
        )
        .await?;
        let rows = self.fetch_all(sql, &[keys]).await?;
        self.execute("SELECT set_config('plan_cache_mode', 'auto', true)", &[])
            .await?;
        Ok(rows)
    }

    /// Writes `rows` (a value per column of `columns`, in their order) into `table` in one
    /// statement; a row whose `key` is there already is replaced or kept (`on_conflict`). With
    /// [`OnConflict::Replace`] a key must not come twice. On PostgreSQL each column travels as
    /// one array (`UNNEST` makes them rows again), which the server reads without parsing.
    pub(crate) async fn write_rows(
        &mut self,
        table: &str,
        columns: &[Column],
        key: &[&str],
        on_conflict: OnConflict,
        rows: Vec<Vec<Arg>>,
    ) -> Result<(), DbError> {
        if rows.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        let action = match on_conflict {
            OnConflict::New => None,
            OnConflict::Keep => Some("NOTHING".to_owned()),
            OnConflict::Replace => Some(format!(
                "UPDATE SET {}",
                names
                    .iter()
                    .filter(|name| !key.contains(name))
                    .map(|name| format!("{name} = excluded.{name}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        };
        let on_conflict = action
            .map(|action| format!(" ON CONFLICT ({}) DO {action}", key.join(", ")))
            .unwrap_or_default();
        if !self.is_postgres() {
            // SQLite runs in this process: a statement costs little more than its row's work,
            // and reading rows back out of JSON would cost more than it saves.
            let sql = format!(
                "INSERT INTO {table} ({}) VALUES ({}){on_conflict}",
                names.join(", "),
                crate::sql::placeholders(names.len()),
            );
            for row in &rows {
                self.execute(&sql, row).await?;
            }
            return Ok(());
        }
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, int))| {
                let array = if *int { "BIGINT[]" } else { "TEXT[]" };
                format!("${}::{array}", i + 1)
            })
            .collect();
        let sql = format!(
            "INSERT INTO {table} ({}) SELECT * FROM UNNEST({}){on_conflict}",
            names.join(", "),
            arrays.join(", "),
        );
        let mut values: Vec<ColumnValues> = columns
            .iter()
            .map(|(_, int)| ColumnValues::new(*int, rows.len()))
            .collect();
        for row in rows {
            if row.len() != columns.len() {
                return Err(DbError::Refused(format!(
                    "a row of {} values for the {} columns of {table}",
                    row.len(),
                    columns.len()
                )));
            }
            for ((column, value), (name, _)) in values.iter_mut().zip(row).zip(columns) {
                column.push(value, name)?;
            }
        }
        let params: Vec<Arg> = values.into_iter().map(ColumnValues::into_arg).collect();
        self.execute_owned(&sql, params).await
    }
}

/// The rows a batch reads and changes, by key, in memory: each read from its table at most
/// once, changed event by event, and written back together (see [`ReadTx::write_rows`]).
pub(crate) struct Folded<K, R> {
    /// Each key read or added: its row, or `None` when the table has none.
    rows: HashMap<K, Option<R>>,
    /// Keys the table was read for and found without a row, not written since: their rows are
    /// inserted as new ([`OnConflict::New`]).
    absent: HashSet<K>,
    /// Keys whose row changed, in the order they first did.
    changed: Vec<K>,
    changed_set: HashSet<K>,
}

impl<K, R> Default for Folded<K, R> {
    fn default() -> Self {
        Folded {
            rows: HashMap::new(),
            absent: HashSet::new(),
            changed: Vec::new(),
            changed_set: HashSet::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, R> Folded<K, R> {
    /// Whether `key`'s row is still to be read; from now on it counts as read (and absent
    /// until [`Folded::found`]): the caller reads the table for it before any row changes.
    pub(crate) fn unread(&mut self, key: &K) -> bool {
        if self.rows.contains_key(key) {
            return false;
        }
        self.rows.insert(key.clone(), None);
        self.absent.insert(key.clone());
        true
    }

    /// A row read from the table (a row in memory already is newer and stays).
    pub(crate) fn found(&mut self, key: K, row: R) {
        self.absent.remove(&key);
        let slot = self.rows.entry(key).or_insert(None);
        if slot.is_none() {
            *slot = Some(row);
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<&R> {
        self.rows.get(key)?.as_ref()
    }

    /// Adds a row unless `key` has one (as `INSERT … ON CONFLICT DO NOTHING` would).
    pub(crate) fn add(&mut self, key: K, row: R) {
        if self.get(&key).is_some() {
            return;
        }
        self.rows.insert(key.clone(), Some(row));
        self.mark(key);
    }

    /// The row of `key`, if there is one, marked changed.
    pub(crate) fn change(&mut self, key: &K) -> Option<&mut R> {
        self.get(key)?;
        self.mark(key.clone());
        self.rows.get_mut(key)?.as_mut()
    }

    fn mark(&mut self, key: K) {
        if self.changed_set.insert(key.clone()) {
            self.changed.push(key);
        }
    }

    /// The rows changed since the last call, in the order they first changed: those the
    /// table was found without, then the others. From now on the table has them all.
    fn take_changed(&mut self) -> (Vec<&R>, Vec<&R>) {
        self.changed_set.clear();
        let keys = std::mem::take(&mut self.changed);
        let (mut new, mut there) = (Vec::new(), Vec::new());
        for key in &keys {
            let Some(Some(row)) = self.rows.get(key) else {
                continue;
            };
            if self.absent.remove(key) {
                new.push(row);
            } else {
                there.push(row);
            }
        }
        (new, there)
    }

    /// Writes the rows changed since the last write into `table` (a statement for the rows
    /// the table was found without, inserted as new, and one for the others, replacing the
    /// rows there under the same `key`), and starts a new list of changes.
    pub(crate) async fn write_changed(
        &mut self,
        tx: &mut ReadTx,
        table: &str,
        columns: &[Column],
        key: &[&str],
    ) -> Result<(), DbError>
    where
        R: RowValues,
    {
        let (new, there) = self.take_changed();
        let new: Vec<Vec<Arg>> = new.into_iter().map(R::values).collect();
        let there: Vec<Vec<Arg>> = there.into_iter().map(R::values).collect();
        tx.write_rows(table, columns, key, OnConflict::New, new)
            .await?;
        tx.write_rows(table, columns, key, OnConflict::Replace, there)
            .await
    }

    /// Forgets the rows `gone` picks: a statement changed them in the table, and they are to
    /// be read again. (Keys without a row stay without one.)
    pub(crate) fn forget(&mut self, gone: impl Fn(&R) -> bool) {
        self.rows
            .retain(|_, row| row.as_ref().is_none_or(|row| !gone(row)));
        let rows = &self.rows;
        self.absent.retain(|key| rows.contains_key(key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_the_table_was_read_without_are_inserted_as_new_and_the_others_replaced() {
        let mut rows: Folded<&str, String> = Folded::default();
        assert!(rows.unread(&"a") && rows.unread(&"b"));
        assert!(!rows.unread(&"a"), "read once");
        rows.found("a", "a as stored".into());
        *rows.change(&"a").unwrap() = "a changed".into();
        rows.add("b", "b added".into());
        // Never read: the table may hold it.
        rows.add("c", "c added".into());
        let (new, there) = rows.take_changed();
        assert_eq!(new, ["b added"]);
        assert_eq!(there, ["a changed", "c added"]);

        // Written once, a row is in the table: changed again, it replaces itself.
        *rows.change(&"b").unwrap() = "b changed".into();
        let (new, there) = rows.take_changed();
        assert!(new.is_empty());
        assert_eq!(there, ["b changed"]);

        // Forgotten (an erasure changed it in the table) and read again: found there.
        rows.forget(|row| row.starts_with('b'));
        assert!(rows.unread(&"b"));
        rows.found("b", "b erased".into());
        *rows.change(&"b").unwrap() = "b erased, changed".into();
        let (new, there) = rows.take_changed();
        assert!(new.is_empty());
        assert_eq!(there, ["b erased, changed"]);
    }

    #[test]
    fn a_column_takes_its_own_kind_of_value_and_says_which_it_refuses() {
        let mut ints = ColumnValues::new(true, 3);
        ints.push(Arg::Int(7), "rating").unwrap();
        ints.push(Arg::Null, "rating").unwrap();
        ints.push(Arg::Text("12".into()), "rating").unwrap();
        let refused = ints.push(Arg::Text("five".into()), "rating").unwrap_err();
        assert_eq!(
            refused.to_string(),
            r#"column rating holds integers, not "five""#
        );
        assert!(refused.refused_the_values(), "the same row fails again");
        assert_eq!(ints.into_arg(), Arg::Ints(vec![Some(7), None, Some(12)]));

        let mut texts = ColumnValues::new(false, 2);
        texts.push(Arg::Int(42), "status").unwrap();
        texts.push(Arg::Null, "status").unwrap();
        assert!(texts.push(Arg::Texts(vec![]), "status").is_err());
        assert_eq!(texts.into_arg(), Arg::Texts(vec![Some("42".into()), None]));
    }
}
