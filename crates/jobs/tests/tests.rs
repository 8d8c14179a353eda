//! Fleet runs end to end on a real store: the reference fleet scored like scikit-learn, reruns
//! that replace instead of duplicating, and models that fail alone.

use std::collections::HashMap;
use std::path::PathBuf;

use arrow_array::{Array, Float64Array, Int8Array, StringArray, TimestampMillisecondArray};
use fleetscore_jobs::RunStatus;
use fleetscore_jobs::coordinator::postgres::PostgresCoordinator;
use fleetscore_jobs::coordinator::sqlite::SqliteCoordinator;
use fleetscore_jobs::coordinator::{Coordinator, FailureKind};
use fleetscore_jobs::readings::{self, Columns};
use fleetscore_jobs::registry::{self, Imported, NewModel};
use fleetscore_jobs::run::{self, RunOptions, RunRequest};
use fleetscore_store::{Store, layout};

fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data/reference")
        .join(path)
}

struct Fleet {
    store: Store,
    coordinator: Box<dyn Coordinator>,
    dir: PathBuf,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A store in a temporary folder.
fn fleet(name: &str) -> Fleet {
    fleet_at(name, None)
}

/// A store at `url` (under a prefix of its own), or in a temporary folder.
fn fleet_at(name: &str, url: Option<&str>) -> Fleet {
    let dir = std::env::temp_dir().join(format!("fleetscore-jobs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let location = match url {
        Some(url) => format!(
            "{}/{name}-{}",
            url.trim_end_matches('/'),
            std::process::id()
        ),
        None => dir.join("store").display().to_string(),
    };
    let store = Store::open(&location).unwrap();
    let coordinator = Box::new(SqliteCoordinator::open(&dir.join("coordinator.sqlite")).unwrap());
    Fleet {
        store,
        coordinator,
        dir,
    }
}

/// Every task log of run `id`, one after the other.
fn task_logs(f: &Fleet, id: &str) -> String {
    f.store
        .list(&layout::logs_dir(id))
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(f.store.get(&e.key).unwrap().to_vec()).unwrap())
        .collect()
}

/// The reference fleet's 15 models imported together, as `models import` does: one commit, one
/// model pack; and its readings.
fn import_reference_packed(f: &Fleet) {
    import_packed(f, |d, t| format!("models/model_{d}_{t}"), Imported::New);
    let summary =
        readings::import(&f.store, &reference("sensor_data.csv"), &Columns::default()).unwrap();
    assert_eq!(summary.rows, 17_768);
}

/// New versions of the reference fleet's 15 models, imported together: each sensor given the
/// file of its device's next tag.
fn import_reference_swapped(f: &Fleet) {
    import_packed(
        f,
        |d, t| format!("models/model_{d}_{}", t % 5 + 1),
        Imported::New,
    );
}

/// Imports, in one commit, the reference file `file(device, tag)` for each of the reference
/// fleet's 15 sensors, each with the outcome `expected`.
fn import_packed(f: &Fleet, file: impl Fn(u32, u32) -> String, expected: Imported) {
    let mut importer = registry::Importer::new(&f.store);
    for d in 1..=3 {
        for t in 1..=5 {
            let bytes = std::fs::read(reference(&file(d, t))).unwrap();
            let (_, outcome) = importer
                .add(&NewModel {
                    device: &d.to_string(),
                    tag: &t.to_string(),
                    bytes: &bytes,
                    source: "test",
                    features: None,
                })
                .unwrap();
            assert_eq!(outcome, expected);
        }
    }
    importer.finish().unwrap();
}

/// A run of the reference fleet's window on two workers, as `id`.
fn run_reference_window(f: &Fleet, id: &str) -> run::RunRecord {
    run::run(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest {
            run_id: Some(id.into()),
            ..RunRequest::window(FROM, TO).with_options(options(2))
        },
        &mut |_| {},
    )
    .unwrap()
}

/// The reference fleet's 15 models imported one at a time (no pack: each model is read from its
/// own file), and its readings.
fn import_reference(f: &Fleet) {
    for d in 1..=3 {
        for t in 1..=5 {
            let path = reference(&format!("models/model_{d}_{t}"));
            let bytes = std::fs::read(&path).unwrap();
            let (_, outcome) = registry::import(
                &f.store,
                &NewModel {
                    device: &d.to_string(),
                    tag: &t.to_string(),
                    bytes: &bytes,
                    source: "test",
                    features: None,
                },
            )
            .unwrap();
            assert_eq!(outcome, Imported::New);
        }
    }
    let summary =
        readings::import(&f.store, &reference("sensor_data.csv"), &Columns::default()).unwrap();
    assert_eq!(summary.rows, 17_768);
    assert_eq!(summary.sensors, 15);
}

const FROM: i64 = 1_535_414_400_000; // 2018-08-28T00:00:00Z
const TO: i64 = 1_535_587_200_000; // 2018-08-30T00:00:00Z

/// (TS, Device, Tag) -> (value, score, prediction) as scikit-learn computed them.
fn expected() -> HashMap<(i64, String, String), (f64, f64, i8)> {
    std::fs::read_to_string(reference("expected.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                (
                    readings::parse_time(f[0]).unwrap(),
                    f[1].to_string(),
                    f[2].to_string(),
                ),
                (
                    f[3].parse().unwrap(),
                    f[4].parse().unwrap(),
                    f[5].parse().unwrap(),
                ),
            )
        })
        .collect()
}

/// Runs the reference window on `f` with `workers` threads.
fn run_window(f: &Fleet, workers: usize) -> run::RunRecord {
    run::run(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest::window(FROM, TO).with_options(options(workers)),
        &mut |_| {},
    )
    .unwrap()
}

fn options(workers: usize) -> RunOptions {
    RunOptions {
        workers,
        ..RunOptions::default()
    }
}

#[test]
fn the_reference_fleet_run_equals_scikit_learn_on_every_reading() {
    check_reference_run(&fleet("reference"));
}

/// The same run on Azure Blob storage: Azurite, which `scripts/test` installs and starts, at
/// the URL in `FLEETSCORE_TEST_AZURE_STORE` (with `AZURE_STORAGE_USE_EMULATOR=true`).
#[test]
fn the_reference_fleet_run_on_azure_blob_storage() {
    let Ok(url) = std::env::var("FLEETSCORE_TEST_AZURE_STORE") else {
        eprintln!("FLEETSCORE_TEST_AZURE_STORE not set: Azure Blob run not checked");
        return;
    };
    check_reference_run(&fleet_at("azure", Some(&url)));
}

/// And on S3: moto's server, which `scripts/test` starts, at `FLEETSCORE_TEST_S3_STORE`.
#[test]
fn the_reference_fleet_run_on_s3() {
    let Ok(url) = std::env::var("FLEETSCORE_TEST_S3_STORE") else {
        eprintln!("FLEETSCORE_TEST_S3_STORE not set: S3 run not checked");
        return;
    };
    check_reference_run(&fleet_at("s3", Some(&url)));
}

/// And with the PostgreSQL coordinator (the server `scripts/test` starts, in a schema of its
/// own), as workers on many machines use it.
#[test]
fn the_reference_fleet_run_on_the_postgresql_coordinator() {
    let Ok(url) = std::env::var("FLEETSCORE_TEST_POSTGRES") else {
        eprintln!("FLEETSCORE_TEST_POSTGRES not set: PostgreSQL coordinator not checked");
        return;
    };
    let schema = format!("jobs_reference_{}", std::process::id());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let mut f = fleet("postgres");
    f.coordinator = Box::new(
        PostgresCoordinator::connect(&format!("{url}?options=-csearch_path%3D{schema}")).unwrap(),
    );
    check_reference_run(&f);
    let runs = f.coordinator.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Succeeded);
}

fn check_reference_run(f: &Fleet) {
    import_reference(f);
    let record = run_window(f, 2);
    assert_eq!(record.status, RunStatus::Succeeded);
    assert_eq!(
        (record.models, record.models_scored, record.models_failed),
        (15, 15, 0)
    );
    assert_eq!(record.rows, 17_768);

    let want = expected();
    let mut seen = 0;
    for batch in run::predictions(&f.store, &record.run_id).unwrap() {
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let device = col("device");
        let device = device.as_any().downcast_ref::<StringArray>().unwrap();
        let tag = col("tag");
        let tag = tag.as_any().downcast_ref::<StringArray>().unwrap();
        let ts = col("ts");
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let value = col("value");
        let value = value.as_any().downcast_ref::<Float64Array>().unwrap();
        let score = col("score");
        let score = score.as_any().downcast_ref::<Float64Array>().unwrap();
        let anomaly = col("anomaly");
        let anomaly = anomaly.as_any().downcast_ref::<Int8Array>().unwrap();
        let run_id = col("run_id");
        let run_id = run_id.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..batch.num_rows() {
            let key = (
                ts.value(i),
                device.value(i).to_string(),
                tag.value(i).to_string(),
            );
            let (v, s, p) = want[&key];
            assert_eq!(value.value(i), v);
            let got = score.value(i);
            assert!(
                got == s || (got - s).abs() <= 1e-9 * s.abs(),
                "{key:?}: {got} vs {s}"
            );
            assert_eq!(anomaly.value(i), i8::from(p == -1), "{key:?}");
            assert_eq!(run_id.value(i), record.run_id);
            seen += 1;
        }
    }
    assert_eq!(seen, 17_768);
    assert_eq!(
        record.anomalies,
        want.values().filter(|(_, _, p)| *p == -1).count() as u64
    );
    // Every task left a log with its timings, and the record is in the store.
    let logs = f
        .store
        .list(&format!("logs/run={}", record.run_id))
        .unwrap();
    assert_eq!(logs.len() as u32, record.tasks);
    let log = String::from_utf8(f.store.get(&logs[0].key).unwrap().to_vec()).unwrap();
    assert!(log.contains("done:") && log.contains("score"), "{log}");
    assert_eq!(
        run::record(&f.store, &record.run_id).unwrap().unwrap(),
        record
    );
    // Every task left its per-model counts, and they add up to the record's.
    let summaries = run::summaries(&f.store, &record.run_id).unwrap();
    assert_eq!(summaries.len() as u32, record.tasks);
    let scored: Vec<&run::Scored> = summaries.iter().flat_map(|s| &s.scored).collect();
    assert_eq!(scored.len(), 15);
    assert_eq!(scored.iter().map(|m| m.rows).sum::<u64>(), record.rows);
    assert_eq!(
        scored.iter().map(|m| m.anomalies).sum::<u64>(),
        record.anomalies
    );
    // Four of the reference models flag every reading they see.
    let always: Vec<String> = scored
        .iter()
        .filter(|m| m.anomalies == m.rows)
        .map(|m| format!("{}/{}", m.device, m.tag))
        .collect();
    assert_eq!(always.len(), 4, "{always:?}");
}

#[test]
fn rerunning_a_window_replaces_its_predictions() {
    let f = fleet("rerun");
    import_reference(&f);
    let first = run_window(&f, 2);
    // A second import of the same bytes changes nothing; a rerun with other task sizes too.
    let again =
        readings::import(&f.store, &reference("sensor_data.csv"), &Columns::default()).unwrap();
    assert_eq!(again.files_written, 0);
    let opts = RunOptions {
        workers: 1,
        max_models_per_task: 1,
        ..RunOptions::default()
    };
    let second = run::run(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest::window(FROM, TO).with_options(opts),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(first.run_id, second.run_id);
    let rows: usize = run::predictions(&f.store, &second.run_id)
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    assert_eq!(rows, 17_768, "a rerun must not duplicate predictions");
    assert_eq!(f.coordinator.runs().unwrap().len(), 1);
}

#[test]
fn an_import_larger_than_its_buffer_is_written_in_parts_and_scores_the_same() {
    let f = fleet("buffered");
    import_reference(&f);
    let small = fleet("buffered-small");
    for d in 1..=3 {
        for t in 1..=5 {
            let bytes = std::fs::read(reference(&format!("models/model_{d}_{t}"))).unwrap();
            registry::import(
                &small.store,
                &NewModel {
                    device: &d.to_string(),
                    tag: &t.to_string(),
                    bytes: &bytes,
                    source: "t",
                    features: None,
                },
            )
            .unwrap();
        }
    }
    // 1,000 rows of buffer: the 17,768 readings go out in many partial files.
    let csv = reference("sensor_data.csv");
    let first = readings::import_buffered(&small.store, &csv, &Columns::default(), 1_000).unwrap();
    assert!(first.files_written > 15, "{first:?}");
    let again = readings::import_buffered(&small.store, &csv, &Columns::default(), 1_000).unwrap();
    assert_eq!(again.files_written, 0, "same input, same files");
    let a = run_window(&f, 2);
    let b = run_window(&small, 2);
    assert_eq!((a.rows, a.anomalies), (b.rows, b.anomalies));
    assert_eq!(b.rows, 17_768);
}

/// A bad reading far into a file (past the first batches, while partitions are being written)
/// fails the import with its line, whichever stage of the import is where.
#[test]
fn a_bad_reading_after_many_batches_fails_the_import_naming_its_line() {
    let f = fleet("bad-later");
    let mut csv = String::from("TS,Device,Tag,Value\n");
    for i in 0..200_000 {
        let ts = fleetscore_core::rfc3339(FROM + i * 1_000);
        csv.push_str(&format!("{ts},d{},t,{i}\n", i % 50));
    }
    csv.push_str("yesterday,d1,t,1\n");
    let path = f.dir.join("late-bad.csv");
    std::fs::write(&path, csv).unwrap();
    let e = readings::import_buffered(&f.store, &path, &Columns::default(), 10_000).unwrap_err();
    assert!(
        e.to_string()
            .contains("line 200002, column `TS`: \"yesterday\" is not a time"),
        "{e}"
    );
}

#[test]
fn parquet_readings_with_epoch_milliseconds_or_timestamps_import_alike() {
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };

    let f = fleet("times");
    let ms = [FROM + 5_000, FROM + 10_000];
    let text: ArrayRef = Arc::new(StringArray::from(vec!["d", "d"]));
    let tag: ArrayRef = Arc::new(StringArray::from(vec!["t", "t"]));
    let value: ArrayRef = Arc::new(Float64Array::from(vec![1.5, 2.5]));
    let times: [ArrayRef; 2] = [
        Arc::new(Int64Array::from(ms.to_vec())),
        Arc::new(
            TimestampMicrosecondArray::from(ms.iter().map(|m| m * 1_000).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
    ];
    for (i, ts) in times.into_iter().enumerate() {
        let batch = RecordBatch::try_from_iter([
            ("TS", ts),
            ("Device", text.clone()),
            ("Tag", tag.clone()),
            ("Value", value.clone()),
        ])
        .unwrap();
        let path = f.dir.join(format!("readings-{i}.parquet"));
        let mut w = fleetscore_table::create(&path, batch.schema()).unwrap();
        w.write(&batch).unwrap();
        w.finish().unwrap();
        let s = readings::import(&f.store, &path, &Columns::default()).unwrap();
        assert_eq!((s.rows, s.span), (2, Some((ms[0], ms[1]))), "input {i}");
        // Both describe the same readings, so the second import stores nothing new.
        assert_eq!(s.files_written, usize::from(i == 0), "input {i}");
    }
}

#[test]
fn a_broken_model_fails_alone_and_the_run_goes_on() {
    let f = fleet("broken");
    import_reference(&f);
    // Corrupt one stored model behind the registry's back, and register a model that takes
    // three features where raw readings give one.
    let current = registry::current(&f.store, "2", "4").unwrap().unwrap();
    f.store
        .put(
            &layout::model_file("2", "4", &current.version),
            b"\x80\x04garbage".to_vec(),
        )
        .unwrap();
    let three = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models/tests/data/sklearn-current/ocsvm_linear.p4.pkl"),
    )
    .unwrap();
    // The three-feature model imported as (3, 1), fed `features`.
    let import_three = |features: Option<&[String]>| {
        registry::import(
            &f.store,
            &NewModel {
                device: "3",
                tag: "1",
                bytes: &three,
                source: "test",
                features,
            },
        )
    };
    // Its import needs three reading columns named; `value` is the only one raw readings have.
    let err = import_three(None).unwrap_err();
    assert!(
        err.to_string()
            .contains("the model takes 3 features but is fed 1 reading column (value)"),
        "{err}"
    );
    // Raw readings and window statistics cannot be mixed, and unknown names are refused.
    let columns = ["value".to_string(), "mean".to_string(), "max".to_string()];
    let err = import_three(Some(&columns)).unwrap_err();
    assert!(
        err.to_string().contains("mix raw readings and windows"),
        "{err}"
    );
    let columns = ["mean".to_string(), "median".to_string(), "max".to_string()];
    let err = import_three(Some(&columns)).unwrap_err();
    assert!(
        err.to_string().contains("unknown feature `median`"),
        "{err}"
    );
    // Fed windows, of which this store has none: it has no data, and is not a failure.
    let columns = ["mean".to_string(), "min".to_string(), "max".to_string()];
    import_three(Some(&columns)).unwrap();
    let record = run_window(&f, 2);
    assert_eq!(record.status, RunStatus::CompletedWithFailures);
    assert_eq!((record.models_scored, record.models_failed), (13, 1));
    let reasons: HashMap<String, String> = record
        .failures
        .iter()
        .map(|f| (format!("{}/{}", f.device, f.tag), f.reason.clone()))
        .collect();
    assert!(reasons["2/4"].contains("truncated pickle"), "{reasons:?}");
    assert!(!reasons.contains_key("3/1"), "{reasons:?}");
    assert_eq!(record.failures[0].kind, FailureKind::Load);
    // The task summaries say the same per model: 2/4 failed, 3/1 had no windows to score.
    let summaries = run::summaries(&f.store, &record.run_id).unwrap();
    let failed: Vec<(&str, FailureKind)> = summaries
        .iter()
        .flat_map(|s| &s.failed)
        .map(|m| (m.device.as_str(), m.kind))
        .collect();
    assert_eq!(failed, [("2", FailureKind::Load)]);
    let no_data: Vec<String> = summaries
        .iter()
        .flat_map(|s| &s.no_data)
        .map(|m| format!("{}/{}", m.device, m.tag))
        .collect();
    assert_eq!(no_data, ["3/1"]);
    let expected_rows = expected()
        .keys()
        .filter(|(_, d, t)| ![("2", "4"), ("3", "1")].contains(&(d.as_str(), t.as_str())))
        .count() as u64;
    assert_eq!(record.rows, expected_rows);
}

#[test]
fn a_window_without_readings_scores_nothing() {
    let f = fleet("empty");
    import_reference(&f);
    let record = run::run(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest::window(TO, TO + 3_600_000).with_options(options(2)),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        (
            record.models_scored,
            record.models_without_data,
            record.rows
        ),
        (0, 15, 0)
    );
    assert_eq!(record.status, RunStatus::Succeeded);
    let err = run::run(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest::window(TO, TO).with_options(options(2)),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("the window is empty"), "{err}");
}

#[test]
fn model_versions_are_kept_and_the_newest_import_is_current() {
    let f = fleet("versions");
    let a = std::fs::read(reference("models/model_1_1")).unwrap();
    let b = std::fs::read(reference("models/model_1_2")).unwrap();
    let (va, _) = registry::import(
        &f.store,
        &NewModel {
            device: "d",
            tag: "t",
            bytes: &a,
            source: "a",
            features: None,
        },
    )
    .unwrap();
    let (vb, outcome) = registry::import(
        &f.store,
        &NewModel {
            device: "d",
            tag: "t",
            bytes: &b,
            source: "b",
            features: None,
        },
    )
    .unwrap();
    assert_eq!(outcome, Imported::New);
    assert_ne!(va.version, vb.version);
    assert_eq!(
        registry::current(&f.store, "d", "t")
            .unwrap()
            .unwrap()
            .version,
        vb.version
    );
    let (_, outcome) = registry::import(
        &f.store,
        &NewModel {
            device: "d",
            tag: "t",
            bytes: &a,
            source: "a",
            features: None,
        },
    )
    .unwrap();
    assert_eq!(outcome, Imported::Restored);
    assert_eq!(registry::versions(&f.store, "d", "t").unwrap().len(), 2);
    // A hostile file never reaches the store.
    let hostile = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../pickle/tests/data/hostile/posix_system_stack_global_p4.pkl"),
    )
    .unwrap();
    let err = registry::import(
        &f.store,
        &NewModel {
            device: "d",
            tag: "evil",
            bytes: &hostile,
            source: "x",
            features: None,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("refused global `posix.system`"),
        "{err}"
    );
    assert!(registry::current(&f.store, "d", "evil").unwrap().is_none());
}

/// Importers racing on one device bucket (each its own process in real life) lose none of each
/// other's models: the catalog's conditional writes make every one of them retry on top of the
/// winner. Old generations are cleaned up.
#[test]
fn concurrent_imports_into_one_bucket_keep_every_model() {
    let f = fleet("concurrent-imports");
    let bytes = std::fs::read(reference("models/model_1_1")).unwrap();
    // Every device here lands in one bucket.
    let devices: Vec<String> = (0..10_000)
        .map(|i| format!("dev{i}"))
        .filter(|d| fleetscore_store::layout::bucket(d) == 5)
        .take(4)
        .collect();
    std::thread::scope(|s| {
        for device in &devices {
            let (store, bytes) = (&f.store, &bytes);
            s.spawn(move || {
                for tag in 0..10 {
                    registry::import(
                        store,
                        &NewModel {
                            device,
                            tag: &tag.to_string(),
                            bytes,
                            source: "x",
                            features: None,
                        },
                    )
                    .unwrap();
                }
            });
        }
    });
    let listed = registry::list(&f.store).unwrap();
    assert_eq!(listed.len(), 40, "{listed:?}");
    let generations = f
        .store
        .list(&fleetscore_store::layout::catalog_dir(5))
        .unwrap();
    assert!(generations.len() <= 3, "{generations:?}");
    // An importer that batches commits once per bucket.
    let mut importer = registry::Importer::new(&f.store);
    for tag in 10..20 {
        importer
            .add(&NewModel {
                device: &devices[0],
                tag: &tag.to_string(),
                bytes: &bytes,
                source: "x",
                features: None,
            })
            .unwrap();
    }
    assert_eq!(importer.staged(), 10);
    assert!(
        registry::current(&f.store, &devices[0], "10")
            .unwrap()
            .is_none()
    );
    importer.commit().unwrap();
    assert_eq!(registry::list(&f.store).unwrap().len(), 50);
}

/// A task that cannot succeed (its readings file is corrupt) is failed for good with its
/// error, without retries that cannot help; the other tasks' models are scored and the run
/// record names the failed task.
#[test]
fn a_poison_task_fails_alone_with_its_error() {
    let f = fleet("poison");
    import_reference(&f);
    let victim = f
        .store
        .list(layout::READINGS)
        .unwrap()
        .into_iter()
        .find(|e| {
            e.key
                .contains(&format!("bucket={:02}/", layout::bucket("1")))
        })
        .unwrap();
    f.store
        .put(&victim.key, b"PAR1 this is not parquet".to_vec())
        .unwrap();
    let record = run_window(&f, 2);
    assert_eq!(record.status, RunStatus::CompletedWithFailures);
    assert_eq!(record.tasks_failed, 1, "{record:?}");
    let failure = &record.task_failures[0];
    assert_eq!(failure.attempts, 1, "a corrupt file is not retried");
    assert!(failure.error.contains(&victim.key), "{failure:?}");
    // Device 1's five models were in the failed task; the other ten were scored.
    assert_eq!(record.models_scored, 10, "{record:?}");
}

/// A long-lived worker's model cache: the second run over the same models fetches no model
/// file (here they are gone from the store) and scores exactly as the first.
#[test]
fn a_cached_model_is_scored_again_without_its_file() {
    let f = fleet("cache");
    import_reference_packed(&f);
    let cache = std::sync::Arc::new(run::ModelCache::new(run::DEFAULT_CACHE_BYTES));
    let request = |id: &str| RunRequest {
        run_id: Some(id.to_string()),
        ..RunRequest::window(FROM, TO).with_options(RunOptions {
            model_cache: Some(std::sync::Arc::clone(&cache)),
            ..options(2)
        })
    };
    let first = run::run(
        &f.store,
        f.coordinator.as_ref(),
        &request("first"),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(first.models_scored, 15);
    let s = cache.stats();
    assert_eq!((s.models, s.hits, s.misses), (15, 0, 15));
    for e in f.store.list("models").unwrap() {
        if e.key.ends_with(".model") || e.key.ends_with(".pack") {
            f.store.delete(&e.key).unwrap();
        }
    }
    let second = run::run(
        &f.store,
        f.coordinator.as_ref(),
        &request("second"),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(second.status, RunStatus::Succeeded, "{second:?}");
    assert_eq!((second.models_scored, second.rows), (15, 17_768));
    assert_eq!(cache.stats().hits, 15);
    // The run records count the store's requests. The import packed the 15 models into one
    // pack: the first run's tasks read them with one ranged read each and no model file; the
    // second run's tasks read no model at all. Both read the same readings files, which the
    // plan listed for them (no task lists a folder). Each run wrote its record twice and three
    // objects per task (predictions, summary, log).
    let tasks = |r: &run::RunRecord| {
        let (all, plan) = (r.store_requests, r.plan_store_requests);
        (
            all.get - plan.get,
            all.get_range - plan.get_range,
            all.list - plan.list,
        )
    };
    let (a, b) = (tasks(&first), tasks(&second));
    assert_eq!(a, (a.0, u64::from(first.tasks), 0), "{first:?}");
    assert_eq!(b, (a.0, 0, 0), "{second:?}");
    // The first plan read the three catalogs holding models and left their snapshot, which
    // the second plan read alone.
    assert_eq!(first.plan_store_requests.get, 3, "{first:?}");
    assert_eq!(second.plan_store_requests.get, 1, "{second:?}");
    for r in [&first, &second] {
        assert_eq!(
            r.store_requests.put,
            r.plan_store_requests.put + 3 * u64::from(r.tasks) + 1,
            "{r:?}"
        );
    }
    let scores = |id: &str| -> Vec<(i64, String, String, u64, i8)> {
        let mut out = Vec::new();
        for batch in run::predictions(&f.store, id).unwrap() {
            let col = |n: &str| batch.column_by_name(n).unwrap().clone();
            let (ts, device, tag, score, anomaly) = (
                col("ts"),
                col("device"),
                col("tag"),
                col("score"),
                col("anomaly"),
            );
            let ts = ts
                .as_any()
                .downcast_ref::<TimestampMillisecondArray>()
                .unwrap();
            let device = device.as_any().downcast_ref::<StringArray>().unwrap();
            let tag = tag.as_any().downcast_ref::<StringArray>().unwrap();
            let score = score.as_any().downcast_ref::<Float64Array>().unwrap();
            let anomaly = anomaly.as_any().downcast_ref::<Int8Array>().unwrap();
            for i in 0..batch.num_rows() {
                out.push((
                    ts.value(i),
                    device.value(i).to_string(),
                    tag.value(i).to_string(),
                    score.value(i).to_bits(),
                    anomaly.value(i),
                ));
            }
        }
        out.sort();
        out
    };
    assert_eq!(scores("first"), scores("second"));
    // Without the cache, the same run fails every model for its missing bytes (their pack, the
    // only copy, is gone: the tasks look for files of their own, and say so in their logs).
    let uncached = run::run(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest {
            run_id: Some("uncached".into()),
            ..RunRequest::window(FROM, TO).with_options(options(2))
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(uncached.models_scored, 0, "{uncached:?}");
    assert!(
        uncached
            .failures
            .iter()
            .all(|m| m.kind == FailureKind::Missing && m.reason.contains("models/packs/v=")),
        "{uncached:?}"
    );
    let logs = task_logs(&f, "uncached");
    assert!(
        logs.contains("could not be read") && logs.contains("read from their own files"),
        "{logs}"
    );
}

/// A worker that lost its claim (paused, partitioned) and wakes up after a newer attempt
/// wrote the task's predictions cannot replace them, even if what it computed differs.
#[test]
fn a_stale_attempt_cannot_replace_a_newer_attempts_predictions() {
    let f = fleet("stale");
    import_reference(&f);
    let (spec, _) = run::start(
        &f.store,
        f.coordinator.as_ref(),
        &RunRequest::window(FROM, TO).with_options(options(1)),
    )
    .unwrap();
    let task = f
        .coordinator
        .claim(Some(&spec.id), "newer", 60_000, run::now_ms())
        .unwrap()
        .unwrap()
        .task;
    let newer = run::execute_task(
        &run::Attempt {
            store: &f.store,
            spec: &spec,
            worker: "newer",
            attempt: 2,
            model_limits: &Default::default(),
            cache: None,
        },
        &task,
    )
    .unwrap();
    assert!(newer.rows > 0);
    let key = layout::predictions(&spec.id, task.shard);
    let written = f.store.get(&key).unwrap();
    // The stale attempt finds the world changed (here: the readings gone) and computes
    // something else; its output is refused and its log says so.
    for e in f.store.list(layout::READINGS).unwrap() {
        f.store.delete(&e.key).unwrap();
    }
    let stale = run::execute_task(
        &run::Attempt {
            store: &f.store,
            spec: &spec,
            worker: "stale",
            attempt: 1,
            model_limits: &Default::default(),
            cache: None,
        },
        &task,
    )
    .unwrap();
    assert_eq!(stale.rows, 0);
    assert_eq!(f.store.get(&key).unwrap(), written);
    let log = f
        .store
        .get(&layout::task_log(&spec.id, task.shard, 1))
        .unwrap();
    assert!(
        String::from_utf8_lossy(&log).contains("already written by an earlier attempt: kept"),
        "{}",
        String::from_utf8_lossy(&log)
    );
}

/// Readings files as other tools write them (`scripts/fixtures/gen_readings.py`: pyarrow with
/// every Parquet compression, large strings, dictionaries, times in every unit, INT96 and
/// text; pandas 3 with integer, categorical and str ids; Polars; DuckDB; gzip and zstd CSV)
/// import to exactly the readings of the same rows as plain CSV: the stored files are named by
/// their content, so equal keys are equal readings.
#[test]
fn readings_files_from_other_tools_import_as_the_csv_does() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/readings");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("readings.json")).unwrap()).unwrap();
    let rows = manifest["rows"].as_u64().unwrap();
    let stored = |name: &str| -> Vec<String> {
        let f = fleet(&format!("tools-{}", name.replace('.', "-")));
        let summary = readings::import(&f.store, &dir.join(name), &Columns::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary.rows, rows, "{name}");
        f.store
            .list("readings")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect()
    };
    let want = stored("readings.csv");
    assert!(!want.is_empty());
    let files = manifest["files"].as_object().unwrap();
    assert!(files.len() >= 20, "{}", files.len());
    for (name, what) in files {
        assert_eq!(stored(name), want, "{name} ({what})");
    }
}

#[test]
fn an_export_holds_every_shards_rows_whatever_wrote_the_shards() {
    use fleetscore_jobs::export::{self, Format};

    let f = fleet("export");
    import_reference(&f);
    let record = run_window(&f, 2);
    // A shard as another writer encodes the same table (the Arrow writer, not parquet_direct):
    // a copy of the first shard's rows under a new shard number.
    let shards = f
        .store
        .list(&layout::predictions_dir(&record.run_id))
        .unwrap();
    let first =
        fleetscore_table::from_parquet_bytes(&shards[0].key, f.store.get(&shards[0].key).unwrap())
            .unwrap();
    let copied: usize = first.iter().map(|b| b.num_rows()).sum();
    let other = fleetscore_table::to_parquet_bytes(
        fleetscore_table::predictions::schema(),
        &first,
        &["device", "tag"],
    )
    .unwrap();
    f.store
        .put(&layout::predictions(&record.run_id, 99_999), other)
        .unwrap();

    let out = f.dir.join("export");
    let files = export::export(&f.store, &record.run_id, Format::Parquet, &out).unwrap();
    assert_eq!(files.len(), 1);
    let bytes = bytes::Bytes::from(std::fs::read(&files[0]).unwrap());
    let mut rows = HashMap::new();
    for b in fleetscore_table::from_parquet_bytes("export", bytes).unwrap() {
        let device = b.column_by_name("device").unwrap();
        let device = device.as_any().downcast_ref::<StringArray>().unwrap();
        let ts = b.column_by_name("ts").unwrap();
        let ts = ts
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let tag = b.column_by_name("tag").unwrap();
        let tag = tag.as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            *rows
                .entry((
                    device.value(i).to_string(),
                    tag.value(i).to_string(),
                    ts.value(i),
                ))
                .or_insert(0) += 1;
        }
    }
    // Every reading once, and the copied shard's readings twice.
    assert_eq!(rows.len(), 17_768);
    assert_eq!(rows.values().sum::<usize>(), 17_768 + copied);
    assert_eq!(rows.values().filter(|n| **n == 2).count(), copied);
    // No partial file is left beside it.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}

/// A window's readings: a file whose name says its readings are outside the window is not
/// read at all (here it is not even Parquet), and a reading in two files (an hour's merge and
/// an input not yet deleted, or one import in two encodings) is read once.
#[test]
fn a_slice_skips_files_outside_its_window_and_reads_each_reading_once() {
    use fleetscore_table::readings::{Row, to_parquet};
    let f = fleet("slice");
    let hour = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let dir = layout::readings_dir("2026-01-01T00", layout::bucket("d"));
    let row = |ts: i64, value: f64| Row {
        ts,
        device: "d",
        tag: "t",
        value,
    };
    let early = to_parquet(&[row(hour + 1_000, 1.0), row(hour + 2_000, 2.0)]).unwrap();
    let merged = to_parquet(&[
        row(hour + 1_000, 1.0),
        row(hour + 2_000, 2.0),
        row(hour + 61_000, 3.0),
    ])
    .unwrap();
    let epoch = layout::epoch_file("default", 0, 0, 2, 1);
    f.store
        .put(
            &format!(
                "{dir}/{}",
                layout::with_time_range(&epoch, hour + 1_000, hour + 2_000)
            ),
            early,
        )
        .unwrap();
    f.store
        .put(
            &format!(
                "{dir}/{}",
                layout::with_time_range(
                    &layout::compacted_file("default", &[epoch]),
                    hour + 1_000,
                    hour + 61_000
                )
            ),
            merged,
        )
        .unwrap();
    let later = layout::epoch_file("default", 0, 2, 3, 2);
    f.store
        .put(
            &format!(
                "{dir}/{}",
                layout::with_time_range(&later, hour + 600_000, hour + 700_000)
            ),
            b"not parquet: never read".to_vec(),
        )
        .unwrap();
    let slice = readings::read_slice(
        &f.store,
        &[layout::bucket("d")],
        None,
        hour,
        hour + 120_000,
        &|_, _| true,
    )
    .unwrap();
    assert_eq!(
        slice[&("d".to_string(), "t".to_string())],
        vec![
            (hour + 1_000, 1.0),
            (hour + 2_000, 2.0),
            (hour + 61_000, 3.0)
        ]
    );
    // A window that covers the unreadable file reads it, and says what is wrong with it.
    let err = readings::read_slice(
        &f.store,
        &[layout::bucket("d")],
        None,
        hour,
        hour + 3_600_000,
        &|_, _| true,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("-t1767226200000_1767226300000"),
        "{err}"
    );
}

/// An import writes its new versions' files as one pack, the only copy of them, that their
/// metadata and the catalogs point into; a run reads each task's models with one ranged read;
/// a damaged pack fails its models with the reason; older versions stay readable from their
/// packs, which are kept.
#[test]
fn model_packs_are_read_checked_and_kept() {
    let f = fleet("packs");
    import_reference_packed(&f);
    let keys = |store: &Store, end: &str| -> Vec<String> {
        let mut keys: Vec<String> = store
            .list(layout::MODELS)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .filter(|k| k.ends_with(end))
            .collect();
        keys.sort();
        keys
    };
    let first_pack = keys(&f.store, ".pack");
    assert_eq!(first_pack.len(), 1, "{first_pack:?}");
    assert!(layout::is_pack_key(&first_pack[0]), "{first_pack:?}");
    // No model has a file of its own: the pack holds them; nor a metadata object: while a
    // version is current, its catalog entry is its metadata.
    assert_eq!(keys(&f.store, ".model"), Vec::<String>::new());
    let own_metadata = |store: &Store| -> Vec<String> {
        keys(store, ".json")
            .into_iter()
            .filter(|k| !k.starts_with(layout::CATALOGS))
            .collect()
    };
    assert_eq!(own_metadata(&f.store), Vec::<String>::new());
    let pack = f.store.get(&first_pack[0]).unwrap();
    let models = registry::list(&f.store).unwrap();
    assert_eq!(models.len(), 15);
    for m in &models {
        let slot = m
            .pack
            .as_ref()
            .expect("every model of the import is in its pack");
        assert_eq!(slot.key, first_pack[0]);
        let bytes = &pack[slot.offset as usize..(slot.offset + slot.len) as usize];
        assert_eq!(registry::version_of(bytes), m.version);
        // The version's own metadata says the same.
        assert_eq!(
            registry::versions(&f.store, &m.device, &m.tag).unwrap(),
            vec![m.clone()]
        );
        assert_eq!(
            registry::model_bytes(&f.store, &m.device, &m.tag, &m.version).unwrap(),
            bytes
        );
    }
    let run = |id: &str| run_reference_window(&f, id);
    let packed = run("packed");
    assert_eq!((packed.models_scored, packed.rows), (15, 17_768));
    let r = packed.store_requests;
    assert_eq!(r.get_range, u64::from(packed.tasks), "{packed:?}");

    // The same size, other bytes: every model's hash disagrees and no model has another copy,
    // so every model fails, saying why, and the run goes on.
    f.store.put(&first_pack[0], vec![b'x'; pack.len()]).unwrap();
    let damaged = run("damaged");
    assert_eq!(
        damaged.status,
        RunStatus::CompletedWithFailures,
        "{damaged:?}"
    );
    assert_eq!((damaged.models_scored, damaged.models_failed), (0, 15));
    for failure in &damaged.failures {
        assert_eq!(failure.kind, FailureKind::Load, "{failure:?}");
        assert!(
            failure.reason.contains(&format!(
                "pack {} does not hold its bytes, and the version has no file of its own",
                first_pack[0]
            )),
            "{failure:?}"
        );
    }
    let logs = task_logs(&f, "damaged");
    assert!(
        logs.contains("holds other bytes than its catalog says"),
        "{logs}"
    );
    let err = registry::model_bytes(&f.store, "1", "1", &models[0].version).unwrap_err();
    assert!(err.to_string().contains("are not version"), "{err}");
    // Cut short, the pack cannot give the ranges its catalog names: every model fails with
    // the read's error.
    f.store.put(&first_pack[0], pack[..10].to_vec()).unwrap();
    let truncated = run("truncated");
    assert_eq!(
        (truncated.models_scored, truncated.models_failed),
        (0, 15),
        "{truncated:?}"
    );
    for failure in &truncated.failures {
        assert_eq!(failure.kind, FailureKind::Load, "{failure:?}");
        assert!(
            failure
                .reason
                .contains(&format!("pack {} could not be read", first_pack[0]))
                && failure
                    .reason
                    .contains("and the version has no file of its own"),
            "{failure:?}"
        );
    }
    f.store.put(&first_pack[0], pack.to_vec()).unwrap();

    // New versions of every model: a second pack, and the listing shows the new versions at
    // once.
    import_reference_swapped(&f);
    let now = registry::list(&f.store).unwrap();
    assert!(
        now.iter()
            .all(|m| m.pack.as_ref().unwrap().key != first_pack[0])
    );
    assert!(now.iter().zip(&models).all(|(a, b)| a.version != b.version));
    // The versions replaced got metadata objects of their own, naming their slots.
    let mut replaced: Vec<String> = models
        .iter()
        .map(|m| layout::model_meta(&m.device, &m.tag, &m.version))
        .collect();
    replaced.sort();
    assert_eq!(own_metadata(&f.store), replaced);
    // The first pack holds the old versions' only copy: no catalog refers to it, and it is
    // kept, however long after.
    assert_eq!(keys(&f.store, ".pack").len(), 2);
    let much_later = run::now_ms() + 10 * registry::PACK_RETENTION_MS;
    assert!(
        registry::collect_packs(&f.store, registry::PACK_RETENTION_MS, much_later)
            .unwrap()
            .is_empty()
    );
    for (old, new) in models.iter().zip(&now) {
        let versions = registry::versions(&f.store, &old.device, &old.tag).unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert!(
            versions.contains(old) && versions.contains(new),
            "{versions:?}"
        );
        let bytes = registry::model_bytes(&f.store, &old.device, &old.tag, &old.version).unwrap();
        assert_eq!(registry::version_of(&bytes), old.version);
    }
    let after = run("after");
    assert_eq!((after.models_scored, after.rows), (15, 17_768));
    assert_eq!(after.store_requests.get_range, u64::from(after.tasks));

    // Making the old versions current again stores nothing: the catalogs point into the first
    // pack again.
    import_packed(
        &f,
        |d, t| format!("models/model_{d}_{t}"),
        Imported::Restored,
    );
    assert_eq!(registry::list(&f.store).unwrap(), models);
    assert_eq!(keys(&f.store, ".pack").len(), 2);
}

/// A version leaves its catalog only after its metadata is stored on its own, whichever
/// generation the commit lands on: an importer that read the catalog before another one
/// replaced the model keeps the other's version too.
#[test]
fn every_version_a_commit_replaces_stays_in_the_registry_when_another_import_committed_first() {
    let f = fleet("replaced");
    let file = |t: u32| std::fs::read(reference(&format!("models/model_1_{t}"))).unwrap();
    let new = |bytes: &[u8]| -> Vec<u8> { bytes.to_vec() };
    let add = |importer: &mut registry::Importer<'_>, bytes: &[u8]| {
        importer
            .add(&NewModel {
                device: "d",
                tag: "t",
                bytes,
                source: "test",
                features: None,
            })
            .unwrap()
    };
    let (v1, v2, v3) = (new(&file(1)), new(&file(2)), new(&file(3)));
    let mut first = registry::Importer::new(&f.store);
    add(&mut first, &v1);
    first.finish().unwrap();
    // `a` reads the catalog holding v1 and stages v2; `b` then makes v3 current; `a` commits
    // last, over v3.
    let mut a = registry::Importer::new(&f.store);
    assert_eq!(add(&mut a, &v2).1, Imported::New);
    let mut b = registry::Importer::new(&f.store);
    assert_eq!(add(&mut b, &v3).1, Imported::New);
    b.finish().unwrap();
    a.finish().unwrap();
    let current = registry::current(&f.store, "d", "t").unwrap().unwrap();
    assert_eq!(current.version, registry::version_of(&v2));
    let mut listed: Vec<String> = registry::versions(&f.store, "d", "t")
        .unwrap()
        .into_iter()
        .map(|m| m.version)
        .collect();
    listed.sort();
    let mut all: Vec<String> = [&v1, &v2, &v3]
        .iter()
        .map(|b| registry::version_of(b))
        .collect();
    all.sort();
    assert_eq!(listed, all);
    for (bytes, version) in [&v1, &v2, &v3].iter().map(|b| (b, registry::version_of(b))) {
        assert_eq!(
            &registry::model_bytes(&f.store, "d", "t", &version).unwrap(),
            *bytes
        );
    }
    // Importing v3 again restores it from its own metadata, storing no file.
    let mut again = registry::Importer::new(&f.store);
    assert_eq!(add(&mut again, &v3).1, Imported::Restored);
    again.finish().unwrap();
    assert_eq!(registry::versions(&f.store, "d", "t").unwrap().len(), 3);
}

/// A store written before packs held the only copy of their files (each version's file and
/// metadata under `models/{device}/{tag}/versions/`, catalogs pointing into a copy pack) is
/// still read: runs, versions, exports and re-imports; and its copy packs are collected once
/// no catalog has referred to them for the retention period, not before.
#[test]
fn a_store_of_the_layout_before_is_read_and_its_copy_packs_collected() {
    let f = fleet("legacy");
    import_reference_packed(&f);
    // Rewrite the store as the version before wrote it.
    let pack = f.store.list(layout::PACKS).unwrap().remove(0).key;
    let copy_pack = pack.replace("/v=", "/p=");
    f.store
        .put(&copy_pack, f.store.get(&pack).unwrap().to_vec())
        .unwrap();
    f.store.delete(&pack).unwrap();
    let models = registry::list(&f.store).unwrap();
    for m in &models {
        let bytes = registry::model_bytes(&f.store, &m.device, &m.tag, &m.version);
        assert!(bytes.is_err(), "the pack is gone");
        let mut meta = m.clone();
        meta.pack = None;
        let slot = m.pack.as_ref().unwrap();
        let copy = f.store.get(&copy_pack).unwrap();
        f.store
            .put(
                &layout::legacy_model_file(&m.device, &m.tag, &m.version),
                copy[slot.offset as usize..(slot.offset + slot.len) as usize].to_vec(),
            )
            .unwrap();
        f.store
            .put(
                &layout::legacy_model_meta(&m.device, &m.tag, &m.version),
                serde_json::to_vec_pretty(&meta).unwrap(),
            )
            .unwrap();
        f.store
            .delete(&layout::model_meta(&m.device, &m.tag, &m.version))
            .unwrap();
    }
    for e in f.store.list(layout::CATALOGS).unwrap() {
        let text = String::from_utf8(f.store.get(&e.key).unwrap().to_vec()).unwrap();
        if layout::parse_catalog_key(&e.key).is_some() {
            f.store
                .put(&e.key, text.replace("/v=", "/p=").into_bytes())
                .unwrap();
        } else {
            f.store.delete(&e.key).unwrap();
        }
    }
    let legacy = registry::list(&f.store).unwrap();
    assert!(
        legacy
            .iter()
            .all(|m| m.pack.as_ref().unwrap().key == copy_pack)
    );

    let run = |id: &str| run_reference_window(&f, id);
    let from_copy = run("from-copy");
    assert_eq!((from_copy.models_scored, from_copy.rows), (15, 17_768));
    assert_eq!(
        from_copy.store_requests.get_range,
        u64::from(from_copy.tasks)
    );
    // Without the copy pack, each model is read from its own file.
    let copy = f.store.get(&copy_pack).unwrap();
    f.store.delete(&copy_pack).unwrap();
    let from_files = run("from-files");
    assert_eq!(from_files.status, RunStatus::Succeeded, "{from_files:?}");
    assert_eq!(
        (from_files.models_scored, from_files.anomalies),
        (15, from_copy.anomalies)
    );
    f.store.put(&copy_pack, copy.to_vec()).unwrap();
    for (m, current) in models.iter().zip(&legacy) {
        // The current version as its catalog has it (pointing into the copy pack).
        assert_eq!(
            registry::versions(&f.store, &m.device, &m.tag).unwrap(),
            vec![current.clone()]
        );
        let bytes = registry::model_bytes(&f.store, &m.device, &m.tag, &m.version).unwrap();
        assert_eq!(registry::version_of(&bytes), m.version);
        // The same file again changes nothing.
        let (_, outcome) = registry::import(
            &f.store,
            &NewModel {
                device: &m.device,
                tag: &m.tag,
                bytes: &bytes,
                source: "again",
                features: None,
            },
        )
        .unwrap();
        assert_eq!(outcome, Imported::Unchanged);
    }

    // New versions: the copy pack is unreferenced now, kept for the retention period...
    import_reference_swapped(&f);
    let later = run::now_ms() + registry::PACK_RETENTION_MS - 60_000;
    assert!(
        registry::collect_packs(&f.store, registry::PACK_RETENTION_MS, later)
            .unwrap()
            .is_empty()
    );
    // ... and collected after it; the old versions are read from their own files.
    let deleted = registry::collect_packs(
        &f.store,
        registry::PACK_RETENTION_MS,
        run::now_ms() + registry::PACK_RETENTION_MS + 60_000,
    )
    .unwrap();
    assert_eq!(deleted, vec![copy_pack]);
    for m in &models {
        assert_eq!(
            registry::versions(&f.store, &m.device, &m.tag)
                .unwrap()
                .len(),
            2
        );
        let bytes = registry::model_bytes(&f.store, &m.device, &m.tag, &m.version).unwrap();
        assert_eq!(registry::version_of(&bytes), m.version);
    }
    let after = run("after");
    assert_eq!((after.models_scored, after.rows), (15, 17_768));
}
