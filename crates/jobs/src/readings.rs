//! Readings in the store: imported from CSV or Parquet in the long shape (time, device, tag,
//! value), partitioned by hour and device bucket, and read back a slice at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, SchemaRef, TimeUnit};

use fleetscore_store::{Store, layout};
use fleetscore_table::parquet_direct::{self, Column, TextRunsBuilder, Values};
use fleetscore_table::{RowPosition, Text};

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

/// The input column `name` of `batch`.
fn column<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Invalid(format!("no column `{name}` in the input")))
}

/// Parses a column's times into `out` (epoch milliseconds). Text is parsed once per distinct
/// value where that is cheap to see: once per dictionary entry, and once per run of rows that
/// repeat the previous row's text (readings come ordered by time, so a time repeats for every
/// sensor).
fn times_of(batch: &RecordBatch, name: &str, start: RowPosition, out: &mut Vec<i64>) -> Result<()> {
    // Text times of any width (large strings, views, dictionaries of them) are parsed as text.
    let array = &fleetscore_table::normalize_text(column(batch, name)?)?;
    let bad =
        |i: usize, m: String| Error::Invalid(format!("{}, column `{name}`: {m}", start.advance(i)));
    out.clear();
    out.reserve(array.len());
    match Text::of(array) {
        Some(Text::Dict(keys, values, _)) => {
            let mut parsed: Vec<Option<i64>> = vec![None; values.len()];
            for i in 0..keys.len() {
                if keys.is_null(i) {
                    return Err(bad(i, "missing time".into()));
                }
                let k = keys.value(i) as usize;
                let t = match parsed[k] {
                    Some(t) => t,
                    None => {
                        let t = parse_time(values.value(k)).map_err(|e| bad(i, e.to_string()))?;
                        parsed[k] = Some(t);
                        t
                    }
                };
                out.push(t);
            }
        }
        Some(Text::Plain(s)) => {
            let mut last: Option<(&str, i64)> = None;
            for i in 0..s.len() {
                if s.is_null(i) {
                    return Err(bad(i, "missing time".into()));
                }
                let text = s.value(i);
                let t = match last {
                    Some((previous, t)) if previous == text => t,
                    _ => {
                        let t = parse_time(text).map_err(|e| bad(i, e.to_string()))?;
                        last = Some((text, t));
                        t
                    }
                };
                out.push(t);
            }
        }
        None => match array.data_type() {
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
                for i in 0..v.len() {
                    if v.is_null(i) {
                        return Err(bad(i, "missing time".into()));
                    }
                    out.push(check_time(v.value(i)).map_err(|e| bad(i, e.to_string()))?);
                }
            }
            other => return Err(bad(0, format!("type {other} is not a time"))),
        },
    }
    Ok(())
}

/// Rows buffered by an import before the largest partition is written out: bounds memory
/// whatever the file's size.
const IMPORT_BUFFER_ROWS: usize = 4_000_000;

/// The names of ids, by id: appended to by the reading thread, read by the writers.
type Names = Arc<RwLock<Vec<String>>>;

/// Integer ids below this are looked up in a table rather than hashed (tags are often 1, 2, ...).
const SMALL_NUMBERS: i64 = 4096;

/// Ids of the devices and tags an import has seen, so that buffered rows hold numbers.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
    /// Ids of integer columns' values, so that a number is formatted once, not per row: small
    /// non-negative ones by value (`u32::MAX`: not seen yet), others hashed.
    small: Vec<u32>,
    numbers: HashMap<i64, u32>,
    names: Names,
    /// How many names there are (without taking the lock).
    len: usize,
}

impl Interner {
    /// The id of `s`, checking it as a device or tag id (`what`) the first time it is seen.
    fn id(&mut self, what: &str, s: &str) -> std::result::Result<u32, String> {
        if let Some(&id) = self.ids.get(s) {
            return Ok(id);
        }
        fleetscore_core::check_id(what, s).map_err(|e| e.0)?;
        let id = self.len as u32;
        self.names.write().expect("names lock").push(s.to_string());
        self.len += 1;
        self.ids.insert(s.to_string(), id);
        Ok(id)
    }

    /// The id of an integer id (its decimal text).
    fn number_id(&mut self, what: &str, v: i64) -> std::result::Result<u32, String> {
        if (0..SMALL_NUMBERS).contains(&v) {
            if let Some(&id) = self.small.get(v as usize).filter(|&&id| id != u32::MAX) {
                return Ok(id);
            }
        } else if let Some(&id) = self.numbers.get(&v) {
            return Ok(id);
        }
        let id = self.id(what, &v.to_string())?;
        if (0..SMALL_NUMBERS).contains(&v) {
            if self.small.len() <= v as usize {
                self.small.resize(v as usize + 1, u32::MAX);
            }
            self.small[v as usize] = id;
        } else {
            self.numbers.insert(v, id);
        }
        Ok(id)
    }

    /// The ids of column `name`'s rows (device or tag ids, `what`) into `out`: text (plain, or
    /// looked up once per dictionary entry), integers (formatted once per distinct value), or
    /// anything else as the text Arrow formats it in.
    fn ids_of(
        &mut self,
        what: &str,
        batch: &RecordBatch,
        name: &str,
        start: RowPosition,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let array = column(batch, name)?;
        let bad = |i: usize, e: String| Error::Invalid(format!("{}: {e}", start.advance(i)));
        let missing = |i: usize| bad(i, "empty device or tag".into());
        out.clear();
        out.reserve(array.len());
        if array.data_type().is_integer() {
            let cast = arrow_cast::cast(array, &DataType::Int64)
                .map_err(|e| Error::Invalid(format!("column `{name}`: {e}")))?;
            let v = cast.as_any().downcast_ref::<Int64Array>().expect("Int64");
            let mut last = None;
            for i in 0..v.len() {
                if v.is_null(i) {
                    return Err(missing(i));
                }
                let x = v.value(i);
                let id = match last {
                    Some((previous, id)) if previous == x => id,
                    _ => self.number_id(what, x).map_err(|e| bad(i, e))?,
                };
                last = Some((x, id));
                out.push(id);
            }
            return Ok(());
        }
        let text = match array.data_type() {
            t if fleetscore_table::is_text(t) => fleetscore_table::normalize_text(array)?,
            _ => arrow_cast::cast(array, &DataType::Utf8)
                .map_err(|e| Error::Invalid(format!("column `{name}`: {e}")))?,
        };
        match Text::of(&text).expect("text normalized to Utf8 or a dictionary of it") {
            Text::Dict(keys, values, _) => {
                let mut ids: Vec<Option<u32>> = vec![None; values.len()];
                for i in 0..keys.len() {
                    if keys.is_null(i) {
                        return Err(missing(i));
                    }
                    let k = keys.value(i) as usize;
                    let id = match ids[k] {
                        Some(id) => id,
                        None => {
                            let id = self.id(what, values.value(k)).map_err(|e| bad(i, e))?;
                            ids[k] = Some(id);
                            id
                        }
                    };
                    out.push(id);
                }
            }
            Text::Plain(s) => {
                let mut last: Option<(&str, u32)> = None;
                for i in 0..s.len() {
                    if s.is_null(i) {
                        return Err(missing(i));
                    }
                    let v = s.value(i);
                    let id = match last {
                        Some((previous, id)) if previous == v => id,
                        _ => self.id(what, v).map_err(|e| bad(i, e))?,
                    };
                    last = Some((v, id));
                    out.push(id);
                }
            }
        }
        Ok(())
    }
}

/// One buffered reading: time, device id, tag id, value.
type Row = (i64, u32, u32, f64);

/// Rows per buffer chunk at most (192 KiB).
const CHUNK_ROWS: usize = 8_192;

/// Rows in a partition's first chunk: each next chunk is twice as large, up to [`CHUNK_ROWS`],
/// so that a file of many sparse hours does not hold a large chunk per (hour, bucket).
const FIRST_CHUNK_ROWS: usize = 128;

/// A partition's buffered rows: chunks of 128, 256, ... and then [`CHUNK_ROWS`] rows each (the
/// last may hold fewer), so a partition grows without copying what it holds, and memory follows
/// the rows, not the next power of two.
type Chunks = Vec<Vec<Row>>;

/// The rows buffered for one hour, per device bucket.
type HourRows = Vec<Chunks>;

/// Full-size chunks the writers are done with, for the reader to fill again: an import touches
/// as much fresh memory as it buffers, not that again per partition written.
#[derive(Default)]
struct ChunkPool(Mutex<Vec<Vec<Row>>>);

impl ChunkPool {
    /// An empty chunk of `rows` rows: a full-size one given back, or a new one.
    fn take(&self, rows: usize) -> Vec<Row> {
        let given = (rows == CHUNK_ROWS)
            .then(|| self.0.lock().expect("chunk pool lock").pop())
            .flatten();
        given.unwrap_or_else(|| Vec::with_capacity(rows))
    }

    /// Gives chunks back, emptied; the smaller first chunks are freed.
    fn give(&self, chunks: Chunks) {
        let mut pool = self.0.lock().expect("chunk pool lock");
        for mut chunk in chunks.into_iter().filter(|c| c.capacity() >= CHUNK_ROWS) {
            chunk.clear();
            pool.push(chunk);
        }
    }
}

/// Appends `row` to `chunks`, starting a chunk twice the size of the last (up to
/// [`CHUNK_ROWS`]) when the last is full.
fn push_row(chunks: &mut Chunks, row: Row, pool: &ChunkPool) {
    match chunks.last_mut() {
        Some(last) if last.len() < last.capacity() => last.push(row),
        last => {
            let rows = last.map_or(FIRST_CHUNK_ROWS, |l| (l.capacity() * 2).min(CHUNK_ROWS));
            let mut chunk = pool.take(rows);
            chunk.push(row);
            chunks.push(chunk);
        }
    }
}

/// The number of rows in `chunks`.
fn rows_in(chunks: &Chunks) -> usize {
    chunks.iter().map(Vec::len).sum()
}

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
    // Parquet text comes as dictionary keys: ids and times are then looked up and parsed once
    // per dictionary entry instead of once per row.
    let mut reader = fleetscore_table::open_columns_dictionary_text(
        path,
        buffer_rows.clamp(1, 65_536),
        &wanted,
    )?;
    // Every column named must be there, even in a file without rows: an empty file is an
    // error, not an import of nothing.
    let schema = reader.schema();
    for c in [&columns.time, &columns.device, &columns.tag, &columns.value] {
        if schema.column_with_name(c).is_none() {
            // The reader holds only the columns asked for: name the file's own.
            let all = fleetscore_table::open(path, 1).map(|r| r.schema());
            let schema = all.as_ref().unwrap_or(&schema);
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
    let mut devices = Interner::default();
    let mut tags = Interner::default();
    let names = (devices.names.clone(), tags.names.clone());
    // Partitions are written by other threads while this one reads on; the channel's bound
    // keeps memory to the buffer and a few partitions in flight.
    let writers = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, 2));
    let (send, receive) = std::sync::mpsc::sync_channel::<Partition>(writers);
    let receive = Mutex::new(receive);
    let pool = ChunkPool::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|_| {
                s.spawn(|| {
                    let mut writer = PartitionWriter::default();
                    let mut written = ImportSummary::default();
                    loop {
                        let next = receive.lock().expect("receiver lock").recv();
                        let Ok(partition) = next else {
                            return Ok(written);
                        };
                        writer.write(store, partition, &names, &pool, &mut written)?;
                    }
                })
            })
            .collect();
        // Two batches decoded ahead at most; their buffers come back to be filled again.
        let (send_decoded, decoded) = std::sync::mpsc::sync_channel(2);
        let (recycle, recycled) = std::sync::mpsc::channel();
        let (reader, interners) = (reader.as_mut(), (&mut devices, &mut tags));
        let decoder = s.spawn(move || {
            decode(reader, columns, interners, &send_decoded, &recycled);
        });
        let read = partition(&decoded, &recycle, buffer_rows, &names.0, &pool, &send);
        // A partitioning that stopped early leaves the decoder blocked on a full channel:
        // dropping the receiver lets it see that and end.
        drop(decoded);
        decoder.join().expect("import decoder panicked");
        drop(send);
        let written: Vec<Result<ImportSummary>> = handles
            .into_iter()
            .map(|h| h.join().expect("import writer panicked"))
            .collect();
        // A writer's error first: the reader stops with a bare "channel closed" once every
        // writer has failed.
        let mut summary = match read {
            Ok(summary) => summary,
            Err(e) => return Err(written.into_iter().find_map(Result::err).unwrap_or(e)),
        };
        for w in written {
            let w = w?;
            summary.files_written += w.files_written;
            summary.files_present += w.files_present;
            summary.hours.extend(w.hours);
        }
        Ok(summary)
    })
}

/// One partition's rows, to be written as a file: (hour since the epoch, device bucket) and its
/// readings.
type Partition = ((i64, u32), Chunks);

/// One batch's readings as columns: times, device ids, tag ids, values.
#[derive(Default)]
struct Decoded {
    ts: Vec<i64>,
    device_ids: Vec<u32>,
    tag_ids: Vec<u32>,
    values: Vec<f64>,
}

/// Decodes every batch of `reader` into columns of ids and numbers for [`partition`], on a
/// thread of its own: decoding and partitioning each take about half of the reading, so they
/// overlap. Column buffers come back through `recycled` to be filled again.
fn decode(
    reader: &mut dyn fleetscore_table::BatchReader,
    columns: &Columns,
    (devices, tags): (&mut Interner, &mut Interner),
    send: &std::sync::mpsc::SyncSender<Result<Decoded>>,
    recycled: &std::sync::mpsc::Receiver<Decoded>,
) {
    loop {
        let start = reader.next_position();
        let Some(batch) = reader.next() else { return };
        let mut d = recycled.try_recv().unwrap_or_default();
        let decoded = batch.map_err(Error::from).and_then(|batch| {
            times_of(&batch, &columns.time, start, &mut d.ts)?;
            devices.ids_of("device", &batch, &columns.device, start, &mut d.device_ids)?;
            tags.ids_of("tag", &batch, &columns.tag, start, &mut d.tag_ids)?;
            fleetscore_table::feature_matrix(
                &batch,
                std::slice::from_ref(&columns.value),
                start,
                &mut d.values,
            )?;
            Ok(d)
        });
        let failed = decoded.is_err();
        // A closed channel: the partitioning stopped, and says why.
        if send.send(decoded).is_err() || failed {
            return;
        }
    }
}

/// Sorts decoded batches into partitions and sends them to `send`: the largest whenever more
/// than `buffer_rows` rows are buffered, and the rest at the end. Returns what was read; the
/// files are counted by the writers.
fn partition(
    decoded: &std::sync::mpsc::Receiver<Result<Decoded>>,
    recycle: &std::sync::mpsc::Sender<Decoded>,
    buffer_rows: usize,
    device_names: &Names,
    pool: &ChunkPool,
    send: &std::sync::mpsc::SyncSender<Partition>,
) -> Result<ImportSummary> {
    let stopped = || Error::Invalid("the import's writers stopped".into());
    let mut hours: BTreeMap<i64, HourRows> = BTreeMap::new();
    let mut buffered = 0usize;
    let mut summary = ImportSummary::default();
    let mut buckets: Vec<u32> = Vec::new();
    // Per device id, a bit per tag id seen with it: counts sensors without a set lookup per row.
    let mut sensors: Vec<Vec<u64>> = Vec::new();
    let mut n_sensors = 0usize;
    for d in decoded {
        let d = d?;
        let (ts, device_ids, tag_ids, values) = (&d.ts, &d.device_ids, &d.tag_ids, &d.values);
        // Ids are numbered in order of first sight: a batch's ids are below the names known
        // once it is decoded.
        let top = device_ids.iter().max().map_or(0, |&m| m as usize + 1);
        if buckets.len() < top {
            let names = device_names.read().expect("names lock");
            while buckets.len() < names.len() {
                buckets.push(layout::bucket(&names[buckets.len()]));
                sensors.push(Vec::new());
            }
        }
        let n = ts.len();
        if let (Some(lo), Some(hi)) = (ts.iter().min(), ts.iter().max()) {
            summary.span = Some(match summary.span {
                None => (*lo, *hi),
                Some((a, b)) => (a.min(*lo), b.max(*hi)),
            });
        }
        // Runs of rows in one hour go to that hour's buckets.
        let mut i = 0;
        while i < n {
            let hour = ts[i].div_euclid(HOUR_MS);
            let slots = hours
                .entry(hour)
                .or_insert_with(|| vec![Vec::new(); layout::BUCKETS as usize]);
            while i < n && ts[i].div_euclid(HOUR_MS) == hour {
                let (d, g) = (device_ids[i], tag_ids[i]);
                let seen = &mut sensors[d as usize];
                let (word, bit) = (g as usize / 64, 1u64 << (g % 64));
                if word >= seen.len() {
                    seen.resize(word + 1, 0);
                }
                if seen[word] & bit == 0 {
                    seen[word] |= bit;
                    n_sensors += 1;
                }
                push_row(
                    &mut slots[buckets[d as usize] as usize],
                    (ts[i], d, g, values[i]),
                    pool,
                );
                i += 1;
            }
        }
        summary.rows += n as u64;
        buffered += n;
        // The decoder may have stopped already: then the buffers are not needed.
        let _ = recycle.send(d);
        while buffered > buffer_rows {
            // The largest partition, the earliest of equals.
            let mut largest: Option<((i64, u32), usize)> = None;
            for (&hour, slots) in &hours {
                for (b, rows) in slots.iter().enumerate() {
                    let n = rows_in(rows);
                    if n > largest.map_or(0, |(_, n)| n) {
                        largest = Some(((hour, b as u32), n));
                    }
                }
            }
            let ((hour, bucket), n) = largest.expect("rows buffered");
            let rows = std::mem::take(&mut hours.get_mut(&hour).expect("present")[bucket as usize]);
            buffered -= n;
            send.send(((hour, bucket), rows)).map_err(|_| stopped())?;
        }
    }
    summary.sensors = n_sensors;
    for (hour, slots) in std::mem::take(&mut hours) {
        for (bucket, rows) in slots.into_iter().enumerate() {
            if !rows.is_empty() {
                send.send(((hour, bucket as u32), rows))
                    .map_err(|_| stopped())?;
            }
        }
    }
    Ok(summary)
}

/// Writes partitions, keeping its scratch space from one partition to the next.
#[derive(Default)]
struct PartitionWriter {
    /// Per device id: its rank by name among the partition's devices (`u32::MAX`: not in it).
    device_rank: Vec<u32>,
    /// Per tag id: the same for tags.
    tag_rank: Vec<u32>,
    /// The partition's rows, sorted.
    sorted: Vec<Row>,
    /// Its times and values, as columns.
    ts: Vec<i64>,
    value: Vec<f64>,
}

impl PartitionWriter {
    /// Writes one partition's buffered rows, sorted by sensor then time, as a file named by its
    /// content.
    fn write(
        &mut self,
        store: &Store,
        ((hour, bucket), chunks): Partition,
        (devices, tags): &(Names, Names),
        pool: &ChunkPool,
        summary: &mut ImportSummary,
    ) -> Result<()> {
        let (devices, tags) = (
            devices.read().expect("names lock"),
            tags.read().expect("names lock"),
        );
        self.sort(&chunks, &devices, &tags);
        pool.give(chunks);
        let rows = &self.sorted;
        // Each text column's dictionary holds the names this partition uses, in order of first
        // use; rows are sorted by sensor, so a run of rows shares one name.
        let runs = |id: &dyn Fn(&Row) -> u32, names: &[String]| {
            let mut column = TextRunsBuilder::default();
            let mut i = 0;
            while i < rows.len() {
                let this = id(&rows[i]);
                let mut j = i + 1;
                while j < rows.len() && id(&rows[j]) == this {
                    j += 1;
                }
                column.push(&names[this as usize], j - i);
                i = j;
            }
            column.finish()
        };
        let device = runs(&|r| r.1, &devices);
        let tag = runs(&|r| r.2, &tags);
        drop((devices, tags));
        self.ts.clear();
        self.ts.extend(rows.iter().map(|r| r.0));
        self.value.clear();
        self.value.extend(rows.iter().map(|r| r.3));
        let bytes = parquet_direct::write_table(&[
            Column::new("ts", Values::Timestamp(&self.ts)),
            Column::new("device", Values::TextRuns(&device)),
            Column::new("tag", Values::TextRuns(&tag)),
            Column::new("value", Values::Float64(&self.value)),
        ])?;
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

    /// The rows of `chunks` into `self.sorted`, sorted by device name, tag name and time, rows
    /// equal in all three kept in input order: a counting sort by sensor (names compared once
    /// per distinct device and tag, not per row), then each sensor's rows by time, which they
    /// nearly always are already.
    fn sort(&mut self, chunks: &Chunks, devices: &[String], tags: &[String]) {
        let rows = || chunks.iter().flatten();
        let n = rows_in(chunks);
        let ranks = |rank: &mut Vec<u32>, names: &[String], id: &dyn Fn(&Row) -> u32| {
            rank.clear();
            rank.resize(names.len(), u32::MAX);
            let mut present = Vec::new();
            for r in rows() {
                let i = id(r) as usize;
                if rank[i] == u32::MAX {
                    rank[i] = 0;
                    present.push(i as u32);
                }
            }
            present.sort_unstable_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
            for (k, &i) in present.iter().enumerate() {
                rank[i as usize] = k as u32;
            }
            present.len()
        };
        let nd = ranks(&mut self.device_rank, devices, &|r| r.1);
        let nt = ranks(&mut self.tag_rank, tags, &|r| r.2);
        let (device_rank, tag_rank) = (&self.device_rank, &self.tag_rank);
        let sensor =
            |r: &Row| device_rank[r.1 as usize] as usize * nt + tag_rank[r.2 as usize] as usize;
        let sensors = nd.saturating_mul(nt);
        let sorted = &mut self.sorted;
        sorted.clear();
        if sensors > n.saturating_mul(4).max(1 << 16) {
            // Few rows of many possible sensors: an ordinary stable sort.
            sorted.extend(rows());
            sorted.sort_by_key(|r| (sensor(r), r.0));
            return;
        }
        let mut start = vec![0usize; sensors + 1];
        for r in rows() {
            start[sensor(r) + 1] += 1;
        }
        for k in 0..sensors {
            start[k + 1] += start[k];
        }
        sorted.resize(n, (0, 0, 0, 0.0));
        let mut next = start.clone();
        for r in rows() {
            let k = sensor(r);
            sorted[next[k]] = *r;
            next[k] += 1;
        }
        for k in 0..sensors {
            let run = &mut sorted[start[k]..start[k + 1]];
            if !run.is_sorted_by_key(|r| r.0) {
                run.sort_by_key(|r| r.0);
            }
        }
    }
}

/// Readings of one sensor, in time order: (epoch ms, value).
pub type Series = Vec<(i64, f64)>;

/// Reads the readings of `buckets` in `[from, to)` for the sensors `wanted` accepts, grouped by
/// (device, tag), in time order, each reading once. Each file is read once; a file whose name
/// carries a time range outside the window (the aggregator's raw archive names its files so)
/// is not read at all.
///
/// The same reading can be in two files of a folder: one imported twice in two encodings, or
/// the moment the aggregator has written an hour's merged file and not yet deleted its inputs.
/// A reading equal to the one before it (same sensor, time and value) is dropped.
///
/// `planned` is the folders' files as a run's plan listed them: they are read without listing
/// the folders again, unless one of them is gone by then.
pub fn read_slice(
    store: &Store,
    buckets: &[u32],
    planned: Option<&[String]>,
    from_ms: i64,
    to_ms: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
) -> Result<BTreeMap<(String, String), Series>> {
    let mut out: BTreeMap<(String, String), Series> = BTreeMap::new();
    for hour in hours_between(from_ms, to_ms) {
        for &bucket in buckets {
            read_folder(
                store, &hour, bucket, planned, from_ms, to_ms, wanted, &mut out,
            )?;
        }
    }
    for series in out.values_mut() {
        // Several files may cover one hour: keep time order, and each reading once.
        series.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        series.dedup_by(|b, a| a.0 == b.0 && a.1.to_bits() == b.1.to_bits());
    }
    Ok(out)
}

/// How many times a folder is listed again when a file listed in it is gone before it is
/// read (the aggregator deleted it after merging it into a file of the next listing).
const RELISTS: usize = 3;

/// One hour and bucket's files into `out`.
#[allow(clippy::too_many_arguments)]
fn read_folder(
    store: &Store,
    hour: &str,
    bucket: u32,
    planned: Option<&[String]>,
    from_ms: i64,
    to_ms: i64,
    wanted: &dyn Fn(&str, &str) -> bool,
    out: &mut BTreeMap<(String, String), Series>,
) -> Result<()> {
    let mut attempt = 0;
    'listing: loop {
        let mut found: BTreeMap<(String, String), Series> = BTreeMap::new();
        let dir = layout::readings_dir(hour, bucket);
        // The files the plan listed, the first time; the folder as it is now after that.
        let keys: Vec<String> = match planned {
            Some(files) if attempt == 0 => files
                .iter()
                .filter(|k| k.strip_prefix(&dir).is_some_and(|r| r.starts_with('/')))
                .cloned()
                .collect(),
            _ => store.list(&dir)?.into_iter().map(|e| e.key).collect(),
        };
        for key in keys {
            let entry = fleetscore_store::Entry { key, size: 0 };
            let name = entry.key.rsplit('/').next().unwrap_or(&entry.key);
            if let Some((min, max)) = layout::file_time_range(name)
                && (max < from_ms || min >= to_ms)
            {
                continue;
            }
            let bytes = match store.get(&entry.key) {
                Ok(b) => b,
                Err(fleetscore_store::Error::NotFound(_)) if attempt < RELISTS => {
                    attempt += 1;
                    continue 'listing;
                }
                Err(e) => return Err(e.into()),
            };
            let batches =
                fleetscore_table::from_parquet_bytes_as(&entry.key, bytes, stored_schema())?;
            for batch in batches {
                add_batch(&entry.key, &batch, from_ms, to_ms, wanted, &mut found)?;
            }
        }
        for (k, mut v) in found {
            out.entry(k).or_default().append(&mut v);
        }
        return Ok(());
    }
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

    /// A partition's chunks start small and double up to the full size, so a file of many
    /// sparse hours holds little per (hour, bucket); only full-size chunks are reused.
    #[test]
    fn partition_chunks_double_up_to_the_full_size_and_full_ones_are_reused() {
        let pool = ChunkPool::default();
        let mut chunks = Chunks::new();
        let rows = 3 * CHUNK_ROWS;
        for i in 0..rows {
            push_row(&mut chunks, (i as i64, 0, 0, 0.0), &pool);
        }
        let sizes: Vec<usize> = chunks.iter().map(Vec::capacity).collect();
        let mut want = vec![];
        let mut size = FIRST_CHUNK_ROWS;
        while want.iter().sum::<usize>() < rows {
            want.push(size);
            size = (size * 2).min(CHUNK_ROWS);
        }
        assert_eq!(sizes, want);
        assert_eq!(rows_in(&chunks), rows);
        let rows: Vec<i64> = chunks.iter().flatten().map(|r| r.0).collect();
        assert!(rows.iter().enumerate().all(|(i, &t)| t == i as i64));
        let full = sizes.iter().filter(|&&s| s == CHUNK_ROWS).count();
        pool.give(chunks);
        assert_eq!(pool.0.lock().unwrap().len(), full);
        // A new partition starts small again; a full-size chunk comes from the pool.
        assert_eq!(pool.take(FIRST_CHUNK_ROWS).capacity(), FIRST_CHUNK_ROWS);
        assert_eq!(pool.take(CHUNK_ROWS).capacity(), CHUNK_ROWS);
        assert_eq!(pool.0.lock().unwrap().len(), full - 1);
    }
}
