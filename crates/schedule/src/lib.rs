//! fleetscore's scheduler: schedules that score every window by themselves.
//!
//! - [`spec`]: a schedule's definition (an interval, or a cron expression in a time zone; the
//!   window each tick scores; the trigger; the catch-up policy), its checks, its ticks and which
//!   of the missed ones run — pure functions of the definition and the time, no I/O.
//! - [`cron`]: cron expressions, and daylight-saving changes handled the way cron daemons do.
//! - [`driver`]: the [`Scheduler`], which keeps ticks in the coordinator's
//!   database (a tick is inserted once, so it fires once however many schedulers run) and
//!   starts, watches and retries their runs through `fleetscore_jobs::run`.
//! - [`backfill`]: the runs of a schedule's windows over a past range.
//!
//! A tick's run has the id its window gives it (`fleetscore_jobs::run::run_id_for`), so a
//! scheduled run, a backfill and a manual `run` of one window are the same run.

pub mod backfill;
pub mod cron;
pub mod driver;
mod error;
pub mod spec;

pub use driver::{Event, Scheduler, SchedulerOptions};
pub use error::{Error, Result};
pub use spec::{Cadence, Catchup, Schedule, Trigger};
