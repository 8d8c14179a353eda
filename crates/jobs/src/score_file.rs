//! Scoring one table file with one model (`fleetscore models score`): the file streamed in
//! batches — read → filter → feature matrix → score on every core → write, reading and writing
//! on threads of their own so they overlap with scoring — into a temporary
//! file beside the output, renamed into place only when complete, so a failed run never
//! leaves a truncated table under the requested name.

use std::path::{Path, PathBuf};

use fleetscore_models::Model;
use fleetscore_table::{RecordBatch, append_columns, feature_matrix, filter_equals};

use crate::error::{Error, Result};

/// What to score and how.
#[derive(Debug, Clone)]
pub struct ScoreFile<'a> {
    /// Input table (`.csv` or `.parquet`).
    pub input: &'a Path,
    /// Output table (`.csv` or `.parquet`; the format may differ from the input's).
    pub output: &'a Path,
    /// Input columns that feed the model, in its feature order ([`feature_columns`]).
    pub columns: &'a [String],
    /// Only rows where every (column, value) holds are scored.
    pub conditions: &'a [(String, String)],
    /// Threads to score with.
    pub threads: usize,
    /// Rows read and scored per batch.
    pub batch_rows: usize,
}

/// What a [`score_file`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scored {
    /// Rows scored.
    pub rows: u64,
    /// Rows predicted as anomalies.
    pub anomalies: u64,
}

/// The feature columns: as given, or else the names the model stores (when it was fitted on a
/// DataFrame); their number must be the model's.
pub fn feature_columns(model: &Model, given: &[String]) -> Result<Vec<String>> {
    let info = model.info();
    let columns = if given.is_empty() {
        match &info.feature_names {
            Some(names) => names.clone(),
            None => {
                return Err(Error::Invalid(format!(
                    "--features is needed: the model does not store feature names (it takes {} feature{})",
                    info.n_features,
                    if info.n_features == 1 { "" } else { "s" }
                )));
            }
        }
    } else {
        given.to_vec()
    };
    if columns.len() != info.n_features {
        return Err(Error::Invalid(format!(
            "the model expects {} features, --features names {} ({})",
            info.n_features,
            columns.len(),
            columns.join(",")
        )));
    }
    Ok(columns)
}

/// Writes every input row that passes the conditions with `score` (the decision function) and
/// `anomaly` (1 where `predict` gives -1) appended; `progress` hears the rows scored so far
/// after each batch.
pub fn score_file(
    model: &Model,
    request: &ScoreFile<'_>,
    progress: &mut dyn FnMut(u64),
) -> Result<Scored> {
    let (input, output) = (request.input, request.output);
    // The output's format first: a name it cannot be written under fails before any work.
    fleetscore_table::Format::for_writing(output)?;
    let context = |what: &str, e: &dyn std::fmt::Display| {
        Error::Invalid(format!("{what} {}: {e}", input.display()))
    };
    let mut reader = fleetscore_table::open(input, request.batch_rows)
        .map_err(|e| context("cannot open input", &e))?;
    // Every feature column must be there, even in a file without rows.
    fleetscore_table::require_columns(&reader.schema(), request.columns)
        .map_err(|e| context("bad input in", &e))?;
    for taken in ["score", "anomaly"] {
        if reader.schema().column_with_name(taken).is_some() {
            return Err(Error::Invalid(format!(
                "{} already has a column `{taken}`, which the output would repeat",
                input.display()
            )));
        }
    }
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", parent.display())))?;
    }
    // The output's columns: the input's, then the two it gains.
    let out_schema = append_columns(
        &RecordBatch::new_empty(reader.schema()),
        "score",
        vec![],
        "anomaly",
        vec![],
    )?
    .schema();
    let tmp = temp_path(output);
    let mut scored = Scored::default();
    // Three stages on their own threads, a batch or two apart: reading (and decoding) the next
    // batch and encoding the last one overlap with scoring this one.
    let result: Result<()> = std::thread::scope(|scope| {
        let (batches, read) = std::sync::mpsc::sync_channel(1);
        let reader_thread = scope.spawn(move || {
            loop {
                let start = reader.next_position();
                let Some(batch) = reader.next() else { break };
                let failed = batch.is_err();
                if batches.send((start, batch)).is_err() || failed {
                    break;
                }
            }
        });
        let (scored_batches, to_write) = std::sync::mpsc::sync_channel::<RecordBatch>(1);
        let tmp = &tmp;
        // The output file is created at once, on the writer's thread, while the first batch is
        // read. It is finished even when scoring fails; the caller then removes it.
        let writer_thread = scope.spawn(move || -> Result<()> {
            let mut writer = fleetscore_table::create(tmp, out_schema)
                .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", output.display())))?;
            for out in to_write {
                writer.write(&out)?;
            }
            writer.finish()?;
            Ok(())
        });
        let scoring: Result<()> = (|| {
            let mut x = Vec::new();
            for (start, batch) in read {
                let batch = batch.map_err(|e| context("cannot read", &e))?;
                let batch = filter_equals(&batch, request.conditions)?;
                feature_matrix(&batch, request.columns, start, &mut x)
                    .map_err(|e| context("bad input in", &e))?;
                let n = batch.num_rows();
                let mut decision = vec![0.0; n];
                let mut predicted = vec![0i8; n];
                model
                    .score_parallel(&x, &mut decision, &mut predicted, request.threads.max(1))
                    .map_err(|e| context("cannot score", &e))?;
                let anomaly: Vec<i8> = predicted.iter().map(|&p| i8::from(p == -1)).collect();
                scored.anomalies += anomaly.iter().map(|&a| a as u64).sum::<u64>();
                scored.rows += n as u64;
                let out = append_columns(&batch, "score", decision, "anomaly", anomaly)?;
                if scored_batches.send(out).is_err() {
                    // The writer stopped on an error, which its join reports.
                    break;
                }
                progress(scored.rows);
            }
            Ok(())
        })();
        drop(scored_batches);
        reader_thread
            .join()
            .expect("the reader thread does not panic");
        let written = writer_thread
            .join()
            .expect("the writer thread does not panic");
        scoring?;
        written?;
        std::fs::rename(tmp, output).map_err(|e| {
            Error::Invalid(format!(
                "cannot move the output into {}: {e}",
                output.display()
            ))
        })
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(scored)
}

/// Where the output is written before it is complete: beside its destination (so the rename
/// stays on one file system), hidden, and named by the process.
fn temp_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = output
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.partial-{}.{ext}", std::process::id()))
}
