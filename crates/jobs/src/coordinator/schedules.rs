//! Schedules, their ticks and the aggregators' watermarks, kept in the coordinator's database
//! beside runs and tasks, so that every scheduler on one database sees the same ticks.
//!
//! This is storage only: what a schedule means (cron, time zones, catch-up) is
//! `fleetscore-schedule`'s. A tick is a row keyed by (schedule, tick instant): inserting it is
//! how a tick fires exactly once however many schedulers run, and every later change of a tick
//! is a compare-and-set on its `version`, so two schedulers never both start or retry it.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A schedule as stored: its definition is `fleetscore-schedule`'s JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRow {
    /// Its name.
    pub name: String,
    /// The definition (JSON).
    pub definition: String,
    /// Paused: no tick fires.
    pub paused: bool,
    /// The latest tick instant considered (fired or skipped), epoch ms: no tick at or before it
    /// fires again, whatever the definition becomes.
    pub cursor_ms: Option<i64>,
    /// When it was added, epoch ms.
    pub created_ms: i64,
    /// When it last changed, epoch ms.
    pub updated_ms: i64,
}

/// Where a tick is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TickState {
    /// Due, waiting for every aggregator's watermark to pass its window's end.
    Waiting,
    /// Due, waiting for a slot (`--max-active`).
    Pending,
    /// A scheduler is planning its run (under a lease, so another takes over if it dies).
    Starting,
    /// Its run is executing.
    Running,
    /// Its run failed; it runs again at `next_ms`.
    Retrying,
    /// Its run succeeded.
    Succeeded,
    /// Its run finished with failed models (retrying cannot help: the record lists them).
    CompletedWithFailures,
    /// Its run failed for good.
    Failed,
    /// Not run, by the catch-up policy (the reason says which).
    Skipped,
}

impl TickState {
    /// Every state.
    pub const ALL: [TickState; 9] = [
        TickState::Waiting,
        TickState::Pending,
        TickState::Starting,
        TickState::Running,
        TickState::Retrying,
        TickState::Succeeded,
        TickState::CompletedWithFailures,
        TickState::Failed,
        TickState::Skipped,
    ];

    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            TickState::Waiting => "waiting",
            TickState::Pending => "pending",
            TickState::Starting => "starting",
            TickState::Running => "running",
            TickState::Retrying => "retrying",
            TickState::Succeeded => "succeeded",
            TickState::CompletedWithFailures => "completed_with_failures",
            TickState::Failed => "failed",
            TickState::Skipped => "skipped",
        }
    }

    /// Whether the tick still has work ahead (not succeeded, failed for good or skipped).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            TickState::Waiting
                | TickState::Pending
                | TickState::Starting
                | TickState::Running
                | TickState::Retrying
        )
    }

    /// Whether its run counts against `--max-active`.
    pub fn is_active(self) -> bool {
        matches!(self, TickState::Starting | TickState::Running)
    }
}

impl std::fmt::Display for TickState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TickState {
    type Err = Error;

    fn from_str(s: &str) -> Result<TickState> {
        TickState::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::Corrupt {
                what: "tick state".into(),
                message: format!("unknown state {s:?}"),
            })
    }
}

/// A tick of a schedule: the window it scores and where it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// The schedule.
    pub schedule: String,
    /// The tick instant, epoch ms (the window's end).
    pub tick_ms: i64,
    /// Window start, epoch ms (inclusive).
    pub from_ms: i64,
    /// Window end, epoch ms (exclusive).
    pub to_ms: i64,
    /// The run that scores it (the window's own id, so every way of running a window is one run).
    pub run_id: String,
    /// Its state.
    pub state: TickState,
    /// Runs started for it.
    pub attempts: u32,
    /// `Retrying`: when to try again; `Starting`: when the starting scheduler's lease ends.
    pub next_ms: Option<i64>,
    /// The scheduler that started it last.
    pub owner: Option<String>,
    /// Why it is where it is (skipped, waiting, failed), for people.
    pub reason: Option<String>,
    /// Made by a backfill rather than by the schedule's clock.
    pub backfill: bool,
    /// When it was recorded, epoch ms.
    pub created_ms: i64,
    /// When it last changed, epoch ms.
    pub updated_ms: i64,
    /// Bumped on every change: updates compare and set it.
    pub version: i64,
}

/// The latest watermark an aggregator published: every window that starts before
/// `complete_before_ms` is in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkRow {
    /// The aggregator's name.
    pub aggregator: String,
    /// Windows starting before this instant are complete, epoch ms.
    pub complete_before_ms: i64,
    /// The newest event time it has read, epoch ms: past it, completeness says nothing about
    /// data (a drained aggregator closes every window), so schedules do not run ahead of it.
    pub newest_event_ms: i64,
    /// When it was published, epoch ms.
    pub updated_ms: i64,
}

/// Schedules, ticks and watermarks in the coordinator's database.
pub trait ScheduleStore: Send + Sync {
    /// Adds a schedule; false (and nothing changes) if one has its name.
    fn add_schedule(&self, row: &ScheduleRow) -> Result<bool>;
    /// Replaces a schedule's definition and paused flag (its cursor stays); false if there is
    /// no such schedule.
    fn update_schedule(&self, row: &ScheduleRow) -> Result<bool>;
    /// A schedule.
    fn schedule(&self, name: &str) -> Result<Option<ScheduleRow>>;
    /// Every schedule, by name.
    fn schedules(&self) -> Result<Vec<ScheduleRow>>;
    /// Deletes a schedule and its ticks; false if there was none.
    fn delete_schedule(&self, name: &str) -> Result<bool>;
    /// Records ticks of `schedule` that have no row yet (one transaction; existing rows are
    /// left as they are) and moves its cursor to at least `cursor_ms`; returns the ticks it
    /// inserted — only those are this caller's to act on.
    fn record_ticks(&self, schedule: &str, ticks: &[Tick], cursor_ms: i64) -> Result<Vec<i64>>;
    /// Sets a tick's state, attempts, `next_ms`, owner and reason if its version is still
    /// `tick.version`, bumping the version; false if another scheduler changed it first.
    fn update_tick(&self, tick: &Tick, now_ms: i64) -> Result<bool>;
    /// Like [`update_tick`](ScheduleStore::update_tick), but only while fewer than
    /// `max_active` ticks of the schedule are [active](TickState::is_active) — counted under a
    /// lock on the schedule, so schedulers starting ticks at once never exceed it.
    fn start_tick(&self, tick: &Tick, max_active: u32, now_ms: i64) -> Result<bool>;
    /// One tick.
    fn tick(&self, schedule: &str, tick_ms: i64) -> Result<Option<Tick>>;
    /// A schedule's ticks, newest first, at most `limit`.
    fn ticks(&self, schedule: &str, limit: u32) -> Result<Vec<Tick>>;
    /// Every tick with work ahead ([`TickState::is_open`]), by schedule and instant.
    fn open_ticks(&self) -> Result<Vec<Tick>>;
    /// Publishes an aggregator's watermark and newest event time (each only moves forward).
    fn publish_watermark(
        &self,
        aggregator: &str,
        complete_before_ms: i64,
        newest_event_ms: i64,
        now_ms: i64,
    ) -> Result<()>;
    /// Every aggregator's latest watermark, by name.
    fn watermarks(&self) -> Result<Vec<WatermarkRow>>;
}

/// The contract both databases keep, as test functions each runs.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn row(name: &str) -> ScheduleRow {
        ScheduleRow {
            name: name.into(),
            definition: "{}".into(),
            paused: false,
            cursor_ms: None,
            created_ms: 1,
            updated_ms: 1,
        }
    }

    fn tick(schedule: &str, tick_ms: i64, state: TickState) -> Tick {
        Tick {
            schedule: schedule.into(),
            tick_ms,
            from_ms: tick_ms - 10,
            to_ms: tick_ms,
            run_id: format!("r{tick_ms}"),
            state,
            attempts: 0,
            next_ms: None,
            owner: None,
            reason: None,
            backfill: false,
            created_ms: 5,
            updated_ms: 5,
            version: 0,
        }
    }

    pub fn schedules_are_unique_and_keep_their_cursor(s: &dyn ScheduleStore) {
        assert!(s.add_schedule(&row("a")).unwrap());
        assert!(!s.add_schedule(&row("a")).unwrap(), "a name is taken once");
        assert!(s.add_schedule(&row("b")).unwrap());
        let inserted = s
            .record_ticks("a", &[tick("a", 100, TickState::Pending)], 100)
            .unwrap();
        assert_eq!(inserted, [100]);
        let mut a = s.schedule("a").unwrap().unwrap();
        assert_eq!(a.cursor_ms, Some(100));
        a.definition = r#"{"x":1}"#.into();
        a.paused = true;
        a.cursor_ms = None;
        assert!(s.update_schedule(&a).unwrap());
        let a = s.schedule("a").unwrap().unwrap();
        assert_eq!((a.definition.as_str(), a.paused), (r#"{"x":1}"#, true));
        assert_eq!(a.cursor_ms, Some(100), "an edit keeps the cursor");
        assert!(!s.update_schedule(&row("zzz")).unwrap());
        // The cursor only moves forward.
        s.record_ticks("a", &[], 50).unwrap();
        assert_eq!(s.schedule("a").unwrap().unwrap().cursor_ms, Some(100));
        let names: Vec<String> = s.schedules().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(s.delete_schedule("a").unwrap());
        assert!(!s.delete_schedule("a").unwrap());
        assert!(s.tick("a", 100).unwrap().is_none(), "its ticks go with it");
    }

    pub fn a_tick_is_recorded_once_and_changed_by_one_caller(s: &dyn ScheduleStore) {
        s.add_schedule(&row("h")).unwrap();
        let first = s
            .record_ticks(
                "h",
                &[
                    tick("h", 10, TickState::Pending),
                    tick("h", 20, TickState::Skipped),
                ],
                20,
            )
            .unwrap();
        assert_eq!(first, [10, 20]);
        // A second scheduler deciding the same ticks inserts nothing.
        let second = s
            .record_ticks(
                "h",
                &[
                    tick("h", 10, TickState::Skipped),
                    tick("h", 30, TickState::Pending),
                ],
                30,
            )
            .unwrap();
        assert_eq!(second, [30]);
        assert_eq!(s.tick("h", 10).unwrap().unwrap().state, TickState::Pending);

        let t = s.tick("h", 10).unwrap().unwrap();
        let mut mine = t.clone();
        mine.state = TickState::Starting;
        mine.owner = Some("s1".into());
        mine.next_ms = Some(99);
        let mut theirs = t.clone();
        theirs.state = TickState::Starting;
        theirs.owner = Some("s2".into());
        assert!(s.update_tick(&mine, 7).unwrap());
        assert!(!s.update_tick(&theirs, 7).unwrap(), "a stale version loses");
        let now = s.tick("h", 10).unwrap().unwrap();
        assert_eq!(now.owner.as_deref(), Some("s1"));
        assert_eq!((now.version, now.updated_ms, now.next_ms), (1, 7, Some(99)));

        // Starting is bounded by the active ticks of the schedule.
        let t30 = s.tick("h", 30).unwrap().unwrap();
        let mut start30 = t30.clone();
        start30.state = TickState::Starting;
        assert!(!s.start_tick(&start30, 1, 8).unwrap(), "tick 10 is active");
        assert!(s.start_tick(&start30, 2, 8).unwrap());
        assert_eq!(s.tick("h", 30).unwrap().unwrap().state, TickState::Starting);
        let mut back = s.tick("h", 30).unwrap().unwrap();
        back.state = TickState::Pending;
        assert!(s.update_tick(&back, 9).unwrap());

        let open: Vec<i64> = s.open_ticks().unwrap().iter().map(|t| t.tick_ms).collect();
        assert_eq!(open, [10, 30], "skipped ticks have no work ahead");
        let history: Vec<i64> = s.ticks("h", 2).unwrap().iter().map(|t| t.tick_ms).collect();
        assert_eq!(history, [30, 20], "newest first, limited");
    }

    pub fn watermarks_only_move_forward(s: &dyn ScheduleStore) {
        s.publish_watermark("agg-b", 100, 150, 1).unwrap();
        s.publish_watermark("agg-a", 50, 60, 1).unwrap();
        s.publish_watermark("agg-b", 80, 90, 2).unwrap();
        s.publish_watermark("agg-a", 70, 75, 3).unwrap();
        let w = s.watermarks().unwrap();
        assert_eq!(
            w.iter()
                .map(|w| (
                    w.aggregator.as_str(),
                    w.complete_before_ms,
                    w.newest_event_ms
                ))
                .collect::<Vec<_>>(),
            [("agg-a", 70, 75), ("agg-b", 100, 150)]
        );
    }
}
