//! A Parquet writer for tall, flat tables whose shape is known up front, writing the format's
//! bytes directly instead of going through Arrow arrays and a general encoder.
//!
//! fleetscore writes a prediction table per task: hundreds of thousands of rows in which the
//! text columns repeat one value per model (or per run), the times of a sensor come in a
//! regular step, and the floats are plain numbers. The general writer spends most of its time
//! re-discovering that shape (hashing every text value into a dictionary, comparing every value
//! for statistics). Here the caller states it:
//!
//! - [`Values::TextRuns`] / [`Values::TimestampRuns`]: a dictionary and the runs of rows that
//!   repeat each entry, stored as a dictionary page and run-length-encoded keys (a few bytes per
//!   run, however long), so readers can decode them as dictionaries;
//! - [`Values::Timestamp`]: milliseconds since the epoch (UTC), `DELTA_BINARY_PACKED`, so a
//!   regular step costs almost nothing;
//! - [`Values::Int64`]: counts and other integers, `DELTA_BINARY_PACKED` like times;
//! - [`Values::Float64`]: `PLAIN` and uncompressed, which is a copy;
//! - [`Values::Int8`]: a dictionary of the distinct values and bit-packed keys (1 bit a row for
//!   a 0/1 flag).
//!
//! Every column is required (no nulls). Min/max statistics are written for every column (for
//! text, from the dictionary alone), so readers can prune on them. Pages hold at most
//! [`PAGE_ROWS`] rows; the file has one row group. Metadata is Thrift compact protocol as the
//! format specifies (`parquet.thrift`). The result is checked by reading it back with the
//! `parquet` crate, pyarrow, pandas and DuckDB in the tests.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Rows per data page at most (1 MiB of doubles), so readers can decode a column in pieces.
pub const PAGE_ROWS: usize = 131_072;

/// The rows of one column.
#[derive(Debug, Clone, Copy)]
pub enum Values<'a> {
    /// Doubles.
    Float64(&'a [f64]),
    /// Signed 8-bit integers (stored as Parquet `INT32` annotated `INT(8, signed)`).
    Int8(&'a [i8]),
    /// Signed 64-bit integers (`DELTA_BINARY_PACKED`, as times are).
    Int64(&'a [i64]),
    /// Milliseconds since 1970-01-01T00:00:00Z (a UTC timestamp in milliseconds).
    Timestamp(&'a [i64]),
    /// UTF-8 text given as `runs` of rows, each `(index into dictionary, number of rows)`.
    TextRuns(&'a Runs<String>),
    /// UTC millisecond timestamps given as `runs` of rows over a dictionary.
    TimestampRuns(&'a Runs<i64>),
}

/// A column stated as a dictionary and the runs of rows that repeat each entry, in row order.
#[derive(Debug, Clone)]
pub struct Runs<T> {
    dictionary: Vec<T>,
    runs: Vec<(u32, u32)>,
    rows: usize,
}

impl<T> Default for Runs<T> {
    fn default() -> Runs<T> {
        Runs {
            dictionary: Vec::new(),
            runs: Vec::new(),
            rows: 0,
        }
    }
}

impl<T> Runs<T> {
    /// One value on every one of `rows` rows.
    pub fn constant(value: T, rows: usize) -> Runs<T> {
        let mut runs = Vec::new();
        let mut left = rows;
        while left > 0 {
            let n = left.min(u32::MAX as usize);
            runs.push((0, n as u32));
            left -= n;
        }
        Runs {
            dictionary: vec![value],
            runs,
            rows,
        }
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends `rows` rows of dictionary entry `key`, merging with the previous run of the same
    /// key.
    fn push_key(&mut self, key: u32, rows: u32) {
        if rows == 0 {
            return;
        }
        self.rows += rows as usize;
        match self.runs.last_mut() {
            Some((k, n)) if *k == key && n.checked_add(rows).is_some() => *n += rows,
            _ => self.runs.push((key, rows)),
        }
    }
}

/// Builds a [`Runs`] column of text, keeping each distinct value once in the dictionary.
#[derive(Debug, Default)]
pub struct TextRunsBuilder {
    runs: Runs<String>,
    index: HashMap<String, u32>,
}

impl TextRunsBuilder {
    /// Appends `rows` rows of `value`.
    pub fn push(&mut self, value: &str, rows: usize) {
        let key = match self.index.get(value) {
            Some(&k) => k,
            None => {
                let k = self.runs.dictionary.len() as u32;
                self.runs.dictionary.push(value.to_string());
                self.index.insert(value.to_string(), k);
                k
            }
        };
        let mut left = rows;
        while left > 0 {
            let n = left.min(u32::MAX as usize);
            self.runs.push_key(key, n as u32);
            left -= n;
        }
    }

    /// The column.
    pub fn finish(self) -> Runs<String> {
        self.runs
    }
}

/// A named column.
#[derive(Debug, Clone, Copy)]
pub struct Column<'a> {
    /// The column name.
    pub name: &'a str,
    /// Its rows.
    pub values: Values<'a>,
}

impl<'a> Column<'a> {
    /// A column named `name`.
    pub fn new(name: &'a str, values: Values<'a>) -> Column<'a> {
        Column { name, values }
    }
}

impl Values<'_> {
    fn rows(&self) -> usize {
        match self {
            Values::Float64(v) => v.len(),
            Values::Int8(v) => v.len(),
            Values::Int64(v) | Values::Timestamp(v) => v.len(),
            Values::TextRuns(r) => r.rows,
            Values::TimestampRuns(r) => r.rows,
        }
    }
}

// Parquet enum values (parquet.thrift).
const TYPE_INT32: i32 = 1;
const TYPE_INT64: i32 = 2;
const TYPE_DOUBLE: i32 = 5;
const TYPE_BYTE_ARRAY: i32 = 6;
const CONVERTED_UTF8: i32 = 0;
const CONVERTED_TIMESTAMP_MILLIS: i32 = 9;
const CONVERTED_INT_8: i32 = 15;
const REQUIRED: i32 = 0;
const ENCODING_PLAIN: i32 = 0;
const ENCODING_RLE: i32 = 3;
const ENCODING_DELTA_BINARY_PACKED: i32 = 5;
const ENCODING_RLE_DICTIONARY: i32 = 8;
const CODEC_UNCOMPRESSED: i32 = 0;
const PAGE_DATA: i32 = 0;
const PAGE_DICTIONARY: i32 = 2;

/// Encodes `columns` (all of the same number of rows) as one Parquet file.
pub fn write_table(columns: &[Column<'_>]) -> Result<Vec<u8>> {
    let invalid = |message: String| Error::Parquet {
        path: "(in memory)".into(),
        message,
    };
    let rows = columns.first().map_or(0, |c| c.values.rows());
    for c in columns {
        if c.values.rows() != rows {
            return Err(invalid(format!(
                "column `{}` has {} rows, `{}` has {rows}",
                c.name,
                c.values.rows(),
                columns[0].name
            )));
        }
        match c.values {
            Values::TextRuns(r) => check_runs(c.name, r)?,
            Values::TimestampRuns(r) => check_runs(c.name, r)?,
            _ => {}
        }
    }
    // Data pages are at most this big, plus small headers: reserve once.
    let capacity = 4096
        + columns
            .iter()
            .map(|c| match c.values {
                Values::Float64(v) => v.len() * 8,
                Values::Int8(v) => v.len() / 8 + 64,
                Values::Int64(v) | Values::Timestamp(v) => v.len() + 1024,
                _ => 1024,
            })
            .sum::<usize>();
    let mut out = Vec::with_capacity(capacity);
    out.extend_from_slice(b"PAR1");
    let mut chunks = Vec::with_capacity(columns.len());
    for c in columns {
        chunks.push(write_column(&mut out, c));
    }
    let footer_start = out.len();
    file_metadata(&mut out, columns, &chunks, rows);
    let footer_len = (out.len() - footer_start) as u32;
    out.extend_from_slice(&footer_len.to_le_bytes());
    out.extend_from_slice(b"PAR1");
    Ok(out)
}

/// `v` in pages of at most [`PAGE_ROWS`] rows; an empty column still gets one (empty) page, as
/// readers expect every column chunk to have a data page.
fn pages<T>(v: &[T]) -> impl Iterator<Item = &[T]> {
    let empty: &[T] = &[];
    v.chunks(PAGE_ROWS).chain(v.is_empty().then_some(empty))
}

fn check_runs<T>(name: &str, r: &Runs<T>) -> Result<()> {
    let n = r.dictionary.len() as u32;
    if let Some((k, _)) = r.runs.iter().find(|(k, _)| *k >= n) {
        return Err(Error::Parquet {
            path: "(in memory)".into(),
            message: format!("column `{name}`: run of key {k}, but the dictionary has {n} entries"),
        });
    }
    Ok(())
}

/// Where a column chunk landed and what its metadata says.
struct Chunk {
    physical: i32,
    encodings: Vec<i32>,
    dictionary_offset: Option<i64>,
    data_offset: i64,
    size: i64,
    min: Option<Vec<u8>>,
    max: Option<Vec<u8>>,
    nan_count: Option<i64>,
}

fn write_column(out: &mut Vec<u8>, c: &Column<'_>) -> Chunk {
    let start = out.len() as i64;
    let mut page = Vec::new();
    match c.values {
        Values::Float64(v) => {
            for part in pages(v) {
                // PLAIN doubles: the page is the values' little-endian bytes, written in place.
                data_page_header(out, part.len() * 8, part.len(), ENCODING_PLAIN);
                let at = out.len();
                out.resize(at + part.len() * 8, 0);
                for (to, x) in out[at..].chunks_exact_mut(8).zip(part) {
                    to.copy_from_slice(&x.to_le_bytes());
                }
            }
            let (min, max, nans) = float_stats(v);
            Chunk {
                physical: TYPE_DOUBLE,
                encodings: vec![ENCODING_PLAIN, ENCODING_RLE],
                dictionary_offset: None,
                data_offset: start,
                size: out.len() as i64 - start,
                min: min.map(|m| m.to_le_bytes().to_vec()),
                max: max.map(|m| m.to_le_bytes().to_vec()),
                nan_count: Some(nans),
            }
        }
        Values::Int64(v) | Values::Timestamp(v) => {
            for part in pages(v) {
                page.clear();
                delta_binary_packed(&mut page, part);
                data_page(out, &page, part.len(), ENCODING_DELTA_BINARY_PACKED);
            }
            Chunk {
                physical: TYPE_INT64,
                encodings: vec![ENCODING_DELTA_BINARY_PACKED, ENCODING_RLE],
                dictionary_offset: None,
                data_offset: start,
                size: out.len() as i64 - start,
                min: v.iter().min().map(|m| m.to_le_bytes().to_vec()),
                max: v.iter().max().map(|m| m.to_le_bytes().to_vec()),
                nan_count: None,
            }
        }
        Values::Int8(v) => {
            // The distinct values, ascending, are the dictionary; a row's key is its position.
            let mut seen = [false; 256];
            for &x in v {
                seen[(x as i16 + 128) as usize] = true;
            }
            let mut key = [0u32; 256];
            let mut dictionary = Vec::new();
            for (i, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
                key[i] = dictionary.len() as u32;
                dictionary.push(i as i32 - 128);
            }
            let width = bit_width(dictionary.len().saturating_sub(1) as u64);
            let dict_page: Vec<u8> = dictionary.iter().flat_map(|d| d.to_le_bytes()).collect();
            dictionary_page(out, &dict_page, dictionary.len());
            let data_offset = out.len() as i64;
            let mut keys = Vec::with_capacity(PAGE_ROWS);
            for part in pages(v) {
                page.clear();
                page.push(width);
                if width == 0 {
                    // One value throughout (or none): a single run, not bits of width zero.
                    uleb(&mut page, (part.len() as u64) << 1);
                } else {
                    keys.clear();
                    keys.extend(part.iter().map(|&x| key[(x as i16 + 128) as usize] as u64));
                    bit_packed_run(&mut page, &keys, width);
                }
                data_page(out, &page, part.len(), ENCODING_RLE_DICTIONARY);
            }
            Chunk {
                physical: TYPE_INT32,
                encodings: vec![ENCODING_PLAIN, ENCODING_RLE_DICTIONARY, ENCODING_RLE],
                dictionary_offset: Some(start),
                data_offset,
                size: out.len() as i64 - start,
                min: dictionary.first().map(|m| m.to_le_bytes().to_vec()),
                max: dictionary.last().map(|m| m.to_le_bytes().to_vec()),
                nan_count: None,
            }
        }
        Values::TextRuns(r) => {
            let mut dict_page = Vec::new();
            for s in &r.dictionary {
                dict_page.extend_from_slice(&(s.len() as u32).to_le_bytes());
                dict_page.extend_from_slice(s.as_bytes());
            }
            let data_offset = write_runs(out, r, &dict_page);
            let bound = |s: Option<&String>| s.map(|s| s.as_bytes().to_vec());
            runs_chunk(
                TYPE_BYTE_ARRAY,
                start,
                data_offset,
                out.len(),
                (
                    bound(r.dictionary.iter().min()),
                    bound(r.dictionary.iter().max()),
                ),
            )
        }
        Values::TimestampRuns(r) => {
            let dict_page: Vec<u8> = r.dictionary.iter().flat_map(|d| d.to_le_bytes()).collect();
            let data_offset = write_runs(out, r, &dict_page);
            let bound = |m: Option<&i64>| m.map(|m| m.to_le_bytes().to_vec());
            runs_chunk(
                TYPE_INT64,
                start,
                data_offset,
                out.len(),
                (
                    bound(r.dictionary.iter().min()),
                    bound(r.dictionary.iter().max()),
                ),
            )
        }
    }
}

/// The chunk of a dictionary-and-runs column written from `start` to `end`, with its bounds.
fn runs_chunk(
    physical: i32,
    start: i64,
    data_offset: i64,
    end: usize,
    (min, max): (Option<Vec<u8>>, Option<Vec<u8>>),
) -> Chunk {
    Chunk {
        physical,
        encodings: vec![ENCODING_PLAIN, ENCODING_RLE_DICTIONARY, ENCODING_RLE],
        dictionary_offset: Some(start),
        data_offset,
        size: end as i64 - start,
        min,
        max,
        nan_count: None,
    }
}

/// Writes the dictionary page and the data pages of run-length-encoded keys; returns the offset
/// of the first data page.
fn write_runs<T>(out: &mut Vec<u8>, r: &Runs<T>, dict_page: &[u8]) -> i64 {
    dictionary_page(out, dict_page, r.dictionary.len());
    let data_offset = out.len() as i64;
    let width = bit_width(r.dictionary.len().saturating_sub(1) as u64);
    let key_bytes = width.div_ceil(8) as usize;
    let mut page = vec![width];
    let mut page_rows = 0usize;
    for &(key, n) in &r.runs {
        let mut left = n as usize;
        while left > 0 {
            let take = left.min(PAGE_ROWS - page_rows);
            uleb(&mut page, (take as u64) << 1);
            page.extend_from_slice(&key.to_le_bytes()[..key_bytes]);
            page_rows += take;
            left -= take;
            if page_rows == PAGE_ROWS {
                data_page(out, &page, page_rows, ENCODING_RLE_DICTIONARY);
                page.truncate(1);
                page_rows = 0;
            }
        }
    }
    if page_rows > 0 || data_offset == out.len() as i64 {
        // The last page, or the one (empty) page of an empty column.
        data_page(out, &page, page_rows, ENCODING_RLE_DICTIONARY);
    }
    data_offset
}

fn float_stats(v: &[f64]) -> (Option<f64>, Option<f64>, i64) {
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut nans = 0i64;
    // `f64::min`/`max` skip NaN; counting NaN separately keeps the loop free of branches.
    for &x in v {
        nans += i64::from(x.is_nan());
        min = min.min(x);
        max = max.max(x);
    }
    if nans as usize == v.len() {
        return (None, None, nans);
    }
    // The format asks for -0.0 as a zero minimum and +0.0 as a zero maximum.
    if min == 0.0 {
        min = -0.0;
    }
    if max == 0.0 {
        max = 0.0;
    }
    (Some(min), Some(max), nans)
}

/// Bits needed for `max`.
fn bit_width(max: u64) -> u8 {
    (64 - max.leading_zeros()) as u8
}

fn uleb(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Packs `values` at `width` bits each, least significant bit first.
fn pack_bits(out: &mut Vec<u8>, values: &[u64], width: u8) {
    if width == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    for &v in values {
        acc |= (v as u128) << bits;
        bits += width as u32;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
}

/// One bit-packed run of the RLE/bit-packing hybrid: groups of 8 values (the last padded with
/// zeros; the page's value count says where the values end).
fn bit_packed_run(out: &mut Vec<u8>, values: &[u64], width: u8) {
    let groups = values.len().div_ceil(8);
    uleb(out, ((groups as u64) << 1) | 1);
    let start = out.len();
    pack_bits(out, values, width);
    out.resize(start + groups * width as usize, 0);
}

/// `DELTA_BINARY_PACKED`: blocks of 128 deltas in 4 miniblocks of 32.
fn delta_binary_packed(out: &mut Vec<u8>, values: &[i64]) {
    const BLOCK: usize = 128;
    const MINIBLOCKS: usize = 4;
    const MINI: usize = BLOCK / MINIBLOCKS;
    uleb(out, BLOCK as u64);
    uleb(out, MINIBLOCKS as u64);
    uleb(out, values.len() as u64);
    uleb(out, zigzag(values.first().copied().unwrap_or(0)));
    if values.len() < 2 {
        return;
    }
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; MINI];
    let mut next = 1;
    while next < values.len() {
        let n = (values.len() - next).min(BLOCK);
        for (i, d) in deltas[..n].iter_mut().enumerate() {
            *d = values[next + i].wrapping_sub(values[next + i - 1]);
        }
        next += n;
        let deltas = &deltas[..n];
        let min = deltas.iter().copied().min().unwrap_or(0);
        uleb(out, zigzag(min));
        let widths_at = out.len();
        out.resize(widths_at + MINIBLOCKS, 0);
        for (m, mini) in deltas.chunks(MINI).enumerate() {
            let mut max = 0u64;
            for (p, &d) in packed.iter_mut().zip(mini) {
                *p = d.wrapping_sub(min) as u64;
                max |= *p;
            }
            let width = bit_width(max);
            out[widths_at + m] = width;
            // A partial last miniblock is padded to its full size.
            packed[mini.len()..].fill(0);
            pack_bits(out, &packed, width);
        }
    }
}

fn data_page(out: &mut Vec<u8>, body: &[u8], values: usize, encoding: i32) {
    data_page_header(out, body.len(), values, encoding);
    out.extend_from_slice(body);
}

/// The header of a data page of `size` bytes (uncompressed, no levels: every column is
/// required), which the caller writes next.
fn data_page_header(out: &mut Vec<u8>, size: usize, values: usize, encoding: i32) {
    let mut t = Thrift::new(out);
    t.i32(1, PAGE_DATA);
    t.i32(2, size as i32);
    t.i32(3, size as i32);
    t.begin(5);
    t.i32(1, values as i32);
    t.i32(2, encoding);
    t.i32(3, ENCODING_RLE);
    t.i32(4, ENCODING_RLE);
    t.end();
    t.stop();
}

fn dictionary_page(out: &mut Vec<u8>, body: &[u8], values: usize) {
    let mut t = Thrift::new(out);
    t.i32(1, PAGE_DICTIONARY);
    t.i32(2, body.len() as i32);
    t.i32(3, body.len() as i32);
    t.begin(7);
    t.i32(1, values as i32);
    t.i32(2, ENCODING_PLAIN);
    t.end();
    t.stop();
    out.extend_from_slice(body);
}

fn file_metadata(out: &mut Vec<u8>, columns: &[Column<'_>], chunks: &[Chunk], rows: usize) {
    let mut t = Thrift::new(out);
    t.i32(1, 1);
    // The schema: a root group, then one required leaf per column.
    t.list_begin(2, columns.len() + 1, T_STRUCT);
    t.struct_begin();
    t.binary(4, b"schema");
    t.i32(5, columns.len() as i32);
    t.stop();
    for (c, chunk) in columns.iter().zip(chunks) {
        t.struct_begin();
        t.i32(1, chunk.physical);
        t.i32(3, REQUIRED);
        t.binary(4, c.name.as_bytes());
        match c.values {
            Values::Float64(_) | Values::Int64(_) => {}
            Values::Int8(_) => {
                t.i32(6, CONVERTED_INT_8);
                t.begin(10);
                t.begin(10);
                t.i8(1, 8);
                t.bool(2, true);
                t.end();
                t.end();
            }
            Values::Timestamp(_) | Values::TimestampRuns(_) => {
                t.i32(6, CONVERTED_TIMESTAMP_MILLIS);
                t.begin(10);
                t.begin(8);
                t.bool(1, true);
                t.begin(2);
                t.begin(1);
                t.end();
                t.end();
                t.end();
                t.end();
            }
            Values::TextRuns(_) => {
                t.i32(6, CONVERTED_UTF8);
                t.begin(10);
                t.begin(1);
                t.end();
                t.end();
            }
        }
        t.stop();
    }
    t.i64(3, rows as i64);
    // One row group.
    t.list_begin(4, 1, T_STRUCT);
    t.struct_begin();
    t.list_begin(1, columns.len(), T_STRUCT);
    for (c, chunk) in columns.iter().zip(chunks) {
        t.struct_begin();
        t.i64(2, 0);
        t.begin(3);
        t.i32(1, chunk.physical);
        t.list_begin(2, chunk.encodings.len(), T_I32);
        for &e in &chunk.encodings {
            t.list_i32(e);
        }
        t.list_begin(3, 1, T_BINARY);
        t.list_binary(c.name.as_bytes());
        t.i32(4, CODEC_UNCOMPRESSED);
        t.i64(5, rows as i64);
        t.i64(6, chunk.size);
        t.i64(7, chunk.size);
        t.i64(9, chunk.data_offset);
        if let Some(d) = chunk.dictionary_offset {
            t.i64(11, d);
        }
        t.begin(12);
        t.i64(3, 0);
        if let (Some(min), Some(max)) = (&chunk.min, &chunk.max) {
            t.binary(5, max);
            t.binary(6, min);
        }
        if let Some(n) = chunk.nan_count {
            t.i64(9, n);
        }
        t.end();
        t.end();
        t.stop();
    }
    let total: i64 = chunks.iter().map(|c| c.size).sum();
    t.i64(2, total);
    t.i64(3, rows as i64);
    t.i64(5, 4);
    t.i64(6, total);
    t.i16(7, 0);
    t.stop();
    t.binary(
        6,
        concat!("fleetscore version ", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    // Min/max follow each type's own order.
    t.list_begin(7, columns.len(), T_STRUCT);
    for _ in columns {
        t.struct_begin();
        t.begin(1);
        t.end();
        t.stop();
    }
    t.stop();
}

/// Thrift compact protocol, just what the Parquet metadata needs: structs are written field by
/// field in increasing id order; `begin`/`end` open and close a nested struct field,
/// `struct_begin`/`stop` a struct that is a list element.
struct Thrift<'a> {
    out: &'a mut Vec<u8>,
    last: Vec<i16>,
}

const T_BOOL_TRUE: u8 = 1;
const T_BOOL_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I16: u8 = 4;
const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_STRUCT: u8 = 12;

impl<'a> Thrift<'a> {
    fn new(out: &'a mut Vec<u8>) -> Thrift<'a> {
        Thrift { out, last: vec![0] }
    }

    fn field(&mut self, id: i16, kind: u8) {
        let last = self.last.last_mut().expect("inside a struct");
        let delta = id - *last;
        if (1..=15).contains(&delta) {
            self.out.push(((delta as u8) << 4) | kind);
        } else {
            self.out.push(kind);
            uleb(self.out, zigzag(id as i64));
        }
        *last = id;
    }

    fn bool(&mut self, id: i16, v: bool) {
        self.field(id, if v { T_BOOL_TRUE } else { T_BOOL_FALSE });
    }

    fn i8(&mut self, id: i16, v: i8) {
        self.field(id, T_BYTE);
        self.out.push(v as u8);
    }

    fn i16(&mut self, id: i16, v: i16) {
        self.field(id, T_I16);
        uleb(self.out, zigzag(v as i64));
    }

    fn i32(&mut self, id: i16, v: i32) {
        self.field(id, T_I32);
        uleb(self.out, zigzag(v as i64));
    }

    fn i64(&mut self, id: i16, v: i64) {
        self.field(id, T_I64);
        uleb(self.out, zigzag(v));
    }

    fn binary(&mut self, id: i16, v: &[u8]) {
        self.field(id, T_BINARY);
        self.list_binary(v);
    }

    /// Opens a struct-valued field.
    fn begin(&mut self, id: i16) {
        self.field(id, T_STRUCT);
        self.last.push(0);
    }

    /// Closes the struct opened by [`Thrift::begin`].
    fn end(&mut self) {
        self.stop();
    }

    /// Opens a struct that is a list element.
    fn struct_begin(&mut self) {
        self.last.push(0);
    }

    /// Ends the current struct.
    fn stop(&mut self) {
        self.out.push(0);
        self.last.pop();
    }

    /// A list field of `len` elements of `kind`: structs (each written between
    /// `struct_begin` and `stop`), or scalars written with the `list_*` calls.
    fn list_begin(&mut self, id: i16, len: usize, kind: u8) {
        self.field(id, T_LIST);
        if len < 15 {
            self.out.push(((len as u8) << 4) | kind);
        } else {
            self.out.push(0xf0 | kind);
            uleb(self.out, len as u64);
        }
    }

    fn list_i32(&mut self, v: i32) {
        uleb(self.out, zigzag(v as i64));
    }

    fn list_binary(&mut self, v: &[u8]) {
        uleb(self.out, v.len() as u64);
        self.out.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int8Type, Int64Type, TimestampMillisecondType};
    use arrow_schema::{DataType, TimeUnit};

    /// Floats, 8-bit integers, times, text runs and time runs.
    type Sample = (Vec<f64>, Vec<i8>, Vec<i64>, Runs<String>, Runs<i64>);

    /// A table with every kind of column, `rows` rows, of awkward values.
    fn sample(rows: usize) -> Sample {
        let floats: Vec<f64> = (0..rows)
            .map(|i| match i % 7 {
                0 => f64::NAN,
                1 => -0.0,
                2 => f64::INFINITY,
                _ => (i as f64).sin() * 1e6,
            })
            .collect();
        let ints: Vec<i8> = (0..rows).map(|i| [-128i8, 0, 1, 127][i % 4]).collect();
        // Sensor series 5 s apart that start over, with a jump and a negative time.
        let times: Vec<i64> = (0..rows)
            .map(|i| match i % 1000 {
                999 => i64::MIN / 3,
                j => 1_700_000_000_000 + 5_000 * j as i64,
            })
            .collect();
        let mut text = TextRunsBuilder::default();
        let mut left = rows;
        let mut n = 0usize;
        while left > 0 {
            // 300 distinct values: keys need 9 bits, so two bytes per run.
            let take = left.min(1 + n * 37 % 900);
            text.push(&format!("device-{:03}-ü", n % 300), take);
            left -= take;
            n += 1;
        }
        let constant = Runs::constant(1_700_000_000_000, rows);
        (floats, ints, times, text.finish(), constant)
    }

    fn columns<'a>(s: &'a Sample) -> Vec<Column<'a>> {
        vec![
            Column::new("f", Values::Float64(&s.0)),
            Column::new("i", Values::Int8(&s.1)),
            Column::new("t", Values::Timestamp(&s.2)),
            Column::new("s", Values::TextRuns(&s.3)),
            Column::new("w", Values::TimestampRuns(&s.4)),
            Column::new("n", Values::Int64(&s.2)),
        ]
    }

    fn expand<T: Clone>(r: &Runs<T>) -> Vec<T> {
        r.runs
            .iter()
            .flat_map(|&(k, n)| std::iter::repeat_n(r.dictionary[k as usize].clone(), n as usize))
            .collect()
    }

    fn round_trip(rows: usize) {
        let s = sample(rows);
        let bytes = write_table(&columns(&s)).unwrap();
        let batches = crate::from_parquet_bytes("t", bytes::Bytes::from(bytes)).unwrap();
        let got: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(got, rows);
        let schema = batches.first().map(|b| b.schema());
        if let Some(schema) = schema {
            assert_eq!(schema.field(0).data_type(), &DataType::Float64);
            assert_eq!(schema.field(1).data_type(), &DataType::Int8);
            assert!(matches!(
                schema.field(2).data_type(),
                DataType::Timestamp(TimeUnit::Millisecond, Some(_))
            ));
            assert_eq!(schema.field(3).data_type(), &DataType::Utf8);
            assert_eq!(schema.field(5).data_type(), &DataType::Int64);
            assert!(schema.fields().iter().all(|f| !f.is_nullable()));
        }
        let mut f = Vec::new();
        let mut i = Vec::new();
        let mut t = Vec::new();
        let mut text = Vec::new();
        let mut w = Vec::new();
        let mut n: Vec<i64> = Vec::new();
        for b in &batches {
            n.extend(
                b.column(5)
                    .as_primitive::<Int64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
            f.extend(
                b.column(0)
                    .as_primitive::<Float64Type>()
                    .values()
                    .iter()
                    .copied(),
            );
            i.extend(
                b.column(1)
                    .as_primitive::<Int8Type>()
                    .values()
                    .iter()
                    .copied(),
            );
            t.extend(
                b.column(2)
                    .as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .copied(),
            );
            text.extend(
                b.column(3)
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string()),
            );
            w.extend(
                b.column(4)
                    .as_primitive::<TimestampMillisecondType>()
                    .values()
                    .iter()
                    .copied(),
            );
        }
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&f), bits(&s.0));
        assert_eq!(i, s.1);
        assert_eq!(t, s.2);
        assert_eq!(text, expand(&s.3));
        assert_eq!(w, expand(&s.4));
        assert_eq!(n, s.2);
    }

    #[test]
    fn every_column_kind_reads_back_exactly() {
        round_trip(5_003);
    }

    #[test]
    fn columns_longer_than_a_page_read_back_exactly() {
        round_trip(2 * PAGE_ROWS + 77);
    }

    #[test]
    fn an_empty_table_reads_back_empty() {
        round_trip(0);
        round_trip(1);
    }

    #[test]
    fn statistics_are_the_column_bounds() {
        let s = sample(3_000);
        let bytes = write_table(&columns(&s)).unwrap();
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(bytes::Bytes::from(bytes))
                .unwrap();
        use parquet::file::reader::FileReader;
        use parquet::file::statistics::Statistics;
        let rg = reader.metadata().row_group(0);
        match rg.column(0).statistics().unwrap() {
            Statistics::Double(v) => {
                let finite = s.0.iter().copied().filter(|x| !x.is_nan());
                assert_eq!(*v.max_opt().unwrap(), f64::INFINITY);
                assert_eq!(*v.min_opt().unwrap(), finite.fold(f64::INFINITY, f64::min));
                assert_eq!(v.null_count_opt(), Some(0));
            }
            other => panic!("{other:?}"),
        }
        match rg.column(2).statistics().unwrap() {
            Statistics::Int64(v) => {
                assert_eq!(*v.min_opt().unwrap(), i64::MIN / 3);
                assert_eq!(*v.max_opt().unwrap(), 1_700_000_000_000 + 5_000 * 998);
            }
            other => panic!("{other:?}"),
        }
        match rg.column(3).statistics().unwrap() {
            Statistics::ByteArray(v) => {
                let all = expand(&s.3);
                let min = all.iter().min().unwrap();
                let max = all.iter().max().unwrap();
                assert_eq!(v.min_opt().unwrap().as_utf8().unwrap(), min);
                assert_eq!(v.max_opt().unwrap().as_utf8().unwrap(), max);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn columns_of_different_lengths_are_refused() {
        let a = [1.0, 2.0];
        let b = [1i64];
        let e = write_table(&[
            Column::new("a", Values::Float64(&a)),
            Column::new("b", Values::Timestamp(&b)),
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("column `b` has 1 rows, `a` has 2"),
            "{e}"
        );
    }
}
