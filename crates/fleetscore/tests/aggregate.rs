//! `fleetscore aggregate` as a real process over a log that `ingest serve` writes: windows equal
//! a direct computation, late readings are kept, and an aggregator killed at any point neither
//! loses nor duplicates a window.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMillisecondType};

mod common;

use common::tempdir;
use common::{bin, post, serve};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600_000;

type Reading = (String, String, i64, f64);

/// `series` series with a reading every 1–3 s for `seconds`, arriving out of order by up to
/// 3 s (in a deterministic order).
fn readings(series: usize, seconds: i64, seed: u64) -> Vec<Reading> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::new();
    for s in 0..series {
        let mut ts = T0 + (next() % 3_000) as i64;
        while ts < T0 + seconds * 1000 {
            let value = (next() % 100_000) as f64 / 1000.0 - 30.0;
            out.push((
                format!("dev-{:02}", s / 2),
                format!("t{}", s % 2),
                ts,
                value,
            ));
            ts += 1_000 + (next() % 2_000) as i64;
        }
    }
    let mut keyed: Vec<(i64, usize)> = out
        .iter()
        .enumerate()
        .map(|(i, r)| (r.2 + (next() % 3_000) as i64, i))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| out[i].clone()).collect()
}

fn json_lines(rows: &[Reading]) -> String {
    rows.iter()
        .map(|(d, t, ts, v)| format!(r#"{{"device":"{d}","tag":"{t}","ts":{ts},"value":{v}}}"#))
        .collect::<Vec<_>>()
        .join("\n")
}

fn aggregate(store: &Path, log: &Path, extra: &[&str]) -> std::process::Command {
    let mut c = bin();
    c.args(["--store"])
        .arg(store)
        .args(["aggregate", "run", "--log-dir"])
        .arg(log)
        .args(["--delay", "5s", "--idle-timeout", "1h"])
        .args(extra);
    c
}

fn check(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// One features row: key (device, tag, start) → (end, count, bits of mean, min, max, std, first,
/// last).
type FeatureRows = BTreeMap<(String, String, i64), (i64, i64, [u64; 6])>;

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|e| e == "parquet") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn batches(path: &Path) -> Vec<RecordBatch> {
    let bytes = std::fs::read(path).unwrap();
    fleetscore_table::from_parquet_bytes("t", bytes.into()).unwrap()
}

fn text(b: &RecordBatch, c: &str, i: usize) -> String {
    let a = b.column_by_name(c).unwrap();
    match a.as_string_opt::<i32>() {
        Some(s) => s.value(i).to_string(),
        None => {
            let d = a.as_dictionary::<arrow_array::types::Int32Type>();
            let k = d.keys().value(i) as usize;
            d.values().as_string::<i32>().value(k).to_string()
        }
    }
}

/// Every features row in a store; a window written twice fails the test.
fn features(store: &Path) -> FeatureRows {
    let mut out = FeatureRows::new();
    for f in parquet_files(&store.join("features")) {
        for b in batches(&f) {
            let time = |c: &str| {
                b.column_by_name(c)
                    .unwrap()
                    .as_primitive::<TimestampMillisecondType>()
                    .clone()
            };
            let (start, end) = (time("window_start"), time("window_end"));
            let count = b
                .column_by_name("count")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            let floats: Vec<_> = ["mean", "min", "max", "std", "first", "last"]
                .iter()
                .map(|c| {
                    b.column_by_name(c)
                        .unwrap()
                        .as_primitive::<Float64Type>()
                        .clone()
                })
                .collect();
            for i in 0..b.num_rows() {
                let key = (text(&b, "device", i), text(&b, "tag", i), start.value(i));
                let stats: [u64; 6] = std::array::from_fn(|k| floats[k].value(i).to_bits());
                let old = out.insert(key.clone(), (end.value(i), count.value(i), stats));
                assert!(
                    old.is_none(),
                    "window {key:?} written twice ({})",
                    f.display()
                );
            }
        }
    }
    out
}

/// Every late reading in a store: (device, tag, ts, value bits, offset).
fn late(store: &Path) -> Vec<(String, String, i64, u64, i64)> {
    let mut out = Vec::new();
    for f in parquet_files(&store.join("late")) {
        for b in batches(&f) {
            let ts = b
                .column_by_name("ts")
                .unwrap()
                .as_primitive::<TimestampMillisecondType>()
                .clone();
            let v = b
                .column_by_name("value")
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone();
            let o = b
                .column_by_name("offset")
                .unwrap()
                .as_primitive::<Int64Type>()
                .clone();
            for i in 0..b.num_rows() {
                out.push((
                    text(&b, "device", i),
                    text(&b, "tag", i),
                    ts.value(i),
                    v.value(i).to_bits(),
                    o.value(i),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn windows_equal_a_direct_computation_and_late_readings_are_kept() {
    let dir = tempdir("direct");
    let (log, store) = (dir.join("log"), dir.join("store"));
    let server = serve(&log, &["--partitions", "3"]);
    let rows = readings(10, 600, 5);
    for chunk in rows.chunks(700) {
        let (s, body) = post(
            server.addr,
            "application/x-ndjson",
            None,
            &json_lines(chunk),
        );
        assert_eq!(s, 200, "{body}");
    }
    // A repeat of a reading's (device, tag, ts) with another value, while its window is
    // open: the first is kept.
    let newest = rows.iter().max_by_key(|r| r.2).unwrap();
    let repeat = (newest.0.clone(), newest.1.clone(), newest.2, 99.0);
    // Long after its window closed: late.
    let late_one = ("dev-00".to_string(), "t0".to_string(), T0 + 1_500, 42.5);
    // Outside the range given for its tag: dropped.
    let outlier = ("dev-01".to_string(), "t1".to_string(), T0 + 123_456, 500.0);
    let (s, body) = post(
        server.addr,
        "application/x-ndjson",
        None,
        &json_lines(&[repeat, late_one.clone(), outlier]),
    );
    assert_eq!(s, 200, "{body}");
    let err = check(
        &aggregate(
            &store,
            &log,
            &[
                "--drain",
                "--epoch-readings",
                "1000",
                "--range",
                "t1=-100:100",
            ],
        )
        .output()
        .unwrap(),
    );
    assert!(err.contains("1 repeats; 1 late"), "{err}");
    assert!(err.contains("1 out of range"), "{err}");
    // The log's consumer offsets mirror the checkpoint: `log stats` shows the group caught up.
    let o = bin()
        .args(["log", "stats", "--log-dir"])
        .arg(&log)
        .args(["--group", "default"])
        .output()
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for p in stats["partitions"].as_array().unwrap() {
        let n = p["partition"].to_string();
        assert_eq!(stats["groups"]["default"][&n], p["end_offset"], "{stats}");
    }

    // The windows, directly: every reading in its minute, first arrival per time.
    let mut members: BTreeMap<(String, String, i64), Vec<(i64, f64)>> = BTreeMap::new();
    for (d, t, ts, v) in &rows {
        let start = ts.div_euclid(60_000) * 60_000;
        members
            .entry((d.clone(), t.clone(), start))
            .or_default()
            .push((*ts, *v));
    }
    let got = features(&store);
    assert_eq!(got.len(), members.len());
    for (key, mut m) in members {
        m.sort_by_key(|r| r.0);
        let (end, count, stats) = got.get(&key).unwrap_or_else(|| panic!("{key:?} missing"));
        assert_eq!(*end, key.2 + 60_000);
        assert_eq!(*count, m.len() as i64, "{key:?}");
        let n = m.len() as f64;
        let mean = m.iter().map(|r| r.1).sum::<f64>() / n;
        let std = (m.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let want = [
            mean,
            m.iter().map(|r| r.1).fold(f64::INFINITY, f64::min),
            m.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max),
            std,
            m[0].1,
            m[m.len() - 1].1,
        ];
        for (k, w) in want.iter().enumerate() {
            let g = f64::from_bits(stats[k]);
            assert!(
                (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                "{key:?} stat {k}: {g} vs {w}"
            );
        }
    }
    let late = late(&store);
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].2, f64::from_bits(late[0].3)),
        (late_one.2, late_one.3)
    );

    // Status reads the checkpoint; a run with other windows is refused.
    let o = bin()
        .arg("--store")
        .arg(&store)
        .args(["aggregate", "status"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["counters"]["readings"], rows.len() + 3);
    assert_eq!(status["counters"]["out_of_range"], 1);
    assert_eq!(status["buffered_readings"], 0);
    // One aggregator of a name per log at a time.
    let mut running = spawn(aggregate(&store, &log, &[]));
    std::thread::sleep(Duration::from_millis(300));
    let o = aggregate(&store, &log, &["--drain"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("is already running"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    running.kill().unwrap();
    running.wait().unwrap();
    let o = aggregate(&store, &log, &["--drain", "--window", "30s"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot go on with 30000 ms"));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn spawn(mut c: std::process::Command) -> Child {
    c.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_aggregator_neither_loses_nor_duplicates_a_window() {
    let dir = tempdir("kill");
    let (log, killed, clean) = (dir.join("log"), dir.join("killed"), dir.join("clean"));
    let server = serve(&log, &["--partitions", "4"]);
    let rows = Arc::new(readings(40, 1_800, 9));
    let done = Arc::new(AtomicBool::new(false));
    let poster = {
        let (rows, done, addr) = (rows.clone(), done.clone(), server.addr);
        std::thread::spawn(move || {
            for chunk in rows.chunks(400) {
                let (s, body) = post(addr, "application/x-ndjson", None, &json_lines(chunk));
                assert_eq!(s, 200, "{body}");
                std::thread::sleep(Duration::from_millis(5));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let small = [
        "--epoch-readings",
        "300",
        "--poll-ms",
        "10",
        "--epoch-interval-ms",
        "0",
    ];
    // One crash in the middle of an epoch, after some of its files were written.
    let mut first = aggregate(&killed, &log, &small);
    first.env("FLEETSCORE_FAULT_AGGREGATE_ABORT_AFTER", "3");
    let mut child = spawn(first);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the aggregator never wrote 3 files");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success() && err.contains("aborting"), "{err}");
    // Then SIGKILLs at arbitrary moments while readings keep coming; the first restart
    // completes the interrupted epoch.
    let mut kills = 0;
    let mut x = 77u64;
    while !done.load(Ordering::SeqCst) || kills < 5 {
        let stderr = dir.join(format!("aggregate-{kills}.err"));
        let mut c = aggregate(&killed, &log, &small);
        c.stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut child = c.spawn().unwrap();
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis(50 + (x >> 33) % 400));
        child.kill().unwrap();
        child.wait().unwrap();
        if kills == 0 {
            let err = std::fs::read_to_string(&stderr).unwrap();
            assert!(err.contains("replayed after a crash"), "{err}");
        }
        kills += 1;
    }
    poster.join().unwrap();
    check(&aggregate(&killed, &log, &["--drain"]).output().unwrap());
    // The same log aggregated in one clean pass.
    check(&aggregate(&clean, &log, &["--drain"]).output().unwrap());
    let (a, b) = (features(&killed), features(&clean));
    assert!(
        a.len() > 1_000,
        "{} windows, {} in a clean run",
        a.len(),
        b.len()
    );
    assert_eq!(
        a.len(),
        b.len(),
        "windows after {kills} kills vs a clean run"
    );
    assert!(a == b, "the windows differ after {kills} kills");
    assert_eq!(late(&killed), late(&clean));
    let readings: usize = a.values().map(|w| w.1 as usize).sum();
    assert_eq!(readings + late(&clean).len(), rows.len());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

fn float_column(b: &RecordBatch, c: &str) -> Vec<f64> {
    b.column_by_name(c)
        .unwrap_or_else(|| panic!("no {c}"))
        .as_primitive::<Float64Type>()
        .values()
        .to_vec()
}

#[test]
fn the_reference_fleet_flows_from_readings_to_windows_to_predictions() {
    let dir = tempdir("e2e");
    let (log, store) = (dir.join("log"), dir.join("store"));
    // The reference fleet's committed copy: the project needs nothing beside its clone.
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/data/reference");
    let csv = std::fs::read_to_string(reference.join("sensor_data.csv")).unwrap();
    let server = serve(&log, &[]);
    let (s, body) = post(server.addr, "text/csv", None, &csv);
    assert_eq!(s, 200, "{body}");
    let store_arg = |c: &mut std::process::Command| {
        c.arg("--store").arg(&store);
    };
    // Readings → windows.
    check(&aggregate(&store, &log, &["--drain"]).output().unwrap());
    // Models fed the windows' mean.
    let mut c = bin();
    store_arg(&mut c);
    c.args(["models", "import"])
        .arg(reference.join("models"))
        .args(["--pattern", "model_{device}_{tag}", "--features", "mean"]);
    let err = check(&c.output().unwrap());
    assert!(err.contains("15 imported"), "{err}");
    // Windows → predictions.
    let mut c = bin();
    store_arg(&mut c);
    c.args([
        "run",
        "--from",
        "2018-08-28T00:00:00Z",
        "--to",
        "2018-08-30T00:00:00Z",
        "--run-id",
        "windows",
    ]);
    let o = c.output().unwrap();
    check(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("succeeded — 15 models scored"), "{out}");
    let windows = features(&store);
    assert!(
        out.contains(&format!("{} rows", windows.len())),
        "{out}: {} windows",
        windows.len()
    );

    // The same windows from the file, scored by `models score` (checked against scikit-learn
    // elsewhere), give the same scores as the run.
    let feats = dir.join("features.parquet");
    let mut c = bin();
    c.args(["aggregate", "file", "--input"])
        .arg(reference.join("sensor_data.csv"))
        .arg("--output")
        .arg(&feats);
    check(&c.output().unwrap());
    let mut from_file = 0;
    for b in batches(&feats) {
        from_file += b.num_rows();
    }
    assert_eq!(
        from_file,
        windows.len(),
        "file and stream give the same windows"
    );
    let scored = dir.join("scored.parquet");
    let mut c = bin();
    c.args(["models", "score"])
        .arg(reference.join("models/model_2_3"))
        .arg("--input")
        .arg(&feats)
        .args([
            "--where",
            "device=2",
            "--where",
            "tag=3",
            "--features",
            "mean",
            "--output",
        ])
        .arg(&scored);
    check(&c.output().unwrap());
    let want: Vec<f64> = batches(&scored)
        .iter()
        .flat_map(|b| float_column(b, "score"))
        .collect();
    let mut got = Vec::new();
    for f in parquet_files(&store.join("predictions")) {
        for b in batches(&f) {
            let score = float_column(&b, "score");
            for (i, s) in score.iter().enumerate() {
                if text(&b, "device", i) == "2" && text(&b, "tag", i) == "3" {
                    got.push(*s);
                }
            }
        }
    }
    assert!(want.len() > 100, "{} windows of 2/3", want.len());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{g} vs {w}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `--raw`, the readings themselves reach the store too, exactly once even when the
/// aggregator dies mid-epoch: models fed raw values (the reference fleet's) are scored from
/// the stream with scikit-learn's predictions.
#[test]
fn raw_readings_are_archived_once_and_scored_from_the_stream() {
    let dir = tempdir("raw");
    let (log, store) = (dir.join("log"), dir.join("store"));
    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/data/reference");
    let csv = std::fs::read_to_string(reference.join("sensor_data.csv")).unwrap();
    let server = serve(&log, &[]);
    let (s, body) = post(server.addr, "text/csv", None, &csv);
    assert_eq!(s, 200, "{body}");
    // Killed after its first file of the first epoch; the restart replays the epoch.
    let o = aggregate(
        &store,
        &log,
        &["--drain", "--raw", "--epoch-readings", "5000"],
    )
    .env("FLEETSCORE_FAULT_AGGREGATE_ABORT_AFTER", "1")
    .output()
    .unwrap();
    assert!(!o.status.success(), "the fault stops it");
    let err = check(
        &aggregate(
            &store,
            &log,
            &["--drain", "--raw", "--epoch-readings", "5000"],
        )
        .output()
        .unwrap(),
    );
    assert!(err.contains("replayed after a crash"), "{err}");
    // Every hour closed: each hour and bucket holds one file of the aggregator's (the merge of
    // its epochs' files, or the one epoch's that wrote there), named with the time range of
    // its readings, which lies in its hour.
    let (mut folders, mut merged) = (0, 0);
    for hour in std::fs::read_dir(store.join("readings")).unwrap() {
        let hour = hour.unwrap();
        let h = hour.file_name().to_string_lossy().to_string();
        let start =
            fleetscore_core::parse_time(&format!("{}:00:00Z", h.strip_prefix("hour=").unwrap()))
                .unwrap();
        for bucket in std::fs::read_dir(hour.path()).unwrap() {
            let files: Vec<String> = std::fs::read_dir(bucket.unwrap().path())
                .unwrap()
                .map(|f| f.unwrap().file_name().to_string_lossy().to_string())
                .collect();
            assert_eq!(files.len(), 1, "{h}: {files:?}");
            assert!(files[0].starts_with("default~"), "{files:?}");
            merged += usize::from(files[0].starts_with("default~compacted-"));
            let (min, max) = fleetscore_store::layout::file_time_range(&files[0]).unwrap();
            assert!(
                start <= min && min <= max && max < start + 3_600_000,
                "{files:?}"
            );
            folders += 1;
        }
    }
    assert!(
        folders >= 10 && merged >= 1,
        "{folders} folders, {merged} merged"
    );
    let fleet = |args: &[&str]| {
        let o = bin()
            .arg("--store")
            .arg(&store)
            .args(args)
            .output()
            .unwrap();
        check(&o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut c = bin();
    c.arg("--store").arg(&store).args(["models", "import"]);
    c.arg(reference.join("models"))
        .args(["--pattern", "model_{device}_{tag}"]);
    check(&c.output().unwrap());
    let out = fleet(&[
        "run",
        "--from",
        "2018-08-28T00:00:00Z",
        "--to",
        "2018-08-30T00:00:00Z",
        "--run-id",
        "raw",
    ]);
    assert!(out.contains("17768 rows"), "every reading once: {out}");
    let export = dir.join("export");
    fleet(&[
        "predictions",
        "export",
        "--run",
        "raw",
        "--format",
        "csv",
        "--output",
        export.to_str().unwrap(),
    ]);
    let mut got = std::collections::HashMap::new();
    for entry in std::fs::read_dir(&export).unwrap() {
        let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for l in body.lines().skip(1) {
            let f: Vec<&str> = l.split(',').collect();
            got.insert(
                (f[0].to_string(), f[1].to_string(), f[2].to_string()),
                f[4].to_string(),
            );
        }
    }
    let expected = std::fs::read_to_string(reference.join("expected.csv")).unwrap();
    let mut n = 0;
    for l in expected.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        let key = (f[0].to_string(), f[1].to_string(), f[2].to_string());
        assert_eq!(got[&key], if f[5] == "-1" { "1" } else { "0" }, "{l}");
        n += 1;
    }
    assert_eq!((n, got.len()), (17_768, 17_768));
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn aggregating_a_file_names_what_is_wrong_with_it() {
    let dir = tempdir("file");
    let run = |input: &Path, output: &str| {
        let o = bin()
            .args(["aggregate", "file", "--input"])
            .arg(input)
            .arg("--output")
            .arg(dir.join(output))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let csv = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let no_value = csv("no-value.csv", "device,tag,ts\nd,t,2026-01-01T00:00:00Z\n");
    let err = run(&no_value, "f.parquet");
    assert!(err.contains("no `value` column"), "{err}");
    let bad_value = csv(
        "bad.csv",
        "device,tag,ts,value\nd,t,2026-01-01T00:00:00Z,abc\n",
    );
    let err = run(&bad_value, "f.parquet");
    assert!(err.contains("value `abc` is not a number"), "{err}");
    let bad_ts = csv("bad-ts.csv", "device,tag,ts,value\nd,t,yesterday,1\n");
    let err = run(&bad_ts, "f.parquet");
    assert!(err.contains("ts:") && err.contains("yesterday"), "{err}");
    let good = csv(
        "good.csv",
        "device,tag,ts,value\nd,t,2026-01-01T00:00:00Z,1\n",
    );
    let err = run(&good, "f.csv");
    assert!(err.contains("features are written as Parquet"), "{err}");
    let err = run(&dir.join("missing.csv"), "f.parquet");
    assert!(err.contains("missing.csv"), "{err}");
    assert!(!dir.join("f.parquet").exists() && !dir.join("f.csv").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
