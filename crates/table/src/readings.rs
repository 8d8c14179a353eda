//! Readings as the store keeps them (`readings/hour=…/bucket=…/`): `ts` (UTC milliseconds),
//! `device`, `tag`, `value`, device and tag dictionary-encoded. `data import` and the
//! aggregator's raw archive write this one shape, and runs read it.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, RecordBatch, StringArray,
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
