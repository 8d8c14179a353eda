//! Cron expressions (the five fields of crontab(5): minute, hour, day of month, month, day of
//! week, with lists, ranges, steps, month and day names, and the `@hourly`-style macros), and
//! their ticks as UTC instants in a time zone.
//!
//! Wall-clock times that a daylight-saving change removes or repeats follow the rule cron
//! daemons follow, so a schedule fires neither twice nor never around a change:
//! - an expression whose hour field is every hour (`*`) keeps to real hours: in a gap the
//!   missing hour has no tick, and a repeated hour ticks in both of its occurrences;
//! - an expression at fixed hours fires once: a time in a gap fires right after the gap (at the
//!   instant the clocks jump), and a repeated time fires at its first occurrence.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// The day-of-month field was `*`.
    any_day: bool,
    /// The day-of-week field was `*`.
    any_weekday: bool,
}

/// How far ahead a search for the next tick looks before it says the expression never fires.
const HORIZON_YEARS: i32 = 8;

impl Cron {
    /// Parses an expression; the error names the field and what was wrong with it.
    pub fn parse(expr: &str) -> Result<Cron, String> {
        let expanded = match expr.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown macro {other:?} (known: @yearly, @monthly, @weekly, @daily, @hourly)"
                ));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "a cron expression has 5 fields (minute hour day-of-month month day-of-week), \
                 {expr:?} has {}",
                fields.len()
            ));
        }
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day of month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(fields[4], "day of week", 0, 7, &DAYS)?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & !(1 << 7);
        }
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            any_day: fields[2].starts_with('*'),
            any_weekday: fields[4].starts_with('*'),
        })
    }

    /// Whether the hour field covers every hour: such an expression keeps to real hours across
    /// daylight-saving changes (see the module's documentation).
    pub fn every_hour(&self) -> bool {
        self.hours == (1 << 24) - 1
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().num_days_from_sunday()) != 0;
        // crontab(5): when both day fields are restricted, either matching is enough.
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first wall-clock minute at or after `from` (seconds dropped) that matches, within
    /// the search horizon.
    pub fn next_civil(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        let limit = from.year() + HORIZON_YEARS;
        let mut t = from.with_second(0)?.with_nanosecond(0)?;
        if t < from {
            t += Duration::minutes(1);
        }
        loop {
            if t.year() > limit {
                return None;
            }
            if self.months & (1 << t.month()) == 0 {
                // First day of the next month.
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = NaiveDate::from_ymd_opt(y, m, 1)?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t.date().succ_opt()?.and_hms_opt(0, 0, 0)?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = t.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
    }

    /// The first tick strictly after the instant `after_ms` (epoch ms), as an instant, in the
    /// zone `tz`; `None` if it never fires within the search horizon.
    pub fn next_after(&self, after_ms: i64, tz: Tz) -> Option<i64> {
        let after = DateTime::from_timestamp_millis(after_ms)?;
        // Near a change of offset, start a few hours back in wall-clock time: a repeated hour
        // maps later wall times to earlier instants, so the answer may lie at a wall time
        // before the instant's own. Elsewhere wall time and instants move together.
        let offset = |ms: i64| {
            DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&tz).offset().fix())
        };
        let window = 4 * 3_600_000;
        let steady =
            offset(after_ms.saturating_sub(window)) == offset(after_ms.saturating_add(window));
        let mut civil = after.with_timezone(&tz).naive_local();
        if !steady {
            civil -= Duration::hours(4);
        }
        let mut best: Option<i64> = None;
        loop {
            civil = self.next_civil(civil)?;
            let instants = self.instants(civil, tz);
            if let (Some(b), Some(&first)) = (best, instants.first())
                && first >= b
            {
                return best;
            }
            for i in instants {
                if i > after_ms && best.is_none_or(|b| i < b) {
                    best = Some(i);
                }
            }
            civil += Duration::minutes(1);
        }
    }

    /// The instants a matching wall-clock time fires at, earliest first (none, one or two).
    fn instants(&self, civil: NaiveDateTime, tz: Tz) -> Vec<i64> {
        match resolve(tz, civil) {
            Local::Single(i) => vec![i],
            Local::Fold(a, b) if self.every_hour() => vec![a, b],
            Local::Fold(a, _) => vec![a],
            Local::Gap(_) if self.every_hour() => Vec::new(),
            Local::Gap(end) => vec![end],
        }
    }
}

/// A wall-clock time in a zone, as instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// It happens once.
    Single(i64),
    /// The clocks skip it; the instant is the end of the gap (when they jump).
    Gap(i64),
    /// It happens twice (the clocks were set back): both instants, earlier first.
    Fold(i64, i64),
}

/// The instants of the wall-clock time `civil` in `tz`, epoch ms.
pub fn resolve(tz: Tz, civil: NaiveDateTime) -> Local {
    match tz.from_local_datetime(&civil) {
        chrono::LocalResult::Single(t) => Local::Single(t.timestamp_millis()),
        chrono::LocalResult::Ambiguous(a, b) => {
            let (a, b) = (a.timestamp_millis(), b.timestamp_millis());
            Local::Fold(a.min(b), a.max(b))
        }
        chrono::LocalResult::None => {
            // The gap's end: the first instant whose wall-clock time is at or after `civil`.
            // Offsets differ by less than a day, so it lies within a day of `civil` read as UTC.
            let guess = civil.and_utc().timestamp();
            let (mut lo, mut hi) = (guess - 86_400, guess + 86_400);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                let wall = DateTime::from_timestamp(mid, 0)
                    .map(|t| t.with_timezone(&tz).naive_local())
                    .unwrap_or(civil);
                if wall >= civil {
                    hi = mid;
                } else {
                    lo = mid + 1;
                }
            }
            Local::Gap(lo * 1000)
        }
    }
}

/// Parses a time zone name of the IANA database (`Europe/Berlin`, `UTC`).
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>().map_err(|_| {
        format!("unknown time zone {name:?} (an IANA name such as UTC, Europe/Berlin or America/New_York)")
    })
}

/// One field as a bit set of its allowed values.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            // Month names count from 1 (the field's minimum), day names from 0.
            return Ok(i as u32 + min);
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{name} field: {s:?} is not a number or a name"))?;
        if n < min || n > max {
            return Err(format!("{name} field: {n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{name} field: step {s:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("{name} field: a step of 0 never moves"));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{name} field: the range {range:?} runs backwards"));
            }
            (a, b)
        } else if range.is_empty() {
            return Err(format!("{name} field: an empty list item in {text:?}"));
        } else {
            let a = value(range)?;
            // `5/15` means from 5 to the end in steps of 15.
            (a, if part.contains('/') { max } else { a })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> i64 {
        fleetscore_core::parse_time(s).unwrap()
    }

    fn iso(ms: i64) -> String {
        DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// The ticks after `from` (UTC), `n` of them, as RFC 3339 UTC.
    fn ticks(expr: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(expr).unwrap();
        let tz = zone(tz).unwrap();
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = cron.next_after(t, tz).unwrap();
                iso(t)
            })
            .collect()
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let c = Cron::parse("*/15 9-17 * jan,jul MON-fri").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, (9..=17).fold(0, |b, h| b | 1 << h));
        assert_eq!(c.months, 1 << 1 | 1 << 7);
        assert_eq!(c.weekdays, (1..=5).fold(0, |b, d| b | 1 << d));
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().weekdays, 1, "7 is Sunday");
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
        assert_eq!(
            Cron::parse("@hourly").unwrap(),
            Cron::parse("0 * * * *").unwrap()
        );
    }

    #[test]
    fn bad_expressions_say_which_field() {
        for (expr, says) in [
            ("* * * *", "5 fields"),
            ("60 * * * *", "minute field: 60 is outside 0-59"),
            ("0 24 * * *", "hour field"),
            ("0 0 0 * *", "day of month field: 0"),
            ("0 0 * foo *", "month field: \"foo\""),
            ("0 0 * * 1-0", "runs backwards"),
            ("*/0 * * * *", "step of 0"),
            ("0 0 1,,2 * *", "empty list item"),
            ("@sometimes", "unknown macro"),
        ] {
            let e = Cron::parse(expr).unwrap_err();
            assert!(e.contains(says), "{expr}: {e}");
        }
        assert!(
            zone("Mars/Olympus")
                .unwrap_err()
                .contains("unknown time zone")
        );
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 13th, or any Friday (crontab(5)).
        let got = ticks("0 0 13 * fri", "UTC", "2026-11-01 00:00:00", 4);
        assert_eq!(
            got,
            [
                "2026-11-06T00:00:00Z",
                "2026-11-13T00:00:00Z",
                "2026-11-20T00:00:00Z",
                "2026-11-27T00:00:00Z"
            ]
        );
    }

    #[test]
    fn an_expression_that_never_fires_has_no_next_tick() {
        let c = Cron::parse("0 0 30 feb *").unwrap();
        assert_eq!(c.next_after(0, Tz::UTC), None);
        let leap = Cron::parse("0 0 29 feb *").unwrap();
        assert_eq!(
            leap.next_after(utc("2026-01-01 00:00:00"), Tz::UTC)
                .map(iso),
            Some("2028-02-29T00:00:00Z".into())
        );
    }

    #[test]
    fn berlin_spring_gap_fixed_time_fires_once_right_after_the_gap() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 does not exist.
        let got = ticks("30 2 * * *", "Europe/Berlin", "2026-03-27 12:00:00", 3);
        assert_eq!(
            got,
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // the gap's end: 03:00 CEST
                "2026-03-30T00:30:00Z"  // 02:30 CEST
            ]
        );
        // Every 15 minutes inside the gap: the four missing times are one tick.
        let got = ticks("*/15 2 * * *", "Europe/Berlin", "2026-03-29 00:50:00", 2);
        assert_eq!(got, ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]);
    }

    #[test]
    fn berlin_autumn_fold_fixed_time_fires_once_hourly_fires_every_real_hour() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:00-02:59 happen twice.
        let got = ticks("30 2 * * *", "Europe/Berlin", "2026-10-24 12:00:00", 2);
        assert_eq!(got, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]);
        let got = ticks("0 * * * *", "Europe/Berlin", "2026-10-24 22:30:00", 5);
        assert_eq!(
            got,
            [
                "2026-10-24T23:00:00Z", // 01:00 CEST
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET, the repeated hour
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T03:00:00Z"
            ]
        );
    }

    #[test]
    fn hourly_across_the_spring_gap_fires_every_real_hour() {
        let got = ticks("0 * * * *", "Europe/Berlin", "2026-03-28 23:30:00", 3);
        // 01:00 CET, then 03:00 CEST: one real hour later; 02:00 never existed.
        assert_eq!(
            got,
            [
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z"
            ]
        );
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
        let got = ticks("30 2 * * *", "America/New_York", "2026-03-07 12:00:00", 2);
        assert_eq!(got, ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]);
        // 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice, fires once.
        let got = ticks("30 1 * * *", "America/New_York", "2026-10-31 12:00:00", 2);
        assert_eq!(got, ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]);
        let got = ticks("30 * * * *", "America/New_York", "2026-11-01 04:00:00", 4);
        assert_eq!(
            got,
            [
                "2026-11-01T04:30:00Z", // 00:30 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:30:00Z", // 01:30 EST
                "2026-11-01T07:30:00Z"  // 02:30 EST
            ]
        );
    }
}
