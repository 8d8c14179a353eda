//! A schedule's definition, its checks, and its ticks: a tick at instant `T` scores the window
//! `[T - window, T)`. Windows are UTC instants; a time zone only places a cron expression's
//! wall-clock times.

use std::time::Duration;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::cron::{Cron, zone};
use crate::error::{Error, Result};

/// When a schedule ticks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    /// Every `every_ms`, on multiples of it since the Unix epoch (UTC): `1h` ticks on the hour.
    Every {
        /// The spacing, ms.
        every_ms: i64,
    },
    /// At the times of a cron expression, in a time zone.
    Cron {
        /// The expression.
        expr: String,
        /// The IANA zone its wall-clock times are in.
        tz: String,
    },
}

/// What starts a due tick's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The clock: at `T + delay`.
    Clock,
    /// Every aggregator's watermark passing `T` (its windows up to `T` are in the store).
    Watermark,
}

/// What a scheduler does with ticks that were due while nothing fired them (the scheduler was
/// down, the schedule paused, or its start in the past).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Catchup {
    /// Runs every missed window (the oldest beyond `max_catchup` are skipped).
    All,
    /// Runs only the latest missed window.
    Latest,
    /// Runs none: only ticks due within [`ON_TIME_MS`] of now fire.
    None,
}

/// How late a tick may be found and still count as on time for `--catchup none`.
pub const ON_TIME_MS: i64 = 60_000;

/// How each run of a schedule is planned. (A task's lease and attempts belong to the workers
/// that execute it: `scheduler` and `worker` take them as their own options.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Most models in one task.
    pub max_models_per_task: usize,
}

impl Default for RunSettings {
    fn default() -> RunSettings {
        RunSettings {
            max_models_per_task: 1_000,
        }
    }
}

/// A schedule's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    /// When it ticks.
    pub cadence: Cadence,
    /// The window each tick scores, ending at the tick, ms.
    pub window_ms: i64,
    /// With the clock trigger, how long after the tick its run starts (for late data), ms.
    pub delay_ms: i64,
    /// What starts a due tick's run.
    pub trigger: Trigger,
    /// What happens to missed ticks.
    pub catchup: Catchup,
    /// With `catchup: all`, the most missed windows run; older ones are skipped.
    pub max_catchup: u32,
    /// The most runs of this schedule at once.
    pub max_active: u32,
    /// The earliest window start: no tick scores a window that starts before it, epoch ms.
    pub start_ms: i64,
    /// Runs again after a failed run, at most.
    pub retries: u32,
    /// The wait before the first retry, ms; it doubles with each retry after.
    pub retry_backoff_ms: i64,
    /// A command (run with `sh -c`) or an `http://` URL (POSTed a JSON body) told of a window
    /// that failed for good.
    pub on_failure: Option<String>,
    /// A window shorter than the spacing of ticks leaves readings unscored; allowed only when
    /// asked for.
    pub allow_gaps: bool,
    /// How its runs execute.
    pub run: RunSettings,
}

impl Schedule {
    /// A schedule ticking every `every`, scoring windows of `window`, from `start_ms`, with
    /// the defaults for the rest.
    pub fn every(name: &str, every: Duration, window: Duration, start_ms: i64) -> Schedule {
        Schedule {
            name: name.into(),
            cadence: Cadence::Every {
                every_ms: every.as_millis() as i64,
            },
            window_ms: window.as_millis() as i64,
            delay_ms: 0,
            trigger: Trigger::Clock,
            catchup: Catchup::All,
            max_catchup: 1_000,
            max_active: 1,
            start_ms,
            retries: 3,
            retry_backoff_ms: 60_000,
            on_failure: None,
            allow_gaps: false,
            run: RunSettings::default(),
        }
    }

    /// Checks the definition: a name that is an id, a known zone, a cron expression that
    /// fires, positive durations, and no gaps between windows unless allowed. Nothing is stored
    /// before this passes.
    pub fn check(&self) -> Result<()> {
        check_name(&self.name)?;
        if self.window_ms <= 0 {
            return Err(Error::Invalid("--window must be longer than 0".into()));
        }
        if self.delay_ms < 0 || self.retry_backoff_ms < 0 {
            return Err(Error::Invalid(
                "--delay and --retry-backoff cannot be negative".into(),
            ));
        }
        if self.max_active == 0 {
            return Err(Error::Invalid("--max-active must be at least 1".into()));
        }
        if self.run.max_models_per_task == 0 {
            return Err(Error::Invalid(
                "--max-models-per-task must be at least 1".into(),
            ));
        }
        fleetscore_core::check_time(self.start_ms)
            .map_err(|e| Error::Invalid(format!("--start: {e}")))?;
        if let Some(hook) = &self.on_failure
            && hook.starts_with("https://")
        {
            return Err(Error::Invalid(
                "--on-failure: https:// webhooks are not supported yet; use an http:// URL or a \
                 command (for example `curl -fsS -d @- https://...`)"
                    .into(),
            ));
        }
        self.cron()?;
        let first = self.ticks_after(i64::MIN).next().ok_or_else(|| {
            Error::Invalid(match &self.cadence {
                Cadence::Cron { expr, .. } => format!(
                    "the cron expression {expr:?} never fires (searched {} years ahead)",
                    8
                ),
                Cadence::Every { .. } => "the schedule never ticks".into(),
            })
        })?;
        if !self.allow_gaps {
            // The widest spacing between ticks over a year (DST days included) must be covered.
            let mut widest = 0;
            let mut prev = first;
            for t in self
                .ticks_after(first)
                .take(20_000)
                .take_while(|&t| t - first <= 366 * 86_400_000)
            {
                widest = widest.max(t - prev);
                prev = t;
            }
            if widest > self.window_ms {
                return Err(Error::Invalid(format!(
                    "--window {} is shorter than the {} between ticks: readings between windows \
                     would never be scored (use --window {} or longer, or --allow-gaps)",
                    fleetscore_core::format_duration(Duration::from_millis(self.window_ms as u64)),
                    fleetscore_core::format_duration(Duration::from_millis(widest as u64)),
                    fleetscore_core::format_duration(Duration::from_millis(widest as u64)),
                )));
            }
        }
        Ok(())
    }

    /// Its zone and expression, when it is a cron schedule.
    fn cron(&self) -> Result<Option<(Cron, Tz)>> {
        match &self.cadence {
            Cadence::Every { every_ms } => {
                if *every_ms < 1_000 {
                    return Err(Error::Invalid("--every must be at least 1s".into()));
                }
                Ok(None)
            }
            Cadence::Cron { expr, tz } => {
                let cron = Cron::parse(expr).map_err(|e| Error::Invalid(format!("--cron: {e}")))?;
                let tz = zone(tz).map_err(|e| Error::Invalid(format!("--tz: {e}")))?;
                Ok(Some((cron, tz)))
            }
        }
    }

    /// The ticks strictly after the instant `after_ms`, in order; only ticks whose window starts
    /// at or after the schedule's start. Empty if the definition is broken (see [`check`]).
    ///
    /// [`check`]: Schedule::check
    pub fn ticks_after(&self, after_ms: i64) -> impl Iterator<Item = i64> + '_ {
        let cron = self.cron().ok();
        let every = match &self.cadence {
            Cadence::Every { every_ms } if *every_ms > 0 => Some(*every_ms),
            _ => None,
        };
        // The first tick whose window starts at or after the start.
        let floor = self
            .start_ms
            .saturating_add(self.window_ms)
            .saturating_sub(1);
        let mut t = after_ms.max(floor);
        std::iter::from_fn(move || {
            let next = match (&cron, every) {
                (Some(Some((cron, tz))), _) => cron.next_after(t, *tz)?,
                (_, Some(every)) => t.div_euclid(every).checked_add(1)?.checked_mul(every)?,
                _ => return None,
            };
            if next > fleetscore_core::MAX_TIME_MS {
                return None;
            }
            t = next;
            Some(next)
        })
    }

    /// The window a tick scores: `[T - window, T)`.
    pub fn window(&self, tick_ms: i64) -> (i64, i64) {
        (tick_ms - self.window_ms, tick_ms)
    }

    /// When a tick is due by the clock: at `T + delay` (the watermark trigger waits on top).
    pub fn due_ms(&self, tick_ms: i64) -> i64 {
        match self.trigger {
            Trigger::Clock => tick_ms + self.delay_ms,
            Trigger::Watermark => tick_ms,
        }
    }

    /// The wait before retry number `retry` (1 for the first), doubling each time.
    pub fn backoff_ms(&self, retry: u32) -> i64 {
        self.retry_backoff_ms
            .saturating_mul(1i64 << retry.saturating_sub(1).min(20))
    }

    /// What to do with the ticks after `cursor_ms` (the last tick considered; `None`: none yet)
    /// that are due by `now_ms`, under the catch-up policy, in order. However long the schedule
    /// was idle, at most `max_catchup` + [`MAX_RECORDED_SKIPS`] decisions come back: older due
    /// ticks are skipped without a record of their own (the oldest decision returned says how
    /// many), so a year-long pause costs neither memory nor a row per missed tick.
    pub fn due(&self, cursor_ms: Option<i64>, now_ms: i64) -> Vec<Decision> {
        let keep = (self.max_catchup as usize).max(1) + MAX_RECORDED_SKIPS;
        let mut kept: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
        let mut dropped = 0usize;
        for t in self
            .ticks_after(cursor_ms.unwrap_or(i64::MIN))
            .take_while(|&t| self.due_ms(t) <= now_ms)
        {
            if kept.len() == keep {
                kept.pop_front();
                dropped += 1;
            }
            kept.push_back(t);
        }
        let n = dropped + kept.len();
        kept.into_iter()
            .enumerate()
            .map(|(j, tick_ms)| {
                let i = dropped + j;
                let skip = match self.catchup {
                    Catchup::All if n - i > self.max_catchup as usize => Some(format!(
                        "catch-up all: more than --max-catchup {} windows were missed; the \
                         oldest are skipped",
                        self.max_catchup
                    )),
                    Catchup::Latest if i + 1 < n => {
                        Some("catch-up latest: a later window was due too".into())
                    }
                    Catchup::None if self.due_ms(tick_ms) < now_ms - ON_TIME_MS => Some(format!(
                        "catch-up none: it was due at {}, missed",
                        fleetscore_core::rfc3339(self.due_ms(tick_ms))
                    )),
                    _ => None,
                };
                let skip = match skip {
                    Some(why) if j == 0 && dropped > 0 => Some(format!(
                        "{why} ({dropped} earlier due ticks were skipped too, without a record each)"
                    )),
                    other => other,
                };
                Decision { tick_ms, skip }
            })
            .collect()
    }
}

/// Skipped ticks recorded one by one beyond `max_catchup`, at most, per pass.
pub const MAX_RECORDED_SKIPS: usize = 1_000;

/// Checks a schedule name: 1 to 64 letters, digits, `.`, `_` or `-`, starting with a letter or
/// digit (names go into URLs and commands).
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "schedule name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-', starting with \
             a letter or digit"
        )))
    }
}

/// A due tick and whether it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The tick instant.
    pub tick_ms: i64,
    /// `Some(reason)` when the catch-up policy skips it.
    pub skip: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> i64 {
        fleetscore_core::parse_time(s).unwrap()
    }

    const H: Duration = Duration::from_secs(3_600);

    #[test]
    fn hourly_ticks_score_the_hour_before_them_from_the_start() {
        let s = Schedule::every("hourly", H, H, t("2018-08-28 23:00:00"));
        s.check().unwrap();
        let ticks: Vec<i64> = s.ticks_after(i64::MIN).take(2).collect();
        assert_eq!(ticks, [t("2018-08-29 00:00:00"), t("2018-08-29 01:00:00")]);
        assert_eq!(
            s.window(ticks[0]),
            (t("2018-08-28 23:00:00"), t("2018-08-29 00:00:00"))
        );
        // Five windows are due by 04:00 (the tick at 04:00 included).
        let due = s.due(None, t("2018-08-29 04:00:00"));
        assert_eq!(due.len(), 5);
        assert!(due.iter().all(|d| d.skip.is_none()));
        // After the cursor moves past them, nothing is due.
        assert!(
            s.due(Some(t("2018-08-29 04:00:00")), t("2018-08-29 04:30:00"))
                .is_empty()
        );
    }

    #[test]
    fn catchup_policies() {
        let mut s = Schedule::every("h", H, H, t("2018-08-28 23:00:00"));
        let now = t("2018-08-29 04:00:30");
        s.catchup = Catchup::Latest;
        let due = s.due(None, now);
        let runs: Vec<i64> = due
            .iter()
            .filter(|d| d.skip.is_none())
            .map(|d| d.tick_ms)
            .collect();
        assert_eq!(runs, [t("2018-08-29 04:00:00")]);
        assert_eq!(
            due.len(),
            5,
            "the skipped ones are decided too (and recorded)"
        );
        s.catchup = Catchup::None;
        let runs: Vec<i64> = s
            .due(None, now)
            .iter()
            .filter(|d| d.skip.is_none())
            .map(|d| d.tick_ms)
            .collect();
        assert_eq!(runs, [t("2018-08-29 04:00:00")], "only the one on time");
        assert!(
            s.due(None, t("2018-08-29 04:05:00"))
                .iter()
                .all(|d| d.skip.is_some()),
            "five minutes late is missed"
        );
        s.catchup = Catchup::All;
        s.max_catchup = 2;
        let runs: Vec<i64> = s
            .due(None, now)
            .iter()
            .filter(|d| d.skip.is_none())
            .map(|d| d.tick_ms)
            .collect();
        assert_eq!(runs, [t("2018-08-29 03:00:00"), t("2018-08-29 04:00:00")]);
    }

    #[test]
    fn a_long_pause_is_decided_in_bounded_memory() {
        let mut s = Schedule::every("s", Duration::from_secs(1), Duration::from_secs(1), 0);
        s.max_catchup = 10;
        // Ten days of one-second ticks: 864,000 due.
        let due = s.due(Some(0), 864_000_000);
        assert_eq!(due.len(), 10 + MAX_RECORDED_SKIPS);
        assert_eq!(due.last().unwrap().tick_ms, 864_000_000);
        assert_eq!(due.iter().filter(|d| d.skip.is_none()).count(), 10);
        let first = due[0].skip.as_ref().unwrap();
        assert!(
            first.contains("862990 earlier due ticks were skipped too"),
            "{first}"
        );
    }

    #[test]
    fn delay_moves_when_a_tick_is_due_not_its_window() {
        let mut s = Schedule::every("h", H, H, t("2026-01-01 00:00:00"));
        s.delay_ms = 5 * 60_000;
        assert!(s.due(None, t("2026-01-01 01:04:59")).is_empty());
        let due = s.due(None, t("2026-01-01 01:05:00"));
        assert_eq!(due.len(), 1);
        assert_eq!(
            s.window(due[0].tick_ms),
            (t("2026-01-01 00:00:00"), t("2026-01-01 01:00:00"))
        );
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let start = t("2026-01-01 00:00:00");
        let cron = |expr: &str, tz: &str, window: Duration| {
            let mut s = Schedule::every("c", H, window, start);
            s.cadence = Cadence::Cron {
                expr: expr.into(),
                tz: tz.into(),
            };
            s.check().map_err(|e| e.to_string())
        };
        assert!(cron("0 * * * *", "Europe/Berlin", H).is_ok());
        assert!(
            cron("0 * * * *", "Europe/Nowhere", H)
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert!(
            cron("0 0 31 2 *", "UTC", H)
                .unwrap_err()
                .contains("never fires")
        );
        assert!(
            cron("61 0 * * *", "UTC", H)
                .unwrap_err()
                .contains("minute field")
        );
        // A daily tick at 02:00 Berlin: days of 23 and 25 hours, so 24 hours leaves a gap.
        let e = cron("0 2 * * *", "Europe/Berlin", Duration::from_secs(86_400)).unwrap_err();
        assert!(e.contains("shorter than the 25h between ticks"), "{e}");
        let mut s = Schedule::every("gappy", H, Duration::from_secs(1_800), start);
        assert!(s.check().unwrap_err().to_string().contains("--window 30m"));
        s.allow_gaps = true;
        s.check().unwrap();
        let s = Schedule::every("bad name\n", H, H, start);
        assert!(s.check().unwrap_err().to_string().contains("schedule name"));
    }

    #[test]
    fn backoff_doubles() {
        let s = Schedule::every("h", H, H, 0);
        assert_eq!(
            [s.backoff_ms(1), s.backoff_ms(2), s.backoff_ms(3)],
            [60_000, 120_000, 240_000]
        );
    }
}
