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
            let mut writer =
                fleetscore_table::create(&path, fleetscore_table::predictions::schema())?;
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
            python_float(value.value(i)),
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

/// A float as Python's `repr` (and so pandas' `to_csv`) writes it: the shortest digits that
/// read back to the same number, in fixed notation with at least one decimal (`108.0`) when the
/// decimal exponent is in -4..16, else in scientific notation with a signed two-digit exponent
/// at least (`1e-05`, `1.5e+16`). The reference pipeline's CSVs were written that way.
pub fn python_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Rust's `{:e}` gives the same shortest digits: `-1.08e2`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` has an exponent");
    let exp: i32 = exp.parse().expect("integer exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!(
                "{}.{}",
                &digits[..point as usize],
                &digits[point as usize..]
            )
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 {
            format!("{}.{}", &digits[..1], &digits[1..])
        } else {
            digits
        };
        format!(
            "{sign}{m}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::python_float;

    #[test]
    fn floats_are_written_as_python_writes_them() {
        // Each expectation is Python's repr() of the same float.
        for (v, want) in [
            (108.0, "108.0"),
            (10.16, "10.16"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (123456789012345.6, "123456789012345.6"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (-2.5e-7, "-2.5e-07"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(python_float(v), want, "{v:?}");
        }
    }
}
