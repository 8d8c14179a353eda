//! Pages and column chunks: how each kind of column is laid out as a dictionary page and data
//! pages, the page headers, and each chunk's min/max statistics.

use super::encoding::{bit_packed_run, bit_width, delta_binary_packed, uleb};
use super::thrift::Thrift;
use super::{Column, PAGE_ROWS, Runs, Values};

// Parquet enum values (parquet.thrift).
pub(super) const TYPE_INT32: i32 = 1;
pub(super) const TYPE_INT64: i32 = 2;
pub(super) const TYPE_FLOAT: i32 = 4;
pub(super) const TYPE_DOUBLE: i32 = 5;
pub(super) const TYPE_BYTE_ARRAY: i32 = 6;
pub(super) const ENCODING_PLAIN: i32 = 0;
pub(super) const ENCODING_RLE: i32 = 3;
pub(super) const ENCODING_DELTA_BINARY_PACKED: i32 = 5;
const ENCODING_RLE_DICTIONARY: i32 = 8;
const PAGE_DATA: i32 = 0;
const PAGE_DICTIONARY: i32 = 2;

/// `v` in pages of at most [`PAGE_ROWS`] rows; an empty column still gets one (empty) page, as
/// readers expect every column chunk to have a data page.
fn pages<T>(v: &[T]) -> impl Iterator<Item = &[T]> {
    let empty: &[T] = &[];
    v.chunks(PAGE_ROWS).chain(v.is_empty().then_some(empty))
}

/// Where a column chunk landed and what its metadata says.
pub(super) struct Chunk {
    pub(super) physical: i32,
    pub(super) encodings: Vec<i32>,
    pub(super) dictionary_offset: Option<i64>,
    pub(super) data_offset: i64,
    pub(super) size: i64,
    pub(super) min: Option<Vec<u8>>,
    pub(super) max: Option<Vec<u8>>,
    pub(super) nan_count: Option<i64>,
    /// Its values, nulls included (the rows).
    pub(super) values: i64,
    /// Its nulls.
    pub(super) nulls: i64,
}

pub(super) fn write_column(out: &mut Vec<u8>, c: &Column<'_>) -> Chunk {
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
                values: v.len() as i64,
                nulls: 0,
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
                values: v.len() as i64,
                nulls: 0,
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
                values: v.len() as i64,
                nulls: 0,
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
                r.rows,
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
                r.rows,
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
    rows: usize,
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
        values: rows as i64,
        nulls: 0,
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

/// The min and max of `v` without NaN (`None` if every value is NaN, or there are none), and
/// its NaN count; a zero minimum is -0.0 and a zero maximum +0.0, as the format asks. The loop
/// runs in eight lanes so that it is vectorised.
pub(super) fn float_stats(v: &[f64]) -> (Option<f64>, Option<f64>, i64) {
    const LANES: usize = 8;
    let mut lo = [f64::INFINITY; LANES];
    let mut hi = [f64::NEG_INFINITY; LANES];
    let mut nans = [0i64; LANES];
    let mut chunks = v.chunks_exact(LANES);
    for chunk in &mut chunks {
        for j in 0..LANES {
            // `f64::min`/`max` skip NaN; counting NaN separately keeps the loop free of branches.
            nans[j] += i64::from(chunk[j].is_nan());
            lo[j] = lo[j].min(chunk[j]);
            hi[j] = hi[j].max(chunk[j]);
        }
    }
    for (j, &x) in chunks.remainder().iter().enumerate() {
        nans[j] += i64::from(x.is_nan());
        lo[j] = lo[j].min(x);
        hi[j] = hi[j].max(x);
    }
    let nans: i64 = nans.iter().sum();
    if nans as usize == v.len() {
        return (None, None, nans);
    }
    let mut min = lo.into_iter().fold(f64::INFINITY, f64::min);
    let mut max = hi.into_iter().fold(f64::NEG_INFINITY, f64::max);
    if min == 0.0 {
        min = -0.0;
    }
    if max == 0.0 {
        max = 0.0;
    }
    (Some(min), Some(max), nans)
}

fn data_page(out: &mut Vec<u8>, body: &[u8], values: usize, encoding: i32) {
    data_page_header(out, body.len(), values, encoding);
    out.extend_from_slice(body);
}

/// The header of a data page of `size` bytes (uncompressed, no levels: every column is
/// required), which the caller writes next.
pub(super) fn data_page_header(out: &mut Vec<u8>, size: usize, values: usize, encoding: i32) {
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
