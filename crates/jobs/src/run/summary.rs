//! A task's per-model summary (`summaries/run={run}/shard-{NNNNN}.json`): how many rows each
//! of its models scored and flagged, which had no data and which failed, with the attempt's
//! worker and timings. One small object per task, written beside its predictions, so that
//! model health (the monitor, `models health`) reads counts instead of predictions.
//!
//! Models are written as arrays (`["dev-7", "temp", "0a1b…", 60, 2]`) rather than objects:
//! a run of 50,000 models writes about 2.5 MB of summaries, and the monitor reads the recent
//! runs' at start.

use serde::{Deserialize, Serialize};

use fleetscore_store::{Store, layout};

use crate::coordinator::ModelFailure;
use crate::error::{Error, Result};

/// The summary's format number, bumped if its meaning changes.
pub const SUMMARY_FORMAT: u32 = 1;

/// What one task did to each of its models.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// [`SUMMARY_FORMAT`].
    pub format: u32,
    /// Run id.
    pub run_id: String,
    /// Shard number.
    pub shard: u32,
    /// The attempt that wrote it.
    pub attempt: u32,
    /// The worker that executed that attempt.
    pub worker: String,
    /// Seconds reading readings.
    pub read_seconds: f64,
    /// Seconds loading models and scoring.
    pub score_seconds: f64,
    /// Seconds writing predictions.
    pub write_seconds: f64,
    /// Models scored, with their counts.
    pub scored: Vec<Scored>,
    /// Models whose sensor had no rows in the window.
    pub no_data: Vec<Unscored>,
    /// Models that failed, with the reason.
    pub failed: Vec<ModelFailure>,
}

/// A scored model: written as `[device, tag, version, rows, anomalies]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, String, String, u64, u64)")]
#[serde(into = "(String, String, String, u64, u64)")]
pub struct Scored {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Model version.
    pub version: String,
    /// Rows scored.
    pub rows: u64,
    /// Rows predicted as anomalies.
    pub anomalies: u64,
}

impl From<(String, String, String, u64, u64)> for Scored {
    fn from((device, tag, version, rows, anomalies): (String, String, String, u64, u64)) -> Self {
        Scored {
            device,
            tag,
            version,
            rows,
            anomalies,
        }
    }
}

impl From<Scored> for (String, String, String, u64, u64) {
    fn from(s: Scored) -> Self {
        (s.device, s.tag, s.version, s.rows, s.anomalies)
    }
}

/// A model without rows in the window: written as `[device, tag, version]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, String, String)", into = "(String, String, String)")]
pub struct Unscored {
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// Model version.
    pub version: String,
}

impl From<(String, String, String)> for Unscored {
    fn from((device, tag, version): (String, String, String)) -> Self {
        Unscored {
            device,
            tag,
            version,
        }
    }
}

impl From<Unscored> for (String, String, String) {
    fn from(u: Unscored) -> Self {
        (u.device, u.tag, u.version)
    }
}

/// Parses a stored summary; `key` names it in the error.
pub fn parse_summary(key: &str, bytes: &[u8]) -> Result<TaskSummary> {
    let summary: TaskSummary = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        what: key.to_string(),
        message: e.to_string(),
    })?;
    if summary.format != SUMMARY_FORMAT {
        return Err(Error::Corrupt {
            what: key.to_string(),
            message: format!(
                "summary format {} (this version reads {SUMMARY_FORMAT})",
                summary.format
            ),
        });
    }
    Ok(summary)
}

/// Every task summary of a run, by shard (tasks that did not complete have none).
pub fn summaries(store: &Store, run_id: &str) -> Result<Vec<TaskSummary>> {
    super::check_run_id(run_id)?;
    let keys: Vec<String> = store
        .list(&layout::summaries_dir(run_id))?
        .into_iter()
        .map(|e| e.key)
        .filter(|k| k.ends_with(".json"))
        .collect();
    let mut out = keys
        .iter()
        .zip(store.get_many(&keys)?)
        .map(|(k, b)| parse_summary(k, &b))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by_key(|s| s.shard);
    Ok(out)
}
