//! The windows table (what the aggregator writes under `features/` and runs score): closed
//! windows as Parquet, written and read back.
//!
//! Columns: `device`, `tag` (text), `window_start`, `window_end` (UTC millisecond
//! timestamps), `count` (int64), then the doubles `mean`, `min`, `max`, `std`, `first`, `last`.
//! Rows are sorted by device, tag and window start, so device and tag are stored as a
//! dictionary and runs of rows.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};

use crate::error::{Error, Result};
use crate::parquet_direct::{self, Column, TextRunsBuilder, Values};
use crate::text::Text;

/// The statistics a window has, by column name: what a model's feature mapping may name.
pub const STATS: [&str; 7] = ["count", "mean", "min", "max", "std", "first", "last"];

/// A closed window's statistics over the readings in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Readings in the window (after filters and repeats).
    pub count: i64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sample standard deviation (n − 1); NaN for one reading.
    pub std: f64,
    /// The value with the earliest event time.
    pub first: f64,
    /// The value with the latest event time.
    pub last: f64,
}

/// One closed window, named.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row<'a> {
    /// Device id.
    pub device: &'a str,
    /// Tag (sensor) id.
    pub tag: &'a str,
    /// Window start, epoch milliseconds (inclusive).
    pub start: i64,
    /// Window end (exclusive).
    pub end: i64,
    /// Statistics.
    pub stats: Stats,
}

/// A features table's Parquet bytes; `rows` must be sorted by (device, tag, start).
pub fn to_parquet(rows: &[Row<'_>]) -> Result<Vec<u8>> {
    let mut device = TextRunsBuilder::default();
    let mut tag = TextRunsBuilder::default();
    let mut i = 0;
    while i < rows.len() {
        let d = rows[i].device;
        let n = rows[i..].iter().take_while(|r| r.device == d).count();
        device.push(d, n);
        let mut j = i;
        while j < i + n {
            let t = rows[j].tag;
            let m = rows[j..i + n].iter().take_while(|r| r.tag == t).count();
            tag.push(t, m);
            j += m;
        }
        i += n;
    }
    let (device, tag) = (device.finish(), tag.finish());
    let start: Vec<i64> = rows.iter().map(|r| r.start).collect();
    let end: Vec<i64> = rows.iter().map(|r| r.end).collect();
    let count: Vec<i64> = rows.iter().map(|r| r.stats.count).collect();
    let col = |f: fn(&Stats) -> f64| rows.iter().map(|r| f(&r.stats)).collect::<Vec<f64>>();
    let floats = [
        col(|s| s.mean),
        col(|s| s.min),
        col(|s| s.max),
        col(|s| s.std),
        col(|s| s.first),
        col(|s| s.last),
    ];
    let mut columns = vec![
        Column::new("device", Values::TextRuns(&device)),
        Column::new("tag", Values::TextRuns(&tag)),
        Column::new("window_start", Values::Timestamp(&start)),
        Column::new("window_end", Values::Timestamp(&end)),
        Column::new("count", Values::Int64(&count)),
    ];
    for (name, values) in STATS[1..].iter().zip(&floats) {
        columns.push(Column::new(name, Values::Float64(values)));
    }
    parquet_direct::write_table(&columns)
}

/// The windows of one series read back: starts, ends and one column per statistic (in
/// [`STATS`] order; `count` as a double), sorted by start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows {
    /// Window starts.
    pub start: Vec<i64>,
    /// Window ends.
    pub end: Vec<i64>,
    /// One column per statistic of [`STATS`].
    pub stats: [Vec<f64>; 7],
}

impl Windows {
    /// The column of a statistic named as in [`STATS`].
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        STATS
            .iter()
            .position(|s| *s == name)
            .map(|i| self.stats[i].as_slice())
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.start.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
    }
}

/// Reads features files (named by `name`, for errors), keeping windows that start in
/// `[from, to)` of the series `wanted` accepts, grouped by (device, tag) and sorted by start.
pub fn read(
    files: &[(String, bytes::Bytes)],
    from: i64,
    to: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
) -> Result<HashMap<(String, String), Windows>> {
    let mut out: HashMap<(String, String), Windows> = HashMap::new();
    for (name, bytes) in files {
        for batch in crate::from_parquet_bytes(name, bytes.clone())? {
            add_batch(name, &batch, from, to, wanted, &mut out)?;
        }
    }
    for w in out.values_mut() {
        // Sorted by start, each window once: while a compaction is replacing files with their
        // merge, a reader may see a window in both.
        if !w.start.is_sorted_by(|a, b| a < b) {
            let mut order: Vec<usize> = (0..w.len()).collect();
            order.sort_by_key(|&i| w.start[i]);
            order.dedup_by_key(|i| w.start[*i]);
            w.start = order.iter().map(|&i| w.start[i]).collect();
            w.end = order.iter().map(|&i| w.end[i]).collect();
            for c in &mut w.stats {
                *c = order.iter().map(|&i| c[i]).collect();
            }
        }
    }
    Ok(out)
}

fn add_batch(
    name: &str,
    batch: &RecordBatch,
    from: i64,
    to: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
    out: &mut HashMap<(String, String), Windows>,
) -> Result<()> {
    let bad = |message: String| Error::Schema {
        path: name.to_owned(),
        message,
    };
    let column = |c: &str| {
        batch
            .column_by_name(c)
            .ok_or_else(|| bad(format!("a features table has no `{c}` column")))
    };
    let text = |c: &str| -> Result<Text<'_>> {
        Text::of(column(c)?).ok_or_else(|| bad(format!("`{c}` is not text")))
    };
    let device = text("device")?;
    let tag = text("tag")?;
    let times = |c: &str| -> Result<Vec<i64>> {
        column(c)?
            .as_primitive_opt::<TimestampMillisecondType>()
            .map(|a| a.values().to_vec())
            .ok_or_else(|| bad(format!("`{c}` is not a millisecond time")))
    };
    let start = times("window_start")?;
    let end = times("window_end")?;
    let count = column("count")?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| bad("`count` is not an int64".into()))?
        .clone();
    let mut floats = Vec::with_capacity(6);
    for c in &STATS[1..] {
        floats.push(
            column(c)?
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(|| bad(format!("`{c}` is not a double")))?
                .clone(),
        );
    }
    // Rows come sorted by series: the series of the previous row, and whether it is wanted.
    let mut last: Option<((String, String), bool)> = None;
    for i in 0..batch.num_rows() {
        if start[i] < from || start[i] >= to {
            continue;
        }
        let (Some(dk), Some(tk)) = (device.key(i), tag.key(i)) else {
            return Err(bad(format!("row {i} has no device or tag")));
        };
        let (d, t) = (device.value(dk), tag.value(tk));
        if last.as_ref().is_none_or(|((ld, lt), _)| ld != d || lt != t) {
            let key = (d.to_owned(), t.to_owned());
            let want = wanted(d, t);
            if want {
                out.entry(key.clone()).or_default();
            }
            last = Some((key, want));
        }
        let Some((key, true)) = &last else { continue };
        let w = out.get_mut(key).expect("entered above");
        w.start.push(start[i]);
        w.end.push(end[i]);
        w.stats[0].push(count.value(i) as f64);
        for (k, f) in floats.iter().enumerate() {
            w.stats[k + 1].push(f.value(i));
        }
    }
    Ok(())
}

/// Merges features files into one table (each window once, sorted): what compaction writes.
pub fn merge(files: &[(String, bytes::Bytes)]) -> Result<Vec<u8>> {
    let windows = read(files, i64::MIN, i64::MAX, &|_, _| true)?;
    let mut series: Vec<(&(String, String), &Windows)> = windows.iter().collect();
    series.sort_by(|a, b| a.0.cmp(b.0));
    let mut rows = Vec::new();
    for ((device, tag), w) in series {
        for i in 0..w.len() {
            rows.push(Row {
                device,
                tag,
                start: w.start[i],
                end: w.end[i],
                stats: Stats {
                    count: w.stats[0][i] as i64,
                    mean: w.stats[1][i],
                    min: w.stats[2][i],
                    max: w.stats[3][i],
                    std: w.stats[4][i],
                    first: w.stats[5][i],
                    last: w.stats[6][i],
                },
            });
        }
    }
    to_parquet(&rows)
}
