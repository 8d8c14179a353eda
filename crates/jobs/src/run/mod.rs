//! A fleet run: plan shard tasks for a window ([`plan()`]), hand them to the coordinator
//! ([`start`]), execute them on worker threads ([`work`], [`serve`]), each task reading its
//! slice once and writing its predictions and log ([`execute_task`]), and write the run record
//! ([`RunRecord`], [`finalize`]), with each task's per-model counts ([`TaskSummary`]). One
//! module each: `plan`, `task`, `worker`, `record`, `summary`.
//!
//! Outputs are named by the run and shard, so a retried or re-run task replaces its output and
//! never duplicates it.

mod cache;
mod fetch;
mod plan;
mod record;
mod summary;
mod task;
mod train_task;
mod worker;

use std::time::{Duration, Instant};

use fleetscore_store::{Store, layout};

use crate::coordinator::{Coordinator, RunSpec, StoreRequests, TaskState};
use crate::error::{Error, Result};
use crate::status::{RunStatus, TaskStatus};

pub use cache::{CacheStats, DEFAULT_CACHE_BYTES, ModelCache};
pub use fleetscore_core::{now_ms, rfc3339};
pub use plan::{Plan, plan};
use record::missing_record;
pub use record::{RunRecord, TaskFailure, predictions, record};
pub use summary::{SUMMARY_FORMAT, Scored, TaskSummary, Unscored, parse_summary, summaries};
pub use task::{Attempt, execute_task};
pub use worker::{Served, serve, work};

/// How a run executes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads.
    pub workers: usize,
    /// Most models in one task (more tasks than workers keeps every core busy to the end).
    pub max_models_per_task: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// Attempts before a task is failed for good.
    pub max_attempts: u32,
    /// Name prefix of this process's workers (the worker id is `{prefix}-{n}`).
    pub worker_prefix: String,
    /// The longest window a run may score: planning lists every hour of the window, so an
    /// unbounded one (a typo in `--from`) would build state for millennia.
    pub max_window: Duration,
    /// Each model file's load limits, its memory budget among them.
    pub model_limits: fleetscore_models::Limits,
    /// Loaded models kept across tasks and runs (long-lived workers); `None` loads every
    /// model from the store for each task.
    pub model_cache: Option<std::sync::Arc<ModelCache>>,
    /// Injected faults (tests only).
    pub faults: Faults,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_models_per_task: 1_000,
            lease: Duration::from_secs(60),
            max_attempts: 3,
            worker_prefix: format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
                std::process::id()
            ),
            max_window: DEFAULT_MAX_WINDOW,
            model_limits: fleetscore_models::Limits::default(),
            model_cache: None,
            faults: Faults::default(),
        }
    }
}

/// Fault injection for tests of real processes, filled by the binary (from
/// `FLEETSCORE_FAULT_*` variables); never set in production.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every task waits this long (heartbeating) after its claim, so a test can kill a worker
    /// mid-task.
    pub task_delay: Option<Duration>,
    /// Every attempt at this shard fails with a store error (one a retry could help with), for
    /// tests of poison tasks.
    pub fail_shard: Option<u32>,
}

/// What to run: a window and, optionally, the run id to give it (by default derived from the
/// window), with how to execute it.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Window start, epoch ms (inclusive).
    pub from_ms: i64,
    /// Window end, epoch ms (exclusive).
    pub to_ms: i64,
    /// The run id; `None` derives it from the window ([`run_id_for`]).
    pub run_id: Option<String>,
    /// How to execute it.
    pub options: RunOptions,
    /// Only these (device, tag) models (`None`: every model).
    pub select: Option<std::collections::BTreeSet<(String, String)>>,
    /// Set for a training run: fit new versions of the models over the window instead of
    /// scoring them.
    pub train: Option<crate::train::TrainTask>,
    /// The reading columns to feed the models (training: the new versions' features), instead
    /// of each model's own.
    pub features: Option<Vec<String>>,
}

impl RunRequest {
    /// The window `[from_ms, to_ms)` with the default options and the derived run id.
    pub fn window(from_ms: i64, to_ms: i64) -> RunRequest {
        RunRequest {
            from_ms,
            to_ms,
            run_id: None,
            options: RunOptions::default(),
            select: None,
            train: None,
            features: None,
        }
    }

    /// The same request with these options.
    pub fn with_options(mut self, options: RunOptions) -> RunRequest {
        self.options = options;
        self
    }
}

/// The default [`RunOptions::max_window`]: ten years.
pub const DEFAULT_MAX_WINDOW: Duration = Duration::from_secs(3_653 * 86_400);

/// Checks a run id given by a user ([`layout::check_run_id`]).
pub fn check_run_id(id: &str) -> Result<()> {
    layout::check_run_id(id).map_err(Error::Invalid)
}

/// A run id derived from its window, so running the same window again replaces its outputs.
pub fn run_id_for(from_ms: i64, to_ms: i64) -> String {
    let f = |ms: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|| ms.to_string())
    };
    format!("{}_{}", f(from_ms), f(to_ms))
}

/// Plans a run and hands its tasks to the coordinator: the outputs of an earlier run of the
/// same window are deleted, and the run's record is written with status `running` and the
/// plan's facts. Workers (threads of [`run`], or [`serve`] loops on
/// any machine) then execute the tasks, and the one that completes the last writes the final
/// record ([`finalize`]).
pub fn start(
    store: &Store,
    coordinator: &dyn Coordinator,
    request: &RunRequest,
) -> Result<(RunSpec, RunRecord)> {
    let (from_ms, to_ms, options) = (request.from_ms, request.to_ms, &request.options);
    if to_ms <= from_ms {
        return Err(Error::Invalid(format!(
            "the window is empty: --to ({}) must be after --from ({})",
            rfc3339(to_ms),
            rfc3339(from_ms)
        )));
    }
    let max_ms = i128::try_from(options.max_window.as_millis()).unwrap_or(i128::MAX);
    if i128::from(to_ms) - i128::from(from_ms) > max_ms {
        return Err(Error::Invalid(format!(
            "the window from {} to {} is {} days long; a run scores at most {} days (--max-window)",
            rfc3339(from_ms),
            rfc3339(to_ms),
            (i128::from(to_ms) - i128::from(from_ms)) / 86_400_000,
            options.max_window.as_secs() / 86_400
        )));
    }
    if let Some(id) = &request.run_id {
        check_run_id(id)?;
    }
    let started_ms = now_ms();
    let planning = Instant::now();
    // Planning's store requests are counted for the record.
    let (counted, requests) = store.counting();
    let store = &counted;
    let id = request
        .run_id
        .clone()
        .unwrap_or_else(|| run_id_for(from_ms, to_ms));
    let spec = RunSpec {
        id: id.clone(),
        from_ms,
        to_ms,
    };
    let mut plan = plan(
        store,
        from_ms,
        to_ms,
        options.workers.max(1) * 4,
        options.max_models_per_task,
    )?;
    if let Some(select) = &request.select {
        let keep =
            |m: &crate::coordinator::ModelRef| select.contains(&(m.device.clone(), m.tag.clone()));
        plan.models_without_data.retain(keep);
        for t in &mut plan.tasks {
            t.models.retain(keep);
        }
        plan.tasks.retain(|t| !t.models.is_empty());
        for (i, t) in plan.tasks.iter_mut().enumerate() {
            t.shard = i as u32;
        }
    }
    for t in &mut plan.tasks {
        if let Some(features) = &request.features {
            for m in &mut t.models {
                m.features = features.clone();
            }
        }
        t.train = request.train.clone();
    }
    // Running a window again replaces its outputs: a task writes its predictions once per run
    // (see `execute_task`), so the earlier run's go first — exactly this run's: the files
    // directly in its folders (run ids are one path segment, so no other run's are below).
    for dir in [
        layout::predictions_dir(&id),
        layout::logs_dir(&id),
        layout::summaries_dir(&id),
    ] {
        let inside = format!("{dir}/");
        for entry in store.list(&dir)? {
            if entry
                .key
                .strip_prefix(&inside)
                .is_some_and(|name| !name.contains('/'))
            {
                store.delete(&entry.key)?;
            }
        }
    }
    let mut record = RunRecord {
        run_id: id.clone(),
        from: rfc3339(from_ms),
        to: rfc3339(to_ms),
        status: RunStatus::Running,
        started_at: rfc3339(started_ms),
        finished_at: String::new(),
        plan_seconds: planning.elapsed().as_secs_f64(),
        execute_seconds: 0.0,
        models: (plan.tasks.iter().map(|t| t.models.len()).sum::<usize>()
            + plan.models_without_data.len()) as u64,
        models_scored: 0,
        models_without_data: plan.models_without_data.len() as u64,
        models_failed: 0,
        rows: 0,
        anomalies: 0,
        rows_per_second: 0.0,
        tasks: plan.tasks.len() as u32,
        tasks_failed: 0,
        failures: Vec::new(),
        task_failures: Vec::new(),
        plan_store_requests: StoreRequests::default(),
        store_requests: StoreRequests::default(),
    };
    // Planning's requests, this first write of the record included.
    record.plan_store_requests = requests.requests().into();
    record.plan_store_requests.put += 1;
    record.store_requests = record.plan_store_requests;
    // The record first: a worker that finishes the run's last task builds on it.
    store.put(
        &layout::run_record(&id),
        serde_json::to_vec_pretty(&record).expect("serializable"),
    )?;
    coordinator.create_run(&spec, &plan.tasks, now_ms())?;
    Ok((spec, record))
}

/// Writes the final record of `run_id` if its every task is done or failed for good, and marks
/// the run finished; returns the record when this call finished the run. Any worker may call
/// it; the record is the same whoever writes it.
pub fn finalize(
    store: &Store,
    coordinator: &dyn Coordinator,
    run_id: &str,
) -> Result<Option<RunRecord>> {
    let Some(state) = coordinator.run(run_id)? else {
        return Ok(None);
    };
    if state.status != RunStatus::Running || state.tasks.queued() > 0 {
        return Ok(None);
    }
    let mut record = record(store, run_id)?.ok_or_else(|| missing_record(run_id))?;
    let tasks = coordinator.tasks(run_id)?;
    // Totals are recomputed from the tasks (two workers finishing the last tasks together may
    // both get here; they write the same record): the models the plan left without data are
    // those in no task.
    let in_tasks: u64 = tasks.iter().map(|t| t.models as u64).sum();
    record.models_without_data = record.models.saturating_sub(in_tasks);
    record.models_scored = 0;
    record.rows = 0;
    record.anomalies = 0;
    record.tasks_failed = 0;
    record.failures.clear();
    record.task_failures.clear();
    record.store_requests = record.plan_store_requests;
    // The final record's own write, and the read of the record just above.
    record.store_requests.put += 1;
    record.store_requests.get += 1;
    for t in &tasks {
        match &t.result {
            Some(r) if t.status == TaskStatus::Done => {
                record.models_scored += r.models_scored;
                record.models_without_data += r.models_without_data;
                record.rows += r.rows;
                record.anomalies += r.anomalies;
                record.failures.extend(r.failures.iter().cloned());
                record.store_requests.add(&r.store_requests);
            }
            _ => {
                record.tasks_failed += 1;
                record.task_failures.push(TaskFailure {
                    shard: t.shard,
                    attempts: t.attempts,
                    error: t
                        .error
                        .clone()
                        .unwrap_or_else(|| format!("ended {}", t.status)),
                });
            }
        }
    }
    let finished = now_ms();
    let executing_since = chrono::DateTime::parse_from_rfc3339(&record.started_at)
        .map(|t| t.timestamp_millis() as f64 / 1e3 + record.plan_seconds)
        .unwrap_or(0.0);
    record.execute_seconds = (finished as f64 / 1e3 - executing_since).max(0.0);
    record.models_failed = record.failures.len() as u64;
    record.rows_per_second = record.rows as f64 / record.execute_seconds.max(1e-9);
    record.status = if record.has_failures() {
        RunStatus::CompletedWithFailures
    } else {
        RunStatus::Succeeded
    };
    record.finished_at = rfc3339(finished);
    store.put(
        &layout::run_record(run_id),
        serde_json::to_vec_pretty(&record).expect("serializable"),
    )?;
    coordinator.finish_run(run_id, record.status, finished)?;
    Ok(Some(record))
}

/// Plans a run and executes it on this machine's `request.options.workers` threads (with 0, on
/// workers elsewhere only), returning its final record; `progress` is called with the run's
/// task states a few times a second.
pub fn run(
    store: &Store,
    coordinator: &dyn Coordinator,
    request: &RunRequest,
    progress: &mut dyn FnMut(&[TaskState]),
) -> Result<RunRecord> {
    let options = &request.options;
    let (spec, _) = start(store, coordinator, request)?;
    let id = spec.id.clone();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        // Each worker says when it is done, so the wait ends as soon as the last one is.
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let handles: Vec<_> = (0..options.workers)
            .map(|n| {
                let spec = &spec;
                let worker = format!("{}-{n}", options.worker_prefix);
                let done = done.clone();
                s.spawn(move || {
                    let r = work(store, coordinator, spec, &worker, options);
                    let _ = done.send(());
                    r
                })
            })
            .collect();
        let mut running = options.workers;
        loop {
            if running > 0 {
                if finished.recv_timeout(Duration::from_millis(200)).is_ok() {
                    running -= 1;
                    continue;
                }
            } else {
                // No worker here (or they are done): wait for the ones elsewhere.
                let unfinished = coordinator
                    .run(&id)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.status == RunStatus::Running && r.tasks.queued() > 0);
                if !unfinished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Ok(tasks) = coordinator.tasks(&id) {
                progress(&tasks);
            }
        }
        if let Ok(tasks) = coordinator.tasks(&id) {
            progress(&tasks);
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect()
    });
    for r in results {
        r?;
    }
    match finalize(store, coordinator, &id)? {
        Some(record) => Ok(record),
        // Finished meanwhile by a worker elsewhere (or cancelled): its record stands.
        None => record(store, &id)?.ok_or_else(|| missing_record(&id)),
    }
}

/// Cancels a running run: no task of it is claimed any more (tasks being executed finish),
/// and its record says `cancelled`. False if the run was not running.
pub fn cancel(store: &Store, coordinator: &dyn Coordinator, run_id: &str) -> Result<bool> {
    check_run_id(run_id)?;
    let now = now_ms();
    if !coordinator.cancel_run(run_id, now)? {
        return Ok(false);
    }
    if let Some(mut record) = record(store, run_id)? {
        record.status = RunStatus::Cancelled;
        record.finished_at = rfc3339(now);
        store.put(
            &layout::run_record(run_id),
            serde_json::to_vec_pretty(&record).expect("serializable"),
        )?;
    }
    Ok(true)
}
