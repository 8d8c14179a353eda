//! The coordinator: where runs and their shard tasks live, and how workers claim them with a
//! lease, complete them, or fail them. One trait, two implementations with the same contract
//! (tested by the same functions, `contract`): SQLite, embedded and the default, and
//! PostgreSQL, for workers on many machines.

pub mod postgres;
pub mod postgres_tls;
pub mod schedules;
pub mod sqlite;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RetryHint};
use crate::status::{RunStatus, TaskStatus};

/// Where the coordinator database is: what `--db` (or `FLEETSCORE_DB`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A PostgreSQL URL (`postgres://` or `postgresql://`), for workers on many machines.
    Postgres(String),
    /// A SQLite file, embedded: one machine.
    Sqlite(std::path::PathBuf),
}

impl Location {
    /// The coordinator `db` names, or by default `coordinator.sqlite` in a local store's
    /// folder (`store` is the store's location), else `./fleetscore.sqlite`.
    pub fn of(db: Option<&str>, store: &str) -> Location {
        match db {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Location::Postgres(url.to_owned())
            }
            Some(path) => Location::Sqlite(path.into()),
            None if !store.contains("://") => {
                Location::Sqlite(std::path::Path::new(store).join("coordinator.sqlite"))
            }
            None => Location::Sqlite("fleetscore.sqlite".into()),
        }
    }

    /// Connects (PostgreSQL) or opens (SQLite), creating the tables if missing.
    pub fn open(&self) -> Result<Box<dyn Coordinator>> {
        Ok(match self {
            Location::Postgres(url) => Box::new(postgres::PostgresCoordinator::connect(url)?),
            Location::Sqlite(path) => Box::new(sqlite::SqliteCoordinator::open(path)?),
        })
    }
}

impl std::fmt::Display for Location {
    /// For messages: a PostgreSQL URL may hold a password, so only its host and database are
    /// shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Postgres(url) => write!(
                f,
                "the PostgreSQL coordinator at {}",
                url.rsplit('@').next().unwrap_or(url)
            ),
            Location::Sqlite(path) => write!(f, "coordinator database {}", path.display()),
        }
    }
}

/// A run as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// Run id.
    pub id: String,
    /// Window start, epoch ms (inclusive).
    pub from_ms: i64,
    /// Window end, epoch ms (exclusive).
    pub to_ms: i64,
}

/// One model a task scores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRef {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Model version (content hash).
    pub version: String,
    /// Reading columns that feed the model, in its feature order.
    #[serde(default = "crate::registry::default_features")]
    pub features: Vec<String>,
    /// Where its bytes are in a model pack, if they are in one (else: its own file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<crate::registry::PackSlot>,
}

/// One shard task: the device buckets whose readings it reads, and the models it scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Shard number within the run.
    pub shard: u32,
    /// Device buckets it reads.
    pub buckets: Vec<u32>,
    /// Models it scores.
    pub models: Vec<ModelRef>,
    /// The readings and windows files of its buckets in the window, as listed when the run was
    /// planned, so the task need not list them again (`None`: list them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<String>>,
    /// Set in a training run: fit new versions of the models instead of scoring them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<crate::train::TrainTask>,
}

/// A task a worker holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Run id.
    pub run_id: String,
    /// The task.
    pub task: TaskSpec,
    /// Which attempt this is (1 for the first); completing with a stale attempt is refused.
    pub attempt: u32,
    /// The worker holding it.
    pub worker: String,
}

/// A model that could not be scored, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFailure {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Model version.
    pub version: String,
    /// What failed, in a word a metric can count by (`reason` has the detail).
    #[serde(default)]
    pub kind: FailureKind,
    /// The error.
    pub reason: String,
}

/// Which step of scoring a model failed: few values, so that counts by kind stay meaningful
/// (a failure's `reason` names the model and the detail).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Its file is missing from the store.
    Missing,
    /// Its file did not load: refused, corrupt, or over its memory budget.
    Load,
    /// Its configured features do not fit the model or the data.
    Features,
    /// Scoring its rows failed.
    Score,
    /// Recorded before kinds were kept.
    #[default]
    Unknown,
}

impl FailureKind {
    /// Every kind.
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Missing,
        FailureKind::Load,
        FailureKind::Features,
        FailureKind::Score,
        FailureKind::Unknown,
    ];

    /// The word it is stored as.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Missing => "missing",
            FailureKind::Load => "load",
            FailureKind::Features => "features",
            FailureKind::Score => "score",
            FailureKind::Unknown => "unknown",
        }
    }
}

/// Requests made to the store, by kind (see [`fleetscore_store::Requests`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRequests {
    /// Objects read whole.
    pub get: u64,
    /// Ranged reads (part of an object each).
    #[serde(default)]
    pub get_range: u64,
    /// Objects written.
    pub put: u64,
    /// Listings.
    pub list: u64,
    /// Objects deleted.
    pub delete: u64,
}

impl StoreRequests {
    /// Adds `other`'s.
    pub fn add(&mut self, other: &StoreRequests) {
        self.get += other.get;
        self.get_range += other.get_range;
        self.put += other.put;
        self.list += other.list;
        self.delete += other.delete;
    }

    /// Every request.
    pub fn total(&self) -> u64 {
        self.get + self.get_range + self.put + self.list + self.delete
    }
}

impl From<fleetscore_store::Requests> for StoreRequests {
    fn from(r: fleetscore_store::Requests) -> StoreRequests {
        StoreRequests {
            get: r.get,
            get_range: r.get_range,
            put: r.put,
            list: r.list,
            delete: r.delete,
        }
    }
}

impl std::fmt::Display for StoreRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} GET, {} ranged GET, {} PUT, {} LIST, {} DELETE",
            self.get, self.get_range, self.put, self.list, self.delete
        )
    }
}

/// What a completed task did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Models scored.
    pub models_scored: u64,
    /// Models with no readings in the window.
    pub models_without_data: u64,
    /// Rows scored.
    pub rows: u64,
    /// Rows predicted as anomalies.
    pub anomalies: u64,
    /// Models that failed, with reasons.
    pub failures: Vec<ModelFailure>,
    /// Seconds reading readings.
    pub read_seconds: f64,
    /// Seconds loading models and scoring.
    pub score_seconds: f64,
    /// Seconds writing predictions and the log.
    pub write_seconds: f64,
    /// The store requests it made, its log's included.
    #[serde(default)]
    pub store_requests: StoreRequests,
}

/// A task's state as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// Shard number.
    pub shard: u32,
    /// Its state.
    pub status: TaskStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Worker of the latest attempt.
    pub worker: Option<String>,
    /// Models in the task.
    pub models: usize,
    /// Latest error (failed attempts).
    pub error: Option<String>,
    /// Result when done.
    pub result: Option<TaskResult>,
    /// Start of the latest attempt, epoch ms.
    pub started_ms: Option<i64>,
    /// The latest attempt's last sign of life (its claim or latest heartbeat), epoch ms.
    #[serde(default)]
    pub heartbeat_ms: Option<i64>,
    /// End, epoch ms.
    pub finished_ms: Option<i64>,
}

/// A run's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run.
    pub spec: RunSpec,
    /// Its state.
    pub status: RunStatus,
    /// When it was created, epoch ms.
    pub created_ms: i64,
    /// When it finished, epoch ms.
    pub finished_ms: Option<i64>,
    /// Task counts: total, pending, running, done, failed.
    pub tasks: TaskCounts,
}

/// Task counts of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskCounts {
    /// All tasks.
    pub total: u32,
    /// Not yet claimed (or returned for retry).
    pub pending: u32,
    /// Claimed.
    pub running: u32,
    /// Completed.
    pub done: u32,
    /// Failed for good.
    pub failed: u32,
    /// Never started: their run was cancelled.
    #[serde(default)]
    pub cancelled: u32,
}

impl TaskCounts {
    /// Counts `n` tasks in `status`.
    pub(crate) fn add(&mut self, status: TaskStatus, n: u32) {
        self.total += n;
        match status {
            TaskStatus::Pending => self.pending += n,
            TaskStatus::Running => self.running += n,
            TaskStatus::Done => self.done += n,
            TaskStatus::Cancelled => self.cancelled += n,
            TaskStatus::Failed => self.failed += n,
        }
    }

    /// Tasks that still need a worker: pending, or running under a lease.
    pub fn queued(&self) -> u32 {
        self.pending + self.running
    }
}

/// Where a failed attempt leaves its task: back to `pending` if a retry can help and attempts
/// remain, else `failed` for good. Both coordinators decide it here.
pub(crate) fn status_after_failure(claim: &Claim, failure: &Failure<'_>) -> TaskStatus {
    if failure.hint == RetryHint::Retry && claim.attempt < failure.max_attempts {
        TaskStatus::Pending
    } else {
        TaskStatus::Failed
    }
}

/// A failed attempt, as its worker reports it.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The error, kept with the task.
    pub error: &'a str,
    /// Whether another attempt can help.
    pub hint: RetryHint,
    /// Attempts allowed in all; the last one fails the task for good.
    pub max_attempts: u32,
}

/// A worker as the coordinator has seen it (from the tasks it claimed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerState {
    /// The worker's name (`{prefix}-{thread}`).
    pub worker: String,
    /// Tasks it holds now: (run id, shard).
    pub running: Vec<(String, u32)>,
    /// Tasks it completed (latest attempts only).
    pub done: u32,
    /// Tasks whose latest attempt it failed.
    pub failed: u32,
    /// Its last sign of life (claim or heartbeat), epoch ms.
    pub last_seen_ms: i64,
}

/// Where runs and tasks live (and, in the same database, schedules and their ticks).
pub trait Coordinator: schedules::ScheduleStore + Send + Sync {
    /// Creates (or re-plans, replacing its tasks) a run.
    fn create_run(&self, run: &RunSpec, tasks: &[TaskSpec], now_ms: i64) -> Result<()>;
    /// Claims the next task that is pending, or whose lease has expired: of the run `run_id`,
    /// or (`None`) of any running run, oldest run first.
    fn claim(
        &self,
        run_id: Option<&str>,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Claim>>;
    /// Extends a claim's lease; false if the claim was lost (another attempt took over).
    fn heartbeat(&self, claim: &Claim, lease_ms: i64, now_ms: i64) -> Result<bool>;
    /// Marks a claimed task done; false if the claim was lost, and then nothing changes.
    fn complete(&self, claim: &Claim, result: &TaskResult, now_ms: i64) -> Result<bool>;
    /// Records a failed attempt: back to pending if a retry can help and attempts remain, else
    /// failed for good.
    fn fail(&self, claim: &Claim, failure: &Failure<'_>, now_ms: i64) -> Result<()>;
    /// A run's state.
    fn run(&self, run_id: &str) -> Result<Option<RunState>>;
    /// Every task of a run.
    fn tasks(&self, run_id: &str) -> Result<Vec<TaskState>>;
    /// Marks a run finished with its status.
    fn finish_run(&self, run_id: &str, status: RunStatus, now_ms: i64) -> Result<()>;
    /// Every run, newest first.
    fn runs(&self) -> Result<Vec<RunState>>;
    /// Cancels a running run: its pending tasks are not claimed any more (they end
    /// `cancelled`); tasks being executed finish. False if the run is not running.
    fn cancel_run(&self, run_id: &str, now_ms: i64) -> Result<bool>;
    /// Every worker that holds a task of any run or was last seen at or after `since_ms`, by
    /// name.
    fn workers(&self, since_ms: i64) -> Result<Vec<WorkerState>>;
    /// The queue depth: tasks of running runs that are pending or running — what an
    /// autoscaler sizes workers by. (The KEDA manifest runs the same count as SQL,
    /// [`postgres::QUEUE_DEPTH_SQL`].)
    fn queue_depth(&self) -> Result<u32>;
}

/// A record as the JSON the coordinators keep in a text column.
pub(crate) fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serializable")
}

/// Parses what [`json`] wrote; `what` names it in the error.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| crate::error::Error::Corrupt {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// Folds (worker, run, shard, status, last seen) rows into [`WorkerState`]s, by name.
pub(crate) fn fold_workers(
    rows: impl IntoIterator<Item = (String, String, u32, TaskStatus, i64)>,
) -> Vec<WorkerState> {
    let mut by_name: std::collections::BTreeMap<String, WorkerState> = Default::default();
    for (worker, run_id, shard, status, seen) in rows {
        let w = by_name
            .entry(worker.clone())
            .or_insert_with(|| WorkerState {
                worker,
                running: Vec::new(),
                done: 0,
                failed: 0,
                last_seen_ms: seen,
            });
        w.last_seen_ms = w.last_seen_ms.max(seen);
        match status {
            TaskStatus::Running => w.running.push((run_id, shard)),
            TaskStatus::Done => w.done += 1,
            // A pending latest attempt is one that failed and waits for its retry.
            TaskStatus::Failed | TaskStatus::Pending => w.failed += 1,
            TaskStatus::Cancelled => {}
        }
    }
    by_name.into_values().collect()
}

/// The behaviour every coordinator must have, as test functions each implementation runs.
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn failure(error: &str, hint: RetryHint) -> Failure<'_> {
        Failure {
            error,
            hint,
            max_attempts: 3,
        }
    }

    fn plan(c: &dyn Coordinator, n: u32) -> RunSpec {
        let run = RunSpec {
            id: "r1".into(),
            from_ms: 0,
            to_ms: 3_600_000,
        };
        let tasks: Vec<TaskSpec> = (0..n)
            .map(|shard| TaskSpec {
                train: None,
                files: None,
                shard,
                buckets: vec![shard],
                models: vec![ModelRef {
                    pack: None,
                    device: format!("d{shard}"),
                    tag: "t".into(),
                    version: "v".into(),
                    features: vec!["value".into()],
                }],
            })
            .collect();
        c.create_run(&run, &tasks, 0).unwrap();
        run
    }

    pub(crate) fn each_task_is_claimed_once_until_its_lease_expires(c: &dyn Coordinator) {
        plan(c, 2);
        let a = c.claim(Some("r1"), "w1", 1_000, 10).unwrap().unwrap();
        let b = c.claim(Some("r1"), "w2", 1_000, 10).unwrap().unwrap();
        assert_ne!(a.task.shard, b.task.shard);
        assert!(c.claim(Some("r1"), "w3", 1_000, 20).unwrap().is_none());
        // w1 goes silent; after its lease another worker takes the task over.
        let a2 = c.claim(Some("r1"), "w3", 1_000, 2_000).unwrap().unwrap();
        assert_eq!(a2.task.shard, a.task.shard);
        assert_eq!(a2.attempt, 2);
        // The stale attempt can neither heartbeat nor complete.
        assert!(!c.heartbeat(&a, 1_000, 2_001).unwrap());
        assert!(!c.complete(&a, &TaskResult::default(), 2_001).unwrap());
        assert!(c.complete(&a2, &TaskResult::default(), 2_002).unwrap());
        assert!(c.complete(&b, &TaskResult::default(), 2_003).unwrap());
        let state = c.run("r1").unwrap().unwrap();
        assert_eq!((state.tasks.done, state.tasks.total), (2, 2));
        let tasks = c.tasks("r1").unwrap();
        assert_eq!(
            tasks[usize::try_from(a.task.shard).unwrap()]
                .worker
                .as_deref(),
            Some("w3")
        );
        // A worker that serves every run finds nothing left here.
        assert!(c.claim(None, "w4", 1_000, 2_004).unwrap().is_none());
        let workers = c.workers(0).unwrap();
        let names: Vec<(&str, u32, i64)> = workers
            .iter()
            .map(|w| (w.worker.as_str(), w.done, w.last_seen_ms))
            .collect();
        assert_eq!(names, [("w2", 1, 10), ("w3", 1, 2_000)]);
        assert!(c.workers(1_000).unwrap().iter().all(|w| w.worker == "w3"));
        c.finish_run("r1", RunStatus::Succeeded, 3_000).unwrap();
        let runs = c.runs().unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].status, runs[0].finished_ms),
            (RunStatus::Succeeded, Some(3_000))
        );
    }

    /// Heartbeats are visible; a cancelled run's pending tasks are never claimed, and its
    /// running ones can still complete.
    pub(crate) fn heartbeats_show_and_cancel_stops_claims(c: &dyn Coordinator) {
        plan(c, 3);
        assert_eq!(c.queue_depth().unwrap(), 3, "three pending tasks");
        let a = c.claim(Some("r1"), "w1", 1_000, 10).unwrap().unwrap();
        assert_eq!(c.queue_depth().unwrap(), 3, "two pending and one running");
        assert!(c.heartbeat(&a, 1_000, 500).unwrap());
        let held = c.tasks("r1").unwrap()[0].clone();
        assert_eq!(
            (held.worker.as_deref(), held.heartbeat_ms),
            (Some("w1"), Some(500))
        );
        let w = &c.workers(0).unwrap()[0];
        assert_eq!(
            (w.running.clone(), w.last_seen_ms),
            (vec![("r1".into(), 0)], 500)
        );
        assert!(c.cancel_run("r1", 600).unwrap());
        assert!(!c.cancel_run("r1", 601).unwrap(), "already cancelled");
        assert!(c.claim(Some("r1"), "w2", 1_000, 700).unwrap().is_none());
        assert!(c.claim(None, "w2", 1_000, 700).unwrap().is_none());
        assert_eq!(
            c.queue_depth().unwrap(),
            0,
            "a cancelled run queues nothing"
        );
        assert!(c.complete(&a, &TaskResult::default(), 800).unwrap());
        let state = c.run("r1").unwrap().unwrap();
        assert_eq!(state.status, RunStatus::Cancelled);
        assert_eq!(
            (state.tasks.done, state.tasks.cancelled, state.tasks.failed),
            (1, 2, 0)
        );
        let statuses: Vec<TaskStatus> = c
            .tasks("r1")
            .unwrap()
            .into_iter()
            .map(|t| t.status)
            .collect();
        assert_eq!(
            statuses,
            [
                TaskStatus::Done,
                TaskStatus::Cancelled,
                TaskStatus::Cancelled
            ]
        );
    }

    /// Workers that serve every run take the oldest running run's tasks first, and never a
    /// finished run's.
    pub(crate) fn any_run_claims_go_oldest_first(c: &dyn Coordinator) {
        let task = |shard| TaskSpec {
            train: None,
            files: None,
            shard,
            buckets: vec![],
            models: vec![],
        };
        let run = |id: &str| RunSpec {
            id: id.into(),
            from_ms: 0,
            to_ms: 1,
        };
        c.create_run(&run("old"), &[task(0)], 1).unwrap();
        c.create_run(&run("new"), &[task(0), task(1)], 2).unwrap();
        c.create_run(&run("done"), &[task(0)], 0).unwrap();
        c.finish_run("done", RunStatus::Cancelled, 3).unwrap();
        let order: Vec<(String, u32)> = std::iter::from_fn(|| {
            c.claim(None, "w", 1_000, 10)
                .unwrap()
                .map(|cl| (cl.run_id, cl.task.shard))
        })
        .collect();
        assert_eq!(
            order,
            [("old".into(), 0), ("new".into(), 0), ("new".into(), 1)]
        );
    }

    pub(crate) fn retries_follow_the_hint_and_the_attempt_limit(c: &dyn Coordinator) {
        plan(c, 1);
        for attempt in 1..=3 {
            let claim = c.claim(Some("r1"), "w", 1_000, 0).unwrap().unwrap();
            assert_eq!(claim.attempt, attempt);
            c.fail(&claim, &failure("store unreachable", RetryHint::Retry), 1)
                .unwrap();
        }
        assert!(c.claim(Some("r1"), "w", 1_000, 5).unwrap().is_none());
        let t = &c.tasks("r1").unwrap()[0];
        assert_eq!((t.status, t.attempts), (TaskStatus::Failed, 3));
        assert_eq!(t.error.as_deref(), Some("store unreachable"));

        // Planning the run again starts over.
        plan(c, 1);
        let claim = c.claim(Some("r1"), "w", 1_000, 0).unwrap().unwrap();
        assert_eq!(claim.attempt, 1);
        c.fail(&claim, &failure("corrupt", RetryHint::DoNotRetry), 1)
            .unwrap();
        assert_eq!(c.tasks("r1").unwrap()[0].status, TaskStatus::Failed);
    }

    /// Workers on their own connections claim concurrently: every task is claimed exactly
    /// once.
    pub(crate) fn concurrent_claims_never_share_a_task(
        c: &dyn Coordinator,
        connect: &(dyn Fn() -> Box<dyn Coordinator> + Sync),
    ) {
        plan(c, 200);
        let claimed: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|w| {
                    s.spawn(move || {
                        let mine = connect();
                        let mut got = Vec::new();
                        while let Some(claim) =
                            mine.claim(Some("r1"), &format!("w{w}"), 60_000, 1).unwrap()
                        {
                            assert!(mine.complete(&claim, &TaskResult::default(), 2).unwrap());
                            got.push(claim.task.shard);
                        }
                        got
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut sorted = claimed.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..200).collect::<Vec<_>>());
        assert_eq!(c.run("r1").unwrap().unwrap().tasks.done, 200);
    }
}

#[cfg(test)]
mod tests {
    use super::Location;

    #[test]
    fn the_coordinator_location_follows_db_then_the_store_and_hides_passwords() {
        let pg = Location::of(Some("postgres://u:secret@db.internal/fleet"), "az://c/p");
        assert_eq!(
            pg.to_string(),
            "the PostgreSQL coordinator at db.internal/fleet"
        );
        assert!(matches!(
            Location::of(Some("postgresql://h/d"), "x"),
            Location::Postgres(_)
        ));
        assert_eq!(
            Location::of(Some("c.sqlite"), "data"),
            Location::Sqlite("c.sqlite".into())
        );
        assert_eq!(
            Location::of(None, "data"),
            Location::Sqlite(std::path::Path::new("data").join("coordinator.sqlite"))
        );
        assert_eq!(
            Location::of(None, "s3://b/p"),
            Location::Sqlite("fleetscore.sqlite".into())
        );
    }
}
