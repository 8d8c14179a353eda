//! Tables in and out: CSV and Parquet files read and written as streams of Arrow record batches,
//! the numeric feature matrix a model scores, taken from named columns, and the two tables the
//! pipeline itself writes: [`windows`] (closed windows, under `features/`) and [`predictions`].
//!
//! CSV columns are read as text and written back as they were read, so a CSV round trip keeps
//! every input value to the character. Parquet keeps its column types.
#![warn(missing_docs)]

mod csv_io;
mod error;
mod matrix;
pub mod parquet_direct;
mod parquet_io;
pub mod predictions;
pub mod readings;
mod text;
pub mod windows;

use std::path::Path;

pub use arrow_array::RecordBatch;
pub use arrow_schema::SchemaRef;
pub use error::{Error, Result};
pub use matrix::{append_columns, feature_matrix, filter_equals, require_columns};
pub use parquet_io::{
    ParquetConcat, from_parquet_bytes, from_parquet_bytes_as, to_parquet_bytes,
    with_dictionary_text,
};
pub use text::{Text, is_text, normalize_text, plain_text};

/// A table file format, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// The format a path's extension names (`.csv`, `.csv.gz`, `.csv.zst`, `.parquet`, `.pq`).
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("csv") => Ok(Format::Csv),
            Some("parquet") | Some("pq") => Ok(Format::Parquet),
            _ if CsvCompression::of(path) != CsvCompression::None => Ok(Format::Csv),
            _ => Err(Error::UnknownFormat(path.display().to_string())),
        }
    }

    /// The format a table is written in, by its path's extension: compressed CSV is read but
    /// not written, so `.csv.gz` and `.csv.zst` are refused here.
    pub fn for_writing(path: &Path) -> Result<Format> {
        if CsvCompression::of(path) != CsvCompression::None {
            return Err(Error::UnknownFormat(format!(
                "{} (compressed CSV is read, not written: write .csv or .parquet)",
                path.display()
            )));
        }
        Format::from_path(path)
    }
}

/// How a CSV file is compressed, by its name: `.csv.gz` (gzip) or `.csv.zst` (zstd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvCompression {
    /// Plain text.
    None,
    /// gzip (`.csv.gz`, `.csv.gzip`), several members allowed as `gzip` writes them.
    Gzip,
    /// Zstandard (`.csv.zst`, `.csv.zstd`).
    Zstd,
}

impl CsvCompression {
    /// The compression a file name says.
    pub fn of(path: &Path) -> CsvCompression {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if name.ends_with(".csv.gz") || name.ends_with(".csv.gzip") {
            CsvCompression::Gzip
        } else if name.ends_with(".csv.zst") || name.ends_with(".csv.zstd") {
            CsvCompression::Zstd
        } else {
            CsvCompression::None
        }
    }
}

/// A stream of record batches from a file.
pub trait BatchReader: Iterator<Item = Result<RecordBatch>> + Send {
    /// The columns every batch has.
    fn schema(&self) -> SchemaRef;
    /// The file line (CSV, 1-based, header = 1) or row number (Parquet, 0-based) of the next
    /// batch's first row, for error messages.
    fn next_position(&self) -> RowPosition;
}

/// Where a batch starts in its file, so errors can point at a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPosition {
    /// 1-based line of a CSV file (the header is line 1).
    Line(u64),
    /// 0-based row of a Parquet file.
    Row(u64),
}

impl RowPosition {
    /// The position `offset` rows further on.
    pub fn advance(self, offset: usize) -> RowPosition {
        match self {
            RowPosition::Line(l) => RowPosition::Line(l + offset as u64),
            RowPosition::Row(r) => RowPosition::Row(r + offset as u64),
        }
    }
}

impl std::fmt::Display for RowPosition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowPosition::Line(l) => write!(f, "line {l}"),
            RowPosition::Row(r) => write!(f, "row {r}"),
        }
    }
}

/// A sink for record batches.
pub trait BatchWriter: Send {
    /// Appends a batch.
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Flushes and closes the file (a Parquet file is only valid after this).
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens a table file, in batches of up to `batch_rows` rows.
pub fn open(path: &Path, batch_rows: usize) -> Result<Box<dyn BatchReader>> {
    open_with(path, batch_rows, false, None)
}

/// Opens a table file like [`open`], reading only the named columns (those the file has: the
/// caller says which are missing). Memory follows the columns read and the batch size, however
/// wide the file.
pub fn open_columns(
    path: &Path,
    batch_rows: usize,
    columns: &[&str],
) -> Result<Box<dyn BatchReader>> {
    open_with(path, batch_rows, false, Some(columns))
}

/// Opens a table file like [`open_columns`], but a Parquet file's text columns come as
/// dictionaries (`Int32` keys), as [`open_dictionary_text`] reads them.
pub fn open_columns_dictionary_text(
    path: &Path,
    batch_rows: usize,
    columns: &[&str],
) -> Result<Box<dyn BatchReader>> {
    open_with(path, batch_rows, true, Some(columns))
}

/// Opens a table file like [`open`], but a Parquet file's text columns come as dictionaries
/// (`Int32` keys), read from its dictionary pages without a string per row.
pub fn open_dictionary_text(path: &Path, batch_rows: usize) -> Result<Box<dyn BatchReader>> {
    open_with(path, batch_rows, true, None)
}

fn open_with(
    path: &Path,
    batch_rows: usize,
    dictionary_text: bool,
    projection: Option<&[&str]>,
) -> Result<Box<dyn BatchReader>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(match Format::from_path(path)? {
        Format::Csv => {
            // Compressed CSV is read as a stream: memory holds a buffer, never the file.
            let input: Box<dyn std::io::Read + Send> = match CsvCompression::of(path) {
                CsvCompression::None => Box::new(file),
                CsvCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                    std::io::BufReader::new(file),
                )),
                CsvCompression::Zstd => {
                    Box::new(zstd::Decoder::new(file).map_err(|e| Error::io(path, e))?)
                }
            };
            Box::new(csv_io::CsvReader::new(input, path, batch_rows, projection)?)
        }
        Format::Parquet => Box::new(parquet_io::ParquetReader::new(
            file,
            path,
            batch_rows,
            dictionary_text,
            projection,
        )?),
    })
}

/// Creates a table file for batches of `schema`.
pub fn create(path: &Path, schema: SchemaRef) -> Result<Box<dyn BatchWriter>> {
    let format = Format::for_writing(path)?;
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    Ok(match format {
        Format::Csv => Box::new(csv_io::CsvWriter::new(file, path, &schema)?),
        // Tables of numbers and times are written directly; others by the Arrow writer.
        Format::Parquet if parquet_direct::FileWriter::supports(&schema) => {
            Box::new(parquet_direct::FileWriter::new(file, path, schema)?)
        }
        Format::Parquet => Box::new(parquet_io::ParquetWriter::new(file, path, schema)?),
    })
}
