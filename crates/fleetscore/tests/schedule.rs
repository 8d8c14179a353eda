//! Schedules, the scheduler and backfill as a user drives them: real processes on the reference
//! fleet, the SQLite coordinator (and PostgreSQL when `scripts/test` started one).

mod common;

use common::tempdir;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{bin, post, serve};

fn data(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data")
        .join(path)
}

/// A store (and optionally a `--db`) to run commands against.
struct Fleet {
    store: PathBuf,
    db: Option<String>,
}

impl Fleet {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = bin();
        c.arg("--store").arg(&self.store);
        if let Some(db) = &self.db {
            c.args(["--db", db]);
        }
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run fleetscore")
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    /// The reference models and readings imported.
    fn reference(dir: &Path, db: Option<String>) -> Fleet {
        let fleet = Fleet {
            store: dir.join("store"),
            db,
        };
        let models = data("reference/models");
        fleet.ok(&[
            "models",
            "import",
            models.to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}",
        ]);
        let readings = data("reference/sensor_data.csv");
        fleet.ok(&["data", "import", readings.to_str().unwrap()]);
        fleet
    }

    /// Every exported prediction of these runs: (TS, Device, Tag) -> Prediction, and how many
    /// rows there were in all (duplicates included).
    fn predictions(
        &self,
        runs: &[String],
        out: &Path,
    ) -> (HashMap<(String, String, String), String>, usize) {
        let mut got = HashMap::new();
        let mut rows = 0;
        for run in runs {
            let dir = out.join(run);
            self.ok(&[
                "predictions",
                "export",
                "--run",
                run,
                "--format",
                "csv",
                "--output",
                dir.to_str().unwrap(),
            ]);
            for entry in std::fs::read_dir(&dir).unwrap() {
                let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
                for l in body.lines().skip(1) {
                    let f: Vec<&str> = l.split(',').collect();
                    rows += 1;
                    got.insert(
                        (f[0].to_string(), f[1].to_string(), f[2].to_string()),
                        f[4].to_string(),
                    );
                }
            }
        }
        (got, rows)
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The run ids a scheduler's output names as started.
fn started(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(" started run ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().to_string())
        .collect()
}

/// scikit-learn's predictions of the reference fleet, as `predictions export` writes them.
fn reference_expected() -> HashMap<(String, String, String), String> {
    std::fs::read_to_string(data("reference/expected.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                (f[0].to_string(), f[1].to_string(), f[2].to_string()),
                if f[5] == "-1" { "1" } else { "0" }.to_string(),
            )
        })
        .collect()
}

const START: &str = "2018-08-28 23:00:00";
const NOW: &str = "2018-08-29 04:00:00";

#[test]
fn an_hourly_schedule_scores_the_reference_fleet_once() {
    let dir = tempdir("reference");
    let fleet = Fleet::reference(&dir, None);
    let added = fleet.ok(&[
        "schedule", "add", "hourly", "--every", "1h", "--window", "1h", "--start", START, "--now",
        NOW,
    ]);
    assert!(
        added.contains("catch-up all: 5 windows are due; the scheduler will run 5"),
        "{added}"
    );
    let once = fleet.ok(&["scheduler", "--once", "--now", NOW, "--workers", "2"]);
    let runs = started(&once);
    assert_eq!(runs.len(), 5, "{once}");
    assert!(once.contains("5 windows succeeded, 0 did not"), "{once}");
    let (got, rows) = fleet.predictions(&runs, &dir.join("export"));
    assert_eq!(rows, 17_768, "every reading scored once");
    assert_eq!(
        got,
        reference_expected(),
        "the same predictions as scikit-learn"
    );

    // The same call again fires nothing.
    let again = fleet.ok(&["scheduler", "--once", "--now", NOW]);
    assert!(started(&again).is_empty(), "{again}");
    assert!(again.contains("0 runs started"), "{again}");

    // An edit never re-fires a window that ran; a pause and resume neither.
    fleet.ok(&["schedule", "edit", "hourly", "--retries", "1", "--now", NOW]);
    fleet.ok(&["schedule", "pause", "hourly"]);
    fleet.ok(&["schedule", "resume", "hourly"]);
    let again = fleet.ok(&["scheduler", "--once", "--now", NOW]);
    assert!(started(&again).is_empty(), "{again}");

    let show = fleet.ok(&["schedule", "show", "hourly"]);
    assert_eq!(show.matches(" succeeded ").count(), 5, "{show}");
    let json: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["schedule", "show", "hourly", "--json"])).unwrap();
    assert_eq!(json["next_ticks"].as_array().unwrap().len(), 10);
    assert_eq!(json["history"].as_array().unwrap().len(), 5);
    assert_eq!(json["history"][0]["state"], "succeeded");
}

#[test]
fn catchup_latest_runs_only_the_last_window_and_none_only_one_on_time() {
    for (policy, now, want) in [
        ("latest", NOW, vec!["20180829T030000Z_20180829T040000Z"]),
        ("none", NOW, vec!["20180829T030000Z_20180829T040000Z"]),
        ("none", "2018-08-29 04:05:00", vec![]),
    ] {
        let dir = tempdir(&format!("catchup-{policy}-{}", now.len()));
        let fleet = Fleet::reference(&dir, None);
        fleet.ok(&[
            "schedule",
            "add",
            "hourly",
            "--every",
            "1h",
            "--window",
            "1h",
            "--start",
            START,
            "--catchup",
            policy,
            "--now",
            now,
        ]);
        let once = fleet.ok(&["scheduler", "--once", "--now", now]);
        assert_eq!(started(&once), want, "{policy} at {now}: {once}");
        assert_eq!(
            once.matches(" skipped: ").count(),
            5 - want.len(),
            "{policy}: {once}"
        );
    }
}

#[test]
fn a_manual_run_and_a_backfill_of_a_window_are_the_scheduled_run() {
    let dir = tempdir("backfill");
    let fleet = Fleet::reference(&dir, None);
    fleet.ok(&[
        "schedule",
        "add",
        "hourly",
        "--every",
        "1h",
        "--window",
        "1h",
        "--start",
        "2030-01-01 00:00:00",
    ]);
    // A window run by hand first.
    fleet.ok(&[
        "run",
        "--from",
        "2018-08-29 00:00:00",
        "--to",
        "2018-08-29 01:00:00",
    ]);
    let dry = fleet.ok(&[
        "backfill",
        "--schedule",
        "hourly",
        "--from",
        START,
        "--to",
        NOW,
        "--dry-run",
    ]);
    assert!(dry.contains("5 windows, 4 would run"), "{dry}");
    assert!(
        dry.lines()
            .any(|l| l.starts_with("[2018-08-29T00:00:00.000Z") && l.contains("keep  succeeded")),
        "{dry}"
    );
    let filled = fleet.ok(&[
        "backfill",
        "--schedule",
        "hourly",
        "--from",
        START,
        "--to",
        NOW,
    ]);
    assert!(
        filled.contains("4 windows run, 0 did not succeed"),
        "{filled}"
    );
    let runs: Vec<String> = fleet
        .ok(&["runs", "list"])
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(runs.len(), 5, "one run per window: {runs:?}");
    let (got, rows) = fleet.predictions(&runs, &dir.join("export"));
    assert_eq!(rows, 17_768);
    assert_eq!(got, reference_expected());
    // Nothing is missing now; --reprocess all runs every window again, replacing outputs.
    let dry = fleet.ok(&[
        "backfill",
        "--schedule",
        "hourly",
        "--from",
        START,
        "--to",
        NOW,
        "--dry-run",
    ]);
    assert!(dry.contains("5 windows, 0 would run"), "{dry}");
    let all = fleet.ok(&[
        "backfill",
        "--schedule",
        "hourly",
        "--from",
        START,
        "--to",
        NOW,
        "--reprocess",
        "all",
    ]);
    assert!(all.contains("5 windows run"), "{all}");
    let (_, rows) = fleet.predictions(&runs, &dir.join("export-again"));
    assert_eq!(rows, 17_768, "a re-run replaces its outputs");
}

#[test]
fn bad_schedules_are_refused_with_one_line_and_nothing_stored() {
    let dir = tempdir("bad");
    let fleet = Fleet {
        store: dir.join("store"),
        db: None,
    };
    fleet.ok(&[
        "schedule", "add", "taken", "--every", "1h", "--window", "1h",
    ]);
    for (args, says) in [
        (
            vec![
                "add",
                "z",
                "--cron",
                "0 * * * *",
                "--tz",
                "Mars/Base",
                "--window",
                "1h",
            ],
            "unknown time zone \"Mars/Base\"",
        ),
        (
            vec!["add", "z", "--cron", "0 0 30 2 *", "--window", "1h"],
            "never fires",
        ),
        (
            vec!["add", "z", "--every", "1h", "--window", "30m"],
            "--window 30m is shorter than the 1h between ticks",
        ),
        (
            vec!["add", "taken", "--every", "1h", "--window", "1h"],
            "a schedule named taken exists",
        ),
        (
            vec!["add", "z", "--cron", "61 * * * *", "--window", "1h"],
            "minute field: 61 is outside 0-59",
        ),
        (vec!["add", "z", "--every", "1h"], "give --window"),
        (
            vec!["add", "bad name", "--every", "1h", "--window", "1h"],
            "schedule name \"bad name\"",
        ),
        (
            vec!["add", "z", "--every", "1h", "--tz", "UTC", "--window", "1h"],
            "--tz places --cron's wall-clock times",
        ),
        (vec!["show", "nothing"], "no schedule named nothing"),
    ] {
        let mut all = vec!["schedule"];
        all.extend(args.iter());
        let o = fleet.run(&all);
        assert_eq!(o.status.code(), Some(1), "{all:?}");
        let err = text(&o.stderr);
        assert!(err.contains(says), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let list = fleet.ok(&["schedule", "list"]);
    assert_eq!(list.lines().count(), 1, "only the first schedule: {list}");
}

#[test]
fn a_failed_window_is_retried_then_reported_to_the_failure_hook() {
    let dir = tempdir("retry");
    let fleet = Fleet::reference(&dir, None);
    let hook_out = dir.join("hook.json");
    fleet.ok(&[
        "schedule",
        "add",
        "hourly",
        "--every",
        "1h",
        "--window",
        "1h",
        "--start",
        "2018-08-29 03:00:00",
        "--retries",
        "1",
        "--retry-backoff",
        "0s",
        "--on-failure",
        &format!("cat > {}", hook_out.display()),
    ]);
    // Every attempt at shard 0 fails: the run completes with a failed task, twice.
    let o = fleet
        .command(&[
            "scheduler",
            "--once",
            "--now",
            NOW,
            "--workers",
            "1",
            "--max-attempts",
            "1",
        ])
        .env("FLEETSCORE_FAULT_FAIL_SHARD", "0")
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(2), "{out}{}", text(&o.stderr));
    assert!(out.contains("retrying at"), "{out}");
    assert!(
        out.contains("started run 20180829T030000Z_20180829T040000Z (attempt 2)"),
        "{out}"
    );
    assert!(out.contains("failed for good"), "{out}");
    // The hook runs in the background: give it a moment.
    let told = (0..50).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        std::fs::read_to_string(&hook_out)
            .ok()
            .filter(|s| !s.is_empty())
    });
    let told: serde_json::Value = serde_json::from_str(&told.expect("the hook ran")).unwrap();
    assert_eq!(told["schedule"], "hourly");
    assert_eq!(told["run_id"], "20180829T030000Z_20180829T040000Z");
    assert!(
        told["error"].as_str().unwrap().contains("tasks failed"),
        "{told}"
    );
}

/// Two schedulers on one coordinator fire each tick once; the one that dies mid-tick (its
/// worker holding a task) leaves the run to the other, which finishes every window.
fn two_schedulers_one_killed(fleet: &Fleet, dir: &Path) {
    fleet.ok(&[
        "schedule",
        "add",
        "hourly",
        "--every",
        "1h",
        "--window",
        "1h",
        "--start",
        START,
        "--max-active",
        "2",
    ]);
    let scheduler = |name: &str, delay_ms: &str| {
        fleet
            .command(&[
                "scheduler",
                "--once",
                "--now",
                NOW,
                "--workers",
                "1",
                "--lease",
                "2",
                "--name",
                name,
            ])
            .env("FLEETSCORE_FAULT_TASK_DELAY_MS", delay_ms)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a scheduler")
    };
    let mut doomed = scheduler("doomed", "600000");
    let holding = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        text(&fleet.run(&["workers"]).stdout).contains("doomed-0")
            && text(&fleet.run(&["workers"]).stdout).contains("_2018")
    });
    assert!(holding, "the first scheduler's worker never held a task");
    let survivor = scheduler("survivor", "0");
    std::thread::sleep(Duration::from_millis(300));
    doomed.kill().unwrap();
    let doomed = doomed.wait_with_output().unwrap();
    let survivor = survivor.wait_with_output().unwrap();
    let (d, s) = (text(&doomed.stdout), text(&survivor.stdout));
    assert!(survivor.status.success(), "{s}{}", text(&survivor.stderr));
    let fired = d.matches(" fired (run ").count() + s.matches(" fired (run ").count();
    assert_eq!(fired, 5, "each tick fired once:\n{d}\n--\n{s}");
    let mut runs = started(&d);
    runs.extend(started(&s));
    runs.sort();
    runs.dedup();
    assert_eq!(runs.len(), 5, "{d}\n--\n{s}");
    let (got, rows) = fleet.predictions(&runs, &dir.join("export"));
    assert_eq!(rows, 17_768, "no window scored twice, none skipped");
    assert_eq!(got, reference_expected());
    let show = fleet.ok(&["schedule", "show", "hourly"]);
    assert_eq!(show.matches(" succeeded ").count(), 5, "{show}");
    assert_eq!(show.matches("attempts 1 ").count(), 5, "{show}");
}

#[test]
fn two_schedulers_on_sqlite_fire_each_tick_once() {
    let dir = tempdir("two-sqlite");
    let fleet = Fleet::reference(&dir, None);
    two_schedulers_one_killed(&fleet, &dir);
}

#[test]
fn two_schedulers_on_postgresql_fire_each_tick_once() {
    let Some(db) = common::postgres_schema("cli_sched", "schedulers on PostgreSQL") else {
        return;
    };
    let dir = tempdir("two-postgres");
    let fleet = Fleet::reference(&dir, Some(db));
    two_schedulers_one_killed(&fleet, &dir);
}

/// The watermark trigger: ticks wait until every aggregator has closed their windows, and run as
/// soon as it has — with readings streamed through `ingest serve` and `aggregate run`.
#[test]
fn watermark_ticks_wait_for_the_aggregators() {
    let dir = tempdir("watermark");
    let fleet = Fleet::reference(&dir, None);
    fleet.ok(&[
        "schedule",
        "add",
        "wm",
        "--every",
        "1h",
        "--window",
        "1h",
        "--start",
        START,
        "--trigger",
        "watermark",
        "--now",
        NOW,
    ]);
    let once = fleet.ok(&["scheduler", "--once", "--now", NOW]);
    assert_eq!(
        once.matches("waiting: waiting for the aggregators' watermark")
            .count(),
        5,
        "{once}"
    );
    assert!(once.contains("0 runs started"), "{once}");
    assert!(once.contains("5 still open"), "{once}");

    // Readings up to 01:30 stream in and are aggregated: windows before ~01:29 close.
    let log = dir.join("log");
    let server = serve(&log, &[]);
    let csv = std::fs::read_to_string(data("reference/sensor_data.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    let (early, late): (Vec<&str>, Vec<&str>) =
        lines.partition(|l| l[..19] < *"2018-08-29 01:30:00");
    let body = |rows: &[&str]| format!("{header}\n{}\n", rows.join("\n"));
    let (status, answer) = post(server.addr, "text/csv", None, &body(&early));
    assert_eq!(status, 200, "{answer}");
    let aggregate = |extra: &[&str]| {
        let mut c = fleet.command(&["aggregate", "run", "--log-dir"]);
        c.arg(&log)
            .args(["--delay", "5s", "--idle-timeout", "1h"])
            .args(extra);
        c
    };
    let mut running = aggregate(&[]).stderr(Stdio::null()).spawn().unwrap();
    let published = (0..200).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let show: serde_json::Value =
            serde_json::from_str(&fleet.ok(&["schedule", "show", "wm", "--json"])).unwrap();
        show["watermarks"][0]["complete_before"]
            .as_str()
            .map(str::to_string)
    });
    running.kill().unwrap();
    running.wait().unwrap();
    let published = published.expect("the aggregator published a watermark");
    assert!(
        published.as_str() > "2018-08-29T01:00:00" && published.as_str() < "2018-08-29T02:00:00",
        "{published}"
    );
    let once = fleet.ok(&["scheduler", "--once", "--now", NOW]);
    let mut runs = started(&once);
    assert_eq!(
        runs,
        [
            "20180828T230000Z_20180829T000000Z",
            "20180829T000000Z_20180829T010000Z"
        ],
        "the windows the aggregator closed: {once}"
    );
    assert!(once.contains("3 still open"), "{once}");
    let show = fleet.ok(&["schedule", "show", "wm"]);
    assert!(show.contains("watermark of aggregator default"), "{show}");

    // The rest arrives; the aggregator drains the log (the end of input closes every window).
    let (status, answer) = post(server.addr, "text/csv", None, &body(&late));
    assert_eq!(status, 200, "{answer}");
    let o = aggregate(&["--drain"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let once = fleet.ok(&["scheduler", "--once", "--now", NOW]);
    runs.extend(started(&once));
    assert_eq!(runs.len(), 5, "{once}");
    let (got, rows) = fleet.predictions(&runs, &dir.join("export"));
    assert_eq!(rows, 17_768);
    assert_eq!(got, reference_expected());
}
