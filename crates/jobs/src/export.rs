//! Exports a run's predictions: per model, the reference architecture's CSV shape
//! (`TS,Device,Tag,Val,Prediction`), or one Parquet file that pandas, polars and duckdb read.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use arrow_array::{
    Array, Float64Array, Int8Array, RecordBatch, StringArray, TimestampMillisecondArray,
};

use fleetscore_store::{Store, layout};
use fleetscore_table::Text;

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
/// holds one shard at a time whatever the run's size (two with CSV, one per thread).
pub fn export(store: &Store, run_id: &str, format: Format, dir: &Path) -> Result<Vec<PathBuf>> {
    crate::run::check_run_id(run_id)?;
    let shards = store.list(&layout::predictions_dir(run_id))?;
    if shards.is_empty() && crate::run::record(store, run_id)?.is_none() {
        return Err(Error::Invalid(format!("no run {run_id:?} in the store")));
    }
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let keys: Vec<&str> = shards.iter().map(|s| s.key.as_str()).collect();
    match format {
        Format::Parquet => {
            let path = dir.join(format!("predictions_{run_id}.parquet"));
            export_parquet(store, &keys, &path)?;
            Ok(vec![path])
        }
        Format::Csv => export_csv(store, &keys, dir),
    }
}

fn io(p: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("cannot write {}: {e}", p.display()))
}

/// One Parquet file of every shard's rows, written beside `path` and renamed into place when
/// complete. Shards written by one version share one layout (`parquet_direct`'s), so their row
/// groups are copied into the file as they are encoded, page for page, with no decoding; if a
/// shard's layout differs (a run finished by workers of another version), every shard is
/// decoded and encoded again instead.
fn export_parquet(store: &Store, keys: &[&str], path: &Path) -> Result<()> {
    // Hidden, and ending as the file does: the table writer picks the format by extension.
    let tmp = path.with_file_name(format!(
        ".partial-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("export.parquet")
    ));
    let result = (|| {
        if !concat_shards(store, keys, &tmp)? {
            let mut writer =
                fleetscore_table::create(&tmp, fleetscore_table::predictions::schema())?;
            for key in keys {
                for b in fleetscore_table::from_parquet_bytes(key, store.get(key)?)? {
                    writer.write(&b)?;
                }
            }
            writer.finish()?;
        }
        std::fs::rename(&tmp, path).map_err(|e| io(path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Copies the shards' row groups into one file at `path`; `false` if a shard's layout is not
/// the first one's.
fn concat_shards(store: &Store, keys: &[&str], path: &Path) -> Result<bool> {
    let file = std::fs::File::create(path).map_err(|e| io(path, e))?;
    let mut concat = fleetscore_table::ParquetConcat::new(
        std::io::BufWriter::with_capacity(1 << 20, file),
        path,
        fleetscore_table::predictions::schema(),
    );
    for key in keys {
        if !concat.append(key, store.get(key)?)? {
            return Ok(false);
        }
    }
    concat.finish()?;
    Ok(true)
}

/// One CSV per model. Shards are shared out between two threads; a model's rows are all in
/// one shard (a task scores each of its models once), so each file is written by one thread.
fn export_csv(store: &Store, keys: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    let results: Vec<Result<HashSet<PathBuf>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut written = HashSet::new();
                    let mut line = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(key) = keys.get(i) else {
                            return Ok(written);
                        };
                        let bytes = store.get(key)?;
                        let schema = fleetscore_table::with_dictionary_text(
                            &fleetscore_table::predictions::schema(),
                        );
                        for b in fleetscore_table::from_parquet_bytes_as(key, bytes, schema)? {
                            write_models(&b, dir, &mut line, &mut written)?;
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("export thread panicked"))
            .collect()
    });
    let mut written = BTreeSet::new();
    for r in results {
        for path in r? {
            // A task scores each of its models once, so a model's rows are in one shard.
            if !written.insert(path.clone()) {
                return Err(Error::Invalid(format!(
                    "the rows of {} are in more than one shard",
                    path.display()
                )));
            }
        }
    }
    Ok(written.into_iter().collect())
}

/// Writes each model's rows of a batch (runs of one device and tag) to its CSV,
/// `predictions_{device}_{tag}.csv`, appending when the file was started from an earlier
/// batch.
fn write_models(
    b: &RecordBatch,
    dir: &Path,
    buf: &mut Vec<u8>,
    written: &mut HashSet<PathBuf>,
) -> Result<()> {
    let corrupt = || Error::Corrupt {
        what: "prediction table".into(),
        message: "unexpected columns".into(),
    };
    let col = |name: &str| b.column_by_name(name).ok_or_else(corrupt);
    let text = |name: &str| match Text::of(col(name)?) {
        Some(Text::Dict(keys, values, _)) if keys.null_count() == 0 => Ok((keys.values(), values)),
        _ => Err(corrupt()),
    };
    let (device_keys, devices) = text("device")?;
    let (tag_keys, tags) = text("tag")?;
    let ts = col("ts")?
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(corrupt)?
        .values();
    let value = col("value")?
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(corrupt)?
        .values();
    let anomaly = col("anomaly")?
        .as_any()
        .downcast_ref::<Int8Array>()
        .ok_or_else(corrupt)?
        .values();
    fn name(values: &StringArray, k: i32) -> Option<&str> {
        let k = usize::try_from(k).ok().filter(|&k| k < values.len())?;
        Some(values.value(k))
    }
    let mut times = TimeText::default();
    let mut i = 0;
    while i < b.num_rows() {
        let (dk, tk) = (device_keys[i], tag_keys[i]);
        let mut j = i + 1;
        while j < b.num_rows() && device_keys[j] == dk && tag_keys[j] == tk {
            j += 1;
        }
        let (Some(device), Some(tag)) = (name(devices, dk), name(tags, tk)) else {
            return Err(corrupt());
        };
        let path = dir.join(format!(
            "predictions_{}_{}.csv",
            layout::segment(device),
            layout::segment(tag)
        ));
        // A model whose rows span batches is appended to, not overwritten.
        let again = !written.insert(path.clone());
        buf.clear();
        if !again {
            buf.extend_from_slice(b"TS,Device,Tag,Val,Prediction\n");
        }
        let sensor = format!(",{},{},", csv_field(device), csv_field(tag));
        for r in i..j {
            times.push(buf, ts[r]);
            buf.extend_from_slice(sensor.as_bytes());
            push_python_float(buf, value[r]);
            buf.push(b',');
            match anomaly[r] {
                a @ 0..=9 => buf.push(b'0' + a as u8),
                a => buf.extend_from_slice(a.to_string().as_bytes()),
            }
            buf.push(b'\n');
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(again)
            .write(true)
            .truncate(!again)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        (&file).write_all(buf).map_err(|e| io(&path, e))?;
        i = j;
    }
    Ok(())
}

/// Writes times as [`format_time`] does, formatting each day's date once.
#[derive(Default)]
struct TimeText {
    /// The day (since the epoch) and its `YYYY-MM-DD ` prefix.
    day: Option<(i64, String)>,
}

impl TimeText {
    const DAY_MS: i64 = 86_400_000;

    fn push(&mut self, buf: &mut Vec<u8>, ms: i64) {
        let day = ms.div_euclid(Self::DAY_MS);
        if self.day.as_ref().is_none_or(|(d, _)| *d != day) {
            let text = format_time(day * Self::DAY_MS);
            // Only the common shape is assembled here; anything else (years outside 0..=9999,
            // times chrono cannot represent) is formatted whole.
            let prefix = (text.len() == 23 && text.ends_with(" 00:00:00.000"))
                .then(|| text[..11].to_string());
            match prefix {
                Some(p) => self.day = Some((day, p)),
                None => {
                    self.day = None;
                    buf.extend_from_slice(format_time(ms).as_bytes());
                    return;
                }
            }
        }
        let (_, prefix) = self.day.as_ref().expect("set above");
        buf.extend_from_slice(prefix.as_bytes());
        let t = ms.rem_euclid(Self::DAY_MS);
        let (h, m, s, f) = (t / 3_600_000, t / 60_000 % 60, t / 1_000 % 60, t % 1_000);
        let digit = |v: i64| b'0' + v as u8;
        buf.extend_from_slice(&[
            digit(h / 10),
            digit(h % 10),
            b':',
            digit(m / 10),
            digit(m % 10),
            b':',
            digit(s / 10),
            digit(s % 10),
            b'.',
            digit(f / 100),
            digit(f / 10 % 10),
            digit(f % 10),
        ]);
    }
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
    let mut buf = Vec::new();
    push_python_float(&mut buf, v);
    String::from_utf8(buf).expect("ASCII")
}

/// [`python_float`] appended to `buf`. Ryū gives the same shortest digits and the same fixed
/// notation except at exponent -5 (`0.00001`), and writes exponents bare (`1e-7`, `1e16`).
fn push_python_float(buf: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        buf.extend_from_slice(match v {
            v if v.is_nan() => b"nan".as_slice(),
            v if v > 0.0 => b"inf",
            _ => b"-inf",
        });
        return;
    }
    let mut ryu = ryu::Buffer::new();
    let s = ryu.format_finite(v).as_bytes();
    let (sign, body) = match s.strip_prefix(b"-") {
        Some(b) => (b"-".as_slice(), b),
        None => (b"".as_slice(), s),
    };
    buf.extend_from_slice(sign);
    if let Some(e) = body.iter().position(|&c| c == b'e') {
        push_exponent(buf, &body[..e], &body[e + 1..]);
    } else if let Some(digits) = body.strip_prefix(b"0.0000").filter(|d| d[0] != b'0') {
        // 0.0000ddd: exponent -5, which Python writes in scientific notation.
        buf.push(digits[0]);
        if digits.len() > 1 {
            buf.push(b'.');
            buf.extend_from_slice(&digits[1..]);
        }
        buf.extend_from_slice(b"e-05");
    } else {
        buf.extend_from_slice(body);
    }
}

/// `mantissa` then `e`, the exponent's sign and at least two of its digits.
fn push_exponent(buf: &mut Vec<u8>, mantissa: &[u8], exponent: &[u8]) {
    buf.extend_from_slice(mantissa);
    buf.push(b'e');
    let (negative, digits) = match exponent.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, exponent),
    };
    buf.push(if negative { b'-' } else { b'+' });
    if digits.len() < 2 {
        buf.push(b'0');
    }
    buf.extend_from_slice(digits);
}

#[cfg(test)]
mod tests {
    use super::{TimeText, format_time, python_float};

    /// Python's repr spelled out from Rust's shortest `{:e}` digits: the oracle for the fast
    /// path.
    fn repr(v: f64) -> String {
        let sci = format!("{v:e}");
        let (mantissa, exp) = sci.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        let (sign, mantissa) = match mantissa.strip_prefix('-') {
            Some(m) => ("-", m),
            None => ("", mantissa),
        };
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let body = if (-4..16).contains(&exp) {
            let point = exp + 1;
            if point <= 0 {
                format!("0.{}{digits}", "0".repeat((-point) as usize))
            } else if point as usize >= digits.len() {
                format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
            } else {
                format!(
                    "{}.{}",
                    &digits[..point as usize],
                    &digits[point as usize..]
                )
            }
        } else {
            let m = if digits.len() > 1 {
                format!("{}.{}", &digits[..1], &digits[1..])
            } else {
                digits
            };
            format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
        };
        format!("{sign}{body}")
    }

    #[test]
    fn floats_are_written_as_the_repr_oracle_writes_them() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..200_000 {
            let v = match i % 4 {
                // Any finite bit pattern.
                0 => f64::from_bits(next() & !(0x7ff << 52) | ((next() % 0x7ff) << 52)),
                // Readings with two decimals.
                1 => (next() % 2_000_000) as f64 / 100.0 - 10_000.0,
                // Around the exponents where the notation changes.
                2 => (next() % 1_000) as f64 * 10f64.powi((next() % 44) as i32 - 22),
                _ => -((next() % 100_000) as f64) * 1e-9,
            };
            let (got, want) = (python_float(v), repr(v));
            if got == want {
                continue;
            }
            // When the value lies exactly halfway between two shortest spellings, Rust's `{:e}`
            // rounds the last digit up and Python (like Ryū) to even: the same digits but the
            // last, one apart, reading back to the same number.
            let split = |s: &str| {
                let (m, e) = s.split_once('e').unwrap_or((s, ""));
                (m.to_string(), e.to_string())
            };
            let ((gm, ge), (wm, we)) = (split(&got), split(&want));
            let last = |m: &str| m.bytes().last().unwrap() as i32;
            assert!(
                ge == we
                    && gm.len() == wm.len()
                    && gm[..gm.len() - 1] == wm[..wm.len() - 1]
                    && (last(&gm) - last(&wm)).abs() == 1
                    && got.parse::<f64>() == Ok(v),
                "{v:e}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn times_are_written_as_format_time_writes_them() {
        let mut t = TimeText::default();
        let mut buf = Vec::new();
        for ms in [
            0,
            1_767_225_600_000,
            1_767_225_605_123,
            1_767_311_999_999,
            1_767_312_000_000,
            -1,
            -86_400_001,
            253_402_300_799_999,
            253_402_300_800_000,
            1_535_497_205_000,
        ] {
            buf.clear();
            t.push(&mut buf, ms);
            assert_eq!(
                String::from_utf8(buf.clone()).unwrap(),
                format_time(ms),
                "{ms}"
            );
        }
    }

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
            // Exactly ...798.25: Python rounds the tie to even.
            (997765097738798.2, "997765097738798.2"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(python_float(v), want, "{v:?}");
        }
    }
}
