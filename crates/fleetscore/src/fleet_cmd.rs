//! The fleet commands: `models import|list|show`, `data import`, `run`, `runs list|show`,
//! `predictions export`. They share a store (`--store`) and a coordinator database (`--db`).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use fleetscore_jobs::TaskStatus;
use fleetscore_jobs::coordinator::{self, Coordinator};
use fleetscore_jobs::readings::{self, Columns};
use fleetscore_jobs::registry::{self, Imported};
use fleetscore_jobs::run::{self, RunOptions, RunRequest};
use fleetscore_jobs::{coordinator::TaskState, export};
use fleetscore_store::Store;

/// Where fleet data lives.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The store: a local folder, or a URL (`az://container/prefix`, `s3://bucket/prefix`,
    /// `file:///dir`).
    #[arg(
        long,
        env = "FLEETSCORE_STORE",
        default_value = "fleetscore-data",
        global = true
    )]
    pub store: String,
    /// The coordinator database: a SQLite file, or a PostgreSQL URL (`postgres://user@host/db`)
    /// for workers on many machines. Default: `coordinator.sqlite` in a local store's folder,
    /// else `./fleetscore.sqlite`.
    #[arg(long, env = "FLEETSCORE_DB", global = true)]
    pub db: Option<String>,
    /// Most memory loading one model file may take, everything it makes the loader allocate
    /// counted (`1GiB`, `512MiB`, or bytes); a file that needs more is refused by name.
    #[arg(
        long,
        env = "FLEETSCORE_MAX_MODEL_MEMORY",
        default_value = "1GiB",
        value_parser = fleetscore_core::parse_size,
        global = true
    )]
    pub max_model_memory: usize,
}

impl StoreArgs {
    pub(crate) fn open(&self) -> Result<Store> {
        Store::open(&self.store).with_context(|| format!("cannot open store {}", self.store))
    }

    /// How model files are loaded: within `--max-model-memory`.
    pub(crate) fn model_limits(&self) -> fleetscore_models::Limits {
        fleetscore_models::Limits {
            max_memory_bytes: self.max_model_memory,
            ..fleetscore_models::Limits::default()
        }
    }

    pub(crate) fn coordinator(&self) -> Result<Box<dyn Coordinator>> {
        let location = coordinator::Location::of(self.db.as_deref(), &self.store);
        location
            .open()
            .with_context(|| format!("cannot use {location}"))
    }
}

/// `fleetscore models import|list|show`: the model registry.
#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Validate model files with the safe loader and store them under (device, tag) with a
    /// content-hash version.
    Import {
        /// A model file, or a folder of them.
        path: PathBuf,
        /// File-name pattern that gives device and tag, e.g. `model_{device}_{tag}`.
        #[arg(long, default_value = "model_{device}_{tag}")]
        pattern: String,
        /// Device (for a single file, instead of --pattern).
        #[arg(long, requires = "tag")]
        device: Option<String>,
        /// Tag (for a single file, instead of --pattern).
        #[arg(long, requires = "device")]
        tag: Option<String>,
        /// What feeds the model(s) in a run, in feature order: `value` (the raw reading; the
        /// default, for one-feature models), or statistics of closed windows from
        /// `fleetscore aggregate` (count, mean, min, max, std, first, last).
        #[arg(long, value_delimiter = ',')]
        features: Vec<String>,
    },
    /// List the current model of every (device, tag).
    List {
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show one model's versions: `models show DEVICE/TAG`.
    Show {
        /// `DEVICE/TAG`.
        key: String,
    },
    /// Write a model's file, byte for byte as stored (a pickle scikit-learn loads), to open it
    /// in Python: `models export DEVICE/TAG --output model.pkl`.
    Export {
        /// `DEVICE/TAG`.
        key: String,
        /// The version (default: the current one).
        #[arg(long)]
        version: Option<String>,
        /// The file to write.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// `fleetscore data import`.
#[derive(Debug, Args)]
pub struct DataImportArgs {
    /// CSV or Parquet readings in the long shape: time, device, tag, value.
    pub file: PathBuf,
    /// Time column (RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` as UTC, or epoch milliseconds).
    #[arg(long, default_value = "TS")]
    pub time_column: String,
    /// Device column.
    #[arg(long, default_value = "Device")]
    pub device_column: String,
    /// Tag column.
    #[arg(long, default_value = "Tag")]
    pub tag_column: String,
    /// Value column.
    #[arg(long, default_value = "Value")]
    pub value_column: String,
}

/// `fleetscore run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Window start (inclusive): RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or epoch ms.
    #[arg(long, required_unless_present = "last", conflicts_with = "last")]
    pub from: Option<String>,
    /// Window end (exclusive).
    #[arg(long, required_unless_present = "last", conflicts_with = "last")]
    pub to: Option<String>,
    /// Instead of --from and --to: the last whole window of this length before now, on
    /// multiples of it since the epoch in UTC (`1h`: the previous hour; `1d`: yesterday).
    /// For schedulers with no shell to compute times in, like a CronJob on the image.
    #[arg(long, value_parser = fleetscore_core::parse_duration)]
    pub last: Option<Duration>,
    /// Worker threads in this process (default: all cores); 0 leaves the tasks to
    /// `fleetscore worker` processes sharing the coordinator and the store.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Plan the run into the coordinator and return at once, printing its id; workers
    /// elsewhere (`fleetscore worker`) execute it.
    #[arg(long)]
    pub detach: bool,
    /// Seconds a task's claim lasts without a heartbeat before another worker may take it.
    #[arg(long, default_value_t = 60)]
    pub lease: u64,
    /// The longest window a run may score (`3653d`, ten years, by default): a guard against a
    /// mistyped --from or --to.
    #[arg(long, default_value = "3653d", value_parser = fleetscore_core::parse_duration)]
    pub max_window: Duration,
    /// Most models per shard task.
    #[arg(long, default_value_t = 1_000)]
    pub max_models_per_task: usize,
    /// Attempts before a task is failed for good.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Run id (default: derived from the window, so re-running a window replaces its output).
    #[arg(long)]
    pub run_id: Option<String>,
}

/// `fleetscore worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Worker threads (default: all cores).
    #[arg(long, env = "FLEETSCORE_WORKER_THREADS")]
    pub threads: Option<usize>,
    /// Exit after this many seconds without a task (default: serve until killed).
    #[arg(long, env = "FLEETSCORE_WORKER_IDLE_EXIT")]
    pub idle_exit: Option<u64>,
    /// Seconds a claim lasts without a heartbeat (heartbeats come every third of it).
    #[arg(long, env = "FLEETSCORE_LEASE", default_value_t = 60)]
    pub lease: u64,
    /// Attempts before a task is failed for good.
    #[arg(long, env = "FLEETSCORE_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: u32,
    /// This worker's name in the coordinator (default: host name and process id).
    #[arg(long, env = "FLEETSCORE_WORKER_NAME")]
    pub name: Option<String>,
    /// Seconds the tasks being executed may take to finish after SIGTERM or SIGINT (no new
    /// task is claimed); then the worker exits anyway, and those tasks are retried by other
    /// workers once their leases expire. Keep it below the grace period of whatever stops
    /// the worker (Kubernetes' terminationGracePeriodSeconds, `podman stop --time`).
    #[arg(long, env = "FLEETSCORE_WORKER_DRAIN", default_value_t = 5)]
    pub drain: u64,
    #[command(flatten)]
    pub cache: ModelCacheArgs,
}

/// The model cache of a long-lived process (`worker`, `up`).
#[derive(Debug, Args)]
pub struct ModelCacheArgs {
    /// Loaded models kept across tasks and runs, by their content-hash version, least recently
    /// used out first: at most this much memory (`512MiB`, `2GiB`, bytes; `0`: none, every
    /// task fetches and parses its models)
    #[arg(long, env = "FLEETSCORE_MODEL_CACHE", default_value = "512MiB", value_parser = fleetscore_core::parse_size)]
    pub model_cache: usize,
}

impl ModelCacheArgs {
    /// The cache, unless its size is 0.
    pub fn cache(&self) -> Option<std::sync::Arc<fleetscore_jobs::run::ModelCache>> {
        (self.model_cache > 0)
            .then(|| std::sync::Arc::new(fleetscore_jobs::run::ModelCache::new(self.model_cache)))
    }
}

/// `fleetscore workers`.
#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Workers seen in the last this many seconds (and any holding a task now).
    #[arg(long, default_value_t = 3_600)]
    pub since: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `fleetscore runs ...`.
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List,
    /// Cancel a running run: no more of its tasks are started; tasks being executed finish.
    Cancel {
        /// Run id.
        id: String,
    },
    /// Show a run's record and its tasks.
    Show {
        /// Run id.
        id: String,
        /// Print the run record as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One CSV per model in the reference's shape (TS,Device,Tag,Val,Prediction).
    Csv,
    /// One Parquet file with every prediction column.
    Parquet,
}

/// `fleetscore predictions export`.
#[derive(Debug, Subcommand)]
pub enum PredictionsCommand {
    /// Write a run's predictions to a folder.
    Export {
        /// Run id.
        #[arg(long)]
        run: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Output folder.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// The last whole window `length` long that ends at or before `now_ms`, on multiples of
/// `length` since the epoch: `[from, to)` in epoch milliseconds.
pub(crate) fn last_window(length: Duration, now_ms: i64) -> Result<(i64, i64)> {
    let len = i64::try_from(length.as_millis()).unwrap_or(i64::MAX);
    if len == 0 {
        bail!("--last must be longer than 0s");
    }
    let to = now_ms.div_euclid(len) * len;
    Ok((to - len, to))
}

pub(crate) fn parse_time(s: &str, what: &str) -> Result<i64> {
    readings::parse_time(s).map_err(|e| anyhow::anyhow!("--{what} {e}"))
}

pub fn registry(args: &StoreArgs, command: RegistryCommand) -> Result<ExitCode> {
    let store = args.open()?;
    match command {
        RegistryCommand::Import {
            path,
            pattern,
            device,
            tag,
            features,
        } => {
            let features = (!features.is_empty()).then_some(features.as_slice());
            let files = if let (Some(device), Some(tag)) = (device, tag) {
                if path.is_dir() {
                    bail!(
                        "--device/--tag name one file; {} is a folder",
                        path.display()
                    );
                }
                vec![registry::ModelFile {
                    path: path.clone(),
                    device,
                    tag,
                }]
            } else {
                let (files, skipped) = registry::model_files(&path, &pattern)?;
                for (p, why) in skipped {
                    eprintln!("skipped {}: {why}", p.display());
                }
                files
            };
            if files.is_empty() {
                bail!("no model files matching {pattern:?} in {}", path.display());
            }
            let (mut new, mut same, mut failed) = (0, 0, 0);
            let mut importer = registry::Importer::with_limits(&store, args.model_limits());
            registry::import_files(
                &mut importer,
                &files,
                features,
                &mut |f, result| match result {
                    Ok((meta, outcome)) => {
                        let what = match outcome {
                            Imported::New => "imported",
                            Imported::Restored => "restored",
                            Imported::Unchanged => "unchanged",
                        };
                        match outcome {
                            Imported::Unchanged => same += 1,
                            Imported::New | Imported::Restored => new += 1,
                        }
                        println!(
                            "{what:9} {}/{} {} {} ({} features)",
                            f.device, f.tag, meta.version, meta.estimator, meta.n_features
                        );
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: {e}");
                    }
                },
            )?;
            eprintln!("{new} imported, {same} unchanged, {failed} refused");
            Ok(if failed > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        RegistryCommand::List { json } => {
            let mut out = std::io::stdout().lock();
            for m in registry::list(&store)? {
                if json {
                    writeln!(out, "{}", serde_json::to_string(&m)?)?;
                } else {
                    writeln!(
                        out,
                        "{}/{}\t{}\t{}\t{} features\tscikit-learn {}",
                        m.device,
                        m.tag,
                        m.version,
                        m.estimator,
                        m.n_features,
                        m.sklearn_version.as_deref().unwrap_or("?")
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        RegistryCommand::Show { key } => {
            let Some((device, tag)) = key.split_once('/') else {
                bail!("expected DEVICE/TAG, got {key:?}");
            };
            let current = registry::current(&store, device, tag)?
                .with_context(|| format!("no model for device {device:?} tag {tag:?}"))?;
            let versions = registry::versions(&store, device, tag)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", serde_json::to_string_pretty(&current)?)?;
            writeln!(out, "versions (oldest first):")?;
            for v in versions {
                let mark = if v.version == current.version {
                    "*"
                } else {
                    " "
                };
                writeln!(
                    out,
                    "{mark} {} imported {} from {}",
                    v.version, v.imported_at, v.source
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        RegistryCommand::Export {
            key,
            version,
            output,
        } => {
            let Some((device, tag)) = key.split_once('/') else {
                bail!("expected DEVICE/TAG, got {key:?}");
            };
            let version = match version {
                Some(v) => v,
                None => {
                    registry::current(&store, device, tag)?
                        .with_context(|| format!("no model for device {device:?} tag {tag:?}"))?
                        .version
                }
            };
            let bytes = registry::model_bytes(&store, device, tag, &version)
                .with_context(|| format!("model {device}/{tag} version {version}"))?;
            std::fs::write(&output, &bytes)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "{device}/{tag} {version}: {} bytes written to {}",
                bytes.len(),
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn data_import(args: &StoreArgs, a: DataImportArgs) -> Result<ExitCode> {
    let store = args.open()?;
    let columns = Columns {
        time: a.time_column,
        device: a.device_column,
        tag: a.tag_column,
        value: a.value_column,
    };
    let s = readings::import(&store, &a.file, &columns)
        .with_context(|| format!("cannot import {}", a.file.display()))?;
    let span = s
        .span
        .map(|(lo, hi)| {
            format!(
                " from {} to {}",
                readings::format_time(lo),
                readings::format_time(hi)
            )
        })
        .unwrap_or_default();
    eprintln!(
        "imported {} readings of {} sensors{span} into {} hour(s): {} file(s) written, {} already present",
        s.rows,
        s.sensors,
        s.hours.len(),
        s.files_written,
        s.files_present
    );
    Ok(ExitCode::SUCCESS)
}

/// Fault injection for the tests of real processes (`FLEETSCORE_FAULT_TASK_DELAY_MS`: every
/// task waits that long after its claim; `FLEETSCORE_FAULT_FAIL_SHARD=N`: every attempt at
/// shard N fails with a retryable store error). Unset in production.
pub(crate) fn faults_from_env() -> run::Faults {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    run::Faults {
        task_delay: var("FLEETSCORE_FAULT_TASK_DELAY_MS").map(Duration::from_millis),
        fail_shard: var("FLEETSCORE_FAULT_FAIL_SHARD").and_then(|n| u32::try_from(n).ok()),
    }
}

/// A one-line progress display on a terminal.
fn progress_printer() -> impl FnMut(&[TaskState]) {
    let tty = std::io::stderr().is_terminal();
    move |tasks: &[TaskState]| {
        if !tty {
            return;
        }
        let done = tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Done | TaskStatus::Failed))
            .count();
        let rows: u64 = tasks
            .iter()
            .filter_map(|t| t.result.as_ref())
            .map(|r| r.rows)
            .sum();
        let width = 30;
        let filled = if tasks.is_empty() {
            0
        } else {
            done * width / tasks.len()
        };
        eprint!(
            "\r\x1b[2K[{}{}] {done}/{} tasks, {rows} rows",
            "#".repeat(filled),
            ".".repeat(width - filled),
            tasks.len()
        );
        if done == tasks.len() {
            eprint!("\r\x1b[2K");
        }
    }
}

pub fn run(args: &StoreArgs, a: RunArgs) -> Result<ExitCode> {
    let store = args.open()?;
    let coordinator = args.coordinator()?;
    let (from, to) = match (&a.from, &a.to, a.last) {
        (Some(from), Some(to), None) => (parse_time(from, "from")?, parse_time(to, "to")?),
        (None, None, Some(last)) => last_window(last, run::now_ms())?,
        // clap enforces one of the two forms.
        _ => bail!("give --from and --to, or --last"),
    };
    let mut options = RunOptions {
        max_models_per_task: a.max_models_per_task.max(1),
        max_attempts: a.max_attempts.max(1),
        lease: Duration::from_secs(a.lease.max(1)),
        faults: faults_from_env(),
        max_window: a.max_window,
        model_limits: args.model_limits(),
        ..RunOptions::default()
    };
    if let Some(w) = a.workers {
        options.workers = w;
    }
    let request = RunRequest {
        run_id: a.run_id,
        ..RunRequest::window(from, to).with_options(options)
    };
    let Some(record) = plan_or_run(&store, coordinator.as_ref(), &request, a.detach, "run")? else {
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "run {}: {} — {} models scored, {} without data, {} failed; {} rows, {} anomalies; {} tasks ({} failed) in {:.2}s ({:.0} rows/s)",
        record.run_id,
        record.status,
        record.models_scored,
        record.models_without_data,
        record.models_failed,
        record.rows,
        record.anomalies,
        record.tasks,
        record.tasks_failed,
        record.execute_seconds,
        record.rows_per_second
    );
    Ok(report_failures(&record))
}

/// Plans `request` and, with `detach`, leaves it to the workers sharing the coordinator and
/// store, saying so (`None`); otherwise executes it here with a progress line and returns its
/// final record. `what` names the run in the message (`run`, `training run`).
pub(crate) fn plan_or_run(
    store: &fleetscore_store::Store,
    coordinator: &dyn fleetscore_jobs::coordinator::Coordinator,
    request: &RunRequest,
    detach: bool,
    what: &str,
) -> Result<Option<run::RunRecord>> {
    if detach {
        let (spec, record) = run::start(store, coordinator, request)?;
        println!(
            "{what} {}: planned {} models in {} tasks; workers sharing this coordinator and store execute it (`fleetscore runs show {}`)",
            spec.id, record.models, record.tasks, spec.id
        );
        return Ok(None);
    }
    Ok(Some(run::run(
        store,
        coordinator,
        request,
        &mut progress_printer(),
    )?))
}

/// Prints what failed in a finished run (scoring or training) and gives its exit status: 2 when
/// the run completed but something in it failed (see the record), else 0.
pub(crate) fn report_failures(record: &run::RunRecord) -> ExitCode {
    for f in &record.failures {
        eprintln!(
            "failed: model {}/{} {}: {}",
            f.device, f.tag, f.version, f.reason
        );
    }
    for f in &record.task_failures {
        eprintln!(
            "failed: task {} after {} attempts: {}",
            f.shard, f.attempts, f.error
        );
    }
    if record.has_failures() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// `fleetscore workers`: the workers the coordinator has seen.
pub fn workers(args: &StoreArgs, a: WorkersArgs) -> Result<ExitCode> {
    let coordinator = args.coordinator()?;
    let now = run::now_ms();
    let since = now - i64::try_from(a.since.saturating_mul(1000)).unwrap_or(i64::MAX);
    let mut out = std::io::stdout().lock();
    let workers = coordinator.workers(since)?;
    if a.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&workers)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "worker                          last seen   done  failed  running"
    )?;
    for w in workers {
        let running: Vec<String> = w
            .running
            .iter()
            .map(|(run, shard)| format!("{run}/{shard}"))
            .collect();
        writeln!(
            out,
            "{:<31} {:<11} {:<5} {:<7} {}",
            w.worker,
            format!("{:.1}s ago", (now - w.last_seen_ms) as f64 / 1000.0),
            w.done,
            w.failed,
            if running.is_empty() {
                "-".to_string()
            } else {
                running.join(" ")
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `fleetscore worker`: serves every run in the coordinator, on all cores.
pub fn worker(args: &StoreArgs, a: WorkerArgs) -> Result<ExitCode> {
    let store = args.open()?;
    let coordinator = args.coordinator()?;
    let mut options = RunOptions {
        lease: Duration::from_secs(a.lease.max(1)),
        max_attempts: a.max_attempts.max(1),
        faults: faults_from_env(),
        model_limits: args.model_limits(),
        model_cache: a.cache.cache(),
        ..RunOptions::default()
    };
    if let Some(name) = a.name {
        options.worker_prefix = name;
    }
    let threads = a.threads.unwrap_or(options.workers).max(1);
    let idle_exit = a.idle_exit.map(Duration::from_secs);
    eprintln!(
        "worker {}: {threads} threads serving every run (store {}, idle exit {})",
        options.worker_prefix,
        args.store,
        a.idle_exit
            .map_or_else(|| "never".to_string(), |s| format!("after {s}s"))
    );
    // Set by SIGTERM (`podman stop`, Kubernetes) or SIGINT: no task is claimed after it.
    // Installing the handlers matters for more than the drain: as a container's PID 1 the
    // process gets no default action for SIGTERM, so without them it would ignore the signal
    // until the runtime's SIGKILL.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let drain = Duration::from_secs(a.drain);
    // Dropped when every serve loop has returned, which ends the drain watch below.
    let (all_returned, returned) = std::sync::mpsc::channel::<()>();
    let results: Vec<fleetscore_jobs::Result<run::Served>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|n| {
                let (store, coordinator, options) = (&store, coordinator.as_ref(), &options);
                let name = format!("{}-{n}", options.worker_prefix);
                let stop: &AtomicBool = &stop;
                s.spawn(move || {
                    run::serve(store, coordinator, &name, options, idle_exit, &|| {
                        stop.load(Ordering::Relaxed)
                    })
                })
            })
            .collect();
        let (stop, prefix): (&AtomicBool, _) = (&stop, &options.worker_prefix);
        s.spawn(move || watch_drain(stop, &returned, drain, prefix));
        let results = handles
            .into_iter()
            .map(|h| h.join().expect("worker thread panicked"))
            .collect();
        drop(all_returned);
        results
    });
    let mut total = run::Served::default();
    for r in results {
        let served = r?;
        total.tasks += served.tasks;
        total.runs_finished += served.runs_finished;
    }
    eprintln!(
        "worker {}: {}, exiting after {} tasks ({} runs finished here)",
        options.worker_prefix,
        if stop.load(Ordering::Relaxed) {
            "stopped by a signal"
        } else {
            "idle"
        },
        total.tasks,
        total.runs_finished
    );
    Ok(ExitCode::SUCCESS)
}

/// After `stop` is set, gives the serve loops `drain` to return (their tasks in progress to
/// finish); if they have not by then, exits the process with status 0: a stop asked for is a
/// success, and the unfinished tasks go to other workers when their leases expire. Returns
/// when `returned`'s sender is dropped (every loop has returned).
fn watch_drain(
    stop: &AtomicBool,
    returned: &std::sync::mpsc::Receiver<()>,
    drain: Duration,
    worker: &str,
) {
    use std::sync::mpsc::RecvTimeoutError;
    // The flag is set from a signal handler, which cannot wake this thread: look at it often
    // enough that a stop is noticed well within any grace period.
    const LOOK: Duration = Duration::from_millis(50);
    let mut deadline: Option<std::time::Instant> = None;
    loop {
        let wait = match deadline {
            Some(d) => d.saturating_duration_since(std::time::Instant::now()),
            None => LOOK,
        };
        match returned.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            // Every loop returned: the normal exit path reports.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        match deadline {
            None if stop.load(Ordering::Relaxed) => {
                eprintln!(
                    "worker {worker}: stopping: no new tasks; {}s for those in progress",
                    drain.as_secs()
                );
                deadline = Some(std::time::Instant::now() + drain);
            }
            Some(d) if std::time::Instant::now() >= d => {
                eprintln!(
                    "worker {worker}: stopped by a signal with tasks still in progress after \
                     {}s; other workers retry them when their leases expire",
                    drain.as_secs()
                );
                std::process::exit(0);
            }
            _ => {}
        }
    }
}

pub fn runs(args: &StoreArgs, command: RunsCommand) -> Result<ExitCode> {
    let store = args.open()?;
    let coordinator = args.coordinator()?;
    let mut out = std::io::stdout().lock();
    match command {
        RunsCommand::List => {
            for r in coordinator.runs()? {
                writeln!(
                    out,
                    "{}\t{}\t{}/{} tasks done{}{}",
                    r.spec.id,
                    r.status,
                    r.tasks.done,
                    r.tasks.total,
                    if r.tasks.failed > 0 {
                        format!(", {} failed", r.tasks.failed)
                    } else {
                        String::new()
                    },
                    if r.tasks.cancelled > 0 {
                        format!(", {} cancelled", r.tasks.cancelled)
                    } else {
                        String::new()
                    }
                )?;
            }
        }
        RunsCommand::Cancel { id } => {
            if coordinator.run(&id)?.is_none() {
                bail!("no run {id:?}");
            }
            if run::cancel(&store, coordinator.as_ref(), &id)? {
                writeln!(
                    out,
                    "run {id}: cancelled; tasks being executed finish, no other starts"
                )?;
            } else {
                bail!("run {id:?} is not running");
            }
        }
        RunsCommand::Show { id, json } => {
            let record = run::record(&store, &id)?;
            let state = coordinator.run(&id)?;
            if record.is_none() && state.is_none() {
                bail!("no run {id:?}");
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(r) = &record {
                writeln!(out, "run {} [{}]", r.run_id, r.status)?;
                writeln!(out, "window      {} .. {}", r.from, r.to)?;
                writeln!(
                    out,
                    "ran         {} .. {} (plan {:.2}s, execute {:.2}s)",
                    r.started_at, r.finished_at, r.plan_seconds, r.execute_seconds
                )?;
                writeln!(
                    out,
                    "models      {} scored, {} without data, {} failed (of {})",
                    r.models_scored, r.models_without_data, r.models_failed, r.models
                )?;
                writeln!(
                    out,
                    "rows        {} ({} anomalies, {:.0} rows/s)",
                    r.rows, r.anomalies, r.rows_per_second
                )?;
                writeln!(
                    out,
                    "store       {} requests ({}), {:.2} per model; planning {}",
                    r.store_requests.total(),
                    r.store_requests,
                    r.store_requests.total() as f64 / r.models.max(1) as f64,
                    r.plan_store_requests.total()
                )?;
                for f in &r.failures {
                    writeln!(
                        out,
                        "failed      model {}/{} {}: {}",
                        f.device, f.tag, f.version, f.reason
                    )?;
                }
            } else if let Some(s) = &state {
                writeln!(out, "run {} [{}] (no record yet)", s.spec.id, s.status)?;
            }
            writeln!(out, "tasks:")?;
            writeln!(
                out,
                "  shard  status    attempts  worker                models  rows      seconds  heartbeat"
            )?;
            let now = run::now_ms();
            for t in coordinator.tasks(&id)? {
                let rows = t.result.as_ref().map_or(0, |r| r.rows);
                let secs = match (t.started_ms, t.finished_ms) {
                    (Some(a), Some(b)) => format!("{:.3}", (b - a) as f64 / 1000.0),
                    _ => "-".into(),
                };
                // How long ago a task being executed last showed life.
                let heartbeat = match (t.status, t.heartbeat_ms) {
                    (TaskStatus::Running, Some(h)) => {
                        format!("{:.1}s ago", (now - h) as f64 / 1000.0)
                    }
                    _ => "-".into(),
                };
                writeln!(
                    out,
                    "  {:<6} {:<9} {:<9} {:<21} {:<7} {:<9} {secs:<8} {heartbeat}{}",
                    t.shard,
                    t.status,
                    t.attempts,
                    t.worker.as_deref().unwrap_or("-"),
                    t.models,
                    rows,
                    t.error.map(|e| format!("  error: {e}")).unwrap_or_default()
                )?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn predictions(args: &StoreArgs, command: PredictionsCommand) -> Result<ExitCode> {
    let store = args.open()?;
    match command {
        PredictionsCommand::Export {
            run,
            format,
            output,
        } => {
            let format = match format {
                ExportFormat::Csv => export::Format::Csv,
                ExportFormat::Parquet => export::Format::Parquet,
            };
            let files = export::export(&store, &run, format, &output)?;
            eprintln!("wrote {} file(s) to {}", files.len(), output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn last_gives_the_previous_whole_window_on_multiples_of_its_length() {
        let h = Duration::from_secs(3600);
        // 2026-01-01T10:20:00Z: the previous hour is 09:00..10:00.
        let ten = 1_767_261_600_000;
        assert_eq!(
            last_window(h, ten + 20 * 60_000).unwrap(),
            (ten - HOUR, ten)
        );
        // Exactly on the hour: the hour that just ended.
        assert_eq!(last_window(h, 10 * HOUR).unwrap(), (9 * HOUR, 10 * HOUR));
        // A day: yesterday, UTC.
        let d = Duration::from_secs(86_400);
        assert_eq!(last_window(d, 86_400_000 + 5).unwrap(), (0, 86_400_000));
        assert!(last_window(Duration::ZERO, 5).is_err());
    }
}
