//! A fleet run: plan shard tasks for a window, execute them on worker threads through the
//! coordinator, and write the run record.
//!
//! Each task reads its device buckets' readings for the window once, scores every model of those
//! devices, and writes its predictions and log under names derived from the run and shard, so a
//! retried or re-run task replaces its output and never duplicates it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use fleetscore_table::predictions;
use serde::{Deserialize, Serialize};

use fleetscore_models::Model;
use fleetscore_store::{Store, layout};

use crate::coordinator::{
    Claim, Coordinator, ModelFailure, ModelRef, RunSpec, TaskResult, TaskSpec, TaskState,
};
use crate::error::{Error, Result, RetryHint};
use crate::readings::{self, hours_between};
use crate::registry::{self, FeatureSource};
use fleetscore_table::windows as features;

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
        }
    }
}

pub use fleetscore_core::now_ms;

/// A run id derived from its window, so running the same window again replaces its outputs.
pub fn run_id_for(from_ms: i64, to_ms: i64) -> String {
    let f = |ms: i64| {
        chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
            .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
            .unwrap_or_else(|| ms.to_string())
    };
    format!("{}_{}", f(from_ms), f(to_ms))
}

/// A plan: the tasks, and the models that have no readings in the window (not scheduled).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Shard tasks.
    pub tasks: Vec<TaskSpec>,
    /// Models whose devices have no readings in the window.
    pub models_without_data: Vec<ModelRef>,
}

/// Plans a window: the current version of every model, grouped by device bucket, the buckets
/// with readings in the window split over tasks of at most `max_models_per_task` models (and at
/// least `min_tasks` tasks when there are enough buckets).
pub fn plan(
    store: &Store,
    from_ms: i64,
    to_ms: i64,
    min_tasks: usize,
    max_models_per_task: usize,
) -> Result<Plan> {
    let mut by_bucket: BTreeMap<u32, Vec<ModelRef>> = BTreeMap::new();
    for meta in registry::list(store)? {
        by_bucket
            .entry(layout::bucket(&meta.device))
            .or_default()
            .push(ModelRef {
                device: meta.device,
                tag: meta.tag,
                version: meta.version,
                features: meta.features,
            });
    }
    // Which buckets have readings or closed windows in the window: two listings per hour.
    let mut with_data = BTreeSet::new();
    for hour in hours_between(from_ms, to_ms) {
        for entry in store.list(&layout::readings_hour(&hour))? {
            if let Some((_, b)) = layout::parse_readings_key(&entry.key) {
                with_data.insert(b);
            }
        }
        for entry in store.list(&layout::features_hour(&hour))? {
            if let Some((_, b)) = layout::parse_features_key(&entry.key) {
                with_data.insert(b);
            }
        }
    }
    let mut models_without_data = Vec::new();
    let mut buckets: Vec<(u32, Vec<ModelRef>)> = Vec::new();
    for (b, models) in by_bucket {
        if with_data.contains(&b) {
            buckets.push((b, models));
        } else {
            models_without_data.extend(models);
        }
    }
    let total: usize = buckets.iter().map(|(_, m)| m.len()).sum();
    let want = total
        .div_ceil(max_models_per_task.max(1))
        .max(min_tasks)
        .min(buckets.len())
        .max(1);
    // Largest buckets first, each to the task with the fewest models so far.
    buckets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut groups: Vec<(Vec<u32>, Vec<ModelRef>)> = vec![(Vec::new(), Vec::new()); want];
    for (b, models) in buckets {
        let g = groups
            .iter_mut()
            .min_by_key(|g| g.1.len())
            .expect("at least one group");
        g.0.push(b);
        g.1.extend(models);
    }
    let mut groups: Vec<_> = groups.into_iter().filter(|g| !g.0.is_empty()).collect();
    for g in &mut groups {
        g.0.sort_unstable();
        g.1.sort_by(|a, b| (&a.device, &a.tag).cmp(&(&b.device, &b.tag)));
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let tasks = groups
        .into_iter()
        .enumerate()
        .map(|(i, (buckets, models))| TaskSpec {
            shard: i as u32,
            buckets,
            models,
        })
        .collect();
    Ok(Plan {
        tasks,
        models_without_data,
    })
}

/// The schema of prediction tables.
pub fn predictions_schema() -> SchemaRef {
    fleetscore_table::predictions::schema()
}

/// Executes one task: reads its slice, scores its models, writes predictions and log.
pub fn execute_task(
    store: &Store,
    spec: &RunSpec,
    task: &TaskSpec,
    worker: &str,
    attempt: u32,
) -> Result<TaskResult> {
    let started = Instant::now();
    let mut log = String::new();
    let mut line = |s: String| {
        log.push_str(&format!(
            "{} {s}\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        ));
    };
    line(format!(
        "run {} shard {} worker {worker}: {} models, buckets {:?}",
        spec.id,
        task.shard,
        task.models.len(),
        task.buckets
    ));
    let source = |m: &ModelRef| FeatureSource::of(&m.features);
    let wanted = |kind: FeatureSource| -> BTreeSet<(&str, &str)> {
        task.models
            .iter()
            .filter(|m| source(m).ok() == Some(kind))
            .map(|m| (m.device.as_str(), m.tag.as_str()))
            .collect()
    };
    let (raw, windowed) = (
        wanted(FeatureSource::Readings),
        wanted(FeatureSource::Windows),
    );
    let slice = if raw.is_empty() {
        BTreeMap::new()
    } else {
        readings::read_slice(store, &task.buckets, spec.from_ms, spec.to_ms, &|d, t| {
            raw.contains(&(d, t))
        })?
    };
    let windows = if windowed.is_empty() {
        HashMap::new()
    } else {
        read_windows(store, &task.buckets, spec.from_ms, spec.to_ms, &|d, t| {
            windowed.contains(&(d, t))
        })?
    };
    let mut result = TaskResult {
        read_seconds: started.elapsed().as_secs_f64(),
        ..TaskResult::default()
    };
    let rows = slice.values().map(Vec::len).sum::<usize>()
        + windows.values().map(features::Windows::len).sum::<usize>();
    line(format!(
        "read {rows} rows of {} sensors ({} as windows) in {:.3}s",
        slice.len() + windows.len(),
        windows.len(),
        result.read_seconds
    ));
    let score_started = Instant::now();
    let rows_of = |m: &ModelRef| -> Option<Rows<'_>> {
        let key = (m.device.clone(), m.tag.clone());
        match source(m).ok()? {
            FeatureSource::Readings => slice.get(&key).map(Rows::Readings),
            FeatureSource::Windows => windows.get(&key).map(Rows::Windows),
        }
    };
    // The files of the models that have data, fetched together.
    let keys: Vec<String> = task
        .models
        .iter()
        .filter(|m| source(m).is_err() || rows_of(m).is_some())
        .map(|m| layout::model_file(&m.device, &m.tag, &m.version))
        .collect();
    let mut files: HashMap<String, Result<Vec<u8>>> = match store.get_many(&keys) {
        Ok(all) => keys
            .into_iter()
            .zip(all.into_iter().map(|b| Ok(b.to_vec())))
            .collect(),
        // One missing file must not hide the others: fall back to one request each.
        Err(_) => keys
            .into_iter()
            .map(|k| {
                let r = store.get(&k).map(|b| b.to_vec()).map_err(Error::from);
                (k, r)
            })
            .collect(),
    };
    let mut cols = predictions::Builder::with_capacity(rows);
    let mut decision = Vec::new();
    let mut predicted = Vec::new();
    let mut x = Vec::new();
    for m in &task.models {
        let data = match source(m) {
            Ok(_) => match rows_of(m) {
                Some(rows) => Ok(rows),
                None => {
                    result.models_without_data += 1;
                    continue;
                }
            },
            Err(e) => Err(e),
        };
        let file = files
            .remove(&layout::model_file(&m.device, &m.tag, &m.version))
            .unwrap_or_else(|| registry::model_bytes(store, &m.device, &m.tag, &m.version));
        let scored = data.and_then(|data| {
            let model = Model::from_bytes(&file?)?;
            if model.n_features() != m.features.len() {
                return Err(Error::Invalid(format!(
                    "the model expects {} features; its configuration feeds it {} ({})",
                    model.n_features(),
                    m.features.len(),
                    m.features.join(",")
                )));
            }
            data.matrix(&m.features, &mut x)?;
            decision.resize(data.len(), 0.0);
            predicted.resize(data.len(), 0i8);
            model.score(&x, &mut decision, &mut predicted)?;
            Ok(data)
        });
        let data = match scored {
            Ok(data) => data,
            Err(e) => {
                // A store failure is the task's problem (retry); anything else is this model's.
                if matches!(e, Error::Store(_)) && e.retry() == RetryHint::Retry {
                    return Err(e);
                }
                line(format!(
                    "model {}/{} {}: FAILED: {e}",
                    m.device, m.tag, m.version
                ));
                result.failures.push(ModelFailure {
                    device: m.device.clone(),
                    tag: m.tag.clone(),
                    version: m.version.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let n = data.len();
        let anomalies = predicted.iter().filter(|&&p| p == -1).count();
        line(format!(
            "model {}/{} {}: {n} rows, {anomalies} anomalies",
            m.device, m.tag, m.version,
        ));
        result.models_scored += 1;
        result.rows += n as u64;
        result.anomalies += anomalies as u64;
        cols.add_model(&m.device, &m.tag, &m.version, n);
        match data {
            Rows::Readings(series) => {
                cols.ts.extend(series.iter().map(|r| r.0));
                cols.value.extend(series.iter().map(|r| r.1));
            }
            Rows::Windows(w) => {
                // A window's row: its start, and the model's first feature.
                cols.ts.extend_from_slice(&w.start);
                cols.value
                    .extend_from_slice(w.column(&m.features[0]).unwrap_or_default());
            }
        }
        cols.score.extend_from_slice(&decision);
        cols.anomaly
            .extend(predicted.iter().map(|&p| i8::from(p == -1)));
    }
    result.score_seconds = score_started.elapsed().as_secs_f64();
    let write_started = Instant::now();
    let bytes = cols.finish(&spec.id, spec.from_ms, spec.to_ms)?;
    // The first complete write wins: an attempt that lost its claim (paused, partitioned) and
    // wakes up after a newer attempt wrote cannot replace that output. Attempts compute the
    // same predictions from the same plan, so whichever lands first is the task's.
    if !store.put_if_absent(&layout::predictions(&spec.id, task.shard), bytes)? {
        line("predictions were already written by an earlier attempt: kept".into());
    }
    result.write_seconds = write_started.elapsed().as_secs_f64();
    line(format!(
        "done: {} models scored, {} without data, {} failed; {} rows, {} anomalies; read {:.3}s, score {:.3}s, write {:.3}s",
        result.models_scored,
        result.models_without_data,
        result.failures.len(),
        result.rows,
        result.anomalies,
        result.read_seconds,
        result.score_seconds,
        result.write_seconds
    ));
    store.put(
        &layout::task_log(&spec.id, task.shard, attempt),
        log.into_bytes(),
    )?;
    Ok(result)
}

/// The rows a model scores: raw readings, or closed windows.
#[derive(Clone, Copy)]
enum Rows<'a> {
    Readings(&'a readings::Series),
    Windows(&'a features::Windows),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::Readings(s) => s.len(),
            Rows::Windows(w) => w.len(),
        }
    }

    /// The row-major matrix of the named features into `x`.
    fn matrix(&self, names: &[String], x: &mut Vec<f64>) -> Result<()> {
        x.clear();
        match self {
            // Raw readings have one column (checked by `FeatureSource::of`).
            Rows::Readings(s) => x.extend(s.iter().map(|r| r.1)),
            Rows::Windows(w) => {
                let columns = names
                    .iter()
                    .map(|n| {
                        w.column(n)
                            .ok_or_else(|| Error::Invalid(format!("windows have no `{n}` column")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                x.reserve(w.len() * columns.len());
                for i in 0..w.len() {
                    x.extend(columns.iter().map(|c| c[i]));
                }
            }
        }
        Ok(())
    }
}

/// Reads the closed windows of `buckets` that start in `[from, to)`, for the series `wanted`
/// accepts. Each file is read once.
fn read_windows(
    store: &Store,
    buckets: &[u32],
    from_ms: i64,
    to_ms: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
) -> Result<HashMap<(String, String), features::Windows>> {
    let mut keys = Vec::new();
    for hour in hours_between(from_ms, to_ms) {
        for &bucket in buckets {
            keys.extend(
                store
                    .list(&layout::features_dir(&hour, bucket))?
                    .into_iter()
                    .map(|e| e.key),
            );
        }
    }
    let files: Vec<(String, bytes::Bytes)> =
        keys.iter().cloned().zip(store.get_many(&keys)?).collect();
    features::read(&files, from_ms, to_ms, wanted).map_err(|e| Error::Corrupt {
        what: "features".into(),
        message: e.to_string(),
    })
}

/// Executes one claimed task with heartbeats, and completes or fails it.
fn execute_claim(
    store: &Store,
    coordinator: &dyn Coordinator,
    spec: &RunSpec,
    claim: &Claim,
    options: &RunOptions,
) -> Result<()> {
    let outcome = with_heartbeat(coordinator, claim, options.lease, || {
        if let Some(delay) = fault_task_delay() {
            std::thread::sleep(delay);
        }
        if fault_failing_shard() == Some(claim.task.shard) {
            return Err(Error::Store(fleetscore_store::Error::Store {
                key: layout::predictions(&spec.id, claim.task.shard),
                message: "injected fault (FLEETSCORE_FAULT_FAIL_SHARD)".into(),
            }));
        }
        execute_task(store, spec, &claim.task, &claim.worker, claim.attempt)
    });
    match outcome {
        Ok(result) => {
            // A lost claim means a newer attempt owns the task; its output replaces ours.
            coordinator.complete(claim, &result, now_ms())?;
        }
        Err(e) => {
            coordinator.fail(
                claim,
                &e.to_string(),
                e.retry(),
                options.max_attempts,
                now_ms(),
            )?;
        }
    }
    Ok(())
}

/// Fault injection for tests of real processes: `FLEETSCORE_FAULT_TASK_DELAY_MS` makes every
/// task wait that long (heartbeating) after its claim, so a test can kill a worker mid-task.
fn fault_task_delay() -> Option<Duration> {
    static DELAY: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("FLEETSCORE_FAULT_TASK_DELAY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_millis)
    })
}

/// Fault injection: `FLEETSCORE_FAULT_FAIL_SHARD=N` makes every attempt at shard N fail with a
/// store error (one a retry could help with), for tests of poison tasks.
fn fault_failing_shard() -> Option<u32> {
    static SHARD: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *SHARD.get_or_init(|| {
        std::env::var("FLEETSCORE_FAULT_FAIL_SHARD")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// How often an idle worker asks the coordinator for work again.
const POLL: Duration = Duration::from_millis(100);

/// A worker loop on one run: claims and executes its tasks until none is unfinished (a task
/// held by a worker elsewhere that dies is claimed again when its lease expires).
pub fn work(
    store: &Store,
    coordinator: &dyn Coordinator,
    spec: &RunSpec,
    worker: &str,
    options: &RunOptions,
) -> Result<()> {
    let lease_ms = options.lease.as_millis() as i64;
    loop {
        match coordinator.claim(Some(&spec.id), worker, lease_ms, now_ms())? {
            Some(claim) => execute_claim(store, coordinator, spec, &claim, options)?,
            None => {
                let unfinished = coordinator.run(&spec.id)?.is_some_and(|r| {
                    r.status == "running" && r.tasks.pending + r.tasks.running > 0
                });
                if !unfinished {
                    return Ok(());
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

/// What a [`serve`] loop did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    /// Tasks executed (completed or failed).
    pub tasks: u64,
    /// Runs this worker finished (wrote the record of).
    pub runs_finished: u64,
}

/// A worker for every run (`fleetscore worker`): claims tasks of any running run, oldest run
/// first, and writes a run's record when it completes the run's last task. Returns when
/// `stop` says so, or after `idle_exit` without work.
pub fn serve(
    store: &Store,
    coordinator: &dyn Coordinator,
    worker: &str,
    options: &RunOptions,
    idle_exit: Option<Duration>,
    stop: &dyn Fn() -> bool,
) -> Result<Served> {
    let lease_ms = options.lease.as_millis() as i64;
    let mut served = Served::default();
    let mut idle_since = Instant::now();
    while !stop() {
        let Some(claim) = coordinator.claim(None, worker, lease_ms, now_ms())? else {
            if idle_exit.is_some_and(|d| idle_since.elapsed() >= d) {
                break;
            }
            std::thread::sleep(POLL);
            continue;
        };
        // The run's window, read for every task: a run planned again under the same id may
        // have another.
        let spec = coordinator
            .run(&claim.run_id)?
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "run {} vanished from the coordinator",
                    claim.run_id
                ))
            })?
            .spec;
        execute_claim(store, coordinator, &spec, &claim, options)?;
        served.tasks += 1;
        if finalize(store, coordinator, &claim.run_id)?.is_some() {
            served.runs_finished += 1;
        }
        idle_since = Instant::now();
    }
    Ok(served)
}

fn with_heartbeat<T>(
    coordinator: &dyn Coordinator,
    claim: &Claim,
    lease: Duration,
    f: impl FnOnce() -> T,
) -> T {
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let every = lease / 3;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if !matches!(
                    coordinator.heartbeat(claim, lease.as_millis() as i64, now_ms()),
                    Ok(true)
                ) {
                    break;
                }
            }
        });
        let out = f();
        drop(stop);
        out
    })
}

/// The record of a finished run, written to `runs/{id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339).
    pub to: String,
    /// `succeeded` or `completed_with_failures`.
    pub status: String,
    /// When execution started and finished (RFC 3339).
    pub started_at: String,
    /// When it finished.
    pub finished_at: String,
    /// Seconds planning.
    pub plan_seconds: f64,
    /// Seconds from the first claim to the last completion.
    pub execute_seconds: f64,
    /// Models in the registry.
    pub models: u64,
    /// Models scored.
    pub models_scored: u64,
    /// Models with no readings in the window.
    pub models_without_data: u64,
    /// Models that failed.
    pub models_failed: u64,
    /// Rows scored.
    pub rows: u64,
    /// Rows predicted as anomalies.
    pub anomalies: u64,
    /// Rows per second of execution.
    pub rows_per_second: f64,
    /// Tasks.
    pub tasks: u32,
    /// Tasks failed for good (their models are not scored).
    pub tasks_failed: u32,
    /// Every model failure, with its reason.
    pub failures: Vec<ModelFailure>,
    /// Every failed task, with its last error.
    pub task_failures: Vec<TaskFailure>,
}

/// A task that failed for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    /// Shard.
    pub shard: u32,
    /// Attempts made.
    pub attempts: u32,
    /// Last error.
    pub error: String,
}

impl RunRecord {
    /// Whether anything failed.
    pub fn has_failures(&self) -> bool {
        self.models_failed > 0 || self.tasks_failed > 0
    }
}

use fleetscore_core::rfc3339;

/// Plans a run and hands its tasks to the coordinator: the outputs of an earlier run of the
/// same window are deleted, and the run's record is written with status `running` and the
/// plan's facts. Workers (threads of [`run`], or [`serve`] loops on
/// any machine) then execute the tasks, and the one that completes the last writes the final
/// record ([`finalize`]).
pub fn start(
    store: &Store,
    coordinator: &dyn Coordinator,
    from_ms: i64,
    to_ms: i64,
    run_id: Option<String>,
    options: &RunOptions,
) -> Result<(RunSpec, RunRecord)> {
    if to_ms <= from_ms {
        return Err(Error::Invalid(format!(
            "the window is empty: --to ({}) must be after --from ({})",
            rfc3339(to_ms),
            rfc3339(from_ms)
        )));
    }
    let started_ms = now_ms();
    let planning = Instant::now();
    let id = run_id.unwrap_or_else(|| run_id_for(from_ms, to_ms));
    let spec = RunSpec {
        id: id.clone(),
        from_ms,
        to_ms,
    };
    let plan = plan(
        store,
        from_ms,
        to_ms,
        options.workers.max(1) * 4,
        options.max_models_per_task,
    )?;
    // Running a window again replaces its outputs: a task writes its predictions once per run
    // (see `execute_task`), so the earlier run's go first.
    for dir in [layout::predictions_dir(&id), layout::logs_dir(&id)] {
        for entry in store.list(&dir)? {
            store.delete(&entry.key)?;
        }
    }
    let record = RunRecord {
        run_id: id.clone(),
        from: rfc3339(from_ms),
        to: rfc3339(to_ms),
        status: "running".into(),
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
    };
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
    if state.status != "running" || state.tasks.pending + state.tasks.running > 0 {
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
    for t in &tasks {
        match &t.result {
            Some(r) if t.status == "done" => {
                record.models_scored += r.models_scored;
                record.models_without_data += r.models_without_data;
                record.rows += r.rows;
                record.anomalies += r.anomalies;
                record.failures.extend(r.failures.iter().cloned());
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
        "completed_with_failures"
    } else {
        "succeeded"
    }
    .into();
    record.finished_at = rfc3339(finished);
    store.put(
        &layout::run_record(run_id),
        serde_json::to_vec_pretty(&record).expect("serializable"),
    )?;
    coordinator.finish_run(run_id, &record.status, finished)?;
    Ok(Some(record))
}

/// Plans a run and executes it on this machine's `options.workers` threads (with 0, on
/// workers elsewhere only), returning its final record; `progress` is called with the run's
/// task states a few times a second.
pub fn run(
    store: &Store,
    coordinator: &dyn Coordinator,
    from_ms: i64,
    to_ms: i64,
    run_id: Option<String>,
    options: &RunOptions,
    progress: &mut dyn FnMut(&[TaskState]),
) -> Result<RunRecord> {
    let (spec, _) = start(store, coordinator, from_ms, to_ms, run_id, options)?;
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
                let unfinished = coordinator.run(&id).ok().flatten().is_some_and(|r| {
                    r.status == "running" && r.tasks.pending + r.tasks.running > 0
                });
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
    let now = now_ms();
    if !coordinator.cancel_run(run_id, now)? {
        return Ok(false);
    }
    if let Some(mut record) = record(store, run_id)? {
        record.status = "cancelled".into();
        record.finished_at = rfc3339(now);
        store.put(
            &layout::run_record(run_id),
            serde_json::to_vec_pretty(&record).expect("serializable"),
        )?;
    }
    Ok(true)
}

fn missing_record(run_id: &str) -> Error {
    Error::Corrupt {
        what: layout::run_record(run_id),
        message: "the run's record is missing".into(),
    }
}

/// Reads a run record from the store.
pub fn record(store: &Store, run_id: &str) -> Result<Option<RunRecord>> {
    let key = layout::run_record(run_id);
    store
        .get_opt(&key)?
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| Error::Corrupt {
                what: key.clone(),
                message: e.to_string(),
            })
        })
        .transpose()
}

/// Reads every prediction of a run.
pub fn predictions(store: &Store, run_id: &str) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for entry in store.list(&layout::predictions_dir(run_id))? {
        out.extend(fleetscore_table::from_parquet_bytes(
            &entry.key,
            store.get(&entry.key)?,
        )?);
    }
    Ok(out)
}
