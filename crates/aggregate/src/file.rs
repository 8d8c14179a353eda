//! The aggregation over a readings file (CSV or Parquet with `device`, `tag`, `ts` and
//! `value` columns), for backfills and archived data: the same windows, filters and
//! statistics as the stream, with the whole file as one partition whose windows all close at
//! its end (rows may come in any order; none is late).

use std::collections::HashMap;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use fleetscore_core::reading::parse_ts;
use fleetscore_table::Text;
use fleetscore_table::windows::{self, Row};

use crate::engine::{Closed, Config, Engine};
use crate::error::{Error, Result};

/// Rows per batch read.
const BATCH_ROWS: usize = 65_536;

/// Aggregates a readings file; returns the engine (for ids and counters) and every window,
/// sorted by device, tag and start.
pub fn aggregate(path: &Path, config: Config) -> Result<(Engine, Vec<Closed>)> {
    let mut config = config;
    // Nothing closes before the end of the file, so no reading is late whatever its order.
    config.delay_ms = i64::MAX;
    config.lateness_ms = 0;
    let mut engine = Engine::new(config, 1)?;
    let reader = fleetscore_table::open_dictionary_text(path, BATCH_ROWS)?;
    // The columns are checked before any row, so a file without rows is no success either.
    let schema = reader.schema();
    for name in ["device", "tag", "ts", "value"] {
        if !schema
            .fields()
            .iter()
            .any(|f| f.name().eq_ignore_ascii_case(name))
        {
            return Err(Error::Invalid(format!(
                "{}: no `{name}` column (readings need device, tag, ts and value)",
                path.display()
            )));
        }
    }
    let mut row = 0u64;
    let mut resolver = Resolver::default();
    for batch in reader {
        let batch = batch?;
        push_batch(&mut engine, &mut resolver, path, &batch, row)?;
        row += batch.num_rows() as u64;
    }
    engine.advance(0, i64::MAX);
    let (mut closed, _) = engine.take();
    let rank = engine.ranks();
    closed.sort_unstable_by_key(|c| (rank[c.series as usize], c.start));
    Ok((engine, closed))
}

/// Writes windows (sorted as [`aggregate`] returns them) as a features Parquet file, through a
/// temporary file renamed into place.
pub fn write(engine: &Engine, closed: &[Closed], path: &Path) -> Result<()> {
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
    {
        return Err(Error::Invalid(format!(
            "{}: features are written as Parquet (a .parquet file)",
            path.display()
        )));
    }
    let rows: Vec<Row<'_>> = closed
        .iter()
        .map(|c| {
            let (device, tag) = engine.ids(c.series);
            Row {
                device,
                tag,
                start: c.start,
                end: c.end,
                stats: c.stats,
            }
        })
        .collect();
    let bytes = windows::to_parquet(&rows)?;
    let tmp = path.with_extension("parquet.tmp");
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", path.display()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

/// Series ids of rows: for dictionary columns, a table from (device key, tag key) kept while
/// the dictionaries stay the same (a Parquet column chunk's batches share one).
#[derive(Default)]
struct Resolver {
    dictionaries: Option<(ArrayRef, ArrayRef)>,
    /// `ids[device key * tags + tag key]`: series id + 1, or 0 when not yet seen.
    ids: Vec<u32>,
    tags: usize,
    /// Beyond this many entries a table is too big: a map instead.
    map: HashMap<(u32, u32), u32>,
}

/// The most entries a dense (device key, tag key) table may have.
const MAX_DENSE: usize = 1 << 24;

impl Resolver {
    fn reset(&mut self, devices: &ArrayRef, tags: &ArrayRef) {
        let same = self.dictionaries.as_ref().is_some_and(|(d, t)| {
            (std::sync::Arc::ptr_eq(d, devices) || d.to_data() == devices.to_data())
                && (std::sync::Arc::ptr_eq(t, tags) || t.to_data() == tags.to_data())
        });
        if same {
            return;
        }
        self.dictionaries = Some((devices.clone(), tags.clone()));
        self.tags = tags.len();
        self.ids.clear();
        self.map.clear();
        let cells = devices.len().saturating_mul(tags.len());
        if cells <= MAX_DENSE {
            self.ids.resize(cells, 0);
        }
    }
}

fn push_batch(
    engine: &mut Engine,
    resolver: &mut Resolver,
    path: &Path,
    batch: &RecordBatch,
    first_row: u64,
) -> Result<()> {
    let column = |name: &str| -> Result<&ArrayRef> {
        let schema = batch.schema_ref();
        let i = schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "{}: no `{name}` column (readings need device, tag, ts and value)",
                    path.display()
                ))
            })?;
        Ok(batch.column(i))
    };
    let at = |i: usize| format!("{} row {}", path.display(), first_row + i as u64);
    let ts = times(column("ts")?, &at)?;
    let values = values(column("value")?, &at)?;
    // Large strings, views and other dictionaries (pandas 3, Polars) read as Utf8 text does;
    // integer ids (as the reference fleet's are) as their decimal text.
    let id_text = |a: &ArrayRef| -> Result<ArrayRef> {
        let a = if a.data_type().is_integer() {
            arrow_cast::cast(a, &DataType::Utf8)
                .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?
        } else {
            a.clone()
        };
        Ok(fleetscore_table::normalize_text(&a)?)
    };
    let device = id_text(column("device")?)?;
    let tag = id_text(column("tag")?)?;
    let (device, tag) = (text(path, &device, "device")?, text(path, &tag, "tag")?);
    let n = batch.num_rows();
    if let (Text::Dict(_, _, devices), Text::Dict(_, _, tags)) = (&device, &tag) {
        resolver.reset(devices, tags);
    }
    // Consecutive rows of one series are common in plain text: remember the last one.
    let mut plain: Option<(String, String, u32)> = None;
    for i in 0..n {
        let (Some(k), Some(t)) = (device.key(i), tag.key(i)) else {
            return Err(Error::Invalid(format!("{}: no device or tag", at(i))));
        };
        let id = match (&device, &tag) {
            (Text::Dict(..), Text::Dict(..)) => {
                let cell = k as usize * resolver.tags + t as usize;
                match resolver.ids.get(cell) {
                    Some(&id) if id != 0 => id - 1,
                    Some(_) => {
                        let id = engine.series_id(0, device.value(k), tag.value(t));
                        resolver.ids[cell] = id + 1;
                        id
                    }
                    None => *resolver
                        .map
                        .entry((k, t))
                        .or_insert_with(|| engine.series_id(0, device.value(k), tag.value(t))),
                }
            }
            _ => {
                let (d, g) = (device.value(k), tag.value(t));
                match &plain {
                    Some((pd, pg, id)) if pd == d && pg == g => *id,
                    _ => {
                        let id = engine.series_id(0, d, g);
                        plain = Some((d.to_owned(), g.to_owned(), id));
                        id
                    }
                }
            }
        };
        engine.push(id, first_row + i as u64, ts[i], values[i]);
    }
    Ok(())
}

fn text<'a>(path: &Path, a: &'a ArrayRef, name: &str) -> Result<Text<'a>> {
    Text::of(a).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: `{name}` is {}, not text",
            path.display(),
            a.data_type()
        ))
    })
}

/// The `ts` column as epoch milliseconds: a timestamp of any unit, integers (milliseconds) or
/// text as ingest accepts it.
fn times(a: &ArrayRef, at: &dyn Fn(usize) -> String) -> Result<Vec<i64>> {
    if a.null_count() > 0 {
        let i = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
        return Err(Error::Invalid(format!("{}: no ts", at(i))));
    }
    // Text of any width (large strings, views, dictionaries) is parsed as Utf8 text is.
    if a.data_type() != &DataType::Utf8 {
        let text = fleetscore_table::plain_text(a)?;
        if text.data_type() == &DataType::Utf8 {
            return times(&text, at);
        }
    }
    Ok(match a.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => a
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec(),
        DataType::Timestamp(TimeUnit::Second, _) => a
            .as_primitive::<TimestampSecondType>()
            .values()
            .iter()
            .map(|v| v * 1000)
            .collect(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => a
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .iter()
            .map(|v| v.div_euclid(1000))
            .collect(),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => a
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .iter()
            .map(|v| v.div_euclid(1_000_000))
            .collect(),
        DataType::Int64 => a.as_primitive::<Int64Type>().values().to_vec(),
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            let mut out = Vec::with_capacity(s.len());
            for (i, v) in s.iter().enumerate() {
                let v = v.unwrap_or_default();
                out.push(
                    parse_ts(v).map_err(|e| Error::Invalid(format!("{}: ts: {}", at(i), e.0)))?,
                );
            }
            out
        }
        other => {
            return Err(Error::Invalid(format!(
                "{}: `ts` is {other}, not a time",
                at(0)
            )));
        }
    })
}

/// The `value` column as doubles: floats, integers or text numbers.
fn values(a: &ArrayRef, at: &dyn Fn(usize) -> String) -> Result<Vec<f64>> {
    if a.null_count() > 0 {
        let i = (0..a.len()).find(|&i| a.is_null(i)).unwrap_or(0);
        return Err(Error::Invalid(format!("{}: no value", at(i))));
    }
    Ok(match a.data_type() {
        DataType::Float64 => a.as_primitive::<Float64Type>().values().to_vec(),
        DataType::Float32 => a
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|&v| f64::from(v))
            .collect(),
        DataType::Int64 => a
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|&v| v as f64)
            .collect(),
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            let mut out = Vec::with_capacity(s.len());
            for (i, v) in s.iter().enumerate() {
                let v = v.unwrap_or_default().trim();
                out.push(v.parse::<f64>().map_err(|_| {
                    Error::Invalid(format!("{}: value `{v}` is not a number", at(i)))
                })?);
            }
            out
        }
        other => {
            return Err(Error::Invalid(format!(
                "{}: `value` is {other}, not a number",
                at(0)
            )));
        }
    })
}
