//! The values read-model statements take, and how times are written in them: what the
//! database layer and its drivers share.

use chrono::{DateTime, Utc};

/// An argument of a read-model statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Int(i64),
    Text(String),
    Null,
    /// A column of many rows' values, bound as one PostgreSQL array (`bigint[]`, `text[]`)
    /// and read back as rows with `UNNEST`; SQLite has no arrays, and takes it as its JSON text.
    Ints(Vec<Option<i64>>),
    Texts(Vec<Option<String>>),
}

/// An array's values as one JSON text (see [`Arg::Ints`]).
pub(crate) fn json_array<T: serde::Serialize>(values: &[Option<T>]) -> String {
    serde_json::to_string(values).unwrap_or_default()
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(v)
    }
}
impl From<u64> for Arg {
    fn from(v: u64) -> Self {
        Arg::Int(v as i64)
    }
}
impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(v.to_owned())
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(v)
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(v.clone())
    }
}
impl From<DateTime<Utc>> for Arg {
    fn from(v: DateTime<Utc>) -> Self {
        Arg::Text(time_text(v))
    }
}
impl From<&DateTime<Utc>> for Arg {
    fn from(v: &DateTime<Utc>) -> Self {
        Arg::Text(time_text(*v))
    }
}
impl<T: Into<Arg>> From<Option<T>> for Arg {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

/// `$1, $2, … $n`: the parameters of an `IN (…)` list of `n` arguments.
pub fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time as read models store it (see [`chatledger_core::time::micros_text`]).
pub fn time_text(at: DateTime<Utc>) -> String {
    chatledger_core::time::micros_text(at)
}

/// A stored time back.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
