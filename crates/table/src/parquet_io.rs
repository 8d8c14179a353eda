//! Parquet in and out, through the Arrow reader and writer of the `parquet` crate.

use std::fs::File;
use std::path::Path;

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory, ArrowWriterOptions,
    compute_leaves,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

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
    /// A reader of every column, or (`projection`) of only the named top-level columns.
    pub(crate) fn new(
        file: File,
        path: &Path,
        batch_rows: usize,
        dictionary_text: bool,
        projection: Option<&[&str]>,
    ) -> Result<ParquetReader> {
        let path = path.display().to_string();
        let unreadable = |e| parquet_error(&path, format!("not a readable Parquet file: {e}"));
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(
            file.try_clone().map_err(|e| parquet_error(&path, e))?,
        )
        .map_err(unreadable)?;
        if dictionary_text {
            // Text read as dictionary keys: dictionary-encoded pages then cost no string per row.
            let options = ArrowReaderOptions::new()
                .with_skip_arrow_metadata(true)
                .with_schema(with_dictionary_text(builder.schema()));
            builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
                .map_err(unreadable)?;
        }
        if let Some(names) = projection {
            let mask = ProjectionMask::columns(
                builder.parquet_schema(),
                names.iter().copied().filter(|n| !n.contains('.')),
            );
            builder = builder.with_projection(mask);
        }
        let inner = builder
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|e| parquet_error(&path, e))?;
        let schema = inner.schema();
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

/// Rows per row group in the Parquet files fleetscore writes (`models score`, `aggregate
/// file`): DuckDB's row group size, not the Arrow writer's default of a million rows.
const FILE_ROW_GROUP_ROWS: usize = 122_880;

/// Writes a Parquet file, encoding a batch's columns on two threads: the Arrow writer encodes
/// one column after another, and encoding was most of the time of writing a table file.
pub(crate) struct ParquetWriter {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The current row group's column writers, one per leaf column.
    columns: Vec<ArrowColumnWriter>,
    /// Its index, and the rows written into it so far.
    row_group: usize,
    rows: usize,
    path: String,
}

impl ParquetWriter {
    pub(crate) fn new(file: File, path: &Path, schema: SchemaRef) -> Result<ParquetWriter> {
        let path = path.display().to_string();
        let props = tall_table_properties(&schema, &[]).build();
        // The Arrow writer sets the file up (the Parquet schema, and the Arrow schema embedded
        // in its metadata); its lower-level parts then write the columns.
        let (file, factory) = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(|e| parquet_error(&path, e))?;
        let columns = factory
            .create_column_writers(0)
            .map_err(|e| parquet_error(&path, e))?;
        Ok(ParquetWriter {
            file,
            factory,
            schema,
            columns,
            row_group: 0,
            rows: 0,
            path,
        })
    }

    /// Encodes `batch` into the current row group.
    fn encode(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut leaves = Vec::with_capacity(self.columns.len());
        for (field, array) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, array).map_err(|e| parquet_error(&self.path, e))?);
        }
        if leaves.len() != self.columns.len() {
            return Err(parquet_error(
                &self.path,
                format!(
                    "a batch of {} leaf columns for a file of {}",
                    leaves.len(),
                    self.columns.len()
                ),
            ));
        }
        let mut work: Vec<_> = self.columns.iter_mut().zip(&leaves).collect();
        let encode = |part: &mut [(&mut ArrowColumnWriter, &ArrowLeafColumn)]| {
            part.iter_mut().try_for_each(|(w, leaf)| w.write(leaf))
        };
        // Two halves of about equal bytes; a small batch is not worth a thread.
        let total: usize = batch
            .columns()
            .iter()
            .map(|c| c.get_buffer_memory_size())
            .sum();
        let result = if work.len() < 2 || batch.num_rows() < 4_096 {
            encode(&mut work)
        } else {
            let mut half = 0;
            let mut bytes = 0;
            for (i, c) in batch.columns().iter().enumerate() {
                if bytes * 2 >= total {
                    break;
                }
                bytes += c.get_buffer_memory_size();
                half = i + 1;
            }
            // Leaves follow the columns; with nested columns the split is by leaf count.
            let half = half.min(work.len() - 1).max(1);
            let (a, b) = work.split_at_mut(half);
            std::thread::scope(|s| {
                let other = s.spawn(|| encode(b));
                let mine = encode(a);
                mine.and(other.join().expect("a column encoder does not panic"))
            })
        };
        result.map_err(|e| parquet_error(&self.path, e))
    }

    /// Closes the current row group, if it has rows, and starts the next.
    fn flush(&mut self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        let next = self
            .factory
            .create_column_writers(self.row_group + 1)
            .map_err(|e| parquet_error(&self.path, e))?;
        let columns = std::mem::replace(&mut self.columns, next);
        let mut group = self
            .file
            .next_row_group()
            .map_err(|e| parquet_error(&self.path, e))?;
        for column in columns {
            column
                .close()
                .and_then(|chunk| chunk.append_to_row_group(&mut group))
                .map_err(|e| parquet_error(&self.path, e))?;
        }
        group.close().map_err(|e| parquet_error(&self.path, e))?;
        self.row_group += 1;
        self.rows = 0;
        Ok(())
    }
}

impl BatchWriter for ParquetWriter {
    /// Row groups of [`FILE_ROW_GROUP_ROWS`] rows (a batch is split across two when it
    /// straddles them): a row group is held in memory until it is complete, so this bounds
    /// the writer's memory by the row group, not the file.
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (FILE_ROW_GROUP_ROWS - self.rows).min(batch.num_rows() - offset);
            self.encode(&batch.slice(offset, take))?;
            self.rows += take;
            offset += take;
            if self.rows == FILE_ROW_GROUP_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<()> {
        self.flush()?;
        self.file
            .close()
            .map(|_| ())
            .map_err(|e| parquet_error(&self.path, e))
    }
}

/// Encodes batches as one Parquet file in memory (for object stores), tuned for the tall,
/// sorted tables fleetscore writes:
///
/// - no dictionary pages: hashing every value into a dictionary costs more time than it saves
///   space once the pages are snappy-compressed;
/// - 64-bit integer and timestamp columns use `DELTA_BINARY_PACKED` (times a few seconds apart
///   shrink to a few bits a row);
/// - floating-point columns uncompressed: snappy saves little on them (scores not a byte) and
///   took most of the time of writing and reading them;
/// - min/max statistics per column chunk, except on text columns, where comparing every value
///   was a third of the time and no reader of these tables prunes on them.
///
/// The columns named in `dictionary` are dictionary-encoded instead (for columns of a few
/// distinct values in long runs, which readers can then decode as dictionaries; see
/// [`from_parquet_bytes_as`]). Dictionary-typed Arrow columns (the cheap way to build a column
/// that repeats a few values) are stored as text either way, and the Arrow schema is not
/// embedded, so pandas, polars and DuckDB see ordinary string columns.
pub fn to_parquet_bytes(
    schema: SchemaRef,
    batches: &[RecordBatch],
    dictionary: &[&str],
) -> Result<Vec<u8>> {
    let props = tall_table_properties(&schema, dictionary);
    let options = ArrowWriterOptions::new()
        .with_properties(props.build())
        .with_skip_arrow_metadata(true);
    // Encoded tables are smaller than in memory: reserving that much avoids copying the buffer
    // as it grows (pages never written to are never touched).
    let mut buf = Vec::with_capacity(batches.iter().map(|b| b.get_array_memory_size()).sum());
    let mut w = ArrowWriter::try_new_with_options(&mut buf, schema, options)
        .map_err(|e| parquet_error("(in memory)", e))?;
    for b in batches {
        w.write(b).map_err(|e| parquet_error("(in memory)", e))?;
    }
    w.close().map_err(|e| parquet_error("(in memory)", e))?;
    Ok(buf)
}

/// The writer settings [`to_parquet_bytes`] describes, for the store's tables and for files
/// (`models score`, `aggregate file`) alike.
fn tall_table_properties(
    schema: &arrow_schema::Schema,
    dictionary: &[&str],
) -> parquet::file::properties::WriterPropertiesBuilder {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for field in schema.fields() {
        let column = ColumnPath::from(field.name().as_str());
        match field.data_type() {
            DataType::Int64 | DataType::Timestamp(..) => {
                props = props.set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
            }
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Dictionary(..) => {
                props = props.set_column_statistics_enabled(column, EnabledStatistics::None);
            }
            DataType::Float64 | DataType::Float32 => {
                props = props.set_column_compression(column, Compression::UNCOMPRESSED);
            }
            _ => {}
        }
    }
    for name in dictionary {
        props = props.set_column_dictionary_enabled(ColumnPath::from(*name), true);
    }
    props
}

/// `schema` with its text (`Utf8`) columns as dictionaries (`Int32` keys): how to build, cheaply,
/// a table whose text columns repeat a few values in long runs. [`to_parquet_bytes`] stores
/// them as text, and [`from_parquet_bytes_as`] reads text back as dictionaries.
pub fn with_dictionary_text(schema: &arrow_schema::Schema) -> SchemaRef {
    let text = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => arrow_schema::Field::new(f.name(), text.clone(), f.is_nullable()),
            _ => f.as_ref().clone(),
        })
        .collect::<Vec<_>>();
    std::sync::Arc::new(arrow_schema::Schema::new(fields))
}

/// Decodes a Parquet file held in memory; `name` is used in error messages.
pub fn from_parquet_bytes(name: &str, bytes: bytes::Bytes) -> Result<Vec<RecordBatch>> {
    decode(
        name,
        ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| parquet_error(name, format!("not a readable Parquet file: {e}")))?,
    )
}

/// Decodes a Parquet file held in memory as `schema`, which may ask for text columns as
/// dictionaries: dictionary-encoded pages then decode to keys, with no string per row.
pub fn from_parquet_bytes_as(
    name: &str,
    bytes: bytes::Bytes,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let options = ArrowReaderOptions::new()
        .with_skip_arrow_metadata(true)
        .with_schema(schema);
    decode(
        name,
        ParquetRecordBatchReaderBuilder::try_new_with_options(bytes, options)
            .map_err(|e| parquet_error(name, format!("not a readable Parquet file: {e}")))?,
    )
}

fn decode(
    name: &str,
    builder: ParquetRecordBatchReaderBuilder<bytes::Bytes>,
) -> Result<Vec<RecordBatch>> {
    let reader = builder
        .with_batch_size(65_536)
        .build()
        .map_err(|e| parquet_error(name, e))?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| parquet_error(name, format!("corrupt data: {e}")))
}

/// Concatenates Parquet files of one layout into one file by copying their row groups as they
/// are encoded, page for page, without decoding a value: what exporting many shards of one
/// table into one file needs. Every file must have the first one's Parquet schema (the same
/// columns, types and logical types); [`ParquetConcat::append`] says when one does not, so the
/// caller can decode instead.
pub struct ParquetConcat<W: std::io::Write + Send> {
    state: ConcatState<W>,
    /// The table's Arrow schema, for a file of no rows.
    schema: SchemaRef,
    path: String,
}

enum ConcatState<W: std::io::Write + Send> {
    /// No file appended yet.
    Empty(W),
    Writing(parquet::file::writer::SerializedFileWriter<W>),
    Done,
}

impl<W: std::io::Write + Send> ParquetConcat<W> {
    /// A concatenation into `out` (named `path` in errors) of files of `schema`.
    pub fn new(out: W, path: &Path, schema: SchemaRef) -> ParquetConcat<W> {
        ParquetConcat {
            state: ConcatState::Empty(out),
            schema,
            path: path.display().to_string(),
        }
    }

    /// Appends every row group of the Parquet file `bytes` (named `name` in errors). Returns
    /// `false`, appending nothing, when its schema is not the first file's.
    pub fn append(&mut self, name: &str, bytes: bytes::Bytes) -> Result<bool> {
        use parquet::file::metadata::ParquetMetaDataReader;
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;

        let metadata = ParquetMetaDataReader::new()
            .parse_and_finish(&bytes)
            .map_err(|e| parquet_error(name, format!("not a readable Parquet file: {e}")))?;
        let file_schema = metadata.file_metadata().schema_descr();
        if let ConcatState::Empty(_) = self.state {
            let ConcatState::Empty(out) = std::mem::replace(&mut self.state, ConcatState::Done)
            else {
                unreachable!("matched above")
            };
            let props = std::sync::Arc::new(WriterProperties::builder().build());
            let writer = SerializedFileWriter::new(out, file_schema.root_schema_ptr(), props)
                .map_err(|e| parquet_error(&self.path, e))?;
            self.state = ConcatState::Writing(writer);
        }
        let ConcatState::Writing(writer) = &mut self.state else {
            return Err(parquet_error(&self.path, "appended to after finishing"));
        };
        if writer.schema_descr().root_schema() != file_schema.root_schema() {
            return Ok(false);
        }
        let error = |e| parquet_error(&self.path, format!("copying {name}: {e}"));
        for group in metadata.row_groups() {
            let mut out = writer.next_row_group().map_err(error)?;
            for column in group.columns() {
                let close = parquet::column::writer::ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: None,
                    offset_index: None,
                };
                out.append_column(&bytes, close).map_err(error)?;
            }
            out.close().map_err(error)?;
        }
        Ok(true)
    }

    /// Writes the footer; a concatenation of no files is a valid file of no rows.
    pub fn finish(mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, ConcatState::Done) {
            ConcatState::Empty(out) => {
                let writer = ArrowWriter::try_new(out, self.schema.clone(), None)
                    .map_err(|e| parquet_error(&self.path, e))?;
                writer.close().map_err(|e| parquet_error(&self.path, e))?;
            }
            ConcatState::Writing(writer) => {
                writer.close().map_err(|e| parquet_error(&self.path, e))?;
            }
            ConcatState::Done => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet_direct::{Column, TextRunsBuilder, Values, write_table};
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, TimestampMillisecondType};

    /// A `parquet_direct` table of `rows` rows: device text runs, times, values.
    fn direct(first: usize, rows: usize) -> Vec<u8> {
        let mut device = TextRunsBuilder::default();
        for i in (first..first + rows).step_by(100) {
            device.push(&format!("dev{}", i / 100), 100.min(first + rows - i));
        }
        let ts: Vec<i64> = (first..first + rows).map(|i| 5_000 * i as i64).collect();
        let value: Vec<f64> = (first..first + rows).map(|i| i as f64 / 7.0).collect();
        write_table(&[
            Column::new("device", Values::TextRuns(&device.finish())),
            Column::new("ts", Values::Timestamp(&ts)),
            Column::new("value", Values::Float64(&value)),
        ])
        .unwrap()
    }

    fn rows_of(bytes: Vec<u8>) -> Vec<(String, i64, f64)> {
        let mut out = Vec::new();
        for b in from_parquet_bytes("t", bytes::Bytes::from(bytes)).unwrap() {
            let (d, t, v) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<TimestampMillisecondType>(),
                b.column(2).as_primitive::<Float64Type>(),
            );
            for i in 0..b.num_rows() {
                out.push((d.value(i).to_string(), t.value(i), v.value(i)));
            }
        }
        out
    }

    #[test]
    fn concatenated_files_read_back_as_their_rows_in_order() {
        let parts = [direct(0, 1_000), direct(1_000, 1), direct(1_001, 70_000)];
        let mut out = Vec::new();
        let schema =
            from_parquet_bytes("t", bytes::Bytes::from(parts[0].clone())).unwrap()[0].schema();
        let mut concat = ParquetConcat::new(&mut out, Path::new("out"), schema);
        for (i, p) in parts.iter().enumerate() {
            assert!(
                concat
                    .append(&format!("part {i}"), bytes::Bytes::from(p.clone()))
                    .unwrap()
            );
        }
        concat.finish().unwrap();
        let want: Vec<_> = parts.iter().flat_map(|p| rows_of(p.clone())).collect();
        assert_eq!(want.len(), 71_001);
        assert_eq!(rows_of(out), want);
    }

    #[test]
    fn a_file_of_another_schema_is_not_appended() {
        let first = direct(0, 10);
        let batches = from_parquet_bytes("t", bytes::Bytes::from(direct(10, 10))).unwrap();
        let schema = batches[0].schema();
        let mut out = Vec::new();
        let mut concat = ParquetConcat::new(&mut out, Path::new("out"), schema.clone());
        assert!(concat.append("first", bytes::Bytes::from(first)).unwrap());
        // The same rows under other column names.
        let renamed = std::sync::Arc::new(arrow_schema::Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_name(format!("x{}", f.name())))
                .collect::<Vec<_>>(),
        ));
        let renamed_bytes = to_parquet_bytes(
            renamed.clone(),
            &[RecordBatch::try_new(renamed, batches[0].columns().to_vec()).unwrap()],
            &[],
        )
        .unwrap();
        assert!(
            !concat
                .append("renamed", bytes::Bytes::from(renamed_bytes))
                .unwrap()
        );
        let e = ParquetConcat::new(Vec::new(), Path::new("out"), schema)
            .append("junk", bytes::Bytes::from_static(b"not parquet"))
            .unwrap_err();
        assert!(e.to_string().contains("junk"), "{e}");
    }

    #[test]
    fn a_concatenation_of_nothing_is_an_empty_table() {
        let schema = from_parquet_bytes("t", bytes::Bytes::from(direct(0, 1))).unwrap()[0].schema();
        let mut out = Vec::new();
        ParquetConcat::new(&mut out, Path::new("out"), schema.clone())
            .finish()
            .unwrap();
        let batches = from_parquet_bytes("t", bytes::Bytes::from(out)).unwrap();
        assert!(batches.iter().all(|b| b.num_rows() == 0));
    }

    #[test]
    fn a_file_is_written_in_row_groups_with_every_row_in_order() {
        // Batches of odd sizes, straddling the row group boundary, and an empty one.
        let batches: Vec<RecordBatch> =
            [(0, 100_000), (100_000, 0), (100_000, 50_001), (150_001, 3)]
                .iter()
                .flat_map(|&(first, rows)| {
                    from_parquet_bytes("t", bytes::Bytes::from(direct(first, rows.max(1))))
                        .unwrap()
                        .into_iter()
                        .map(move |b| b.slice(0, rows.min(b.num_rows())))
                })
                .collect();
        let dir = std::env::temp_dir().join(format!("fleetscore-pq-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.parquet");
        let mut w: Box<dyn BatchWriter> = Box::new(
            ParquetWriter::new(File::create(&path).unwrap(), &path, batches[0].schema()).unwrap(),
        );
        for b in &batches {
            w.write(b).unwrap();
        }
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(
            &parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(bytes.clone()))
                .unwrap(),
        )
        .clone();
        let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(
            groups,
            [
                FILE_ROW_GROUP_ROWS as i64,
                150_004 - FILE_ROW_GROUP_ROWS as i64
            ]
        );
        let want: Vec<_> = [
            direct(0, 100_000),
            direct(100_000, 50_001),
            direct(150_001, 3),
        ]
        .into_iter()
        .flat_map(rows_of)
        .collect();
        assert_eq!(rows_of(bytes), want);
    }
}
