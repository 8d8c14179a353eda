//! One task of a training run: read its sensors' rows over the window once, fit a model per
//! sensor, and import the fits as the sensors' new current versions (one commit, one pack).

use std::collections::BTreeMap;
use std::time::Instant;

use fleetscore_models::Model;
use fleetscore_pickle::Compression;
use fleetscore_store::{RequestCounter, Store, layout};

use crate::coordinator::{FailureKind, ModelRef, TaskResult, TaskSpec};
use crate::error::{Error, Result};
use crate::registry::{self, FeatureSource, NewModel, Training};
use crate::train::TrainTask;

use super::fetch;
use super::summary::{SUMMARY_FORMAT, Scored, TaskSummary, Unscored};
use super::task::{Attempt, Rows, failed, finish, push_line, read_rows};

/// Executes a training task, continuing what [`super::execute_task`] began: `store` is its
/// counting handle (`requests` its counter) and `log` holds the task's first lines.
pub(super) fn execute(
    at: &Attempt<'_>,
    task: &TaskSpec,
    train: &TrainTask,
    store: &Store,
    requests: &RequestCounter,
    started: Instant,
    mut log: String,
) -> Result<TaskResult> {
    let Attempt {
        spec,
        worker,
        attempt,
        model_limits,
        ..
    } = *at;
    let mut line = |s: String| push_line(&mut log, &s);
    let (slice, windows) = read_rows(store, spec, task)?;
    let mut result = TaskResult {
        read_seconds: started.elapsed().as_secs_f64(),
        ..TaskResult::default()
    };
    line(format!(
        "training: read {} sensors' rows in {:.3}s",
        slice.len() + windows.len(),
        result.read_seconds
    ));
    // The current models: `--like current` reads their estimators and hyper-parameters, and a
    // new version is written as its predecessor was (a joblib compression kept).
    let refs: Vec<&ModelRef> = task.models.iter().collect();
    let current = fetch::fetch(store, &refs).files;
    let fit_started = Instant::now();
    let mut summary = TaskSummary {
        format: SUMMARY_FORMAT,
        run_id: spec.id.clone(),
        shard: task.shard,
        attempt,
        worker: worker.to_string(),
        ..TaskSummary::default()
    };
    let mut importer = registry::Importer::with_limits(store, *model_limits);
    let mut x = Vec::new();
    for m in &task.models {
        let key = (m.device.clone(), m.tag.clone());
        let rows = match FeatureSource::of(&m.features) {
            Ok(FeatureSource::Readings) => slice.get(&key).map(Rows::Readings),
            Ok(FeatureSource::Windows) => windows.get(&key).map(Rows::Windows),
            Err(_) => None,
        };
        let n = rows.as_ref().map_or(0, Rows::len);
        if n < train.min_rows {
            line(format!(
                "model {}/{}: skipped: {n} rows in the window, fewer than the {} a fit needs",
                m.device, m.tag, train.min_rows
            ));
            result.models_without_data += 1;
            summary.no_data.push(Unscored {
                device: m.device.clone(),
                tag: m.tag.clone(),
                version: m.version.clone(),
            });
            continue;
        }
        let rows = rows.expect("n > 0");
        let fitted = (|| -> std::result::Result<_, (FailureKind, String)> {
            let estimator = match &train.estimator {
                Some(e) => e.clone(),
                None => {
                    let file = layout::model_file(&m.device, &m.tag, &m.version);
                    let bytes = match current.get(&file) {
                        Some(Ok(b)) => b,
                        Some(Err(e)) => return Err((FailureKind::Missing, e.to_string())),
                        None => return Err((FailureKind::Missing, format!("{file} was not read"))),
                    };
                    let model = Model::from_bytes_within(bytes, model_limits)
                        .map_err(|e| (FailureKind::Load, e.to_string()))?;
                    crate::train::Estimator::like(model.info())
                        .map_err(|e| (FailureKind::Load, format!("--like current: {e}")))?
                }
            };
            rows.matrix(&m.features, &mut x)
                .map_err(|e| (FailureKind::Features, e.to_string()))?;
            let mut trained = estimator
                .fit(&x, m.features.len(), train.seed)
                .map_err(|e| (FailureKind::Score, format!("fitting failed: {e}")))?;
            // A predecessor saved with joblib's compression: the same compression. (A skops
            // file's successor is a pickle: there is no skops writer.)
            let file = layout::model_file(&m.device, &m.tag, &m.version);
            let codec = match current.get(&file) {
                Some(Ok(bytes)) => fleetscore_pickle::detect(bytes).unwrap_or(Compression::None),
                _ => Compression::None,
            };
            if codec != Compression::None {
                trained.pickle =
                    fleetscore_pickle::compress(&trained.pickle, codec).map_err(|e| {
                        (
                            FailureKind::Score,
                            format!("compressing with {}: {e}", codec.name()),
                        )
                    })?;
            }
            Ok((estimator, trained))
        })();
        let (estimator, trained) = match fitted {
            Ok(f) => f,
            Err((kind, reason)) => {
                line(format!("model {}/{}: FAILED: {reason}", m.device, m.tag));
                failed(&mut summary, &mut result, m, kind, reason);
                continue;
            }
        };
        let metrics: BTreeMap<String, f64> = trained
            .metrics
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let outliers = metrics
            .get("train_outlier_fraction")
            .map_or(0, |f| (f * n as f64).round() as u64);
        let training = Training {
            run: spec.id.clone(),
            from: super::rfc3339(spec.from_ms),
            to: super::rfc3339(spec.to_ms),
            rows: n as u64,
            params: estimator.params(train.seed),
            metrics,
        };
        let source = format!("fleetscore train, run {}", spec.id);
        let imported = importer.add_trained(
            &NewModel {
                device: &m.device,
                tag: &m.tag,
                bytes: &trained.pickle,
                source: &source,
                features: Some(&m.features),
            },
            training,
        );
        let (meta, _) = match imported {
            Ok(i) => i,
            // The store failing is the task's problem (retried); a fit the registry refuses
            // is this model's.
            Err(e @ Error::Store(_)) => return Err(e),
            Err(e) => {
                let reason = format!("the fitted model was refused: {e}");
                line(format!("model {}/{}: FAILED: {reason}", m.device, m.tag));
                failed(&mut summary, &mut result, m, FailureKind::Load, reason);
                continue;
            }
        };
        line(format!(
            "model {}/{}: {} fitted on {n} rows ({outliers} outside): version {} replaces {}",
            m.device,
            m.tag,
            estimator.describe(),
            meta.version,
            m.version
        ));
        result.models_scored += 1;
        result.rows += n as u64;
        result.anomalies += outliers;
        summary.scored.push(Scored {
            device: m.device.clone(),
            tag: m.tag.clone(),
            version: meta.version,
            rows: n as u64,
            anomalies: outliers,
        });
    }
    result.score_seconds = fit_started.elapsed().as_secs_f64();
    let write_started = Instant::now();
    // Every fit of the task becomes current at once, packed together.
    importer.finish()?;
    result.write_seconds = write_started.elapsed().as_secs_f64();
    let done = format!(
        "done: {} models trained, {} skipped, {} failed; {} rows; read {:.3}s, fit {:.3}s, import {:.3}s",
        result.models_scored,
        result.models_without_data,
        result.failures.len(),
        result.rows,
        result.read_seconds,
        result.score_seconds,
        result.write_seconds
    );
    finish(store, summary, result, log, &done, attempt, requests)
}
