//! Appends the readings of a Parquet file (device, tag, ts, value) to a durable log, as ingest
//! would (each in its device's partition, acknowledged once fsync'd), for the aggregation
//! benchmark.
//!
//!     cargo run --release -p fleetscore-aggregate --example fill_log -- READINGS.parquet LOG_DIR [PARTITIONS]

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMillisecondType};
use fleetscore_ingest::Reading;
use fleetscore_log::{Log, Options};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(input), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err("usage: fill_log READINGS.parquet LOG_DIR [PARTITIONS]".into());
    };
    let partitions = args.get(3).map_or(Ok(8), |p| p.parse())?;
    let log = Log::open(
        std::path::Path::new(dir),
        Options {
            partitions,
            ..Options::default()
        },
    )?;
    let mut rows = 0usize;
    let mut readings = Vec::with_capacity(65_536);
    for batch in fleetscore_table::open(std::path::Path::new(input), 65_536)? {
        let batch = batch?;
        let text = |c: &str| {
            batch
                .column_by_name(c)
                .map(|a| a.as_string::<i32>().clone())
        };
        let (Some(device), Some(tag)) = (text("device"), text("tag")) else {
            return Err("the file needs text columns device and tag".into());
        };
        let ts = batch
            .column_by_name("ts")
            .ok_or("no ts column")?
            .as_primitive::<TimestampMillisecondType>()
            .clone();
        let value = batch
            .column_by_name("value")
            .ok_or("no value column")?
            .as_primitive::<Float64Type>()
            .clone();
        readings.clear();
        for i in 0..batch.num_rows() {
            readings.push(Reading {
                device: device.value(i).to_string(),
                tag: tag.value(i).to_string(),
                ts_ms: ts.value(i),
                value: value.value(i),
            });
        }
        log.append(fleetscore_ingest::batch_of(&log, &readings))?
            .wait()?;
        rows += readings.len();
    }
    eprintln!("appended {rows} readings to {dir}");
    Ok(())
}
