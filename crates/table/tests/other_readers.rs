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

/// Runs `script` with `args` in the test Python; its output is the failure message.
fn run_python(python: &str, script: &str, args: &[&str]) {
    let o = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
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
    run_python(
        &python,
        script,
        &[
            direct.to_str().unwrap(),
            reference.to_str().unwrap(),
            &rows.to_string(),
            empty.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn streamed_parquet_reads_back_in_pyarrow_pandas_and_duckdb() {
    use arrow_array::{
        Date32Array, Float32Array, Int16Array, Int32Array, TimestampMicrosecondArray,
        TimestampNanosecondArray,
    };
    let Ok(python) = std::env::var("FLEETSCORE_TEST_PYTHON") else {
        eprintln!("FLEETSCORE_TEST_PYTHON not set: streamed Parquet read-back not checked");
        return;
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Float64, true),
        Field::new("score", DataType::Float64, false),
        Field::new("f32", DataType::Float32, true),
        Field::new("count", DataType::Int64, true),
        Field::new("i32", DataType::Int32, false),
        Field::new("i16", DataType::Int16, true),
        Field::new("anomaly", DataType::Int8, false),
        Field::new("day", DataType::Date32, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "local",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            true,
        ),
        Field::new(
            "ns",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("Europe/Berlin".into())),
            true,
        ),
    ]));
    // Three row groups of the streamed file, the last short; nulls, NaN and -0.0 throughout.
    let batch = |rows: std::ops::Range<usize>| {
        let null = |i: usize| i % 23 == 5;
        let float = |i: usize| match i % 13 {
            0 => f64::NAN,
            1 => -0.0,
            _ => (i as f64 * 0.37).cos() * 40.0,
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Float64Array::from_iter(
                rows.clone().map(|i| (!null(i)).then(|| float(i))),
            )),
            Arc::new(Float64Array::from_iter_values(
                rows.clone().map(|i| (i as f64).sin()),
            )),
            Arc::new(Float32Array::from_iter(
                rows.clone().map(|i| (!null(i)).then(|| float(i) as f32)),
            )),
            Arc::new(Int64Array::from_iter(rows.clone().map(|i| {
                (!null(i)).then(|| i as i64 % 13 * (i as i64 % 1_000 - 500))
            }))),
            Arc::new(Int32Array::from_iter_values(
                rows.clone().map(|i| [i32::MIN, -1, 0, i32::MAX][i % 4]),
            )),
            Arc::new(Int16Array::from_iter(
                rows.clone()
                    .map(|i| (!null(i)).then_some((i % 700) as i16 - 350)),
            )),
            Arc::new(Int8Array::from_iter_values(
                rows.clone().map(|i| i8::from(i % 97 == 0)),
            )),
            Arc::new(Date32Array::from_iter(
                rows.clone()
                    .map(|i| (!null(i)).then_some(20_000 + (i % 400) as i32)),
            )),
            Arc::new(
                TimestampMillisecondArray::from_iter_values(
                    rows.clone()
                        .map(|i| 1_767_225_600_000 + 5_000 * (i % 720) as i64),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(TimestampMicrosecondArray::from_iter(
                rows.clone()
                    .map(|i| (!null(i)).then_some(1_767_225_600_000_000 + i as i64)),
            )),
            Arc::new(
                TimestampNanosecondArray::from_iter(
                    rows.clone()
                        .map(|i| (!null(i)).then_some(1_767_225_600_000_000_000 + i as i64 * 3)),
                )
                .with_timezone("Europe/Berlin"),
            ),
        ];
        RecordBatch::try_new(schema.clone(), columns).unwrap()
    };
    let batches = [
        batch(0..65_536),
        batch(65_536..131_072),
        batch(131_072..140_001),
    ];
    let dir = tempdir("streamed");
    let streamed = dir.join("streamed.parquet");
    let mut w = fleetscore_table::create(&streamed, schema.clone()).unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
    // The same rows through the Arrow writer with its defaults.
    let reference = dir.join("reference.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&reference).unwrap(),
        schema,
        None,
    )
    .unwrap();
    for b in &batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();

    let script = r#"
import sys, math, duckdb, pandas as pd, pyarrow.parquet as pq
streamed, reference = sys.argv[1], sys.argv[2]
a, b = pq.read_table(streamed), pq.read_table(reference)
assert a.schema.equals(b.schema), (a.schema, b.schema)
assert a.num_rows == b.num_rows == 140001, (a.num_rows, b.num_rows)
assert str(a.schema.field("ns").type) == "timestamp[ns, tz=Europe/Berlin]", a.schema
pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())
pd.testing.assert_frame_equal(pd.read_parquet(streamed), pd.read_parquet(reference))
f = pq.ParquetFile(streamed)
assert f.metadata.num_row_groups == 3, f.metadata
# Each chunk's statistics are its true bounds and null count.
start = 0
for g in range(f.metadata.num_row_groups):
    md = f.metadata.row_group(g)
    part = b.slice(start, md.num_rows)
    start += md.num_rows
    for i, name in enumerate(a.column_names):
        st = md.column(i).statistics
        col = part.column(name)
        assert st.null_count == col.null_count, (g, name, st.null_count, col.null_count)
        values = [v for v in col.to_pylist() if v is not None and not (isinstance(v, float) and math.isnan(v))]
        assert st.min == min(values) and st.max == max(values), (g, name, st.min, min(values), st.max, max(values))
con = duckdb.connect()
for q in [
    "SELECT count(*), count(value), sum(anomaly), min(ts), max(ts), sum(count), min(day), max(local) FROM read_parquet('{}')",
    "SELECT * FROM read_parquet('{}') WHERE ts BETWEEN '2026-01-01 00:10:00+00' AND '2026-01-01 00:20:00+00' ORDER BY score",
]:
    x = con.execute(q.format(streamed)).fetchall()
    y = con.execute(q.format(reference)).fetchall()
    assert repr(x) == repr(y), (q, x[:3], y[:3])
diff = con.execute(f"SELECT count(*) FROM (SELECT * FROM read_parquet('{streamed}') EXCEPT ALL SELECT * FROM read_parquet('{reference}'))").fetchone()[0]
assert diff == 0, diff
print("ok")
"#;
    run_python(
        &python,
        script,
        &[streamed.to_str().unwrap(), reference.to_str().unwrap()],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
