//! Exports a run's predictions: per model, the reference architecture's CSV shape
//! (`TS,Device,Tag,Val,Prediction`), or one Parquet file that pandas, polars and duckdb read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float64Array, Int8Array, RecordBatch, StringArray, TimestampMillisecondArray,
};

use fleetscore_store::{Store, layout};

use crate::error::{Error, Result};
use crate::readings::format_time;
use crate::run::predictions_schema;

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One CSV per model, in the reference's shape.
    Csv,
    /// One Parquet file with every column.
    Parquet,
}

/// Writes a run's predictions into `dir`; returns the files written. Shard by shard, so memory
/// holds one shard at a time whatever the run's size.
pub fn export(store: &Store, run_id: &str, format: Format, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::run::check_run_id(run_id)?;
    let shards = store.list(&layout::predictions_dir(run_id))?;
    if shards.is_empty() && crate::run::record(store, run_id)?.is_none() {
        return Err(Error::Invalid(format!("no run {run_id:?} in the store")));
    }
    let io =
        |p: &Path, e: std::io::Error| Error::Invalid(format!("cannot write {}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    match format {
        Format::Parquet => {
            let path = dir.join(format!("predictions_{run_id}.parquet"));
            let mut writer = fleetscore_table::create(&path, predictions_schema())?;
            for shard in &shards {
                for b in fleetscore_table::from_parquet_bytes(&shard.key, store.get(&shard.key)?)? {
                    writer.write(&b)?;
                }
            }
            writer.finish()?;
            Ok(vec![path])
        }
        Format::Csv => {
            let mut written: BTreeSet<PathBuf> = BTreeSet::new();
            for shard in &shards {
                // A model's rows are all in one shard; its file is written once that shard is read.
                let mut files: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
                for b in fleetscore_table::from_parquet_bytes(&shard.key, store.get(&shard.key)?)? {
                    add_rows(&b, &mut files)?;
                }
                for ((device, tag), rows) in files {
                    let path = dir.join(format!(
                        "predictions_{}_{}.csv",
                        layout::segment(&device),
                        layout::segment(&tag)
                    ));
                    // Should a model ever span shards, its rows are appended, not overwritten.
                    let again = !written.insert(path.clone());
                    let file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(again)
                        .write(true)
                        .truncate(!again)
                        .open(&path)
                        .map_err(|e| io(&path, e))?;
                    let mut f = std::io::BufWriter::new(file);
                    let mut write = || -> std::io::Result<()> {
                        if !again {
                            writeln!(f, "TS,Device,Tag,Val,Prediction")?;
                        }
                        for r in &rows {
                            writeln!(f, "{r}")?;
                        }
                        f.flush()
                    };
                    write().map_err(|e| io(&path, e))?;
                }
            }
            Ok(written.into_iter().collect())
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
            format_time(ts.value(i)),
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
