//! The values read-model statements take, and how times are written in them: what the
//! database layer and its drivers share.

use chrono::{DateTime, Datelike, SecondsFormat, Utc};

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

/// How read models store a time (texts that sort as the times do, within years 0 to 9999).
const TIME_PATTERN: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// A time as read models store it ([`TIME_PATTERN`]). Within years 0 to 9999 the text is
/// written straight, as RFC 3339 with microseconds gives it, without reading the pattern
/// again for each time (a twelfth of a rebuild's applying thread did that); beyond, the
/// pattern writes it.
pub fn time_text(at: DateTime<Utc>) -> String {
    if (0..=9999).contains(&at.year()) {
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    } else {
        at.format(TIME_PATTERN).to_string()
    }
}

/// A stored time back.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};

    #[test]
    fn a_time_is_written_as_its_pattern_writes_it() {
        let mut times = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 5, 1, 2, 3).unwrap(),
            // A leap second, as chrono keeps one.
            NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_micro_opt(23, 59, 59, 1_500_000)
                .unwrap()
                .and_utc(),
        ];
        // Nanoseconds beyond the microsecond are cut, not rounded, by both.
        let mut nanos: u32 = 7;
        for i in 0..2_000i64 {
            nanos = nanos.wrapping_mul(1_103_515_245).wrapping_add(12_345) % 1_000_000_000;
            times.push(Utc.timestamp_opt(1_700_000_000 + i * 7_919, nanos).unwrap());
        }
        for at in times {
            assert_eq!(time_text(at), at.format(TIME_PATTERN).to_string(), "{at:?}");
            if (0..=9999).contains(&at.year()) {
                assert_eq!(
                    parse_time(&time_text(at)).map(|t| t.timestamp_micros()),
                    Some(at.timestamp_micros())
                );
            }
        }
    }
}
