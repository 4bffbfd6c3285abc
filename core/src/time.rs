//! Time arithmetic that cannot panic, the window of times chatledger accepts, and the text a
//! time is written as.
//!
//! chrono's `+` and `-` on instants panic when the result leaves chrono's range, and a
//! provider's timestamp can sit anywhere in that range. Every addition to an instant goes
//! through [`later`] or [`earlier`], which stop at the end of the range instead: an alert
//! "due" at the end of time never fires, which is what such an input deserves, and nothing
//! that folds it can crash. The edge refuses times outside [`accepted_range`] before they are
//! recorded; these functions are for what older releases recorded and for configured spans.

use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, TimeZone, Utc};

/// `at + by`, or the last instant chrono can hold when that is past it.
pub fn later(at: DateTime<Utc>, by: TimeDelta) -> DateTime<Utc> {
    at.checked_add_signed(by)
        .unwrap_or(if by < TimeDelta::zero() {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        })
}

/// `at - by`, or the first instant chrono can hold when that is before it.
pub fn earlier(at: DateTime<Utc>, by: TimeDelta) -> DateTime<Utc> {
    at.checked_sub_signed(by)
        .unwrap_or(if by < TimeDelta::zero() {
            DateTime::<Utc>::MAX_UTC
        } else {
            DateTime::<Utc>::MIN_UTC
        })
}

/// A span of whole seconds, capped at the longest span chrono can hold.
pub fn seconds(n: u64) -> TimeDelta {
    i64::try_from(n)
        .ok()
        .and_then(TimeDelta::try_seconds)
        .unwrap_or(TimeDelta::MAX)
}

/// A span of whole hours, capped like [`seconds`].
pub fn hours(n: u64) -> TimeDelta {
    seconds(n.saturating_mul(3600))
}

/// The instants chatledger accepts from outside (a provider's timestamp, a ride's time):
/// 2000-01-01 to the end of 2099, UTC. Anything outside is a malformed or hostile value, not
/// a real message or ride.
pub fn accepted_range() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
        Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// Whether `at` is inside [`accepted_range`].
pub fn is_accepted(at: DateTime<Utc>) -> bool {
    let (first, end) = accepted_range();
    first <= at && at < end
}

/// How chatledger writes a time as text: UTC, to the microsecond, with a `Z` (texts that sort
/// as the times do, within years 0 to 9999). The canonical form's `recorded_at` and the read
/// models' times are written so.
const MICROS_PATTERN: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// `at` as [`MICROS_PATTERN`] writes it. Within years 0 to 9999 the text is written straight,
/// as RFC 3339 with microseconds gives it (the same text), without reading the pattern again
/// for each time: that reading was a twelfth of a rebuild's applying thread. Beyond, the
/// pattern writes it.
pub fn micros_text(at: DateTime<Utc>) -> String {
    if (0..=9999).contains(&at.year()) {
        at.to_rfc3339_opts(SecondsFormat::Micros, true)
    } else {
        at.format(MICROS_PATTERN).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn a_time_is_written_as_its_pattern_writes_it() {
        let mut times = vec![
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 1, 12, 0, 0).unwrap(),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
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
            assert_eq!(
                micros_text(at),
                at.format(MICROS_PATTERN).to_string(),
                "{at:?}"
            );
        }
    }

    #[test]
    fn arithmetic_stops_at_the_ends_of_time() {
        let end = DateTime::<Utc>::MAX_UTC;
        assert_eq!(later(end, hours(24)), end);
        assert_eq!(later(end - TimeDelta::hours(1), hours(24)), end);
        assert_eq!(
            earlier(DateTime::<Utc>::MIN_UTC, seconds(1)),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!(
            later(DateTime::<Utc>::MIN_UTC, -TimeDelta::seconds(1)),
            DateTime::<Utc>::MIN_UTC
        );
        let now = Utc::now();
        assert_eq!(later(now, seconds(60)), now + TimeDelta::seconds(60));
        assert_eq!(earlier(now, seconds(60)), now - TimeDelta::seconds(60));
        assert_eq!(seconds(u64::MAX), TimeDelta::MAX);
        assert_eq!(hours(u64::MAX), TimeDelta::MAX);
    }

    #[test]
    fn the_accepted_window() {
        // The poison timestamp an attacker sent: inside chrono's range, far outside ours.
        let poison = DateTime::from_timestamp(8_210_266_876_799, 0).unwrap();
        assert!(!is_accepted(poison));
        assert!(!is_accepted(DateTime::from_timestamp(0, 0).unwrap()));
        assert!(is_accepted(
            DateTime::from_timestamp(1_700_000_000, 0).unwrap()
        ));
        assert!(is_accepted(Utc::now()));
    }
}
