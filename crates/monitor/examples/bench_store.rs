//! Builds the store the monitor's benchmark serves (`scripts/bench/run-monitor.sh`): a fleet
//! of many models with a long history of hourly runs, written in the formats real runs write.
//!
//! ```text
//! cargo run --release -p fleetscore-monitor --example bench_store -- DIR [RUNS] [MODELS] [SUMMARY_RUNS] [COORDINATOR_RUNS]
//! ```
//!
//! - MODELS models (default 50,000: 10,000 devices × 5 tags), imported through the registry
//!   from the reference fleet's 15 real pickles (so every file is validated as on import);
//! - RUNS hourly run records (default 10,000, about 14 months), a few with failures or
//!   cancelled;
//! - the task summaries of the latest SUMMARY_RUNS runs (default 48, what the monitor reads
//!   for model health): 50 tasks of 1,000 models each, where 1 % of the models flag every
//!   reading, 0.2 % fail, 0.5 % went silent three runs ago and 0.2 % drift in the latest run;
//! - the latest COORDINATOR_RUNS runs (default 48) in the SQLite coordinator, each task
//!   claimed and completed by one of 8 workers on 2 hosts.
//!
//! Numbers come from a fixed-seed generator, so every build of the store is the same.

use std::path::PathBuf;

use fleetscore_jobs::coordinator::sqlite::SqliteCoordinator;
use fleetscore_jobs::coordinator::{
    Coordinator, FailureKind, ModelFailure, RunSpec, TaskResult, TaskSpec,
};
use fleetscore_jobs::registry::{Importer, NewModel};
use fleetscore_jobs::run::{RunRecord, SUMMARY_FORMAT, Scored, TaskFailure, TaskSummary, Unscored};
use fleetscore_jobs::{RunStatus, run};
use fleetscore_store::{Store, layout};

const HOUR: i64 = 3_600_000;
/// The first window: 2025-01-01T00:00:00Z.
const START: i64 = 1_735_689_600_000;
const TAGS: usize = 5;
const MODELS_PER_TASK: usize = 1_000;

/// A fixed-seed generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn arg(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).map_or(default, |a| {
        a.parse()
            .unwrap_or_else(|_| panic!("argument {i} ({a:?}) is not a count"))
    })
}

fn device(i: usize) -> String {
    format!("dev-{:05}", i / TAGS)
}

fn tag(i: usize) -> String {
    format!("t{}", i % TAGS + 1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .expect("usage: bench_store DIR [RUNS] [MODELS] [SUMMARY_RUNS] [COORDINATOR_RUNS]"),
    );
    let (runs, models) = (arg(&args, 1, 10_000), arg(&args, 2, 50_000));
    let (summary_runs, coordinator_runs) = (arg(&args, 3, 48), arg(&args, 4, 48));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(dir.join("store").to_str().expect("a UTF-8 path")).unwrap();
    let started = std::time::Instant::now();

    // Models, through the registry.
    let reference =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/tests/data/reference/models");
    let files: Vec<Vec<u8>> = (1..=3)
        .flat_map(|d| (1..=5).map(move |t| (d, t)))
        .map(|(d, t)| std::fs::read(reference.join(format!("model_{d}_{t}"))).unwrap())
        .collect();
    let mut importer = Importer::new(&store);
    for i in 0..models {
        importer
            .add(&NewModel {
                device: &device(i),
                tag: &tag(i),
                bytes: &files[i % files.len()],
                source: "bench",
                features: None,
            })
            .unwrap();
        if importer.staged() >= 5_000 {
            importer.commit().unwrap();
        }
    }
    importer.commit().unwrap();
    let versions: Vec<String> = (0..models)
        .map(|i| fleetscore_jobs::registry::version_of(&files[i % files.len()]))
        .collect();
    eprintln!(
        "{models} models imported in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // Run records.
    let mut rng = Rng(42);
    let tasks = models.div_ceil(MODELS_PER_TASK).max(1);
    let first_summary = runs.saturating_sub(summary_runs);
    for r in 0..runs {
        let from = START + r as i64 * HOUR;
        let id = run::run_id_for(from, from + HOUR);
        let status = if r % 500 == 250 {
            RunStatus::Cancelled
        } else if r % 50 == 7 {
            RunStatus::CompletedWithFailures
        } else {
            RunStatus::Succeeded
        };
        let failed: u64 = if status == RunStatus::CompletedWithFailures {
            1 + rng.next() % 20
        } else {
            0
        };
        let execute = 40.0 + 20.0 * rng.unit() + r as f64 * 0.001;
        let rows = models as u64 * 60 - rng.next() % 5_000;
        let anomalies = rows / 40 + rng.next() % 2_000;
        let record = RunRecord {
            run_id: id.clone(),
            from: run::rfc3339(from),
            to: run::rfc3339(from + HOUR),
            status,
            started_at: run::rfc3339(from + HOUR + 60_000),
            finished_at: run::rfc3339(from + HOUR + 60_000 + (execute * 1e3) as i64),
            plan_seconds: 0.5 + rng.unit(),
            execute_seconds: execute,
            models: models as u64,
            models_scored: models as u64 - failed,
            models_without_data: 0,
            models_failed: failed,
            rows,
            anomalies,
            rows_per_second: rows as f64 / execute,
            tasks: tasks as u32,
            tasks_failed: 0,
            failures: (0..failed)
                .map(|k| {
                    let i = (rng.next() as usize) % models;
                    ModelFailure {
                        device: device(i),
                        tag: tag(i),
                        version: versions[i].clone(),
                        kind: if k % 3 == 0 {
                            FailureKind::Features
                        } else {
                            FailureKind::Load
                        },
                        reason: format!(
                            "cannot load model {}/{}: truncated pickle at byte 512",
                            device(i),
                            tag(i)
                        ),
                    }
                })
                .collect(),
            task_failures: Vec::<TaskFailure>::new(),
            plan_store_requests: Default::default(),
            store_requests: Default::default(),
        };
        store
            .put(
                &layout::run_record(&id),
                serde_json::to_vec_pretty(&record).unwrap(),
            )
            .unwrap();
        if r >= first_summary {
            write_summaries(
                &store,
                &id,
                r - first_summary,
                summary_runs,
                models,
                &versions,
                &mut rng,
            );
        }
    }
    eprintln!(
        "{runs} run records ({summary_runs} with task summaries) in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    // The latest runs in the coordinator, executed by 8 workers on 2 hosts.
    let coordinator =
        SqliteCoordinator::open(&dir.join("store").join("coordinator.sqlite")).unwrap();
    for r in runs.saturating_sub(coordinator_runs)..runs {
        let from = START + r as i64 * HOUR;
        let spec = RunSpec {
            id: run::run_id_for(from, from + HOUR),
            from_ms: from,
            to_ms: from + HOUR,
        };
        let specs: Vec<TaskSpec> = (0..tasks as u32)
            .map(|shard| TaskSpec {
                train: None,
                files: None,
                shard,
                buckets: vec![shard % layout::BUCKETS],
                models: Vec::new(),
            })
            .collect();
        let t0 = from + HOUR + 60_000;
        coordinator.create_run(&spec, &specs, t0).unwrap();
        let mut now = t0;
        while let Some(claim) = coordinator
            .claim(
                Some(&spec.id),
                &format!("host-{}-{}-{}", r % 2, 1000 + r % 2, now % 4),
                60_000,
                now,
            )
            .unwrap()
        {
            now += 900 + (rng.next() % 600) as i64;
            coordinator
                .complete(&claim, &TaskResult::default(), now)
                .unwrap();
        }
        coordinator
            .finish_run(&spec.id, RunStatus::Succeeded, now)
            .unwrap();
    }
    eprintln!("done in {:.1}s", started.elapsed().as_secs_f64());
}

/// The task summaries of one run: `k` of `n` recent runs (0 the oldest).
fn write_summaries(
    store: &Store,
    id: &str,
    k: usize,
    n: usize,
    models: usize,
    versions: &[String],
    rng: &mut Rng,
) {
    for (shard, chunk) in (0..models)
        .collect::<Vec<_>>()
        .chunks(MODELS_PER_TASK)
        .enumerate()
    {
        let mut s = TaskSummary {
            format: SUMMARY_FORMAT,
            run_id: id.to_string(),
            shard: shard as u32,
            attempt: 1,
            worker: format!("host-{}-1000-{}", shard % 2, shard % 4),
            read_seconds: 0.2 + rng.unit() * 0.1,
            score_seconds: 0.6 + rng.unit() * 0.3,
            write_seconds: 0.02 + rng.unit() * 0.01,
            ..TaskSummary::default()
        };
        for &i in chunk {
            let (d, t, v) = (device(i), tag(i), versions[i].clone());
            let kind = i % 1000;
            if kind < 2 {
                s.failed.push(ModelFailure {
                    device: d,
                    tag: t,
                    version: v,
                    kind: FailureKind::Load,
                    reason: "cannot load model: truncated pickle at byte 512".into(),
                });
            } else if kind < 7 && k + 3 >= n {
                s.no_data.push(Unscored {
                    device: d,
                    tag: t,
                    version: v,
                });
            } else {
                let rows = 55 + rng.next() % 10;
                let rate = if kind < 17 {
                    1.0
                } else if kind < 19 && k + 1 == n {
                    0.7
                } else {
                    0.01 + 0.03 * rng.unit()
                };
                s.scored.push(Scored {
                    device: d,
                    tag: t,
                    version: v,
                    rows,
                    anomalies: (rows as f64 * rate).round() as u64,
                });
            }
        }
        store
            .put(
                &layout::task_summary(id, shard as u32),
                serde_json::to_vec(&s).unwrap(),
            )
            .unwrap();
    }
}
