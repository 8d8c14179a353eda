//! A streaming Parquet file writer for tables of numbers and times (what `models score` writes:
//! feature columns with a score and an anomaly flag), written a row group at a time straight
//! from the Arrow arrays.
//!
//! The general writer copies every value into growing page buffers, compares each one for the
//! statistics through the type's total order, and holds a row group's encoded pages until it
//! closes; writing a scored file took longer than reading and scoring it. Here doubles, floats
//! and 32-bit integers are `PLAIN` pages whose bytes are the array's own (written from it, not
//! copied), narrower integers are widened into one reused buffer, and 64-bit integers and times
//! are `DELTA_BINARY_PACKED` as the other writers store them. Nullable columns are `OPTIONAL`
//! with their definition levels; statistics are the bounds of each chunk. The Arrow schema is
//! embedded (`ARROW:schema`), so Arrow readers get back exactly the types written.
//!
//! Once a row group is written, the file system is asked to start writing it out
//! (`sync_file_range` on Linux), so the data is on its way to the disk while the next group is
//! scored, rather than all at once when the finished file is renamed into place (ext4 flushes a
//! file renamed over another) or when the page cache fills up.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef, TimeUnit};

use super::PAGE_ROWS;
use super::encoding::{bit_packed_run, delta_binary_packed, uleb};
use super::page::{
    Chunk, ENCODING_DELTA_BINARY_PACKED, ENCODING_PLAIN, ENCODING_RLE, TYPE_DOUBLE, TYPE_FLOAT,
    TYPE_INT32, TYPE_INT64, data_page_header, float_stats,
};
use super::thrift::{Leaf, Logical, RowGroup, file_metadata};
use crate::error::{Error, Result};

/// Rows a row group gathers before it is written (the last may have fewer): the batches of
/// `models score` are this size, so each is written while the next is scored.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// How a column's values become pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Doubles, `PLAIN`.
    Double,
    /// Floats, `PLAIN`.
    Float,
    /// 32-bit integers (and days), `PLAIN`.
    Int32,
    /// 16-bit integers, widened to `INT32`.
    Int16,
    /// 8-bit integers, widened to `INT32`.
    Int8,
    /// 64-bit integers and times, `DELTA_BINARY_PACKED`.
    Int64,
}

impl Kind {
    /// The kind, physical type and annotation of an Arrow type this writer stores, if it does.
    fn of(data_type: &DataType) -> Option<(Kind, i32, Logical)> {
        let int = |bits, signed| Logical::Int { bits, signed };
        Some(match data_type {
            DataType::Float64 => (Kind::Double, TYPE_DOUBLE, Logical::Plain),
            DataType::Float32 => (Kind::Float, TYPE_FLOAT, Logical::Plain),
            DataType::Int64 => (Kind::Int64, TYPE_INT64, Logical::Plain),
            DataType::Int32 => (Kind::Int32, TYPE_INT32, Logical::Plain),
            DataType::Int16 => (Kind::Int16, TYPE_INT32, int(16, true)),
            DataType::Int8 => (Kind::Int8, TYPE_INT32, int(8, true)),
            DataType::Date32 => (Kind::Int32, TYPE_INT32, Logical::Date),
            DataType::Timestamp(unit, tz) => {
                let unit = match unit {
                    TimeUnit::Millisecond => 1,
                    TimeUnit::Microsecond => 2,
                    TimeUnit::Nanosecond => 3,
                    // Parquet has no seconds: the general writer converts them.
                    TimeUnit::Second => return None,
                };
                let utc = tz.is_some();
                (Kind::Int64, TYPE_INT64, Logical::Timestamp { unit, utc })
            }
            _ => return None,
        })
    }

    /// Bytes per value in the Arrow array.
    fn width(self) -> usize {
        match self {
            Kind::Double | Kind::Int64 => 8,
            Kind::Float | Kind::Int32 => 4,
            Kind::Int16 => 2,
            Kind::Int8 => 1,
        }
    }
}

/// One column of the file.
struct Leafy {
    kind: Kind,
    physical: i32,
    logical: Logical,
    optional: bool,
}

/// Writes record batches as a Parquet file (see the module documentation).
pub struct FileWriter {
    out: BufWriter<File>,
    path: PathBuf,
    schema: SchemaRef,
    columns: Vec<Leafy>,
    /// Bytes written so far, and how many of them the file system was asked to write out.
    written: u64,
    synced: u64,
    /// Batches of the row group being gathered, and their rows.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    groups: Vec<RowGroup>,
    /// Reused buffers: a page header, a page's levels and converted values, a page's non-null
    /// 64-bit values, a page's definition levels.
    header: Vec<u8>,
    page: Vec<u8>,
    gathered: Vec<i64>,
    levels: Vec<u64>,
}

impl FileWriter {
    /// Whether every column of `schema` is of a type this writer stores (doubles, floats,
    /// 8- to 64-bit signed integers, dates, and times in milli-, micro- or nanoseconds).
    pub fn supports(schema: &arrow_schema::Schema) -> bool {
        schema
            .fields()
            .iter()
            .all(|f| Kind::of(f.data_type()).is_some())
    }

    /// Starts a file of `schema` in `file` (named `path` in errors).
    pub fn new(file: File, path: &Path, schema: SchemaRef) -> Result<FileWriter> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                let (kind, physical, logical) = Kind::of(f.data_type()).ok_or_else(|| {
                    invalid(
                        path,
                        format!(
                            "column `{}` is {}, not a number or time",
                            f.name(),
                            f.data_type()
                        ),
                    )
                })?;
                Ok(Leafy {
                    kind,
                    physical,
                    logical,
                    optional: f.is_nullable(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut writer = FileWriter {
            out: BufWriter::with_capacity(64 << 10, file),
            path: path.to_path_buf(),
            schema,
            columns,
            written: 0,
            synced: 0,
            pending: Vec::new(),
            pending_rows: 0,
            groups: Vec::new(),
            header: Vec::with_capacity(64),
            page: Vec::new(),
            gathered: Vec::new(),
            levels: Vec::new(),
        };
        writer.put(b"PAR1")?;
        Ok(writer)
    }

    /// Appends `batch`, which must have the file's columns; a row group is written once it
    /// has [`ROW_GROUP_ROWS`] rows.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let same = batch.num_columns() == self.columns.len()
            && batch
                .schema()
                .fields()
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| a.data_type() == b.data_type());
        if !same {
            return Err(invalid(
                &self.path,
                format!(
                    "a batch of columns ({}) for a file of ({})",
                    describe(batch.schema().fields()),
                    describe(self.schema.fields())
                ),
            ));
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.pending.push(batch.clone());
        self.pending_rows += batch.num_rows();
        if self.pending_rows >= ROW_GROUP_ROWS {
            self.write_row_group()?;
        }
        Ok(())
    }

    /// Writes what is gathered and the footer, and flushes the file.
    pub fn finish(mut self) -> Result<()> {
        self.write_row_group()?;
        let leaves: Vec<Leaf<'_>> = self
            .schema
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(f, c)| Leaf {
                name: f.name(),
                physical: c.physical,
                optional: c.optional,
                logical: c.logical,
            })
            .collect();
        let arrow_schema = parquet::arrow::encode_arrow_schema(&self.schema);
        let mut footer = Vec::new();
        file_metadata(
            &mut footer,
            &leaves,
            &self.groups,
            &[(parquet::arrow::ARROW_SCHEMA_META_KEY, &arrow_schema)],
        );
        footer.extend_from_slice(&(footer.len() as u32).to_le_bytes());
        footer.extend_from_slice(b"PAR1");
        self.put(&footer)?;
        let path = self.path.clone();
        self.out.flush().map_err(|e| Error::io(&path, e))
    }

    fn write_row_group(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let rows = std::mem::replace(&mut self.pending_rows, 0);
        let mut chunks = Vec::with_capacity(self.columns.len());
        for i in 0..self.columns.len() {
            chunks.push(self.write_chunk(i, &pending)?);
        }
        self.groups.push(RowGroup { rows, chunks });
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        start_writeback(self.out.get_ref(), self.synced, self.written);
        self.synced = self.written;
        Ok(())
    }

    /// Column `i` of the gathered batches as one chunk of pages of at most [`PAGE_ROWS`] rows.
    fn write_chunk(&mut self, i: usize, batches: &[RecordBatch]) -> Result<Chunk> {
        let start = self.written;
        let mut bounds = Bounds::default();
        let mut rows = 0;
        for batch in batches {
            let array = batch.column(i);
            let mut offset = 0;
            while offset < array.len() {
                let n = (array.len() - offset).min(PAGE_ROWS);
                self.write_page(i, array.slice(offset, n).as_ref(), &mut bounds)?;
                offset += n;
            }
            rows += array.len();
        }
        let c = &self.columns[i];
        let (min, max) = bounds.finish(c.kind);
        Ok(Chunk {
            physical: c.physical,
            encodings: vec![
                if c.kind == Kind::Int64 {
                    ENCODING_DELTA_BINARY_PACKED
                } else {
                    ENCODING_PLAIN
                },
                ENCODING_RLE,
            ],
            dictionary_offset: None,
            data_offset: start as i64,
            size: (self.written - start) as i64,
            min,
            max,
            nan_count: matches!(c.kind, Kind::Double | Kind::Float).then_some(bounds.nans),
            values: rows as i64,
            nulls: bounds.nulls,
        })
    }

    /// One data page: definition levels if the column is nullable, then the non-null values.
    fn write_page(&mut self, i: usize, array: &dyn Array, bounds: &mut Bounds) -> Result<()> {
        let Leafy { kind, optional, .. } = self.columns[i];
        let data = array.to_data();
        let n = data.len();
        let nulls = data.nulls().filter(|b| b.null_count() > 0);
        if nulls.is_some() && !optional {
            return Err(invalid(
                &self.path,
                format!(
                    "column `{}` is declared without nulls but has some",
                    self.schema.field(i).name()
                ),
            ));
        }
        bounds.nulls += nulls.map_or(0, |b| b.null_count() as i64);
        let valid = |row: usize| nulls.is_none_or(|b| b.is_valid(row));
        self.page.clear();
        if optional && n > 0 {
            // Definition levels, length-prefixed: one run of 1s, or a bit per row.
            self.page.extend_from_slice(&[0; 4]);
            match nulls {
                None => {
                    uleb(&mut self.page, (n as u64) << 1);
                    self.page.push(1);
                }
                Some(_) => {
                    self.levels.clear();
                    self.levels.extend((0..n).map(|row| u64::from(valid(row))));
                    bit_packed_run(&mut self.page, &self.levels, 1);
                }
            }
            let len = (self.page.len() - 4) as u32;
            self.page[..4].copy_from_slice(&len.to_le_bytes());
        }
        let width = kind.width();
        let bytes = &data.buffers()[0].as_slice()[data.offset() * width..][..n * width];
        // The array's bytes are the page's as they are: little-endian, no nulls, same width.
        let as_is = cfg!(target_endian = "little")
            && nulls.is_none()
            && matches!(kind, Kind::Double | Kind::Float | Kind::Int32);
        let page = &mut self.page;
        match kind {
            Kind::Double => {
                let v = data.buffer::<f64>(0);
                if nulls.is_none() {
                    bounds.doubles(v);
                } else {
                    bounds.floats(
                        v.iter()
                            .enumerate()
                            .filter(|&(r, _)| valid(r))
                            .map(|(_, &x)| x),
                    );
                }
                if !as_is {
                    for (_, x) in v.iter().enumerate().filter(|&(r, _)| valid(r)) {
                        page.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            Kind::Float => {
                let v = data.buffer::<f32>(0);
                let valid_values = v.iter().enumerate().filter(|&(r, _)| valid(r));
                bounds.floats(valid_values.clone().map(|(_, &x)| f64::from(x)));
                if !as_is {
                    for (_, x) in valid_values {
                        page.extend_from_slice(&x.to_le_bytes());
                    }
                }
            }
            Kind::Int32 => int32_values(data.buffer::<i32>(0), valid, bounds, page, !as_is),
            Kind::Int16 => int32_values(data.buffer::<i16>(0), valid, bounds, page, true),
            Kind::Int8 => int32_values(data.buffer::<i8>(0), valid, bounds, page, true),
            Kind::Int64 => {
                let v = data.buffer::<i64>(0);
                let v = if nulls.is_none() {
                    v
                } else {
                    self.gathered.clear();
                    let valid_values = v.iter().enumerate().filter(|&(r, _)| valid(r));
                    self.gathered.extend(valid_values.map(|(_, &x)| x));
                    &self.gathered
                };
                if let (Some(lo), Some(hi)) = (v.iter().min(), v.iter().max()) {
                    bounds.int(*lo);
                    bounds.int(*hi);
                }
                delta_binary_packed(page, v);
            }
        }
        let body = if as_is { bytes } else { &[][..] };
        let encoding = if kind == Kind::Int64 {
            ENCODING_DELTA_BINARY_PACKED
        } else {
            ENCODING_PLAIN
        };
        self.header.clear();
        data_page_header(&mut self.header, self.page.len() + body.len(), n, encoding);
        let header = std::mem::take(&mut self.header);
        let page = std::mem::take(&mut self.page);
        let result = self
            .put(&header)
            .and_then(|()| self.put(&page))
            .and_then(|()| self.put(body));
        self.header = header;
        self.page = page;
        result
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

impl crate::BatchWriter for FileWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        FileWriter::write(self, batch)
    }

    fn finish(self: Box<Self>) -> Result<()> {
        FileWriter::finish(*self)
    }
}

/// Integers of up to 32 bits: their bounds, and (if `copy`) their `INT32` bytes into `page`.
fn int32_values<T: Copy + Into<i32>>(
    v: &[T],
    valid: impl Fn(usize) -> bool,
    bounds: &mut Bounds,
    page: &mut Vec<u8>,
    copy: bool,
) {
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    if copy {
        page.reserve(v.len() * 4);
    }
    for (row, &x) in v.iter().enumerate() {
        if !valid(row) {
            continue;
        }
        let x: i32 = x.into();
        lo = lo.min(x);
        hi = hi.max(x);
        if copy {
            page.extend_from_slice(&x.to_le_bytes());
        }
    }
    if lo <= hi {
        bounds.int(i64::from(lo));
        bounds.int(i64::from(hi));
    }
}

/// A chunk's bounds, null count and NaN count, gathered page by page.
#[derive(Default)]
struct Bounds {
    ints: Option<(i64, i64)>,
    floats: Option<(f64, f64)>,
    nans: i64,
    nulls: i64,
}

impl Bounds {
    fn int(&mut self, x: i64) {
        let (lo, hi) = self.ints.get_or_insert((x, x));
        *lo = (*lo).min(x);
        *hi = (*hi).max(x);
    }

    /// NaN is counted, not compared: the bounds are of the other values.
    fn floats(&mut self, values: impl Iterator<Item = f64>) {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut count, mut nans) = (0, 0);
        for x in values {
            count += 1;
            nans += i64::from(x.is_nan());
            lo = lo.min(x);
            hi = hi.max(x);
        }
        self.add_floats(lo, hi, count, nans);
    }

    /// [`Bounds::floats`] of a slice (vectorised, by [`float_stats`]).
    fn doubles(&mut self, values: &[f64]) {
        let (lo, hi, nans) = float_stats(values);
        self.add_floats(
            lo.unwrap_or(f64::INFINITY),
            hi.unwrap_or(f64::NEG_INFINITY),
            values.len() as i64,
            nans,
        );
    }

    /// Merges the bounds of `count` values, `nans` of them NaN.
    fn add_floats(&mut self, lo: f64, hi: f64, count: i64, nans: i64) {
        self.nans += nans;
        if count > nans {
            let (a, b) = self.floats.get_or_insert((lo, hi));
            *a = a.min(lo);
            *b = b.max(hi);
        }
    }

    /// The min and max statistics as the file stores them, if there is a non-null value that
    /// is not NaN.
    fn finish(&self, kind: Kind) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        match kind {
            Kind::Double | Kind::Float => {
                let Some((mut lo, mut hi)) = self.floats else {
                    return (None, None);
                };
                // The format asks for -0.0 as a zero minimum and +0.0 as a zero maximum.
                if lo == 0.0 {
                    lo = -0.0;
                }
                if hi == 0.0 {
                    hi = 0.0;
                }
                if kind == Kind::Double {
                    (
                        Some(lo.to_le_bytes().to_vec()),
                        Some(hi.to_le_bytes().to_vec()),
                    )
                } else {
                    let f = |x: f64| (x as f32).to_le_bytes().to_vec();
                    (Some(f(lo)), Some(f(hi)))
                }
            }
            Kind::Int64 => match self.ints {
                Some((lo, hi)) => (
                    Some(lo.to_le_bytes().to_vec()),
                    Some(hi.to_le_bytes().to_vec()),
                ),
                None => (None, None),
            },
            Kind::Int32 | Kind::Int16 | Kind::Int8 => match self.ints {
                Some((lo, hi)) => {
                    let f = |x: i64| (x as i32).to_le_bytes().to_vec();
                    (Some(f(lo)), Some(f(hi)))
                }
                None => (None, None),
            },
        }
    }
}

fn invalid(path: &Path, message: String) -> Error {
    Error::Parquet {
        path: path.display().to_string(),
        message,
    }
}

fn describe(fields: &arrow_schema::Fields) -> String {
    fields
        .iter()
        .map(|f: &std::sync::Arc<Field>| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Asks the file system to start writing `from..to` of `file` out, without waiting for it.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    if to <= from {
        return;
    }
    // SAFETY: the descriptor belongs to `file`, which is open for the whole call, and the call
    // takes no pointers. A failure (a file system without it) only means the data is written
    // out later, as without the call, so its result is not checked.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _to: u64) {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Date32Array, Float32Array, Float64Array, Int8Array, Int16Array, Int32Array,
        Int64Array, StringArray, TimestampMicrosecondArray, TimestampMillisecondArray,
        TimestampNanosecondArray,
    };
    use arrow_schema::Schema;
    use parquet::file::reader::FileReader;
    use parquet::file::statistics::Statistics;

    use super::*;

    fn tempdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("fleetscore-stream-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Every type the writer stores, nullable and not, with nulls, NaN, signed zeros and the
    /// types' extremes, in batches of `sizes` rows.
    fn batches(sizes: &[usize]) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("f64", DataType::Float64, true),
            Field::new("f64_required", DataType::Float64, false),
            Field::new("f32", DataType::Float32, true),
            Field::new("i64", DataType::Int64, true),
            Field::new("i32", DataType::Int32, false),
            Field::new("i16", DataType::Int16, true),
            Field::new("i8", DataType::Int8, false),
            Field::new("day", DataType::Date32, true),
            Field::new(
                "ms_berlin",
                DataType::Timestamp(TimeUnit::Millisecond, Some("Europe/Berlin".into())),
                true,
            ),
            Field::new(
                "us_local",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
            Field::new(
                "ns_utc",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
        ]));
        let mut start = 0usize;
        sizes
            .iter()
            .map(|&n| {
                let rows = start..start + n;
                start += n;
                let null = |i: usize| i % 17 == 3;
                let float = |i: usize| match i % 11 {
                    0 => f64::NAN,
                    1 => -0.0,
                    2 => f64::INFINITY,
                    _ => (i as f64).sin() * 1e3,
                };
                let columns: Vec<ArrayRef> =
                    vec![
                        Arc::new(Float64Array::from_iter(
                            rows.clone().map(|i| (!null(i)).then(|| float(i))),
                        )),
                        Arc::new(Float64Array::from_iter_values(rows.clone().map(float))),
                        Arc::new(Float32Array::from_iter(
                            rows.clone().map(|i| (!null(i)).then(|| float(i) as f32)),
                        )),
                        Arc::new(Int64Array::from_iter(rows.clone().map(|i| {
                            (!null(i)).then(|| match i % 5 {
                                0 => i64::MIN,
                                1 => i64::MAX,
                                _ => i as i64 * 7 - 1_000,
                            })
                        }))),
                        Arc::new(Int32Array::from_iter_values(
                            rows.clone().map(|i| [i32::MIN, -1, 0, i32::MAX][i % 4]),
                        )),
                        Arc::new(Int16Array::from_iter(
                            rows.clone()
                                .map(|i| (!null(i)).then(|| [i16::MIN, 7, i16::MAX][i % 3])),
                        )),
                        Arc::new(Int8Array::from_iter_values(
                            rows.clone().map(|i| [-128i8, 0, 1, 127][i % 4]),
                        )),
                        Arc::new(Date32Array::from_iter(
                            rows.clone()
                                .map(|i| (!null(i)).then_some(20_000 + i as i32 % 400)),
                        )),
                        Arc::new(
                            TimestampMillisecondArray::from_iter(rows.clone().map(|i| {
                                (!null(i)).then_some(1_767_225_600_000 + 5_000 * i as i64)
                            }))
                            .with_timezone("Europe/Berlin"),
                        ),
                        Arc::new(TimestampMicrosecondArray::from_iter_values(
                            rows.clone().map(|i| -(i as i64) * 1_000_003),
                        )),
                        Arc::new(
                            TimestampNanosecondArray::from_iter(rows.clone().map(|i| {
                                (!null(i)).then_some(1_767_225_600_000_000_000 + i as i64)
                            }))
                            .with_timezone("UTC"),
                        ),
                    ];
                RecordBatch::try_new(schema.clone(), columns).unwrap()
            })
            .collect()
    }

    fn write(path: &Path, batches: &[RecordBatch]) {
        let schema = batches[0].schema();
        let mut w = FileWriter::new(File::create(path).unwrap(), path, schema).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        crate::from_parquet_bytes("t", bytes::Bytes::from(std::fs::read(path).unwrap())).unwrap()
    }

    #[test]
    fn every_type_reads_back_exactly_with_its_arrow_type() {
        let dir = tempdir("types");
        // Batches that fill row groups unevenly, one longer than a page, and an empty one.
        let written = batches(&[5, 70_000, 0, PAGE_ROWS + 3, 1_000]);
        let path = dir.join("t.parquet");
        write(&path, &written);
        let schema = written[0].schema();
        let expected = arrow_select::concat::concat_batches(&schema, &written).unwrap();
        let read = read(&path);
        assert_eq!(
            read[0].schema(),
            schema,
            "the Arrow types, time zones included"
        );
        let got = arrow_select::concat::concat_batches(&schema, &read).unwrap();
        assert_eq!(got.num_rows(), expected.num_rows());
        for (i, f) in schema.fields().iter().enumerate() {
            // NaN != NaN: compare the data (bits and validity) rather than the values.
            assert_eq!(
                got.column(i).to_data(),
                expected.column(i).to_data(),
                "column {}",
                f.name()
            );
        }
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(File::open(&path).unwrap())
                .unwrap();
        let md = reader.metadata();
        // 5 + 70,000 rows, then the page-and-a-bit, then the last 1,000 at the end.
        let groups: Vec<i64> = md.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, [70_005, PAGE_ROWS as i64 + 3, 1_000]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn statistics_are_each_chunks_bounds_and_counts() {
        let dir = tempdir("stats");
        let written = batches(&[300]);
        let path = dir.join("t.parquet");
        write(&path, &written);
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(File::open(&path).unwrap())
                .unwrap();
        let rg = reader.metadata().row_group(0);
        let b = &written[0];
        let nulls = |i: usize| rg.column(i).statistics().unwrap().null_count_opt();
        assert_eq!(nulls(0), Some(b.column(0).null_count() as u64));
        assert_eq!(nulls(1), Some(0));
        match rg.column(0).statistics().unwrap() {
            Statistics::Double(v) => {
                let values = b.column(0).as_any().downcast_ref::<Float64Array>().unwrap();
                let finite = values.iter().flatten().filter(|x| !x.is_nan());
                assert_eq!(*v.max_opt().unwrap(), f64::INFINITY);
                assert_eq!(*v.min_opt().unwrap(), finite.fold(f64::INFINITY, f64::min));
            }
            other => panic!("{other:?}"),
        }
        match rg.column(3).statistics().unwrap() {
            Statistics::Int64(v) => {
                assert_eq!(
                    (*v.min_opt().unwrap(), *v.max_opt().unwrap()),
                    (i64::MIN, i64::MAX)
                );
            }
            other => panic!("{other:?}"),
        }
        match rg.column(6).statistics().unwrap() {
            Statistics::Int32(v) => {
                assert_eq!((*v.min_opt().unwrap(), *v.max_opt().unwrap()), (-128, 127))
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_without_rows_has_the_columns() {
        let dir = tempdir("empty");
        let path = dir.join("t.parquet");
        let schema = batches(&[0])[0].schema();
        FileWriter::new(File::create(&path).unwrap(), &path, schema.clone())
            .unwrap()
            .finish()
            .unwrap();
        let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
        assert_eq!(reader.schema(), &schema);
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn mismatched_batches_and_unsupported_types_are_refused_by_name() {
        let dir = tempdir("refused");
        let path = dir.join("t.parquet");
        let text = Arc::new(Schema::new(vec![Field::new(
            "device",
            DataType::Utf8,
            false,
        )]));
        assert!(!FileWriter::supports(&text));
        let e = FileWriter::new(File::create(&path).unwrap(), &path, text.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("column `device` is Utf8"), "{e}");

        let one = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, false)]));
        let mut w = FileWriter::new(File::create(&path).unwrap(), &path, one.clone()).unwrap();
        let strings = RecordBatch::try_new(
            text,
            vec![Arc::new(StringArray::from(vec!["a"])) as ArrayRef],
        )
        .unwrap();
        let e = w.write(&strings).unwrap_err().to_string();
        assert!(
            e.contains("a batch of columns (device Utf8) for a file of (x Float64)"),
            "{e}"
        );
        // A column declared without nulls that has some (a batch built without checks).
        let nullable = Arc::new(Schema::new(vec![Field::new("x", DataType::Float64, true)]));
        let with_null = RecordBatch::try_new(
            nullable,
            vec![Arc::new(Float64Array::from(vec![Some(1.0), None])) as ArrayRef],
        )
        .unwrap();
        let e = w
            .write(&with_null)
            .and_then(|()| w.finish())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column `x` is declared without nulls but has some"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
