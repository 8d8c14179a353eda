//! What the monitor shows of schedules, behind one trait, so the scheduler (a crate of its own,
//! above `jobs`) fills the Overview's next tick and the Schedules page without the monitor
//! knowing its tables. Until one is plugged in, [`NoScheduler`] says there is none.

use serde::{Deserialize, Serialize};

/// One tick of a schedule, fired or skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickView {
    /// The tick's time, epoch ms.
    pub tick_ms: i64,
    /// The run it started, if it started one.
    pub run_id: Option<String>,
    /// Why it fired, waited or was skipped (`clock`, `watermark`, `catch-up`, `skipped: …`).
    pub reason: String,
}

/// A schedule as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleView {
    /// Its name.
    pub name: String,
    /// Its definition in one line (cron, time zone, catch-up policy).
    pub definition: String,
    /// The length of the window each tick scores, ms (runs of this length are its runs on the
    /// Windows page).
    pub window_ms: i64,
    /// The next ticks, epoch ms, soonest first.
    pub next_ticks: Vec<i64>,
    /// Recent ticks, newest first.
    pub history: Vec<TickView>,
    /// A backfill in progress: windows done and in all.
    pub backfill: Option<(u64, u64)>,
}

/// Where schedules come from. `schedules` is called on the monitor's refresh thread, never per
/// request, so an implementation may read a database.
pub trait Schedules: Send + Sync {
    /// Every schedule as of `now_ms`; `None` when no scheduler is configured.
    fn schedules(&self, now_ms: i64) -> Option<Vec<ScheduleView>>;
}

/// No scheduler: the dashboard says so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScheduler;

impl Schedules for NoScheduler {
    fn schedules(&self, _now_ms: i64) -> Option<Vec<ScheduleView>> {
        None
    }
}

/// The soonest next tick of any schedule.
pub fn next_tick(schedules: Option<&[ScheduleView]>) -> Option<(i64, &str)> {
    schedules?
        .iter()
        .filter_map(|s| s.next_ticks.first().map(|&t| (t, s.name.as_str())))
        .min()
}
