//! Readings in the store: imported from CSV or Parquet in the long shape (time, device, tag,
//! value), partitioned by hour and device bucket, and read back a slice at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, SchemaRef, TimeUnit};

use fleetscore_store::{Store, layout};
use fleetscore_table::RowPosition;

use crate::error::{Error, Result};

/// Names of the input columns that hold each part of a reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// Event time: text (RFC 3339, or `YYYY-MM-DD HH:MM:SS[.fff]` taken as UTC), epoch
    /// milliseconds, or a timestamp column.
    pub time: String,
    /// Device id.
    pub device: String,
    /// Sensor tag.
    pub tag: String,
    /// The value.
    pub value: String,
}

impl Default for Columns {
    /// The reference fleet's names.
    fn default() -> Columns {
        Columns {
            time: "TS".into(),
            device: "Device".into(),
            tag: "Tag".into(),
            value: "Value".into(),
        }
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Readings imported.
    pub rows: u64,
    /// Parquet files written (files already present with the same content are not rewritten).
    pub files_written: usize,
    /// Files that were already in the store.
    pub files_present: usize,
    /// Hours covered (`YYYY-MM-DDTHH`).
    pub hours: BTreeSet<String>,
    /// Distinct (device, tag) pairs.
    pub sensors: usize,
    /// Earliest and latest event time, in epoch milliseconds.
    pub span: Option<(i64, i64)>,
}

pub use fleetscore_table::readings::schema;

/// [`schema`] as readings are written and read: device and tag as dictionaries. In the files
/// they are dictionary-encoded text; in memory, one key per row, so nothing compares or copies
/// a string per row.
fn stored_schema() -> SchemaRef {
    fleetscore_table::readings::stored_schema()
}

use fleetscore_store::layout::HOUR_MS;
pub use fleetscore_store::layout::hour_key;

/// Hour keys of every hour that overlaps `[from, to)`.
pub fn hours_between(from_ms: i64, to_ms: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut h = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    while h < to_ms {
        out.push(hour_key(h));
        h += HOUR_MS;
    }
    out
}

use fleetscore_core::time::check_time;
pub use fleetscore_core::time::{format_time, parse_time};

/// A column as text (numbers are formatted), for device and tag ids.
fn text_column(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("no column `{name}` in the input")))?;
    let cast = arrow_cast::cast(array, &DataType::Utf8)
        .map_err(|e| Error::Invalid(format!("column `{name}`: {e}")))?;
    Ok(cast
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8")
        .clone())
}

fn times_of(batch: &RecordBatch, name: &str, start: RowPosition) -> Result<Vec<i64>> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("no column `{name}` in the input")))?;
    // Text times of any width (large strings, views, dictionaries) are parsed as text.
    let array = &fleetscore_table::plain_text(array)?;
    let bad =
        |i: usize, m: String| Error::Invalid(format!("{}, column `{name}`: {m}", start.advance(i)));
    match array.data_type() {
        DataType::Utf8 => {
            let s = array.as_any().downcast_ref::<StringArray>().expect("Utf8");
            (0..s.len())
                .map(|i| {
                    if s.is_null(i) {
                        return Err(bad(i, "missing time".into()));
                    }
                    parse_time(s.value(i)).map_err(|e| bad(i, e.to_string()))
                })
                .collect()
        }
        // Integers are epoch milliseconds; timestamps are brought to milliseconds first.
        DataType::Int64
        | DataType::Int32
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Timestamp(_, _) => {
            let cast = |a: &dyn Array, t: &DataType| {
                arrow_cast::cast(a, t).map_err(|e| bad(0, e.to_string()))
            };
            let ms = if matches!(array.data_type(), DataType::Timestamp(_, _)) {
                let t = cast(
                    array.as_ref(),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )?;
                cast(t.as_ref(), &DataType::Int64)?
            } else {
                cast(array.as_ref(), &DataType::Int64)?
            };
            let v = ms.as_any().downcast_ref::<Int64Array>().expect("Int64");
            (0..v.len())
                .map(|i| {
                    if v.is_null(i) {
                        Err(bad(i, "missing time".into()))
                    } else {
                        let ms = v.value(i);
                        check_time(ms).map_err(|e| bad(i, e.to_string()))
                    }
                })
                .collect()
        }
        other => Err(bad(0, format!("type {other} is not a time"))),
    }
}

/// Rows buffered by an import before the largest partition is written out: bounds memory
/// whatever the file's size.
const IMPORT_BUFFER_ROWS: usize = 4_000_000;

/// Ids of the devices and tags an import has seen, so that buffered rows hold numbers.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    /// The id of `s`, checking it as a device or tag id (`what`) the first time it is seen.
    fn id(&mut self, what: &str, s: &str) -> std::result::Result<u32, String> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        fleetscore_core::check_id(what, s).map_err(|e| e.0)?;
        let id = self.names.len() as u32;
        self.names.push(s.to_string());
        self.ids.insert(s.to_string(), id);
        Ok(id)
    }
}

/// One buffered reading: time, device id, tag id, value.
type Row = (i64, u32, u32, f64);

/// Imports a CSV or Parquet file of readings into the store. Memory is bounded: when more than
/// a few million rows are buffered, the largest (hour, bucket) partition is written as a file
/// of its own. Flush points depend only on the input, so importing a file again writes the
/// same files (named by content) and stores nothing new.
pub fn import(store: &Store, path: &std::path::Path, columns: &Columns) -> Result<ImportSummary> {
    import_buffered(store, path, columns, IMPORT_BUFFER_ROWS)
}

/// [`import`] with a chosen number of rows buffered before a partition is written out.
pub fn import_buffered(
    store: &Store,
    path: &std::path::Path,
    columns: &Columns,
    buffer_rows: usize,
) -> Result<ImportSummary> {
    let wanted = [&columns.time, &columns.device, &columns.tag, &columns.value].map(String::as_str);
    let mut reader = fleetscore_table::open_columns(path, buffer_rows.clamp(1, 65_536), &wanted)?;
    // Every column named must be there, even in a file without rows: an empty file is an
    // error, not an import of nothing.
    let schema = reader.schema();
    for c in [&columns.time, &columns.device, &columns.tag, &columns.value] {
        if schema.column_with_name(c).is_none() {
            let has: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(Error::Invalid(format!(
                "{}: no column `{c}` (the file has {})",
                path.display(),
                if has.is_empty() {
                    "no columns".to_string()
                } else {
                    has.join(", ")
                }
            )));
        }
    }
    let mut groups: BTreeMap<(i64, u32), Vec<Row>> = BTreeMap::new();
    let mut buffered = 0usize;
    let mut summary = ImportSummary::default();
    let mut devices = Interner::default();
    let mut tags = Interner::default();
    let mut buckets: Vec<u32> = Vec::new();
    let mut sensors = BTreeSet::new();
    let mut values = Vec::new();
    loop {
        let start = reader.next_position();
        let Some(batch) = reader.next() else { break };
        let batch = batch?;
        let ts = times_of(&batch, &columns.time, start)?;
        let device_col = text_column(&batch, &columns.device)?;
        let tag_col = text_column(&batch, &columns.tag)?;
        fleetscore_table::feature_matrix(
            &batch,
            std::slice::from_ref(&columns.value),
            start,
            &mut values,
        )?;
        for (i, (t, v)) in ts.into_iter().zip(values.iter()).enumerate() {
            if device_col.is_null(i) || tag_col.is_null(i) {
                return Err(Error::Invalid(format!(
                    "{}: empty device or tag",
                    start.advance(i)
                )));
            }
            let bad = |e: String| Error::Invalid(format!("{}: {e}", start.advance(i)));
            let d = devices.id("device", device_col.value(i)).map_err(bad)?;
            let g = tags.id("tag", tag_col.value(i)).map_err(bad)?;
            if d as usize == buckets.len() {
                buckets.push(layout::bucket(&devices.names[d as usize]));
            }
            summary.span = Some(match summary.span {
                None => (t, t),
                Some((lo, hi)) => (lo.min(t), hi.max(t)),
            });
            sensors.insert((d, g));
            groups
                .entry((t.div_euclid(HOUR_MS), buckets[d as usize]))
                .or_default()
                .push((t, d, g, *v));
            summary.rows += 1;
            buffered += 1;
        }
        while buffered > buffer_rows {
            let key = *groups
                .iter()
                .max_by_key(|(k, rows)| (rows.len(), std::cmp::Reverse(**k)))
                .expect("rows buffered")
                .0;
            let rows = groups.remove(&key).expect("present");
            buffered -= rows.len();
            write_partition(store, key, rows, &devices, &tags, &mut summary)?;
        }
    }
    summary.sensors = sensors.len();
    for (key, rows) in std::mem::take(&mut groups) {
        write_partition(store, key, rows, &devices, &tags, &mut summary)?;
    }
    Ok(summary)
}

/// Writes one partition's buffered rows, sorted by sensor then time, as a file named by its
/// content.
fn write_partition(
    store: &Store,
    (hour, bucket): (i64, u32),
    mut rows: Vec<Row>,
    devices: &Interner,
    tags: &Interner,
    summary: &mut ImportSummary,
) -> Result<()> {
    rows.sort_by(|a, b| {
        (&devices.names[a.1 as usize], &tags.names[a.2 as usize], a.0).cmp(&(
            &devices.names[b.1 as usize],
            &tags.names[b.2 as usize],
            b.0,
        ))
    });
    // Each column's dictionary holds the names this partition uses, in order of first use.
    // Rows are sorted by sensor, so most rows repeat the previous row's id.
    let dictionary = |ids: &mut dyn Iterator<Item = u32>, names: &Interner| {
        let mut local: HashMap<u32, i32> = HashMap::new();
        let mut values = Vec::new();
        let mut last = None;
        let keys: Vec<i32> = ids
            .map(|id| match last {
                Some((previous, key)) if previous == id => key,
                _ => {
                    let key = *local.entry(id).or_insert_with(|| {
                        values.push(names.names[id as usize].as_str());
                        values.len() as i32 - 1
                    });
                    last = Some((id, key));
                    key
                }
            })
            .collect();
        Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(keys),
            Arc::new(StringArray::from(values)),
        )) as ArrayRef
    };
    let batch = RecordBatch::try_new(
        stored_schema(),
        vec![
            Arc::new(
                TimestampMillisecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ) as ArrayRef,
            dictionary(&mut rows.iter().map(|r| r.1), devices),
            dictionary(&mut rows.iter().map(|r| r.2), tags),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.3).collect::<Vec<_>>(),
            )),
        ],
    )
    .map_err(|e| Error::Invalid(e.to_string()))?;
    let bytes = fleetscore_table::to_parquet_bytes(stored_schema(), &[batch], &["device", "tag"])?;
    let hour_key = hour_key(hour * HOUR_MS);
    let name = crate::registry::version_of(&bytes);
    let key = format!("{}/{name}.parquet", layout::readings_dir(&hour_key, bucket));
    if store.put_if_absent(&key, bytes)? {
        summary.files_written += 1;
    } else {
        summary.files_present += 1;
    }
    summary.hours.insert(hour_key);
    Ok(())
}

/// Readings of one sensor, in time order: (epoch ms, value).
pub type Series = Vec<(i64, f64)>;

/// Reads the readings of `buckets` in `[from, to)` for the sensors `wanted` accepts, grouped by
/// (device, tag). Each file is read once.
pub fn read_slice(
    store: &Store,
    buckets: &[u32],
    from_ms: i64,
    to_ms: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
) -> Result<BTreeMap<(String, String), Series>> {
    let mut out: BTreeMap<(String, String), Series> = BTreeMap::new();
    for hour in hours_between(from_ms, to_ms) {
        for &bucket in buckets {
            for entry in store.list(&layout::readings_dir(&hour, bucket))? {
                let bytes = store.get(&entry.key)?;
                let batches =
                    fleetscore_table::from_parquet_bytes_as(&entry.key, bytes, stored_schema())?;
                for batch in batches {
                    add_batch(&entry.key, &batch, from_ms, to_ms, wanted, &mut out)?;
                }
            }
        }
    }
    for series in out.values_mut() {
        // Several imports may cover one hour: keep time order.
        series.sort_by_key(|r| r.0);
    }
    Ok(out)
}

fn add_batch(
    key: &str,
    batch: &RecordBatch,
    from_ms: i64,
    to_ms: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
    out: &mut BTreeMap<(String, String), Series>,
) -> Result<()> {
    let corrupt = |m: &str| Error::Corrupt {
        what: key.to_string(),
        message: m.to_string(),
    };
    let col = |i: usize| {
        batch
            .columns()
            .get(i)
            .ok_or_else(|| corrupt("missing columns"))
    };
    let ts = col(0)?
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .ok_or_else(|| corrupt("ts is not a millisecond timestamp"))?;
    let text = |i: usize, name: &str| {
        col(i)?
            .as_any()
            .downcast_ref::<DictionaryArray<Int32Type>>()
            .and_then(|d| Some((d.keys(), d.values().as_any().downcast_ref::<StringArray>()?)))
            .ok_or_else(|| corrupt(&format!("{name} is not text")))
    };
    let (device_keys, devices) = text(1, "device")?;
    let (tag_keys, tags) = text(2, "tag")?;
    let value = col(3)?
        .as_any()
        .downcast_ref::<Float64Array>()
        .ok_or_else(|| corrupt("value is not f64"))?;
    if device_keys.null_count() + tag_keys.null_count() > 0 {
        return Err(corrupt("a reading without device or tag"));
    }
    let (device_keys, tag_keys) = (device_keys.values(), tag_keys.values());
    fn name(values: &StringArray, k: i32) -> Option<&str> {
        let k = usize::try_from(k).ok().filter(|&k| k < values.len())?;
        Some(values.value(k))
    }
    // Rows come sorted by sensor: handle each run of one sensor at once, so that names are
    // looked at once per run, not per row.
    let n = batch.num_rows();
    let mut i = 0;
    while i < n {
        let (dk, gk) = (device_keys[i], tag_keys[i]);
        let mut j = i + 1;
        while j < n && device_keys[j] == dk && tag_keys[j] == gk {
            j += 1;
        }
        let (Some(d), Some(g)) = (name(devices, dk), name(tags, gk)) else {
            return Err(corrupt("a dictionary key out of range"));
        };
        if wanted(d, g) {
            let series = out.entry((d.to_string(), g.to_string())).or_default();
            series.reserve(j - i);
            let times = &ts.values()[i..j];
            let values = &value.values()[i..j];
            series.extend(
                times
                    .iter()
                    .zip(values)
                    .filter(|(t, _)| **t >= from_ms && **t < to_ms)
                    .map(|(t, v)| (*t, *v)),
            );
        }
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_forms_users_write() {
        let want = 1_535_497_205_000; // 2018-08-28T23:00:05Z
        assert_eq!(parse_time("2018-08-28 23:00:05.000"), Ok(want));
        assert_eq!(parse_time("2018-08-28T23:00:05Z"), Ok(want));
        assert_eq!(parse_time("2018-08-29T01:00:05+02:00"), Ok(want));
        assert_eq!(parse_time("1535497205000"), Ok(want));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(hour_key(want), "2018-08-28T23");
        assert_eq!(format_time(want), "2018-08-28 23:00:05.000");
        assert_eq!(hours_between(want, want + 1), vec!["2018-08-28T23"]);
        assert_eq!(hours_between(want - 5_000, want + 3_600_000).len(), 2);
    }
}
