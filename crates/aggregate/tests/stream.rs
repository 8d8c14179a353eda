//! The log-to-store driver: idle partitions, the checkpoint's checks, and replay.

use std::path::PathBuf;

use fleetscore_aggregate::stream::{Aggregator, Options};
use fleetscore_aggregate::{Config, Error};
use fleetscore_ingest::Reading;
use fleetscore_log::Log;
use fleetscore_store::{Store, layout};

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "fleetscore-aggregate-stream-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const T0: i64 = 1_767_225_600_000;

/// A log of two partitions holding `n` readings of device `d` every 10 s.
fn log_with(dir: &std::path::Path, n: i64) -> Log {
    let log = Log::open(
        &dir.join("log"),
        fleetscore_log::Options {
            partitions: 2,
            ..fleetscore_log::Options::default()
        },
    )
    .unwrap();
    let readings: Vec<Reading> = (0..n)
        .map(|i| Reading {
            device: "d".into(),
            tag: "t".into(),
            ts_ms: T0 + i * 10_000,
            value: i as f64,
        })
        .collect();
    log.append(fleetscore_ingest::batch_of(&log, &readings))
        .unwrap()
        .wait()
        .unwrap();
    log
}

fn feature_files(store: &Store) -> usize {
    store.list(layout::FEATURES).unwrap().len()
}

/// Two aggregators, each with its own log (one per ingest machine), feed one store: their files
/// never collide, each compacts only its own, and each reports what is complete.
#[test]
fn two_aggregators_feed_one_store_without_colliding() {
    let dir = tempdir("two");
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let config = Config {
        idle_timeout_ms: 0,
        ..Config::default()
    };
    let mut merged = 0;
    for name in ["east", "west"] {
        let machine = dir.join(name);
        let _writer = log_with(&machine, 30);
        let log = Log::open_reader(&machine.join("log")).unwrap();
        let options = Options {
            name: name.into(),
            ..Options::default()
        };
        let (mut agg, _) = Aggregator::open(&log, &store, config.clone(), options).unwrap();
        assert_eq!(agg.complete_before(), None, "no reading yet");
        let first = agg.step(T0 + 3_600_000, false).unwrap().unwrap();
        assert_eq!(first.complete_before, Some(T0 + 4 * 60_000));
        let second = agg.step(T0 + 3_600_000, false).unwrap().unwrap();
        // Idle, the clock (an hour on) closes every window before it.
        assert_eq!(second.complete_before, Some(T0 + 3_600_000));
        merged += second.compacted;
    }
    assert_eq!(merged, 4, "each merged its own two files");
    let mut names: Vec<String> = store
        .list(layout::FEATURES)
        .unwrap()
        .into_iter()
        .map(|e| e.key.rsplit('/').next().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("east~compacted-"), "{names:?}");
    assert!(names[1].starts_with("west~compacted-"), "{names:?}");
}

#[test]
fn an_idle_partition_closes_its_last_windows() {
    let dir = tempdir("idle");
    let _writer = log_with(&dir, 30); // five minutes: windows 0..4, the last one open
    let log = Log::open_reader(&dir.join("log")).unwrap();
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let config = Config {
        idle_timeout_ms: 0,
        ..Config::default()
    };
    let (mut agg, replayed) =
        Aggregator::open(&log, &store, config.clone(), Options::default()).unwrap();
    assert!(replayed.is_none());
    let r = agg.step(T0 + 3_600_000, false).unwrap().unwrap();
    assert_eq!(
        (r.records, r.windows),
        (30, 4),
        "the watermark closed four windows"
    );
    assert_eq!((feature_files(&store), r.compacted), (1, 0));
    // Nothing new: the partition is idle, and the clock (an hour on) closes the fifth. Every
    // window of the hour is then closed: its two files are merged into one.
    let r = agg.step(T0 + 3_600_000, false).unwrap().unwrap();
    assert_eq!((r.records, r.windows, r.compacted), (0, 1, 2));
    assert!(agg.step(T0 + 3_600_000, false).unwrap().is_none());
    let files = store.list(layout::FEATURES).unwrap();
    assert_eq!(files.len(), 1);
    assert!(
        files[0].key.contains("/default~compacted-"),
        "{}",
        files[0].key
    );
    let merged = fleetscore_table::windows::read(
        &[(files[0].key.clone(), store.get(&files[0].key).unwrap())],
        i64::MIN,
        i64::MAX,
        &|_, _| true,
    )
    .unwrap();
    let w = &merged[&("d".to_string(), "t".to_string())];
    assert_eq!(w.start, (0..5).map(|i| T0 + i * 60_000).collect::<Vec<_>>());
    assert_eq!(w.column("count").unwrap(), &[6.0; 5]);
    // A reader that sees a window in two files (a merge not yet done) takes it once.
    let file = (files[0].key.clone(), store.get(&files[0].key).unwrap());
    let twice =
        fleetscore_table::windows::read(&[file.clone(), file], i64::MIN, i64::MAX, &|_, _| true)
            .unwrap();
    assert_eq!(&twice, &merged);

    // The checkpoint goes on; it refuses other windows, and a damaged one is named.
    drop(agg);
    let other = Config {
        size_ms: 30_000,
        hop_ms: 30_000,
        ..config.clone()
    };
    let err = Aggregator::open(&log, &store, other, Options::default())
        .err()
        .unwrap();
    assert!(matches!(err, Error::Config(_)), "{err}");
    let key = layout::aggregate_checkpoint("default");
    let mut bytes = store.get(&key).unwrap().to_vec();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    store.put(&key, bytes).unwrap();
    let err = Aggregator::open(&log, &store, config, Options::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_interrupted_epoch_is_replayed_into_the_same_files() {
    let dir = tempdir("replay");
    let _writer = log_with(&dir, 60);
    let log = Log::open_reader(&dir.join("log")).unwrap();
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let (mut agg, _) =
        Aggregator::open(&log, &store, Config::default(), Options::default()).unwrap();
    agg.step(T0, false).unwrap().unwrap();
    let files: Vec<_> = store.list(layout::FEATURES).unwrap();
    let before: Vec<_> = files
        .iter()
        .map(|e| (e.key.clone(), store.get(&e.key).unwrap()))
        .collect();
    assert!(!before.is_empty());
    // As if the process died after writing the intent and before the checkpoint: put back the
    // checkpoint of epoch 0 (none) and remove the files.
    drop(agg);
    store
        .delete(&layout::aggregate_checkpoint("default"))
        .unwrap();
    for (k, _) in &before {
        store.delete(k).unwrap();
    }
    let (_, replayed) =
        Aggregator::open(&log, &store, Config::default(), Options::default()).unwrap();
    let r = replayed.expect("the intent of epoch 1 is replayed");
    assert!(r.replayed && r.epoch == 1);
    for (k, bytes) in &before {
        assert_eq!(
            &store.get(k).unwrap(),
            bytes,
            "{k} rewritten with the same bytes"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readings_retention_deleted_unread_are_skipped_and_counted() {
    let dir = tempdir("retention");
    let options = fleetscore_log::Options {
        partitions: 1,
        segment_bytes: 300,
        retention_bytes: Some(600),
        ..fleetscore_log::Options::default()
    };
    let writer = Log::open(&dir.join("log"), options).unwrap();
    let log = Log::open_reader(&dir.join("log")).unwrap();
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let (mut agg, _) =
        Aggregator::open(&log, &store, Config::default(), Options::default()).unwrap();
    // Many small batches (many segments), then retention, all before the aggregator reads.
    for i in 0..60 {
        let r = Reading {
            device: "d".into(),
            tag: "t".into(),
            ts_ms: T0 + i * 1_000,
            value: i as f64,
        };
        writer
            .append(fleetscore_ingest::batch_of(&writer, [&r]))
            .unwrap()
            .wait()
            .unwrap();
    }
    let (segments, _) = writer.enforce_retention(T0).unwrap();
    assert!(segments > 0);
    log.refresh().unwrap();
    let (start, end) = log.bounds(0).unwrap();
    assert!(start > 0 && end == 60);
    let r = agg.step(T0, false).unwrap().unwrap();
    assert_eq!((r.deleted, r.records), (start, 60 - start));
    assert_eq!(agg.engine().counters().deleted, start);
    assert_eq!(agg.offsets(), &[60]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A closed hour's files are merged a few buckets per epoch, not all in one (which at fleet
/// scale held up the windows closing meanwhile): here over two epochs or more, after which
/// every bucket holds one file of windows and one of raw readings.
#[test]
fn a_closed_hours_files_are_merged_a_few_buckets_an_epoch() {
    let dir = tempdir("budget");
    let log = Log::open(
        &dir.join("log"),
        fleetscore_log::Options {
            partitions: 2,
            ..fleetscore_log::Options::default()
        },
    )
    .unwrap();
    let devices: Vec<String> = (0..40).map(|i| format!("d{i}")).collect();
    let buckets: std::collections::BTreeSet<u32> =
        devices.iter().map(|d| layout::bucket(d)).collect();
    assert!(buckets.len() > 16, "{buckets:?}");
    let append = |from: i64, to: i64| {
        let readings: Vec<Reading> = (from..to)
            .flat_map(|i| {
                devices.iter().map(move |d| Reading {
                    device: d.clone(),
                    tag: "t".into(),
                    ts_ms: T0 + i * 10_000,
                    value: i as f64,
                })
            })
            .collect();
        log.append(fleetscore_ingest::batch_of(&log, &readings))
            .unwrap()
            .wait()
            .unwrap();
    };
    let store = Store::open(dir.join("store").to_str().unwrap()).unwrap();
    let config = Config {
        idle_timeout_ms: 0,
        ..Config::default()
    };
    let options = Options {
        raw: true,
        ..Options::default()
    };
    let (mut agg, _) = Aggregator::open(&log, &store, config, options).unwrap();
    // Two epochs of readings: two files per bucket, of windows and of readings.
    append(0, 15);
    agg.step(T0 + 3_600_000, false).unwrap().unwrap();
    append(15, 30);
    agg.step(T0 + 3_600_000, false).unwrap().unwrap();
    let mut merging_epochs = 0;
    let mut merged = 0;
    while let Some(r) = agg.step(T0 + 3_600_000, false).unwrap() {
        if r.compacted > 0 {
            merging_epochs += 1;
            merged += r.compacted;
        }
        assert!(merging_epochs < 20, "the merging does not end");
    }
    assert!(merging_epochs >= 2, "{merging_epochs}");
    for (prefix, name) in [
        (layout::FEATURES, "windows"),
        (layout::READINGS, "readings"),
    ] {
        let mut per_folder: std::collections::BTreeMap<String, usize> = Default::default();
        for e in store.list(prefix).unwrap() {
            let (folder, _) = e.key.rsplit_once('/').unwrap();
            *per_folder.entry(folder.to_string()).or_default() += 1;
        }
        assert_eq!(per_folder.len(), buckets.len(), "{name}: {per_folder:?}");
        assert!(
            per_folder.values().all(|&n| n == 1),
            "{name}: {per_folder:?}"
        );
    }
    assert!(merged >= 4 * buckets.len(), "{merged}");
}
