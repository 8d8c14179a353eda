//! Readings as the store keeps them (`readings/hour=…/bucket=…/`): `ts` (UTC milliseconds),
//! `device`, `tag`, `value`, device and tag dictionary-encoded. `data import` and the
//! aggregator's raw archive write this one shape, and runs read it.

use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMillisecondArray, types::Int32Type,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Result;

/// The schema of stored readings.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("device", DataType::Utf8, false),
        Field::new("tag", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]))
}

/// [`schema`] as readings are written and read: device and tag as dictionaries.
pub fn stored_schema() -> SchemaRef {
    crate::with_dictionary_text(&schema())
}

/// One reading to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row<'a> {
    /// Event time, epoch ms.
    pub ts: i64,
    /// Device id.
    pub device: &'a str,
    /// Sensor tag.
    pub tag: &'a str,
    /// The value.
    pub value: f64,
}

/// Merges stored readings files (`(name, bytes)`, in [`stored_schema`]) into one, sorted by
/// sensor then time; returns it with the `[min, max]` time of its rows.
pub fn merge(files: &[(String, bytes::Bytes)]) -> Result<(Vec<u8>, i64, i64)> {
    let mut rows: Vec<(i64, String, String, f64)> = Vec::new();
    for (name, bytes) in files {
        let bad = |m: &str| crate::Error::Schema {
            path: name.clone(),
            message: m.to_string(),
        };
        for batch in crate::from_parquet_bytes_as(name, bytes.clone(), stored_schema())? {
            let ts = batch
                .column(0)
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .ok_or_else(|| bad("ts is not a millisecond timestamp"))?;
            let text = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<DictionaryArray<Int32Type>>()
                    .and_then(|d| {
                        let values = d.values().as_any().downcast_ref::<StringArray>()?;
                        Some((d.keys().clone(), values.clone()))
                    })
                    .ok_or_else(|| bad("device and tag must be text"))
            };
            let (devices, tags) = (text(1)?, text(2)?);
            let value = batch
                .column(3)
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| bad("value is not f64"))?;
            let name_of = |(keys, values): &(Int32Array, StringArray), i: usize| {
                usize::try_from(keys.value(i))
                    .ok()
                    .filter(|&k| k < values.len() && keys.is_valid(i))
                    .map(|k| values.value(k).to_string())
                    .ok_or_else(|| bad("a reading without device or tag"))
            };
            for i in 0..batch.num_rows() {
                rows.push((
                    ts.value(i),
                    name_of(&devices, i)?,
                    name_of(&tags, i)?,
                    value.value(i),
                ));
            }
        }
    }
    rows.sort_by(|a, b| (&a.1, &a.2, a.0).cmp(&(&b.1, &b.2, b.0)));
    let min = rows.iter().map(|r| r.0).min().unwrap_or(0);
    let max = rows.iter().map(|r| r.0).max().unwrap_or(0);
    let out: Vec<Row<'_>> = rows
        .iter()
        .map(|r| Row {
            ts: r.0,
            device: &r.1,
            tag: &r.2,
            value: r.3,
        })
        .collect();
    Ok((to_parquet(&out)?, min, max))
}

/// A readings file of `rows` in the order given (callers sort by sensor, then time).
pub fn to_parquet(rows: &[Row<'_>]) -> Result<Vec<u8>> {
    // Each column's dictionary holds its names in order of first use; rows sorted by sensor
    // repeat the previous row's name, so a lookup is mostly one comparison.
    let dictionary = |names: &mut dyn Iterator<Item = &str>| {
        let mut index: std::collections::HashMap<&str, i32> = Default::default();
        let mut values: Vec<&str> = Vec::new();
        let mut last: Option<(&str, i32)> = None;
        let keys: Vec<i32> = names
            .map(|name| match last {
                Some((previous, key)) if previous == name => key,
                _ => {
                    let key = *index.entry(name).or_insert_with(|| {
                        values.push(name);
                        values.len() as i32 - 1
                    });
                    last = Some((name, key));
                    key
                }
            })
            .collect();
        Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(keys),
            Arc::new(StringArray::from(values)),
        )) as ArrayRef
    };
    let batch = RecordBatch::try_new(
        stored_schema(),
        vec![
            Arc::new(
                TimestampMillisecondArray::from(rows.iter().map(|r| r.ts).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ) as ArrayRef,
            dictionary(&mut rows.iter().map(|r| r.device)),
            dictionary(&mut rows.iter().map(|r| r.tag)),
            Arc::new(Float64Array::from(
                rows.iter().map(|r| r.value).collect::<Vec<_>>(),
            )),
        ],
    )?;
    crate::to_parquet_bytes(stored_schema(), &[batch], &["device", "tag"])
}
