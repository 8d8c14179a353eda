//! Parquet in and out, through the Arrow reader and writer of the `parquet` crate.

use std::fs::File;
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::{BatchReader, BatchWriter, RowPosition};

fn parquet_error(path: &str, e: impl std::fmt::Display) -> Error {
    Error::Parquet {
        path: path.to_string(),
        message: e.to_string(),
    }
}

pub(crate) struct ParquetReader {
    inner: ParquetRecordBatchReader,
    schema: SchemaRef,
    path: String,
    next_row: u64,
}

impl ParquetReader {
    pub(crate) fn new(file: File, path: &Path, batch_rows: usize) -> Result<ParquetReader> {
        let path = path.display().to_string();
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| parquet_error(&path, format!("not a readable Parquet file: {e}")))?;
        let schema = builder.schema().clone();
        let inner = builder
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| parquet_error(&path, e))?;
        Ok(ParquetReader {
            inner,
            schema,
            path,
            next_row: 0,
        })
    }
}

impl Iterator for ParquetReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        Some(match item {
            Ok(b) => {
                self.next_row += b.num_rows() as u64;
                Ok(b)
            }
            Err(e) => Err(parquet_error(
                &self.path,
                format!("corrupt data near row {}: {e}", self.next_row),
            )),
        })
    }
}

impl BatchReader for ParquetReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn next_position(&self) -> RowPosition {
        RowPosition::Row(self.next_row)
    }
}

pub(crate) struct ParquetWriter {
    inner: ArrowWriter<File>,
    path: String,
}

impl ParquetWriter {
    pub(crate) fn new(file: File, path: &Path, schema: SchemaRef) -> Result<ParquetWriter> {
        let path = path.display().to_string();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build();
        let inner =
            ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| parquet_error(&path, e))?;
        Ok(ParquetWriter { inner, path })
    }
}

impl BatchWriter for ParquetWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.inner
            .write(batch)
            .map_err(|e| parquet_error(&self.path, e))
    }

    fn finish(self: Box<Self>) -> Result<()> {
        self.inner
            .close()
            .map(|_| ())
            .map_err(|e| parquet_error(&self.path, e))
    }
}

/// Encodes batches as one Parquet file in memory (for object stores). Columns are written
/// plainly (no dictionary pages) and compressed with snappy: for the tall, sorted tables
/// fleetscore writes, hashing every value into a dictionary costs more time than it saves space.
pub fn to_parquet_bytes(schema: SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props))
        .map_err(|e| parquet_error("(in memory)", e))?;
    for b in batches {
        w.write(b).map_err(|e| parquet_error("(in memory)", e))?;
    }
    w.close().map_err(|e| parquet_error("(in memory)", e))?;
    Ok(buf)
}

/// Decodes a Parquet file held in memory; `name` is used in error messages.
pub fn from_parquet_bytes(name: &str, bytes: bytes::Bytes) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .map_err(|e| parquet_error(name, format!("not a readable Parquet file: {e}")))?
        .with_batch_size(65_536)
        .build()
        .map_err(|e| parquet_error(name, e))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| parquet_error(name, format!("corrupt data: {e}")))
}
