//! The run record (`runs/{id}.json`): what a run planned, did and failed, read by `runs show`
//! and written by whoever finishes the run.

use arrow_array::RecordBatch;
use serde::{Deserialize, Serialize};

use fleetscore_store::{Store, layout};

use crate::coordinator::{ModelFailure, StoreRequests};
use crate::error::{Error, Result};
use crate::status::RunStatus;

/// The record of a finished run, written to `runs/{id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Window start (RFC 3339).
    pub from: String,
    /// Window end (RFC 3339).
    pub to: String,
    /// `running` until finished, then `succeeded`, `completed_with_failures` or `cancelled`.
    pub status: RunStatus,
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
    /// Store requests made planning the run (the record's first write included).
    #[serde(default)]
    pub plan_store_requests: StoreRequests,
    /// Store requests of the whole run: planning, every task's completed attempt, and the
    /// final record's write (attempts that failed or lost their lease are not counted).
    #[serde(default)]
    pub store_requests: StoreRequests,
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

pub(super) fn missing_record(run_id: &str) -> Error {
    Error::Corrupt {
        what: layout::run_record(run_id),
        message: "the run's record is missing".into(),
    }
}

/// Reads a run record from the store.
pub fn record(store: &Store, run_id: &str) -> Result<Option<RunRecord>> {
    super::check_run_id(run_id)?;
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
    super::check_run_id(run_id)?;
    let mut out = Vec::new();
    for entry in store.list(&layout::predictions_dir(run_id))? {
        out.extend(fleetscore_table::from_parquet_bytes(
            &entry.key,
            store.get(&entry.key)?,
        )?);
    }
    Ok(out)
}
