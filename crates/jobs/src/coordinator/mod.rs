//! The coordinator: where runs and their shard tasks live, and how workers claim them with a
//! lease, complete them, or fail them. One trait; SQLite (embedded, the default) implements it
//! here, and a PostgreSQL coordinator for many machines can implement it beside it.

pub mod sqlite;

use serde::{Deserialize, Serialize};

use crate::error::{Result, RetryHint};

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
    /// The error.
    pub reason: String,
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
}

/// A task's state as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    /// Shard number.
    pub shard: u32,
    /// `pending`, `running`, `done` or `failed`.
    pub status: String,
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
    /// End, epoch ms.
    pub finished_ms: Option<i64>,
}

/// A run's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// The run.
    pub spec: RunSpec,
    /// `running`, `succeeded`, `completed_with_failures`.
    pub status: String,
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
}

/// Where runs and tasks live.
pub trait Coordinator: Send + Sync {
    /// Creates (or re-plans, replacing its tasks) a run.
    fn create_run(&self, run: &RunSpec, tasks: &[TaskSpec], now_ms: i64) -> Result<()>;
    /// Claims the next task of a run that is pending, or whose lease has expired.
    fn claim(
        &self,
        run_id: &str,
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
    fn fail(
        &self,
        claim: &Claim,
        error: &str,
        hint: RetryHint,
        max_attempts: u32,
        now_ms: i64,
    ) -> Result<()>;
    /// A run's state.
    fn run(&self, run_id: &str) -> Result<Option<RunState>>;
    /// Every task of a run.
    fn tasks(&self, run_id: &str) -> Result<Vec<TaskState>>;
    /// Marks a run finished with its status.
    fn finish_run(&self, run_id: &str, status: &str, now_ms: i64) -> Result<()>;
    /// Every run, newest first.
    fn runs(&self) -> Result<Vec<RunState>>;
}
