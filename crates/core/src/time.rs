//! The one grammar of times that users write — in readings files, ingest requests, MQTT
//! payloads and command-line flags — and the formats times are written back in.
//!
//! A time is one of:
//! - an integer: milliseconds since the Unix epoch;
//! - RFC 3339 with an offset (`2026-01-01T00:00:05Z`, `2026-01-01 01:00:05.250+01:00`);
//! - `YYYY-MM-DD[ HH:MM[:SS[.fff]]]` without an offset, taken as UTC (the separator may be a
//!   space or `T`), as the reference fleet's files write times.
//!
//! Supported times are those of years 1 to 9999 ([`MIN_TIME_MS`] to [`MAX_TIME_MS`]): every
//! time outside is refused with the same message, wherever it comes from.
//!
//! Durations (window sizes, delays, timeouts) are a whole number and a unit: `500ms`, `30s`,
//! `1m`, `1h`, `7d` ([`parse_duration`]).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

/// The earliest supported time: 0001-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = -62_135_596_800_000;
/// The latest supported time: 9999-12-31T23:59:59.999Z.
pub const MAX_TIME_MS: i64 = 253_402_300_799_999;

/// Text that is not a supported time; says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeError {
    /// Not in the grammar (the text, trimmed and cut to 64 characters).
    Syntax(String),
    /// In the grammar, but outside years 1 to 9999 (the text, cut likewise).
    OutOfRange(String),
}

/// Text as errors quote it: at most 64 characters, so a hostile value is not echoed whole.
fn quote(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((end, _)) => format!("{:?}…", &text[..end]),
        None => format!("{text:?}"),
    }
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::Syntax(t) => write!(
                f,
                "{} is not a time: neither RFC 3339 (2026-01-01T00:00:05Z), \
                 `YYYY-MM-DD[ HH:MM[:SS[.fff]]]` (UTC) nor epoch milliseconds",
                quote(t)
            ),
            TimeError::OutOfRange(t) => write!(
                f,
                "{} is not a time: outside the supported range, years 1 to 9999 \
                 (epoch milliseconds {MIN_TIME_MS} to {MAX_TIME_MS})",
                quote(t)
            ),
        }
    }
}

/// Checks that epoch milliseconds are a supported time (years 1 to 9999); the error quotes
/// the number. Nothing is formatted unless it is out of range: readers call this per row.
pub fn check_time(ms: i64) -> Result<i64, TimeError> {
    in_range(ms, || ms.to_string())
}

/// [`check_time`] for a time parsed from `text`, which the error quotes.
fn in_range(ms: i64, text: impl FnOnce() -> String) -> Result<i64, TimeError> {
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimeError::OutOfRange(text()))
    }
}

impl std::error::Error for TimeError {}

/// Parses a time in the grammar of this module into milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, TimeError> {
    let t = text.trim();
    if !t.is_empty()
        && t.trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit())
    {
        // Digits: epoch milliseconds, however many (too many is out of range, not a syntax
        // error).
        return match t.parse::<i64>() {
            Ok(ms) => in_range(ms, || t.to_owned()),
            Err(_) if t.trim_start_matches('-').is_empty() => Err(TimeError::Syntax(t.to_owned())),
            Err(_) => Err(TimeError::OutOfRange(t.to_owned())),
        };
    }
    // A year of five digits or more is in the grammar's shape but past year 9999.
    let year_digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if year_digits > 4 && t.as_bytes().get(year_digits) == Some(&b'-') {
        return Err(TimeError::OutOfRange(t.to_owned()));
    }
    // One separator between date and time, so that each form below is tried once.
    let mut norm = t.to_owned();
    if norm.len() > 10 && matches!(norm.as_bytes()[10], b' ' | b't') && norm.is_char_boundary(11) {
        norm.replace_range(10..11, "T");
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(&norm) {
        return in_range(d.timestamp_millis(), || t.to_owned());
    }
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&norm, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(&norm, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    match naive {
        Some(d) => in_range(d.and_utc().timestamp_millis(), || t.to_owned()),
        None => Err(TimeError::Syntax(t.to_owned())),
    }
}

/// Parses a duration: a whole number and a unit, `ms`, `s` (the default), `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let (n, unit) = crate::units::number_and_unit(s, "duration", "500ms, 30s, 1m, 1h, 7d")?;
    let ms = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (ms, s, m, h, d)")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

/// Formats a duration as [`parse_duration`] reads it, in the largest unit that divides it
/// (`90m`, `1h`, `7d`, `1500ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
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
    fn times_outside_years_1_to_9999_are_refused_the_same_way_whatever_their_form() {
        assert_eq!(parse_time("9999-12-31 23:59:59.999"), Ok(MAX_TIME_MS));
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), Ok(MIN_TIME_MS));
        assert_eq!(parse_time(&MAX_TIME_MS.to_string()), Ok(MAX_TIME_MS));
        let huge = "9".repeat(301);
        for bad in [
            (MAX_TIME_MS + 1).to_string(),
            i64::MIN.to_string(),
            huge.clone(),
            format!("-{huge}"),
            "10000-01-01 00:00:00".to_string(),
            "10000-01-01T00:00:00Z".to_string(),
        ] {
            let e = parse_time(&bad).unwrap_err();
            assert!(matches!(e, TimeError::OutOfRange(_)), "{bad}: {e}");
            let m = e.to_string();
            assert!(
                m.contains("outside the supported range, years 1 to 9999"),
                "{m}"
            );
            assert!(m.len() < 250, "the text is not echoed whole: {m}");
        }
        assert!(matches!(parse_time("-"), Err(TimeError::Syntax(_))));
    }

    #[test]
    fn durations_are_a_number_and_a_unit() {
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_duration("1w").unwrap_err().contains("unknown unit"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn times_format_as_the_reference_and_as_rfc3339() {
        assert_eq!(format_time(T + 7), "2026-01-01 00:00:05.007");
        assert_eq!(rfc3339(T), "2026-01-01T00:00:05.000Z");
        assert_eq!(format_time(i64::MAX), i64::MAX.to_string());
        assert_eq!(rfc3339(i64::MAX), "");
    }
}
