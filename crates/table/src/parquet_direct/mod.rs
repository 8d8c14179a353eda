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

mod encoding;
mod page;
mod stream;
mod thrift;

pub use self::stream::{FileWriter, ROW_GROUP_ROWS};

use std::collections::HashMap;

use self::page::{Chunk, write_column};
use self::thrift::{Leaf, Logical, RowGroup, file_metadata};
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
    let leaves: Vec<Leaf<'_>> = columns.iter().zip(&chunks).map(leaf).collect();
    let footer_start = out.len();
    let groups = [RowGroup { rows, chunks }];
    file_metadata(&mut out, &leaves, &groups, &[]);
    let footer_len = (out.len() - footer_start) as u32;
    out.extend_from_slice(&footer_len.to_le_bytes());
    out.extend_from_slice(b"PAR1");
    Ok(out)
}

/// How a column of `write_table` is declared: required, and annotated by its kind.
fn leaf<'a>((c, chunk): (&Column<'a>, &Chunk)) -> Leaf<'a> {
    let logical = match c.values {
        Values::Float64(_) | Values::Int64(_) => Logical::Plain,
        Values::Int8(_) => Logical::Int {
            bits: 8,
            signed: true,
        },
        Values::Timestamp(_) | Values::TimestampRuns(_) => {
            Logical::Timestamp { unit: 1, utc: true }
        }
        Values::TextRuns(_) => Logical::String,
    };
    Leaf {
        name: c.name,
        physical: chunk.physical,
        optional: false,
        logical,
    }
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
