//! `fleetscore schedule ...`, `fleetscore scheduler` and `fleetscore backfill`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use fleetscore_core::{Clock, ManualClock, SystemClock, format_duration, rfc3339};
use fleetscore_jobs::coordinator::Coordinator;
use fleetscore_jobs::coordinator::schedules::{ScheduleRow, TickState};
use fleetscore_jobs::run::{self, RunOptions};
use fleetscore_schedule::backfill::{self, Reprocess};
use fleetscore_schedule::driver::{self, What};
use fleetscore_schedule::spec::{Cadence, Catchup, Schedule, Trigger};
use fleetscore_schedule::{Event, Scheduler, SchedulerOptions};
use fleetscore_store::Store;

use crate::fleet_cmd::StoreArgs;

/// `fleetscore schedule ...`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule: a tick at instant T scores the window [T - window, T).
    Add(AddArgs),
    /// Change a schedule's definition (windows that already ran never run again).
    Edit(EditArgs),
    /// Every schedule, a line each.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A schedule: its definition, its next ticks, and its tick history.
    Show {
        /// The schedule.
        name: String,
        /// Ticks of history to show.
        #[arg(long, default_value_t = 20)]
        history: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop firing a schedule's ticks (runs in progress finish).
    Pause {
        /// The schedule.
        name: String,
    },
    /// Fire a paused schedule's ticks again; the ticks missed while paused follow its catch-up
    /// policy, printed first.
    Resume {
        /// The schedule.
        name: String,
    },
    /// Delete a schedule and its tick history (its runs and predictions stay).
    Delete {
        /// The schedule.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TriggerArg {
    /// At the tick plus --delay.
    Clock,
    /// When every aggregator's watermark has passed the window's end.
    Watermark,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum CatchupArg {
    /// Run every missed window (at most --max-catchup).
    All,
    /// Run only the latest missed window.
    Latest,
    /// Run no missed window.
    None,
}

/// The options `add` and `edit` share.
#[derive(Debug, Args)]
pub struct DefinitionArgs {
    /// Tick every this long, on multiples of it since the epoch in UTC (`1h` ticks on the hour).
    #[arg(long, value_parser = fleetscore_core::parse_duration, conflicts_with = "cron")]
    pub every: Option<Duration>,
    /// Tick at the times of a cron expression (`minute hour day month weekday`, or `@hourly`,
    /// `@daily`, ...), in --tz.
    #[arg(long)]
    pub cron: Option<String>,
    /// The IANA time zone of --cron's wall-clock times (windows are UTC instants regardless).
    #[arg(long)]
    pub tz: Option<String>,
    /// The window each tick scores, ending at the tick.
    #[arg(long, value_parser = fleetscore_core::parse_duration)]
    pub window: Option<Duration>,
    /// With the clock trigger, start each run this long after its tick (for late readings).
    #[arg(long, value_parser = fleetscore_core::parse_duration)]
    pub delay: Option<Duration>,
    /// What starts a due tick's run.
    #[arg(long, value_enum)]
    pub trigger: Option<TriggerArg>,
    /// What happens to ticks missed while no scheduler ran or the schedule was paused.
    #[arg(long, value_enum)]
    pub catchup: Option<CatchupArg>,
    /// With --catchup all, the most missed windows run (older ones are skipped).
    #[arg(long)]
    pub max_catchup: Option<u32>,
    /// The most runs of this schedule at once.
    #[arg(long)]
    pub max_active: Option<u32>,
    /// The earliest window start (default: now); in the past, the catch-up policy decides.
    #[arg(long)]
    pub start: Option<String>,
    /// Runs again after a failed run, at most.
    #[arg(long)]
    pub retries: Option<u32>,
    /// The wait before the first retry; it doubles with each retry after.
    #[arg(long, value_parser = fleetscore_core::parse_duration)]
    pub retry_backoff: Option<Duration>,
    /// A command (run with `sh -c`, the failure in FLEETSCORE_* variables and as JSON on its
    /// input) or an http:// URL (POSTed the JSON) told of each window that failed for good.
    #[arg(long)]
    pub on_failure: Option<String>,
    /// Allow a window shorter than the spacing of ticks (readings between windows are never
    /// scored).
    #[arg(long)]
    pub allow_gaps: bool,
    /// Most models per shard task of each run.
    #[arg(long)]
    pub max_models_per_task: Option<usize>,
    /// The time the catch-up preview is computed for (default: now).
    #[arg(long)]
    pub now: Option<String>,
}

/// `fleetscore schedule add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The schedule's name.
    pub name: String,
    #[command(flatten)]
    pub definition: DefinitionArgs,
}

/// `fleetscore schedule edit`.
#[derive(Debug, Args)]
pub struct EditArgs {
    /// The schedule.
    pub name: String,
    #[command(flatten)]
    pub definition: DefinitionArgs,
}

/// `fleetscore scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Fire every tick due by --now (or now) under each schedule's catch-up policy, wait for
    /// the runs, print what happened, and exit (0: every run succeeded; 2: one did not).
    #[arg(long)]
    pub once: bool,
    /// The schedule clock's time (with --once): ticks due by it fire.
    #[arg(long, requires = "once")]
    pub now: Option<String>,
    /// Worker threads executing runs in this process (default: all cores); 0 leaves them to
    /// `fleetscore worker` processes.
    #[arg(long)]
    pub workers: Option<usize>,
    /// How often the scheduler looks for due ticks and finished runs.
    #[arg(long, default_value = "500ms", value_parser = fleetscore_core::parse_duration)]
    pub poll: Duration,
    /// Seconds a task's claim lasts without a heartbeat.
    #[arg(long, default_value_t = 60)]
    pub lease: u64,
    /// Attempts per task before it fails for good.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Only this schedule.
    #[arg(long)]
    pub schedule: Option<String>,
    /// This scheduler's name in the coordinator (default: host name and process id).
    #[arg(long, env = "FLEETSCORE_SCHEDULER_NAME")]
    pub name: Option<String>,
}

/// `fleetscore backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// The schedule whose windows to run.
    #[arg(long)]
    pub schedule: String,
    /// Range start: windows starting at or after it.
    #[arg(long)]
    pub from: String,
    /// Range end: windows ending at or before it.
    #[arg(long)]
    pub to: String,
    /// Which windows to run: missing (no run yet), failed (those and windows whose latest run
    /// did not succeed), all.
    #[arg(long, default_value = "missing")]
    pub reprocess: Reprocess,
    /// List the windows and what the backfill would do with each, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: all cores); 0 leaves the runs to `fleetscore worker`s.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Seconds a task's claim lasts without a heartbeat.
    #[arg(long, default_value_t = 60)]
    pub lease: u64,
}

fn time_arg(s: &str, what: &str) -> Result<i64> {
    fleetscore_core::parse_time(s).map_err(|e| anyhow::anyhow!("--{what} {e}"))
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Applies the options given to a definition.
fn apply(def: &mut Schedule, a: &DefinitionArgs, now_ms: i64) -> Result<()> {
    match (&a.every, &a.cron) {
        (Some(every), _) => {
            if a.tz.is_some() {
                bail!("--tz places --cron's wall-clock times; --every ticks are UTC instants");
            }
            def.cadence = Cadence::Every {
                every_ms: ms(*every),
            }
        }
        (None, Some(expr)) => {
            def.cadence = Cadence::Cron {
                expr: expr.clone(),
                tz: a.tz.clone().unwrap_or_else(|| "UTC".into()),
            }
        }
        (None, None) => {
            if let Some(tz) = &a.tz {
                match &mut def.cadence {
                    Cadence::Cron { tz: zone, .. } => *zone = tz.clone(),
                    Cadence::Every { .. } => {
                        bail!("--tz places --cron's wall-clock times; this schedule uses --every")
                    }
                }
            }
        }
    }
    if let Some(w) = a.window {
        def.window_ms = ms(w);
    }
    if let Some(d) = a.delay {
        def.delay_ms = ms(d);
    }
    if let Some(t) = a.trigger {
        def.trigger = match t {
            TriggerArg::Clock => Trigger::Clock,
            TriggerArg::Watermark => Trigger::Watermark,
        };
    }
    if let Some(c) = a.catchup {
        def.catchup = match c {
            CatchupArg::All => Catchup::All,
            CatchupArg::Latest => Catchup::Latest,
            CatchupArg::None => Catchup::None,
        };
    }
    if let Some(n) = a.max_catchup {
        def.max_catchup = n;
    }
    if let Some(n) = a.max_active {
        def.max_active = n;
    }
    if let Some(s) = &a.start {
        def.start_ms = time_arg(s, "start")?;
    } else if def.start_ms == i64::MIN {
        def.start_ms = now_ms;
    }
    if let Some(n) = a.retries {
        def.retries = n;
    }
    if let Some(b) = a.retry_backoff {
        def.retry_backoff_ms = ms(b);
    }
    if let Some(h) = &a.on_failure {
        def.on_failure = (!h.is_empty()).then(|| h.clone());
    }
    if a.allow_gaps {
        def.allow_gaps = true;
    }
    if let Some(n) = a.max_models_per_task {
        def.run.max_models_per_task = n;
    }
    Ok(())
}

fn preview_now(a: &DefinitionArgs) -> Result<i64> {
    match &a.now {
        Some(t) => time_arg(t, "now"),
        None => Ok(SystemClock.now_ms()),
    }
}

/// Says what the catch-up policy will run of the ticks already due.
fn say_catchup(def: &Schedule, cursor_ms: Option<i64>, now_ms: i64) {
    let due = def.due(cursor_ms, now_ms);
    if due.is_empty() {
        println!(
            "no window is due yet; the next tick is {}",
            def.ticks_after(cursor_ms.unwrap_or(i64::MIN).max(now_ms))
                .next()
                .map_or_else(|| "never".to_string(), rfc3339)
        );
        return;
    }
    let runs: Vec<i64> = due
        .iter()
        .filter(|d| d.skip.is_none())
        .map(|d| d.tick_ms)
        .collect();
    let skipped = due.len() - runs.len();
    let policy = match def.catchup {
        Catchup::All => "all",
        Catchup::Latest => "latest",
        Catchup::None => "none",
    };
    match (runs.first(), runs.last()) {
        (Some(&first), Some(&last)) => println!(
            "catch-up {policy}: {} windows are due; the scheduler will run {} (from [{} .. {}) to [{} .. {})) and skip {skipped}",
            due.len(),
            runs.len(),
            rfc3339(def.window(first).0),
            rfc3339(first),
            rfc3339(def.window(last).0),
            rfc3339(last),
        ),
        _ => println!(
            "catch-up {policy}: {} windows are due; the scheduler will skip them all",
            due.len()
        ),
    }
}

pub fn schedule(args: &StoreArgs, command: ScheduleCommand) -> Result<ExitCode> {
    let coordinator = args.coordinator()?;
    let c = coordinator.as_ref();
    let now = SystemClock.now_ms();
    match command {
        ScheduleCommand::Add(a) => {
            fleetscore_schedule::spec::check_name(&a.name)?;
            if c.schedule(&a.name)?.is_some() {
                bail!(
                    "a schedule named {} exists (`fleetscore schedule edit {}` changes it)",
                    a.name,
                    a.name
                );
            }
            let d = &a.definition;
            if d.every.is_none() && d.cron.is_none() {
                bail!("give --every DURATION or --cron EXPRESSION");
            }
            if d.window.is_none() {
                bail!("give --window DURATION: the span each tick scores");
            }
            let preview = preview_now(d)?;
            let mut def = Schedule::every(
                &a.name,
                Duration::from_secs(3_600),
                Duration::ZERO,
                i64::MIN,
            );
            apply(&mut def, d, preview)?;
            def.check()?;
            let row = ScheduleRow {
                name: a.name.clone(),
                definition: serde_json::to_string(&def)?,
                paused: false,
                cursor_ms: None,
                created_ms: now,
                updated_ms: now,
            };
            if !c.add_schedule(&row)? {
                bail!("a schedule named {} exists", a.name);
            }
            println!("schedule {} added: {}", a.name, describe(&def));
            say_catchup(&def, None, preview);
        }
        ScheduleCommand::Edit(a) => {
            let row = c.schedule(&a.name)?.with_context(|| unknown(&a.name))?;
            let mut def = driver::definition(&row)?;
            apply(&mut def, &a.definition, preview_now(&a.definition)?)?;
            def.check()?;
            let mut row = row;
            row.definition = serde_json::to_string(&def)?;
            row.updated_ms = now;
            c.update_schedule(&row)?;
            println!("schedule {} changed: {}", a.name, describe(&def));
            if !row.paused {
                say_catchup(&def, row.cursor_ms, preview_now(&a.definition)?);
            }
        }
        ScheduleCommand::List { json } => {
            let rows = c.schedules()?;
            let mut out = std::io::stdout().lock();
            if json {
                let list: Vec<serde_json::Value> = rows
                    .iter()
                    .map(|r| schedule_json(c, r, 1, 0))
                    .collect::<Result<_>>()?;
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            if rows.is_empty() {
                writeln!(out, "no schedules (`fleetscore schedule add` makes one)")?;
            }
            for r in rows {
                let def = driver::definition(&r)?;
                let next = def
                    .ticks_after(r.cursor_ms.unwrap_or(i64::MIN).max(now))
                    .next()
                    .map_or_else(|| "never".into(), rfc3339);
                let last = c.ticks(&r.name, 1)?.into_iter().next().map_or_else(
                    || "-".to_string(),
                    |t| format!("{} {}", rfc3339(t.tick_ms), t.state),
                );
                writeln!(
                    out,
                    "{}\t{}\t{}\tnext {next}\tlast {last}",
                    r.name,
                    if r.paused { "paused" } else { "active" },
                    describe(&def),
                )?;
            }
        }
        ScheduleCommand::Show {
            name,
            history,
            json,
        } => {
            let row = c.schedule(&name)?.with_context(|| unknown(&name))?;
            let value = schedule_json(c, &row, 10, history)?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            let def = driver::definition(&row)?;
            writeln!(
                out,
                "schedule {name} ({})",
                if row.paused { "paused" } else { "active" }
            )?;
            writeln!(out, "  {}", describe(&def))?;
            writeln!(
                out,
                "  windows from {}; catch-up {:?} (at most {}); at most {} active; {} retries from {}{}",
                rfc3339(def.start_ms),
                def.catchup,
                def.max_catchup,
                def.max_active,
                def.retries,
                format_duration(Duration::from_millis(def.retry_backoff_ms as u64)),
                def.on_failure
                    .as_ref()
                    .map(|h| format!("; on failure: {h}"))
                    .unwrap_or_default()
            )?;
            if def.trigger == Trigger::Watermark {
                let marks = c.watermarks()?;
                if marks.is_empty() {
                    writeln!(out, "  watermarks: no aggregator has published one yet")?;
                }
                for w in marks {
                    writeln!(
                        out,
                        "  watermark of aggregator {}: every window before {} is in the store (published {})",
                        w.aggregator,
                        rfc3339(w.complete_before_ms),
                        rfc3339(w.updated_ms)
                    )?;
                }
            }
            writeln!(out, "next ticks (UTC):")?;
            for t in def
                .ticks_after(row.cursor_ms.unwrap_or(i64::MIN).max(now))
                .take(10)
            {
                let (from, to) = def.window(t);
                writeln!(
                    out,
                    "  {}  window [{} .. {})",
                    rfc3339(t),
                    rfc3339(from),
                    rfc3339(to)
                )?;
            }
            writeln!(out, "history (newest first):")?;
            let ticks = c.ticks(&name, history)?;
            if ticks.is_empty() {
                writeln!(out, "  no tick yet")?;
            }
            for t in ticks {
                writeln!(
                    out,
                    "  {}  {:<23} attempts {}  run {}{}{}",
                    rfc3339(t.tick_ms),
                    t.state.as_str(),
                    t.attempts,
                    t.run_id,
                    if t.backfill { "  (backfill)" } else { "" },
                    t.reason.map(|r| format!("  {r}")).unwrap_or_default()
                )?;
            }
        }
        ScheduleCommand::Pause { name } => {
            let mut row = c.schedule(&name)?.with_context(|| unknown(&name))?;
            row.paused = true;
            row.updated_ms = now;
            c.update_schedule(&row)?;
            println!("schedule {name} paused (runs in progress finish)");
        }
        ScheduleCommand::Resume { name } => {
            let mut row = c.schedule(&name)?.with_context(|| unknown(&name))?;
            let def = driver::definition(&row)?;
            row.paused = false;
            row.updated_ms = now;
            c.update_schedule(&row)?;
            println!("schedule {name} resumed");
            say_catchup(&def, row.cursor_ms, now);
        }
        ScheduleCommand::Delete { name } => {
            if !c.delete_schedule(&name)? {
                bail!("{}", unknown(&name));
            }
            println!("schedule {name} deleted (its runs and predictions stay)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn unknown(name: &str) -> String {
    format!("no schedule named {name} (`fleetscore schedule list` shows them)")
}

/// A definition in one line.
fn describe(def: &Schedule) -> String {
    let d = |ms: i64| format_duration(Duration::from_millis(ms.max(0) as u64));
    let cadence = match &def.cadence {
        Cadence::Every { every_ms } => format!("every {}", d(*every_ms)),
        Cadence::Cron { expr, tz } => format!("cron '{expr}' in {tz}"),
    };
    let trigger = match def.trigger {
        Trigger::Clock if def.delay_ms > 0 => format!("clock + {}", d(def.delay_ms)),
        Trigger::Clock => "clock".to_string(),
        Trigger::Watermark => "watermark".to_string(),
    };
    format!("{cadence}, window {}, trigger {trigger}", d(def.window_ms))
}

fn schedule_json(
    c: &dyn Coordinator,
    row: &ScheduleRow,
    next: usize,
    history: u32,
) -> Result<serde_json::Value> {
    let def = driver::definition(row)?;
    let now = SystemClock.now_ms();
    let next: Vec<serde_json::Value> = def
        .ticks_after(row.cursor_ms.unwrap_or(i64::MIN).max(now))
        .take(next)
        .map(|t| {
            let (from, to) = def.window(t);
            serde_json::json!({"tick": rfc3339(t), "from": rfc3339(from), "to": rfc3339(to)})
        })
        .collect();
    let ticks: Vec<serde_json::Value> = c
        .ticks(&row.name, history)?
        .into_iter()
        .map(|t| {
            serde_json::json!({
                "tick": rfc3339(t.tick_ms),
                "from": rfc3339(t.from_ms),
                "to": rfc3339(t.to_ms),
                "run_id": t.run_id,
                "state": t.state,
                "attempts": t.attempts,
                "reason": t.reason,
                "backfill": t.backfill,
                "next_attempt": t.next_ms.filter(|_| t.state == TickState::Retrying).map(rfc3339),
            })
        })
        .collect();
    let watermarks: Vec<serde_json::Value> = c
        .watermarks()?
        .into_iter()
        .map(|w| {
            serde_json::json!({
                "aggregator": w.aggregator,
                "complete_before": rfc3339(w.complete_before_ms),
                "published": rfc3339(w.updated_ms),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "name": row.name,
        "paused": row.paused,
        "definition": def,
        "cursor": row.cursor_ms.map(rfc3339),
        "next_ticks": next,
        "history": ticks,
        "watermarks": watermarks,
    }))
}

/// Worker threads serving every run, until `stop`.
fn spawn_workers<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    store: &'s Store,
    coordinator: &'s dyn Coordinator,
    options: &'s RunOptions,
    threads: usize,
    stop: &'s AtomicBool,
) -> Vec<std::thread::ScopedJoinHandle<'s, fleetscore_jobs::Result<run::Served>>> {
    (0..threads)
        .map(|n| {
            let name = format!("{}-{n}", options.worker_prefix);
            scope.spawn(move || {
                run::serve(store, coordinator, &name, options, None, &|| {
                    stop.load(Ordering::Relaxed)
                })
            })
        })
        .collect()
}

fn run_options(
    args: &StoreArgs,
    workers: Option<usize>,
    lease: u64,
    max_attempts: u32,
) -> RunOptions {
    let mut options = RunOptions {
        lease: Duration::from_secs(lease.max(1)),
        max_attempts: max_attempts.max(1),
        model_limits: args.model_limits(),
        faults: crate::fleet_cmd::faults_from_env(),
        ..RunOptions::default()
    };
    if let Some(w) = workers {
        options.workers = w;
    }
    options
}

pub fn scheduler(args: &StoreArgs, a: SchedulerArgs) -> Result<ExitCode> {
    let store = args.open()?;
    let coordinator = args.coordinator()?;
    let c = coordinator.as_ref();
    if let Some(only) = &a.schedule {
        c.schedule(only)?.with_context(|| unknown(only))?;
    }
    let mut options = SchedulerOptions {
        run: run_options(args, a.workers, a.lease, a.max_attempts),
        only: a.schedule.clone(),
        ..SchedulerOptions::default()
    };
    if let Some(name) = &a.name {
        options.id = name.clone();
        options.run.worker_prefix = name.clone();
    }
    let threads = options.run.workers;
    let clock: Box<dyn Clock> = match &a.now {
        Some(t) => Box::new(ManualClock::new(time_arg(t, "now")?)),
        None => Box::new(SystemClock),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let scheduler = Scheduler::new(&store, c, clock.as_ref(), options.clone());
    if !a.once {
        eprintln!(
            "scheduler {}: {} schedules, {threads} worker threads (store {}); SIGTERM stops it",
            options.id,
            c.schedules()?.len(),
            args.store
        );
    }
    let workers_stop = AtomicBool::new(false);
    let mut touched = std::collections::BTreeSet::new();
    let mut runs = 0usize;
    let outcome: Result<()> = std::thread::scope(|s| {
        let handles = spawn_workers(s, &store, c, &options.run, threads, &workers_stop);
        let result = (|| -> Result<()> {
            loop {
                let events = scheduler.step()?;
                for e in &events {
                    if matches!(e.what, What::Started(_)) {
                        runs += 1;
                    }
                    if !matches!(e.what, What::Skipped(_)) {
                        touched.insert((e.schedule.clone(), e.tick_ms));
                    }
                    print_event(e);
                }
                if stop.load(Ordering::Relaxed) || (a.once && !scheduler.busy()?) {
                    return Ok(());
                }
                // Something moved: look again soon (a finished run frees a slot at once).
                let pause = if events.is_empty() {
                    a.poll
                } else {
                    a.poll.min(Duration::from_millis(50))
                };
                std::thread::sleep(pause);
            }
        })();
        workers_stop.store(true, Ordering::Relaxed);
        for h in handles {
            if let Err(e) = h.join().expect("worker thread panicked") {
                tracing::error!("worker: {e}");
            }
        }
        result
    });
    outcome?;
    // What the ticks it moved ended as (a window retried into success counts as a success).
    let (mut succeeded, mut failures) = (0, 0);
    for (schedule, tick_ms) in &touched {
        match c.tick(schedule, *tick_ms)?.map(|t| t.state) {
            Some(TickState::Succeeded) => succeeded += 1,
            // A run failed; its retry is later than this pass waits.
            Some(TickState::Retrying) => failures += 1,
            Some(state) if state.is_open() => {}
            _ => failures += 1,
        }
    }
    if a.once {
        // Ticks waiting for a watermark or a later retry, whether they moved now or before.
        let open = c
            .open_ticks()?
            .iter()
            .filter(|t| a.schedule.as_ref().is_none_or(|only| *only == t.schedule))
            .count();
        println!(
            "scheduler --once: {runs} runs started; {succeeded} windows succeeded, {failures} did not, {open} still open"
        );
    }
    Ok(if failures > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_event(e: &Event) {
    println!("{e}");
    let _ = std::io::stdout().flush();
}

pub fn backfill(args: &StoreArgs, a: BackfillArgs) -> Result<ExitCode> {
    let store = args.open()?;
    let coordinator = args.coordinator()?;
    let c = coordinator.as_ref();
    let row = c
        .schedule(&a.schedule)?
        .with_context(|| unknown(&a.schedule))?;
    let def = driver::definition(&row)?;
    let from = time_arg(&a.from, "from")?;
    let to = time_arg(&a.to, "to")?;
    let windows = backfill::plan(c, &def, from, to, a.reprocess)?;
    let planned = windows.iter().filter(|w| w.run).count();
    if a.dry_run {
        for w in &windows {
            println!(
                "[{} .. {})  {}  {}",
                rfc3339(w.from_ms),
                rfc3339(w.to_ms),
                if w.run { "run " } else { "keep" },
                w.why
            );
        }
        println!(
            "backfill {} --dry-run: {} windows, {planned} would run (at most {} at once)",
            a.schedule,
            windows.len(),
            def.max_active
        );
        return Ok(ExitCode::SUCCESS);
    }
    backfill::enqueue(c, &def, &windows)?;
    let options = SchedulerOptions {
        run: run_options(args, a.workers, a.lease, 3),
        only: Some(a.schedule.clone()),
        fire: false,
        ..SchedulerOptions::default()
    };
    let threads = options.run.workers;
    let scheduler = Scheduler::new(&store, c, &SystemClock, options.clone());
    let wanted: std::collections::BTreeSet<i64> = windows
        .iter()
        .filter(|w| w.run)
        .map(|w| w.tick_ms)
        .collect();
    let workers_stop = AtomicBool::new(false);
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut done, mut failed) = (0usize, 0usize);
    let outcome: Result<()> = std::thread::scope(|s| {
        let handles = spawn_workers(s, &store, c, &options.run, threads, &workers_stop);
        let result = (|| -> Result<()> {
            loop {
                for e in scheduler.step()? {
                    if !wanted.contains(&e.tick_ms) {
                        continue;
                    }
                    match e.what {
                        What::Succeeded { .. } | What::AlreadyRan => done += 1,
                        What::Failed(_) | What::CompletedWithFailures(_) => {
                            done += 1;
                            failed += 1;
                        }
                        _ => {}
                    }
                    if tty {
                        eprint!("\r\x1b[2K");
                    }
                    print_event(&e);
                }
                if tty {
                    let width = 30;
                    let filled = (done * width)
                        .checked_div(planned)
                        .unwrap_or(width)
                        .min(width);
                    eprint!(
                        "\r\x1b[2K[{}{}] {done}/{planned} windows, {failed} failed, {:.0}s",
                        "#".repeat(filled),
                        ".".repeat(width - filled),
                        started.elapsed().as_secs_f64()
                    );
                }
                if !scheduler.busy()? {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })();
        workers_stop.store(true, Ordering::Relaxed);
        for h in handles {
            if let Err(e) = h.join().expect("worker thread panicked") {
                tracing::error!("worker: {e}");
            }
        }
        result
    });
    if tty {
        eprint!("\r\x1b[2K");
    }
    outcome?;
    println!(
        "backfill {}: {planned} windows run, {failed} did not succeed, in {:.1}s",
        a.schedule,
        started.elapsed().as_secs_f64()
    );
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// The schedules the monitor shows, read from the coordinator on its refresh thread.
pub struct MonitorSchedules(pub std::sync::Arc<dyn Coordinator>);

impl fleetscore_monitor::Schedules for MonitorSchedules {
    fn schedules(&self, now_ms: i64) -> Option<Vec<fleetscore_monitor::ScheduleView>> {
        let rows = match self.0.schedules() {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!("reading schedules for the monitor: {e}");
                return Some(Vec::new());
            }
        };
        let mut out = Vec::new();
        for row in rows {
            let Ok(def) = driver::definition(&row) else {
                continue;
            };
            let history = self.0.ticks(&row.name, 50).unwrap_or_default();
            let backfill = {
                let ticks: Vec<_> = history.iter().filter(|t| t.backfill).collect();
                let open = ticks.iter().filter(|t| t.state.is_open()).count() as u64;
                (open > 0).then(|| (ticks.len() as u64 - open, ticks.len() as u64))
            };
            out.push(fleetscore_monitor::ScheduleView {
                name: row.name.clone(),
                definition: format!(
                    "{}{}",
                    describe(&def),
                    if row.paused { " (paused)" } else { "" }
                ),
                window_ms: def.window_ms,
                next_ticks: def
                    .ticks_after(row.cursor_ms.unwrap_or(i64::MIN).max(now_ms))
                    .take(10)
                    .collect(),
                history: history
                    .into_iter()
                    .map(|t| fleetscore_monitor::TickView {
                        tick_ms: t.tick_ms,
                        run_id: (t.attempts > 0).then_some(t.run_id),
                        reason: match t.reason {
                            Some(why) => format!("{}: {why}", t.state),
                            None => t.state.to_string(),
                        },
                    })
                    .collect(),
                backfill,
            });
        }
        Some(out)
    }
}
