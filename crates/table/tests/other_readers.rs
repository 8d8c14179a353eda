//! Tables written by [`fleetscore_table::parquet_direct`] read back with other tools: pyarrow,
//! pandas and DuckDB see the same table as the `parquet` crate's own writer produces from the
//! same rows. Runs where the test script provides a Python with them (CI does).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, Float64Array, Int8Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use fleetscore_table::parquet_direct::{
    Column, PAGE_ROWS, Runs, TextRunsBuilder, Values, write_table,
};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fleetscore-table-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn direct_parquet_reads_back_in_pyarrow_pandas_and_duckdb() {
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: direct Parquet read-back not checked");
        return;
    };
    // Longer than a page, with runs crossing page boundaries and 9-bit dictionary keys.
    let rows = PAGE_ROWS + 12_345;
    let mut device = TextRunsBuilder::default();
    let mut device_rows = Vec::with_capacity(rows);
    let mut i = 0;
    while device_rows.len() < rows {
        let take = (720 + i * 13 % 500).min(rows - device_rows.len());
        let name = format!("dev{:05}", i % 400);
        device.push(&name, take);
        device_rows.extend(std::iter::repeat_n(name, take));
        i += 1;
    }
    let device = device.finish();
    let ts: Vec<i64> = (0..rows)
        .map(|i| 1_767_225_600_000 + 5_000 * (i % 720) as i64)
        .collect();
    let value: Vec<f64> = (0..rows)
        .map(|i| {
            if i % 1_001 == 0 {
                f64::NAN
            } else {
                (i as f64 * 0.37).cos() * 40.0
            }
        })
        .collect();
    let anomaly: Vec<i8> = (0..rows).map(|i| i8::from(i % 97 == 0)).collect();
    // One value throughout: keys of zero bits.
    let quiet: Vec<i8> = vec![0; rows];
    let window = Runs::constant(1_767_225_600_000, rows);
    let count: Vec<i64> = (0..rows as i64)
        .map(|i| i % 13 * (i % 1_000 - 500))
        .collect();

    let dir = tempdir("readers");
    let direct = dir.join("direct.parquet");
    std::fs::write(
        &direct,
        write_table(&[
            Column::new("device", Values::TextRuns(&device)),
            Column::new("ts", Values::Timestamp(&ts)),
            Column::new("window_start", Values::TimestampRuns(&window)),
            Column::new("value", Values::Float64(&value)),
            Column::new("anomaly", Values::Int8(&anomaly)),
            Column::new("quiet", Values::Int8(&quiet)),
            Column::new("count", Values::Int64(&count)),
        ])
        .unwrap(),
    )
    .unwrap();
    // And a table of no rows.
    let empty = dir.join("empty.parquet");
    let no_text = Runs::<String>::default();
    std::fs::write(
        &empty,
        write_table(&[
            Column::new("device", Values::TextRuns(&no_text)),
            Column::new("ts", Values::Timestamp(&[])),
            Column::new("value", Values::Float64(&[])),
            Column::new("anomaly", Values::Int8(&[])),
        ])
        .unwrap(),
    )
    .unwrap();

    let utc = |v: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(v).with_timezone("UTC"))
    };
    let tz = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("device", DataType::Utf8, false),
        Field::new("ts", tz.clone(), false),
        Field::new("window_start", tz, false),
        Field::new("value", DataType::Float64, false),
        Field::new("anomaly", DataType::Int8, false),
        Field::new("quiet", DataType::Int8, false),
        Field::new("count", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(device_rows)),
            utc(ts),
            utc(vec![1_767_225_600_000; rows]),
            Arc::new(Float64Array::from(value)),
            Arc::new(Int8Array::from(anomaly)),
            Arc::new(Int8Array::from(quiet)),
            Arc::new(Int64Array::from(count)),
        ],
    )
    .unwrap();
    let reference = dir.join("reference.parquet");
    std::fs::write(
        &reference,
        fleetscore_table::to_parquet_bytes(schema, &[batch], &[]).unwrap(),
    )
    .unwrap();

    let script = r#"
import sys, duckdb, pandas as pd, pyarrow.parquet as pq
direct, reference = sys.argv[1], sys.argv[2]
a, b = pq.read_table(direct), pq.read_table(reference)
assert a.schema.equals(b.schema), (a.schema, b.schema)
assert a.num_rows == b.num_rows == int(sys.argv[3]), (a.num_rows, b.num_rows)
pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())
pd.testing.assert_frame_equal(pd.read_parquet(direct), pd.read_parquet(reference))
# Read as dictionaries too (the pages are dictionary-encoded).
d = pq.read_table(direct, read_dictionary=["device"]).column("device").to_pylist()
assert d == b.column("device").to_pylist()
# Statistics let DuckDB and pyarrow prune: check they are the true bounds.
md = pq.ParquetFile(direct).metadata.row_group(0)
for i, name in enumerate(a.column_names):
    st = md.column(i).statistics
    col = b.column(name).to_pandas().dropna()
    assert st.min == col.min() and st.max == col.max(), (name, st.min, col.min(), st.max, col.max())
con = duckdb.connect()
for q in [
    "SELECT count(*), count(DISTINCT device), sum(anomaly), min(ts), max(ts) FROM read_parquet('{}')",
    "SELECT device, count(*), sum(value) FILTER (WHERE NOT isnan(value)) FROM read_parquet('{}') GROUP BY device ORDER BY device",
    "SELECT * FROM read_parquet('{}') WHERE device = 'dev00007' ORDER BY ts, value",
]:
    x = con.execute(q.format(direct)).fetchall()
    y = con.execute(q.format(reference)).fetchall()
    assert repr(x) == repr(y), (q, x[:3], y[:3])
e = pq.read_table(sys.argv[4])
assert e.num_rows == 0 and e.column_names == ["device", "ts", "value", "anomaly"], e
assert con.execute(f"SELECT count(*) FROM read_parquet('{sys.argv[4]}')").fetchone()[0] == 0
assert len(pd.read_parquet(sys.argv[4])) == 0
diff = con.execute(f"SELECT count(*) FROM (SELECT * FROM read_parquet('{direct}') EXCEPT ALL SELECT * FROM read_parquet('{reference}'))").fetchone()[0]
assert diff == 0, diff
print("ok")
"#;
    let o = Command::new(python)
        .args([
            "-c",
            script,
            direct.to_str().unwrap(),
            reference.to_str().unwrap(),
            &rows.to_string(),
            empty.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
