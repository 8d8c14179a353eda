//! One shard task: read its buckets' readings (or closed windows) for the window once, load
//! and score each of its models, and write one predictions file and one log.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use fleetscore_models::{Limits, Model};
use fleetscore_store::{RequestCounter, Store, layout};
use fleetscore_table::predictions;
use fleetscore_table::windows::{self, Windows};

use crate::coordinator::{FailureKind, ModelFailure, ModelRef, RunSpec, TaskResult, TaskSpec};
use crate::error::{Error, Result, RetryHint};
use crate::readings::{self, hours_between};
use crate::registry::{self, FeatureSource};

use super::cache::ModelCache;
use super::fetch;
use super::summary::{SUMMARY_FORMAT, Scored, TaskSummary, Unscored};

/// One attempt at a task: where it runs and under which limits.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The store the task reads and writes.
    pub store: &'a Store,
    /// Its run.
    pub spec: &'a RunSpec,
    /// The worker executing it, for its log.
    pub worker: &'a str,
    /// Which attempt this is (its log is named by it).
    pub attempt: u32,
    /// Each model file's load limits (its memory budget).
    pub model_limits: &'a Limits,
    /// Loaded models kept across tasks, if this process keeps them.
    pub cache: Option<&'a ModelCache>,
}

/// Executes one task: reads its slice, scores its models, writes predictions, the per-model
/// summary and the log.
pub fn execute_task(at: &Attempt<'_>, task: &TaskSpec) -> Result<TaskResult> {
    let Attempt {
        store,
        spec,
        worker,
        attempt,
        model_limits,
        cache,
    } = *at;
    // Every request the task makes goes through this handle, and is counted.
    let (counted, requests) = store.counting();
    let store = &counted;
    let started = Instant::now();
    let mut log = String::new();
    let mut line = |s: String| push_line(&mut log, &s);
    line(format!(
        "run {} shard {} worker {worker}: {} models, buckets {:?}",
        spec.id,
        task.shard,
        task.models.len(),
        task.buckets
    ));
    if let Some(train) = &task.train {
        return super::train_task::execute(at, task, train, store, &requests, started, log);
    }
    let source = |m: &ModelRef| FeatureSource::of(&m.features);
    let (slice, windows) = read_rows(store, spec, task)?;
    let mut result = TaskResult {
        read_seconds: started.elapsed().as_secs_f64(),
        ..TaskResult::default()
    };
    let rows = slice.values().map(Vec::len).sum::<usize>()
        + windows.values().map(Windows::len).sum::<usize>();
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
    // The models that have data: those the cache holds, and the others' files, fetched
    // together (from packs where they are in one).
    let mut cached: HashMap<String, Arc<Model>> = HashMap::new();
    let mut to_fetch: Vec<&ModelRef> = Vec::new();
    for m in task
        .models
        .iter()
        .filter(|m| source(m).is_err() || rows_of(m).is_some())
    {
        let key = layout::model_file(&m.device, &m.tag, &m.version);
        match cache.and_then(|c| c.get(&key)) {
            Some(model) => {
                cached.insert(key, model);
            }
            None => to_fetch.push(m),
        }
    }
    if let Some(c) = cache {
        let s = c.stats();
        line(format!(
            "models: {} from the cache ({} held, {} MiB of {} MiB), {} to fetch",
            cached.len(),
            s.models,
            s.bytes >> 20,
            s.capacity >> 20,
            to_fetch.len()
        ));
    }
    let fetched = fetch::fetch(store, &to_fetch);
    for note in &fetched.notes {
        line(note.clone());
    }
    let mut files = fetched.files;
    let mut summary = TaskSummary {
        format: SUMMARY_FORMAT,
        run_id: spec.id.clone(),
        shard: task.shard,
        attempt,
        worker: worker.to_string(),
        ..TaskSummary::default()
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
                    summary.no_data.push(Unscored {
                        device: m.device.clone(),
                        tag: m.tag.clone(),
                        version: m.version.clone(),
                    });
                    continue;
                }
            },
            Err(e) => Err((FailureKind::Features, e)),
        };
        let key = layout::model_file(&m.device, &m.tag, &m.version);
        let loaded = cached.remove(&key);
        // Each step says what failed, for counts by kind.
        let scored = data.and_then(|data| {
            let model = match loaded {
                Some(model) => model,
                None => {
                    let file = files.remove(&key).unwrap_or_else(|| {
                        registry::model_bytes(store, &m.device, &m.tag, &m.version)
                    });
                    let file = file.map_err(|e| {
                        let kind = match e {
                            Error::Store(fleetscore_store::Error::NotFound(_)) => {
                                FailureKind::Missing
                            }
                            _ => FailureKind::Load,
                        };
                        (kind, e)
                    })?;
                    let model = Arc::new(
                        Model::from_bytes_within(&file, model_limits)
                            .map_err(|e| (FailureKind::Load, e.into()))?,
                    );
                    if let Some(c) = cache {
                        c.insert(&key, Arc::clone(&model));
                    }
                    model
                }
            };
            if model.n_features() != m.features.len() {
                return Err((
                    FailureKind::Features,
                    Error::Invalid(format!(
                        "the model expects {} features; its configuration feeds it {} ({})",
                        model.n_features(),
                        m.features.len(),
                        m.features.join(",")
                    )),
                ));
            }
            data.matrix(&m.features, &mut x)
                .map_err(|e| (FailureKind::Features, e))?;
            decision.resize(data.len(), 0.0);
            predicted.resize(data.len(), 0i8);
            model
                .score(&x, &mut decision, &mut predicted)
                .map_err(|e| (FailureKind::Score, e.into()))?;
            Ok(data)
        });
        let data = match scored {
            Ok(data) => data,
            Err((kind, e)) => {
                // A store failure is the task's problem (retry); anything else is this model's.
                if matches!(e, Error::Store(_)) && e.retry() == RetryHint::Retry {
                    return Err(e);
                }
                line(format!(
                    "model {}/{} {}: FAILED: {e}",
                    m.device, m.tag, m.version
                ));
                failed(&mut summary, &mut result, m, kind, e.to_string());
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
        summary.scored.push(Scored {
            device: m.device.clone(),
            tag: m.tag.clone(),
            version: m.version.clone(),
            rows: n as u64,
            anomalies: anomalies as u64,
        });
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
    let done = format!(
        "done: {} models scored, {} without data, {} failed; {} rows, {} anomalies; read {:.3}s, score {:.3}s, write {:.3}s",
        result.models_scored,
        result.models_without_data,
        result.failures.len(),
        result.rows,
        result.anomalies,
        result.read_seconds,
        result.score_seconds,
        result.write_seconds
    );
    finish(store, summary, result, log, &done, attempt, &requests)
}

/// Appends a timestamped line to a task's log.
pub(super) fn push_line(log: &mut String, s: &str) {
    log.push_str(&format!(
        "{} {s}\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    ));
}

/// Records that model `m` failed, in the task's summary and result.
pub(super) fn failed(
    summary: &mut TaskSummary,
    result: &mut TaskResult,
    m: &ModelRef,
    kind: FailureKind,
    reason: String,
) {
    let failure = ModelFailure {
        device: m.device.clone(),
        tag: m.tag.clone(),
        version: m.version.clone(),
        kind,
        reason,
    };
    summary.failed.push(failure.clone());
    result.failures.push(failure);
}

/// How a task ends, scoring or training: its per-model summary with the result's timings, the
/// `done` line, its log, and the store requests it made (through `requests`) in the result.
/// Every attempt counts the same from the same plan, so whichever attempt writes last writes
/// what the first did.
pub(super) fn finish(
    store: &Store,
    mut summary: TaskSummary,
    mut result: TaskResult,
    mut log: String,
    done: &str,
    attempt: u32,
    requests: &RequestCounter,
) -> Result<TaskResult> {
    summary.read_seconds = result.read_seconds;
    summary.score_seconds = result.score_seconds;
    summary.write_seconds = result.write_seconds;
    store.put(
        &layout::task_summary(&summary.run_id, summary.shard),
        serde_json::to_vec(&summary).expect("serializable"),
    )?;
    push_line(&mut log, done);
    store.put(
        &layout::task_log(&summary.run_id, summary.shard, attempt),
        log.into_bytes(),
    )?;
    result.store_requests = requests.requests().into();
    Ok(result)
}

/// The rows of a task's models over its run's window: raw readings by sensor, and closed
/// windows by sensor, each read once for all of them.
pub(super) type TaskRows = (
    BTreeMap<(String, String), readings::Series>,
    HashMap<(String, String), Windows>,
);

/// Reads [`TaskRows`] for `task`.
pub(super) fn read_rows(store: &Store, spec: &RunSpec, task: &TaskSpec) -> Result<TaskRows> {
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
        readings::read_slice(
            store,
            &task.buckets,
            task.files.as_deref(),
            spec.from_ms,
            spec.to_ms,
            &|d, t| raw.contains(&(d, t)),
        )?
    };
    let windows = if windowed.is_empty() {
        HashMap::new()
    } else {
        read_windows(
            store,
            &task.buckets,
            task.files.as_deref(),
            spec.from_ms,
            spec.to_ms,
            &|d, t| windowed.contains(&(d, t)),
        )?
    };
    Ok((slice, windows))
}

/// The rows a model scores: raw readings, or closed windows.
#[derive(Clone, Copy)]
pub(super) enum Rows<'a> {
    Readings(&'a readings::Series),
    Windows(&'a Windows),
}

impl Rows<'_> {
    pub(super) fn len(&self) -> usize {
        match self {
            Rows::Readings(s) => s.len(),
            Rows::Windows(w) => w.len(),
        }
    }

    /// The row-major matrix of the named features into `x`.
    pub(super) fn matrix(&self, names: &[String], x: &mut Vec<f64>) -> Result<()> {
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
    planned: Option<&[String]>,
    from_ms: i64,
    to_ms: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
) -> Result<HashMap<(String, String), Windows>> {
    let list = |planned: Option<&[String]>| -> Result<Vec<String>> {
        let mut keys = Vec::new();
        for hour in hours_between(from_ms, to_ms) {
            for &bucket in buckets {
                let dir = layout::features_dir(&hour, bucket);
                match planned {
                    Some(files) => keys.extend(
                        files
                            .iter()
                            .filter(|k| k.strip_prefix(&dir).is_some_and(|r| r.starts_with('/')))
                            .cloned(),
                    ),
                    None => keys.extend(store.list(&dir)?.into_iter().map(|e| e.key)),
                }
            }
        }
        Ok(keys)
    };
    let mut keys = list(planned)?;
    let got = match store.get_many(&keys) {
        // A planned file merged away since: list the folders as they are now.
        Err(fleetscore_store::Error::NotFound(_)) if planned.is_some() => {
            keys = list(None)?;
            store.get_many(&keys)?
        }
        other => other?,
    };
    let files: Vec<(String, bytes::Bytes)> = keys.into_iter().zip(got).collect();
    windows::read(&files, from_ms, to_ms, wanted).map_err(|e| Error::Corrupt {
        what: "features".into(),
        message: e.to_string(),
    })
}
