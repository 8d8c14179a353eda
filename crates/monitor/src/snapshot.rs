//! The summaries every page, API call and scrape reads: an immutable [`Snapshot`] of runs,
//! models and their health, workers, queue, schedules and the ingest pipeline, rebuilt by the
//! refresher (`refresh.rs`) and swapped in whole. A request clones one `Arc` and never touches
//! the store or the coordinator for what a snapshot holds, so its cost does not grow with the
//! store's history.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use fleetscore_jobs::coordinator::{FailureKind, TaskCounts, TaskState, WorkerState};
use fleetscore_jobs::run::RunRecord;
use fleetscore_jobs::{RunStatus, TaskStatus};

use crate::health::{FLAG_KINDS, Health, HealthOptions, Outcome};
use crate::pipeline::PipelineView;
use crate::schedule::ScheduleView;

/// A run as the monitor keeps it: its record's numbers (not its failure list, which can be
/// long; the Run page reads the record), with the coordinator's live task counts while it runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    /// Run id.
    pub id: String,
    /// Window start, epoch ms.
    pub from_ms: i64,
    /// Window end, epoch ms (exclusive).
    pub to_ms: i64,
    /// Its state.
    pub status: RunStatus,
    /// When it started, epoch ms.
    pub started_ms: Option<i64>,
    /// When it finished, epoch ms.
    pub finished_ms: Option<i64>,
    /// Seconds planning.
    pub plan_seconds: f64,
    /// Seconds from the first claim to the last completion.
    pub execute_seconds: f64,
    /// Models in the registry when it was planned.
    pub models: u64,
    /// Models scored.
    pub models_scored: u64,
    /// Models without readings in the window.
    pub models_without_data: u64,
    /// Models that failed.
    pub models_failed: u64,
    /// Rows scored.
    pub rows: u64,
    /// Rows flagged as anomalies.
    pub anomalies: u64,
    /// Rows per second of execution.
    pub rows_per_second: f64,
    /// Tasks.
    pub tasks: u32,
    /// Tasks failed for good.
    pub tasks_failed: u32,
    /// Model failures by kind.
    pub failures_by_kind: Vec<(FailureKind, u64)>,
    /// The coordinator's task counts, while it runs.
    pub live: Option<TaskCounts>,
}

impl RunRow {
    /// The row of a run record.
    pub fn of(r: &RunRecord) -> RunRow {
        let time = |s: &str| fleetscore_core::parse_time(s).ok();
        let mut kinds: Vec<(FailureKind, u64)> = Vec::new();
        for f in &r.failures {
            match kinds.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, n)) => *n += 1,
                None => kinds.push((f.kind, 1)),
            }
        }
        RunRow {
            id: r.run_id.clone(),
            from_ms: time(&r.from).unwrap_or(0),
            to_ms: time(&r.to).unwrap_or(0),
            status: r.status,
            started_ms: time(&r.started_at),
            finished_ms: time(&r.finished_at),
            plan_seconds: r.plan_seconds,
            execute_seconds: r.execute_seconds,
            models: r.models,
            models_scored: r.models_scored,
            models_without_data: r.models_without_data,
            models_failed: r.models_failed,
            rows: r.rows,
            anomalies: r.anomalies,
            rows_per_second: r.rows_per_second,
            tasks: r.tasks,
            tasks_failed: r.tasks_failed,
            failures_by_kind: kinds,
            live: None,
        }
    }

    /// Whether it has finished and scored (with or without failures).
    pub fn is_scored(&self) -> bool {
        matches!(
            self.status,
            RunStatus::Succeeded | RunStatus::CompletedWithFailures
        )
    }

    /// Seconds from its start to its end (planning and execution).
    pub fn duration_seconds(&self) -> f64 {
        self.plan_seconds + self.execute_seconds
    }

    /// Models and tasks that failed.
    pub fn failures(&self) -> u64 {
        self.models_failed + u64::from(self.tasks_failed)
    }
}

/// Every run, ordered by window (start, end, id).
#[derive(Debug, Clone, Default)]
pub struct Runs {
    /// The runs, oldest window first.
    pub rows: Vec<Arc<RunRow>>,
    /// Position in `rows` by id.
    index: HashMap<String, usize>,
}

impl Runs {
    /// Runs from rows in any order.
    pub fn new(mut rows: Vec<Arc<RunRow>>) -> Runs {
        rows.sort_by(|a, b| (a.from_ms, a.to_ms, &a.id).cmp(&(b.from_ms, b.to_ms, &b.id)));
        let index = rows
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        Runs { rows, index }
    }

    /// The run `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<RunRow>> {
        self.index.get(id).map(|&i| &self.rows[i])
    }

    /// The scored run whose window ends last.
    pub fn last_scored(&self) -> Option<&RunRow> {
        self.rows
            .iter()
            .filter(|r| r.is_scored())
            .max_by_key(|r| (r.to_ms, r.from_ms))
            .map(|r| &**r)
    }

    /// The scored run without failures whose window ends last.
    pub fn last_succeeded(&self) -> Option<&RunRow> {
        self.rows
            .iter()
            .filter(|r| r.status == RunStatus::Succeeded)
            .max_by_key(|r| (r.to_ms, r.from_ms))
            .map(|r| &**r)
    }

    /// Runs by status.
    pub fn by_status(&self) -> Vec<(RunStatus, u64)> {
        RunStatus::ALL
            .iter()
            .map(|&s| (s, self.rows.iter().filter(|r| r.status == s).count() as u64))
            .collect()
    }
}

/// What one recent run did to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// The run: its position in [`Models::recent`].
    pub slot: u16,
    /// What it did.
    pub outcome: Outcome,
}

/// One model (its current version), with what the recent runs did to it and its health.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRow {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Current version.
    pub version: String,
    /// Its estimator in one line.
    pub estimator: Arc<str>,
    /// When the current version was imported (RFC 3339).
    pub imported_at: String,
    /// The recent runs since it was imported, oldest first.
    pub points: Vec<Point>,
    /// Its failure reason in the latest run that failed it.
    pub last_failure: Option<Arc<str>>,
    /// Its health.
    pub health: Health,
}

/// A recent scored run that model points refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentRun {
    /// Run id.
    pub id: String,
    /// Window start, epoch ms.
    pub from_ms: i64,
    /// Window end, epoch ms.
    pub to_ms: i64,
}

/// Every model with its recent history and health.
#[derive(Debug, Clone, Default)]
pub struct Models {
    /// The recent scored runs, oldest window first.
    pub recent: Vec<RecentRun>,
    /// Models sorted by (device, tag).
    pub rows: Vec<ModelRow>,
    /// Flagged models (positions in `rows`): failing first, then always anomalous, drifting,
    /// silent; by device and tag within each.
    pub attention: Vec<u32>,
    /// Models with each flag, in the order of [`FLAG_KINDS`].
    pub flag_counts: [u64; 4],
    /// The options health was judged with.
    pub options: HealthOptions,
}

impl Models {
    /// The position of (device, tag).
    pub fn find(&self, device: &str, tag: &str) -> Option<usize> {
        self.rows
            .binary_search_by(|m| (m.device.as_str(), m.tag.as_str()).cmp(&(device, tag)))
            .ok()
    }

    /// The end of the latest window that scored a model with rows.
    pub fn last_scored_ms(&self, m: &ModelRow) -> Option<i64> {
        m.points
            .iter()
            .rev()
            .find(|p| matches!(p.outcome, Outcome::Scored { rows, .. } if rows > 0))
            .map(|p| self.recent[usize::from(p.slot)].to_ms)
    }

    /// Sorts the flagged models and counts flags (after `rows` changed).
    pub(crate) fn index_flags(&mut self) {
        self.flag_counts = [0; 4];
        for m in &self.rows {
            for (i, kind) in FLAG_KINDS.iter().enumerate() {
                if m.health.has(kind) {
                    self.flag_counts[i] += 1;
                }
            }
        }
        let rank = |h: &Health| {
            ["failing", "always_anomalous", "drift", "silent"]
                .iter()
                .position(|k| h.has(k))
                .unwrap_or(4)
        };
        let mut attention: Vec<u32> = (0..self.rows.len() as u32)
            .filter(|&i| self.rows[i as usize].health.flagged())
            .collect();
        attention.sort_by_key(|&i| (rank(&self.rows[i as usize].health), i));
        self.attention = attention;
    }
}

/// A worker, with the host it runs on and the leases it lost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerView {
    /// What the coordinator knows.
    #[serde(flatten)]
    pub state: WorkerState,
    /// The host, from its name (`{host}-{pid}-{thread}`).
    pub host: String,
    /// Whether it showed life within the liveness window.
    pub live: bool,
    /// Tasks it holds whose lease has expired: another worker will take them over.
    pub expired_leases: u32,
}

/// The worker's host from its name: `fleetscore worker` names threads `{host}-{pid}-{n}`.
pub fn host_of(worker: &str) -> String {
    let mut parts: Vec<&str> = worker.rsplitn(3, '-').collect();
    if parts.len() == 3
        && parts[..2]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        parts.pop().unwrap_or(worker).to_string()
    } else {
        worker.to_string()
    }
}

/// What the coordinator says now: workers, the queue, the running runs' tasks.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Workers seen in the last day, or holding a task.
    pub workers: Vec<WorkerView>,
    /// Tasks of running runs pending or running.
    pub queue_depth: u32,
    /// Tasks of running runs by state.
    pub tasks_by_state: Vec<(TaskStatus, u64)>,
    /// The running runs' tasks, by run id.
    pub running: HashMap<String, Vec<TaskState>>,
}

/// Fixed-bucket histogram of durations, cumulative over the monitor's life.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, seconds.
    pub bounds: Vec<f64>,
    /// Observations at or below each bound (not cumulative).
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Buckets for durations from 10 ms to about 3 hours.
    pub fn durations() -> Histogram {
        let bounds = vec![
            0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            1800.0, 3600.0, 10800.0,
        ];
        Histogram {
            counts: vec![0; bounds.len()],
            bounds,
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    /// (upper bound, observations in that bucket and above the bound before), ending with
    /// +Inf: what the OpenMetrics encoder takes (it makes them cumulative).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .collect();
        out.push((f64::INFINITY, self.count - self.counts.iter().sum::<u64>()));
        out
    }
}

/// Everything the monitor shows, as of one refresh.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken (the clock's time), epoch ms.
    pub taken_ms: i64,
    /// Every run.
    pub runs: Arc<Runs>,
    /// Every model and its health.
    pub models: Arc<Models>,
    /// Workers and the queue; `None` without a coordinator.
    pub live: Option<Arc<Live>>,
    /// The ingest log and aggregators, when a log folder was given.
    pub pipeline: Option<Arc<PipelineView>>,
    /// Schedules, when a scheduler is plugged in.
    pub schedules: Option<Arc<Vec<ScheduleView>>>,
    /// Durations of the tasks of the runs whose summaries the monitor read.
    pub task_durations: Arc<Histogram>,
    /// What the last refresh could not read, for the dashboard's banner.
    pub problems: Arc<Vec<String>>,
}
