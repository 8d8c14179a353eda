//! CSV in and out. Every column is read as text so that writing it back reproduces the input;
//! feature columns are parsed to numbers separately, with errors that name the line.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::{BatchReader, BatchWriter, RowPosition};

/// Reads a CSV file with a header line into batches of text columns.
pub(crate) struct CsvReader {
    reader: csv::Reader<BufReader<Box<dyn Read + Send>>>,
    path: String,
    schema: SchemaRef,
    /// The fields of a record that are read (all, or the projection asked for), in order.
    keep: Vec<usize>,
    batch_rows: usize,
    /// Line of the next record (the header is line 1).
    next_line: u64,
    record: csv::ByteRecord,
    done: bool,
}

impl CsvReader {
    /// A reader of every column, or (`projection`) of only the named ones that the header has:
    /// memory follows the columns read, not the header's width.
    pub(crate) fn new(
        input: Box<dyn Read + Send>,
        path: &Path,
        batch_rows: usize,
        projection: Option<&[&str]>,
    ) -> Result<CsvReader> {
        let path_s = path.display().to_string();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(BufReader::with_capacity(1 << 20, input));
        let headers = reader.headers().map_err(|e| Error::Csv {
            path: path_s.clone(),
            message: format!("cannot read the header line: {e}"),
        })?;
        if headers.is_empty() {
            return Err(Error::Csv {
                path: path_s,
                message: "the file is empty (a header line is needed)".into(),
            });
        }
        let keep: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| projection.is_none_or(|p| p.contains(&h.trim())))
            .map(|(i, _)| i)
            .collect();
        let fields: Vec<Field> = keep
            .iter()
            .map(|&i| Field::new(headers[i].trim(), DataType::Utf8, true))
            .collect();
        Ok(CsvReader {
            reader,
            path: path_s,
            schema: Arc::new(Schema::new(fields)),
            keep,
            batch_rows: batch_rows.max(1),
            next_line: 2,
            record: csv::ByteRecord::new(),
            done: false,
        })
    }

    fn read_batch(&mut self) -> Result<Option<RecordBatch>> {
        let n_cols = self.reader.headers().map_or(0, |h| h.len());
        // Builders start small and grow with the data: a few-kilobyte file with thousands of
        // columns must not reserve a whole batch per column.
        let initial = self.batch_rows.min(1024);
        let mut builders: Vec<StringBuilder> = self
            .keep
            .iter()
            .map(|_| StringBuilder::with_capacity(initial, initial * 8))
            .collect();
        let mut rows = 0;
        while rows < self.batch_rows {
            let more = self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(|e| {
                    let line = e.position().map_or(self.next_line, |p| p.line());
                    let message = match e.kind() {
                        csv::ErrorKind::UnequalLengths { len, .. } => {
                            format!("line {line} has {len} fields, the header has {n_cols}")
                        }
                        _ => format!("line {line}: {e}"),
                    };
                    Error::Csv {
                        path: self.path.clone(),
                        message,
                    }
                })?;
            if !more {
                self.done = true;
                break;
            }
            // The record's text is checked once; its fields are slices of it (they end at
            // ASCII delimiters, so at character boundaries).
            let text = std::str::from_utf8(self.record.as_slice()).map_err(|_| Error::Csv {
                path: self.path.clone(),
                message: format!("line {} is not UTF-8", self.next_line + rows as u64),
            })?;
            for (b, &i) in builders.iter_mut().zip(&self.keep) {
                b.append_value(self.record.range(i).map_or("", |r| &text[r]));
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = builders
            .into_iter()
            .map(|mut b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        self.next_line += rows as u64;
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

impl Iterator for CsvReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_batch() {
            Ok(Some(b)) => Some(Ok(b)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl BatchReader for CsvReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn next_position(&self) -> RowPosition {
        RowPosition::Line(self.next_line)
    }
}

/// Writes batches as CSV: text columns as they are, floats in shortest round-trip form, other
/// types as Arrow displays them.
pub(crate) struct CsvWriter {
    writer: csv::Writer<BufWriter<File>>,
    path: String,
}

impl CsvWriter {
    pub(crate) fn new(file: File, path: &Path, schema: &Schema) -> Result<CsvWriter> {
        let mut writer = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, file));
        let path = path.display().to_string();
        writer
            .write_record(schema.fields().iter().map(|f| f.name().as_str()))
            .map_err(|e| csv_error(&path, e))?;
        Ok(CsvWriter { writer, path })
    }
}

fn csv_error(path: &str, e: csv::Error) -> Error {
    Error::Csv {
        path: path.to_string(),
        message: e.to_string(),
    }
}

/// How one column turns into CSV fields.
enum Cell<'a> {
    Text(&'a StringArray),
    Float(&'a Float64Array),
    Other(ArrayFormatter<'a>),
}

impl BatchWriter for CsvWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let options = FormatOptions::default().with_null("");
        let cells: Vec<Cell<'_>> = batch
            .columns()
            .iter()
            .map(|c| {
                if let Some(s) = c.as_any().downcast_ref::<StringArray>() {
                    Ok(Cell::Text(s))
                } else if let Some(f) = c.as_any().downcast_ref::<Float64Array>() {
                    Ok(Cell::Float(f))
                } else {
                    Ok(Cell::Other(ArrayFormatter::try_new(c.as_ref(), &options)?))
                }
            })
            .collect::<Result<_>>()?;
        let mut buf = String::new();
        let mut record = csv::StringRecord::new();
        for row in 0..batch.num_rows() {
            record.clear();
            for cell in &cells {
                buf.clear();
                match cell {
                    Cell::Text(s) if s.is_valid(row) => buf.push_str(s.value(row)),
                    Cell::Float(f) if f.is_valid(row) => {
                        use std::fmt::Write;
                        // Debug gives the shortest text that reads back to the same f64.
                        write!(buf, "{:?}", f.value(row)).expect("write to String");
                    }
                    Cell::Other(fmt) => {
                        use std::fmt::Write;
                        write!(buf, "{}", fmt.value(row)).map_err(|_| Error::Csv {
                            path: self.path.clone(),
                            message: format!("cannot format row {row}"),
                        })?;
                    }
                    _ => {}
                }
                record.push_field(&buf);
            }
            self.writer
                .write_record(&record)
                .map_err(|e| csv_error(&self.path, e))?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.writer.flush().map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })?;
        let inner = self.writer.into_inner().map_err(|e| Error::Csv {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        inner.into_inner().map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        Ok(())
    }
}
