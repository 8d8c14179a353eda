//! Exports a run's predictions: per model, the reference architecture's CSV shape
//! (`TS,Device,Tag,Val,Prediction`), or one Parquet file that pandas, polars and duckdb read.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float64Array, Int8Array, RecordBatch, StringArray, TimestampMillisecondArray,
};

use fleetscore_store::{Store, layout};

use crate::error::{Error, Result};
use crate::run::{predictions, predictions_schema, reference_time};

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One CSV per model, in the reference's shape.
    Csv,
    /// One Parquet file with every column.
    Parquet,
}

/// Writes a run's predictions into `dir`; returns the files written.
pub fn export(store: &Store, run_id: &str, format: Format, dir: &Path) -> Result<Vec<PathBuf>> {
    let batches = predictions(store, run_id)?;
    if batches.is_empty() && crate::run::record(store, run_id)?.is_none() {
        return Err(Error::Invalid(format!("no run {run_id:?} in the store")));
    }
    let io =
        |p: &Path, e: std::io::Error| Error::Invalid(format!("cannot write {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    match format {
        Format::Parquet => {
            let path = dir.join(format!("predictions_{run_id}.parquet"));
            let bytes = fleetscore_table::to_parquet_bytes(predictions_schema(), &batches)?;
            std::fs::write(&path, bytes).map_err(|e| io(&path, e))?;
            Ok(vec![path])
        }
        Format::Csv => {
            let mut files: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for b in &batches {
                add_rows(b, &mut files)?;
            }
            let mut written = Vec::new();
            for ((device, tag), rows) in files {
                let path = dir.join(format!(
                    "predictions_{}_{}.csv",
                    layout::segment(&device),
                    layout::segment(&tag)
                ));
                let mut f = std::io::BufWriter::new(
                    std::fs::File::create(&path).map_err(|e| io(&path, e))?,
                );
                let mut write = || -> std::io::Result<()> {
                    writeln!(f, "TS,Device,Tag,Val,Prediction")?;
                    for r in &rows {
                        writeln!(f, "{r}")?;
                    }
                    f.flush()
                };
                write().map_err(|e| io(&path, e))?;
                written.push(path);
            }
            Ok(written)
        }
    }
}

fn add_rows(b: &RecordBatch, files: &mut BTreeMap<(String, String), Vec<String>>) -> Result<()> {
    let corrupt = || Error::Corrupt {
        what: "prediction table".into(),
        message: "unexpected columns".into(),
    };
    let col = |name: &str| b.column_by_name(name).ok_or_else(corrupt);
    let device = col("device")?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(corrupt)?;
    let tag = col("tag")?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(corrupt)?;
    let ts = col("ts")?
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(corrupt)?;
    let value = col("value")?
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(corrupt)?;
    let anomaly = col("anomaly")?
        .as_any()
        .downcast_ref::<Int8Array>()
        .ok_or_else(corrupt)?;
    for i in 0..b.num_rows() {
        let key = (device.value(i).to_string(), tag.value(i).to_string());
        let line = format!(
            "{},{},{},{},{}",
            reference_time(ts.value(i)),
            csv_field(device.value(i)),
            csv_field(tag.value(i)),
            value.value(i),
            anomaly.value(i)
        );
        files.entry(key).or_default().push(line);
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
