//! From a record batch to what a model needs (a row-major f64 matrix of named columns), and back
//! (the batch with the model's output columns appended).

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int8Array, RecordBatch, StringArray,
};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema};

use crate::RowPosition;
use crate::error::{Error, Result};

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| no_column(batch.schema_ref(), name))
}

fn no_column(schema: &arrow_schema::Schema, name: &str) -> Error {
    Error::NoColumn {
        column: name.to_string(),
        available: schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Checks that a table has every named column, before any row is read (a file without rows
/// has its columns too).
pub fn require_columns(schema: &arrow_schema::Schema, names: &[String]) -> Result<()> {
    match names.iter().find(|n| schema.column_with_name(n).is_none()) {
        Some(missing) => Err(no_column(schema, missing)),
        None => Ok(()),
    }
}

/// Fills `out` with the named columns as a row-major f64 matrix (`rows × columns.len()`).
/// Text columns are parsed; a missing, unparsable or non-finite value is an error naming its
/// line or row (`start` is where the batch begins in its file).
pub fn feature_matrix(
    batch: &RecordBatch,
    columns: &[String],
    start: RowPosition,
    out: &mut Vec<f64>,
) -> Result<()> {
    let rows = batch.num_rows();
    let d = columns.len();
    out.clear();
    out.resize(rows * d, 0.0);
    for (j, name) in columns.iter().enumerate() {
        // Text of any width (large strings, views, dictionaries) is parsed as text is.
        let array = &crate::text::plain_text(column(batch, name)?)?;
        let bad = |i: usize, message: String| Error::BadValue {
            position: start.advance(i).to_string(),
            column: name.clone(),
            message,
        };
        if let Some(text) = array.as_any().downcast_ref::<StringArray>() {
            for i in 0..rows {
                if text.is_null(i) {
                    return Err(bad(i, "missing value".into()));
                }
                let s = text.value(i).trim();
                let v: f64 = s
                    .parse()
                    .map_err(|_| bad(i, format!("{s:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(bad(i, format!("{s:?} is not a finite number")));
                }
                out[i * d + j] = v;
            }
            continue;
        }
        if !array.data_type().is_numeric() && *array.data_type() != DataType::Boolean {
            return Err(bad(0, format!("type {} is not numeric", array.data_type())));
        }
        let cast = arrow_cast::cast(array, &DataType::Float64)?;
        let values = cast
            .as_any()
            .downcast_ref::<Float64Array>()
            .expect("cast to Float64 gives Float64Array");
        if let Some(i) = (0..rows).find(|&i| values.is_null(i)) {
            return Err(bad(i, "missing value".into()));
        }
        let values = values.values();
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(bad(i, format!("{} is not a finite number", values[i])));
        }
        for (to, &v) in out.iter_mut().skip(j).step_by(d).zip(values.iter()) {
            *to = v;
        }
    }
    Ok(())
}

/// Keeps the rows where every `(column, value)` condition holds, comparing the column's text
/// form with `value`.
pub fn filter_equals(batch: &RecordBatch, conditions: &[(String, String)]) -> Result<RecordBatch> {
    if conditions.is_empty() {
        return Ok(batch.clone());
    }
    let mut keep = vec![true; batch.num_rows()];
    let options = FormatOptions::default();
    for (name, want) in conditions {
        let array = column(batch, name)?;
        if let Some(text) = array.as_any().downcast_ref::<StringArray>() {
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= text.is_valid(i) && text.value(i) == want;
            }
        } else {
            let fmt = ArrayFormatter::try_new(array.as_ref(), &options)?;
            for (i, k) in keep.iter_mut().enumerate() {
                *k &= array.is_valid(i) && fmt.value(i).to_string() == *want;
            }
        }
    }
    let mask = BooleanArray::from(keep);
    Ok(arrow_select::filter::filter_record_batch(batch, &mask)?)
}

/// The batch with `score` (f64) and `anomaly` (i8) columns appended.
pub fn append_columns(
    batch: &RecordBatch,
    score_name: &str,
    score: Vec<f64>,
    anomaly_name: &str,
    anomaly: Vec<i8>,
) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(score_name, DataType::Float64, false)));
    fields.push(Arc::new(Field::new(anomaly_name, DataType::Int8, false)));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(Float64Array::from(score)));
    columns.push(Arc::new(Int8Array::from(anomaly)));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())),
        columns,
    )?)
}
