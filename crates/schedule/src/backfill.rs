//! Backfill: the runs of a schedule's windows over a past range, planned as ticks of the
//! schedule (so the scheduler's history shows them, and it never fires them again), then moved
//! on by a [`Scheduler`](crate::Scheduler) like any tick, within the schedule's `max_active`.

use fleetscore_core::now_ms;
use fleetscore_jobs::coordinator::Coordinator;
use fleetscore_jobs::coordinator::schedules::{Tick, TickState};
use fleetscore_jobs::run;
use fleetscore_jobs::status::RunStatus;

use crate::error::{Error, Result};
use crate::spec::Schedule;

/// Which windows of the range a backfill runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reprocess {
    /// Windows with no run yet.
    Missing,
    /// Those, and windows whose latest run did not succeed.
    Failed,
    /// Every window.
    All,
}

impl std::str::FromStr for Reprocess {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Reprocess, String> {
        match s {
            "missing" => Ok(Reprocess::Missing),
            "failed" => Ok(Reprocess::Failed),
            "all" => Ok(Reprocess::All),
            _ => Err(format!("{s:?}: use missing, failed or all")),
        }
    }
}

/// One window of a backfill and what it does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The tick that scores it.
    pub tick_ms: i64,
    /// Window start.
    pub from_ms: i64,
    /// Window end.
    pub to_ms: i64,
    /// Its run id.
    pub run_id: String,
    /// Whether the backfill runs it.
    pub run: bool,
    /// Why (what it found).
    pub why: String,
}

/// The most windows one backfill plans.
pub const MAX_WINDOWS: usize = 100_000;

/// The windows of `schedule` inside `[from_ms, to_ms]` (each window wholly inside), and which of
/// them to run under `reprocess`.
pub fn plan(
    coordinator: &dyn Coordinator,
    schedule: &Schedule,
    from_ms: i64,
    to_ms: i64,
    reprocess: Reprocess,
) -> Result<Vec<Window>> {
    if to_ms <= from_ms {
        return Err(Error::Invalid(format!(
            "--to ({}) must be after --from ({})",
            fleetscore_core::rfc3339(to_ms),
            fleetscore_core::rfc3339(from_ms)
        )));
    }
    let mut ranged = schedule.clone();
    ranged.start_ms = from_ms;
    let ticks: Vec<i64> = ranged
        .ticks_after(i64::MIN)
        .take_while(|&t| t <= to_ms)
        .take(MAX_WINDOWS + 1)
        .collect();
    if ticks.len() > MAX_WINDOWS {
        return Err(Error::Invalid(format!(
            "the range holds more than {MAX_WINDOWS} windows of schedule {}; backfill it in parts",
            schedule.name
        )));
    }
    let mut out = Vec::with_capacity(ticks.len());
    for tick_ms in ticks {
        let (from_ms, to_ms) = schedule.window(tick_ms);
        let run_id = run::run_id_for(from_ms, to_ms);
        let (found, ran, ok) = match coordinator.run(&run_id)? {
            None => ("no run yet", false, false),
            Some(r) => match r.status {
                RunStatus::Succeeded => ("succeeded", true, true),
                RunStatus::Running => ("running now", true, true),
                RunStatus::CompletedWithFailures => ("completed with failures", true, false),
                RunStatus::Cancelled => ("cancelled", true, false),
            },
        };
        let running = found == "running now";
        let run = !running
            && match reprocess {
                Reprocess::Missing => !ran,
                Reprocess::Failed => !ok,
                Reprocess::All => true,
            };
        out.push(Window {
            tick_ms,
            from_ms,
            to_ms,
            run_id,
            run,
            why: found.to_string(),
        });
    }
    Ok(out)
}

/// Makes each window to run a pending tick of the schedule (a new row, or its existing row set
/// back to pending), so that a scheduler starts them; returns how many.
pub fn enqueue(
    coordinator: &dyn Coordinator,
    schedule: &Schedule,
    windows: &[Window],
) -> Result<usize> {
    let wall = now_ms();
    let mut queued = 0;
    for w in windows.iter().filter(|w| w.run) {
        // A window that ran before is run again: attempts start at 1 so that the scheduler does
        // not take the earlier success for this tick's.
        let ran_before = w.why != "no run yet";
        match coordinator.tick(&schedule.name, w.tick_ms)? {
            None => {
                let tick = Tick {
                    schedule: schedule.name.clone(),
                    tick_ms: w.tick_ms,
                    from_ms: w.from_ms,
                    to_ms: w.to_ms,
                    run_id: w.run_id.clone(),
                    state: TickState::Pending,
                    attempts: u32::from(ran_before),
                    next_ms: None,
                    owner: None,
                    reason: Some("backfill".into()),
                    backfill: true,
                    created_ms: wall,
                    updated_ms: wall,
                    version: 0,
                };
                // The cursor stays: a backfill does not move the schedule's clock.
                coordinator.record_ticks(&schedule.name, &[tick], i64::MIN)?;
            }
            Some(existing) if existing.state.is_open() => {}
            Some(mut existing) => {
                existing.state = TickState::Pending;
                existing.attempts = u32::from(ran_before);
                existing.next_ms = None;
                existing.reason = Some("backfill".into());
                coordinator.update_tick(&existing, wall)?;
            }
        }
        queued += 1;
    }
    Ok(queued)
}
