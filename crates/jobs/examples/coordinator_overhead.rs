//! Per-task coordination overhead: a run of N empty tasks, claimed and completed by T threads
//! with a connection each, against a coordinator (a SQLite file or a PostgreSQL URL). Prints
//! one JSON object. Used by `scripts/bench/workers.py`.
//!
//!     cargo run --release -p fleetscore-jobs --example coordinator_overhead -- DB TASKS THREADS

use std::time::Instant;

use fleetscore_jobs::coordinator::postgres::PostgresCoordinator;
use fleetscore_jobs::coordinator::sqlite::SqliteCoordinator;
use fleetscore_jobs::coordinator::{Coordinator, RunSpec, TaskResult, TaskSpec};
use fleetscore_jobs::run::now_ms;

fn open(db: &str) -> Box<dyn Coordinator> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        Box::new(PostgresCoordinator::connect(db).expect("connect to PostgreSQL"))
    } else {
        Box::new(SqliteCoordinator::open(std::path::Path::new(db)).expect("open SQLite"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, tasks, threads] = &args[..] else {
        eprintln!("usage: coordinator_overhead DB TASKS THREADS");
        std::process::exit(2);
    };
    let tasks: u32 = tasks.parse().expect("TASKS is a number");
    let threads: usize = threads.parse().expect("THREADS is a number");
    let c = open(db);
    let run = RunSpec {
        id: format!("overhead-{}", std::process::id()),
        from_ms: 0,
        to_ms: 1,
    };
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|shard| TaskSpec {
            train: None,
            files: None,
            shard,
            buckets: vec![shard % 64],
            models: Vec::new(),
        })
        .collect();
    c.create_run(&run, &specs, now_ms())
        .expect("create the run");
    let started = Instant::now();
    let latencies: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (db, run) = (db.as_str(), &run);
                s.spawn(move || {
                    let mine = open(db);
                    let mut out = Vec::new();
                    loop {
                        let one = Instant::now();
                        let Some(claim) = mine
                            .claim(Some(&run.id), &format!("w{t}"), 60_000, now_ms())
                            .expect("claim")
                        else {
                            break;
                        };
                        mine.complete(&claim, &TaskResult::default(), now_ms())
                            .expect("complete");
                        out.push(one.elapsed().as_secs_f64());
                    }
                    out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wall = started.elapsed().as_secs_f64();
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() as f64 - 1.0) * p).round() as usize] * 1e6;
    c.finish_run(&run.id, fleetscore_jobs::RunStatus::Succeeded, now_ms())
        .expect("finish");
    println!(
        "{{\"tasks\":{},\"threads\":{threads},\"wall_seconds\":{wall},\"tasks_per_second\":{},\"p50_us\":{},\"p99_us\":{}}}",
        all.len(),
        all.len() as f64 / wall,
        pct(0.5),
        pct(0.99)
    );
}
