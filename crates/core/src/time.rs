//! The one grammar of times that users write — in readings files, ingest requests, MQTT
//! payloads and command-line flags — and the formats times are written back in.
//!
//! A time is one of:
//! - an integer: milliseconds since the Unix epoch;
//! - RFC 3339 with an offset (`2026-01-01T00:00:05Z`, `2026-01-01 01:00:05.250+01:00`);
//! - `YYYY-MM-DD[ HH:MM[:SS[.fff]]]` without an offset, taken as UTC (the separator may be a
//!   space or `T`), as the reference fleet's files write times.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// Text that is not a time in the grammar; says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    /// The text, trimmed.
    pub text: String,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a time: neither RFC 3339 (2026-01-01T00:00:05Z), \
             `YYYY-MM-DD[ HH:MM[:SS[.fff]]]` (UTC) nor epoch milliseconds",
            self.text
        )
    }
}

impl std::error::Error for TimeError {}

/// Parses a time in the grammar of this module into milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, TimeError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    // One separator between date and time, so that each form below is tried once.
    let mut norm = t.to_owned();
    if norm.len() > 10 && matches!(norm.as_bytes()[10], b' ' | b't') && norm.is_char_boundary(11) {
        norm.replace_range(10..11, "T");
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(&norm) {
        return Ok(d.timestamp_millis());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&norm, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(&norm, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    naive
        .map(|d| d.and_utc().timestamp_millis())
        .ok_or_else(|| TimeError { text: t.to_owned() })
}

/// Formats epoch milliseconds as the reference fleet writes times: `YYYY-MM-DD HH:MM:SS.fff`
/// (UTC); a time chrono cannot represent is written as its number.
pub fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Formats epoch milliseconds as RFC 3339 with milliseconds and `Z`; empty for a time chrono
/// cannot represent.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_767_225_605_000; // 2026-01-01T00:00:05Z

    #[test]
    fn every_form_of_the_grammar_gives_the_same_instant() {
        for text in [
            "2026-01-01T00:00:05Z",
            "2026-01-01t00:00:05z",
            "2026-01-01 00:00:05Z",
            "2026-01-01T01:00:05+01:00",
            "2025-12-31 19:00:05-05:00",
            "2026-01-01 00:00:05",
            "2026-01-01T00:00:05.000",
            " 2026-01-01 00:00:05.000 ",
            "1767225605000",
        ] {
            assert_eq!(parse_time(text), Ok(T), "{text}");
        }
        assert_eq!(parse_time("2026-01-01 00:00"), Ok(T - 5_000));
        assert_eq!(parse_time("2026-01-01"), Ok(T - 5_000));
        assert_eq!(parse_time("2026-01-01 00:00:05.25"), Ok(T + 250));
        assert_eq!(parse_time("-5"), Ok(-5));
    }

    #[test]
    fn text_that_is_not_a_time_says_what_was_expected() {
        for bad in [
            "yesterday",
            "",
            "2026-13-01",
            "2026-01-01 25:00",
            "12.5",
            "2026-01-01 é",
        ] {
            let e = parse_time(bad).unwrap_err().to_string();
            assert!(e.contains("is not a time") && e.contains("RFC 3339"), "{e}");
        }
    }

    #[test]
    fn times_format_as_the_reference_and_as_rfc3339() {
        assert_eq!(format_time(T + 7), "2026-01-01 00:00:05.007");
        assert_eq!(rfc3339(T), "2026-01-01T00:00:05.000Z");
        assert_eq!(format_time(i64::MAX), i64::MAX.to_string());
        assert_eq!(rfc3339(i64::MAX), "");
    }
}
