//! The predictions table: what a run's tasks write under `predictions/` and
//! `predictions export` reads back, one row per scored row of a model.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Result;
use crate::parquet_direct::{self, Column, Runs, TextRunsBuilder, Values};

/// The schema of prediction tables: `device, tag, ts, window_start, window_end, value, score,
/// anomaly, model_version, run_id`.
pub fn schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("tag", DataType::Utf8, false),
        Field::new("ts", ts.clone(), false),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
        Field::new("value", DataType::Float64, false),
        Field::new("score", DataType::Float64, false),
        Field::new("anomaly", DataType::Int8, false),
        Field::new("model_version", DataType::Utf8, false),
        Field::new("run_id", DataType::Utf8, false),
    ]))
}

/// Predictions of one task, column by column: the text columns as runs of rows (one run per
/// model), the rest row by row. [`Builder::finish`] writes them with [`parquet_direct`]; they
/// read back as [`schema`].
#[derive(Default)]
pub struct Builder {
    device: TextRunsBuilder,
    tag: TextRunsBuilder,
    version: TextRunsBuilder,
    /// Row times (epoch milliseconds).
    pub ts: Vec<i64>,
    /// Row values (a reading, or a window's first feature).
    pub value: Vec<f64>,
    /// The model's decision function.
    pub score: Vec<f64>,
    /// 1 where the model predicts an anomaly, else 0.
    pub anomaly: Vec<i8>,
}

impl Builder {
    /// Room for `rows` rows (growing tall vectors by doubling copied each row several times).
    pub fn with_capacity(rows: usize) -> Builder {
        Builder {
            ts: Vec::with_capacity(rows),
            value: Vec::with_capacity(rows),
            score: Vec::with_capacity(rows),
            anomaly: Vec::with_capacity(rows),
            ..Builder::default()
        }
    }

    /// Names the next `rows` rows (pushed to the row columns) as a model's.
    pub fn add_model(&mut self, device: &str, tag: &str, version: &str, rows: usize) {
        self.device.push(device, rows);
        self.tag.push(tag, rows);
        self.version.push(version, rows);
    }

    /// The Parquet file of a run's window `[from_ms, to_ms)`, columns in [`schema`] order.
    pub fn finish(self, run_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<u8>> {
        let n = self.ts.len();
        let (device, tag, version) = (
            self.device.finish(),
            self.tag.finish(),
            self.version.finish(),
        );
        let from = Runs::constant(from_ms, n);
        let to = Runs::constant(to_ms, n);
        let run_id = Runs::constant(run_id.to_owned(), n);
        let column = Column::new;
        parquet_direct::write_table(&[
            column("device", Values::TextRuns(&device)),
            column("tag", Values::TextRuns(&tag)),
            column("ts", Values::Timestamp(&self.ts)),
            column("window_start", Values::TimestampRuns(&from)),
            column("window_end", Values::TimestampRuns(&to)),
            column("value", Values::Float64(&self.value)),
            column("score", Values::Float64(&self.score)),
            column("anomaly", Values::Int8(&self.anomaly)),
            column("model_version", Values::TextRuns(&version)),
            column("run_id", Values::TextRuns(&run_id)),
        ])
    }
}
