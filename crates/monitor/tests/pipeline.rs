//! Ingest and aggregation as the monitor shows them: a real log with readings in it, an
//! aggregator that has read part of it (its checkpoint in the store, its lag behind the log,
//! its watermarks and a late reading), and more readings appended after it stopped.

use std::sync::Arc;

use fleetscore_core::{ManualClock, Reading};
use fleetscore_log::sources::{self, SourceCounts, SourcesReport};
use fleetscore_log::{Batch, Log, Options as LogOptions};
use fleetscore_monitor::{Monitor, NoScheduler, Options, Sources};
use fleetscore_store::Store;

use crate::fleet::{get, json};

fn append(log: &Log, readings: &[(&str, i64, f64)]) {
    let mut batch = Batch::default();
    for &(device, ts_ms, value) in readings {
        let r = Reading {
            device: device.into(),
            tag: "temp".into(),
            ts_ms,
            value,
        };
        let mut rec = Vec::new();
        r.encode(&mut rec);
        batch.push(log.partition_for(device.as_bytes()), &rec);
    }
    log.append(batch).unwrap().wait().unwrap();
}

#[test]
fn the_log_the_aggregators_lag_watermarks_and_late_readings_show() {
    let dir = std::env::temp_dir().join(format!(
        "fleetscore-monitor-pipeline-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let log_dir = dir.join("log");
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let t0 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    {
        let log = Log::open(
            &log_dir,
            LogOptions {
                partitions: 2,
                ..LogOptions::default()
            },
        )
        .unwrap();
        // Two minutes of readings, then one for the first minute after it has closed.
        let early: Vec<(&str, i64, f64)> = (0..120)
            .map(|s| (["a", "b"][s % 2], t0 + s as i64 * 1_000, 1.0))
            .collect();
        append(&log, &early);
        append(&log, &[("a", t0 + 200_000, 2.0), ("b", t0 + 200_000, 2.0)]);
        append(&log, &[("a", t0 + 5_000, 3.0)]);
        let options = fleetscore_aggregate::stream::Options {
            drain: false,
            ..Default::default()
        };
        // Read what is there (one epoch), then stop.
        let (mut agg, _) = fleetscore_aggregate::stream::Aggregator::open(
            &log,
            &store,
            fleetscore_aggregate::Config::default(),
            options,
        )
        .unwrap();
        while agg.step(t0 + 300_000, false).unwrap().is_some() {}
        // Readings the aggregator has not read.
        append(
            &log,
            &[
                ("a", t0 + 210_000, 4.0),
                ("b", t0 + 211_000, 4.0),
                ("a", t0 + 212_000, 4.0),
            ],
        );
    }
    // Two ingest processes' counters: one running (HTTP and MQTT), one that has stopped.
    let counts = |accepted, invalid, overloaded| SourceCounts {
        accepted,
        invalid,
        overloaded,
        ..Default::default()
    };
    sources::write(
        &log_dir,
        &SourcesReport {
            process: "host-1-1".into(),
            started_ms: t0,
            updated_ms: t0 + 395_000,
            stopped: false,
            sources: [
                ("http".to_string(), counts(100, 2, 1)),
                ("mqtt".to_string(), counts(20, 1, 0)),
            ]
            .into(),
        },
    )
    .unwrap();
    sources::write(
        &log_dir,
        &SourcesReport {
            process: "host-2-2".into(),
            started_ms: t0 - 1,
            updated_ms: t0 + 1_000,
            stopped: true,
            sources: [("http".to_string(), counts(6, 0, 0))].into(),
        },
    )
    .unwrap();
    // The log's appends block on their acknowledgement: the service is asked afterwards.
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(check(&store, &log_dir, t0));
    let _ = std::fs::remove_dir_all(&dir);
}

async fn check(store: &Store, log_dir: &std::path::Path, t0: i64) {
    let m = Monitor::new(
        Sources {
            store: store.clone(),
            coordinator: None,
            log_dir: Some(log_dir.to_path_buf()),
            schedules: Arc::new(NoScheduler),
            clock: Arc::new(ManualClock::new(t0 + 400_000)),
            options: Options::default(),
        },
        None,
    );
    let p = json(&m, "/api/v1/ingest").await;
    let ends: u64 = p["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["end"].as_u64().unwrap())
        .sum();
    assert_eq!(ends, 126);
    let agg = &p["aggregators"][0];
    assert_eq!(agg["name"], "default");
    let lag: u64 = agg["lag"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(lag, 3, "{p}");
    assert_eq!(agg["late_readings"], 1, "{p}");
    // A partition's watermark: its newest reading (t0 + 200 s) less the 10 s delay.
    let marks: Vec<i64> = agg["watermarks_ms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w.as_i64())
        .collect();
    assert!(
        !marks.is_empty() && marks.iter().all(|&w| w == t0 + 190_000),
        "{p}"
    );
    let (_, _, metrics) = get(&m, "/metrics", &[]).await;
    assert!(
        metrics.contains("fleetscore_aggregate_lag{aggregator=\"default\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("fleetscore_aggregate_late_readings_total{aggregator=\"default\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.lines().any(|l| l.starts_with(
            "fleetscore_aggregate_watermark_seconds{aggregator=\"default\",partition="
        ) && l.ends_with("} 1767225790.0")),
        "{metrics}"
    );
    // Readings and refusals by source, over both processes; only one is running.
    let sources = p["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2, "{p}");
    assert_eq!(sources[0]["source"], "http");
    assert_eq!(sources[0]["counts"]["accepted"], 106);
    assert_eq!(sources[0]["counts"]["invalid"], 2);
    assert_eq!(sources[0]["live_processes"], 1);
    assert_eq!(sources[1]["source"], "mqtt");
    assert_eq!(sources[1]["counts"]["accepted"], 20);
    for line in [
        "fleetscore_ingest_readings_total{source=\"http\",result=\"accepted\"} 106",
        "fleetscore_ingest_readings_total{source=\"http\",result=\"invalid\"} 2",
        "fleetscore_ingest_readings_total{source=\"mqtt\",result=\"accepted\"} 20",
        "fleetscore_ingest_requests_refused_total{source=\"http\",reason=\"overloaded\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    let (_, _, page) = get(&m, "/ingest", &[]).await;
    assert!(
        page.contains("id=\"partitions\"") && page.contains("3 behind"),
        "{page}"
    );
    assert!(
        page.contains("id=\"sources\"") && page.contains("<td>mqtt</td>"),
        "{page}"
    );
}
