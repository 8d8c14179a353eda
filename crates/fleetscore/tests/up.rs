//! `fleetscore up --demo` as a user runs it: the whole pipeline in one process on free ports in
//! a temporary folder, killed with SIGKILL and restarted, then stopped with SIGTERM.

mod common;

use common::tempdir;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use arrow_array::ArrayRef;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMillisecondType};
use arrow_schema::DataType;
use common::bin;

/// `up --demo` at 1,200 times real time (an event hour every 3 s), on free ports; its standard
/// output goes to `dir/{out}` and its standard error to `dir/{out}.err`.
fn up(dir: &Path, out: &str) -> Child {
    bin()
        .args([
            "up",
            "--demo",
            "--speed",
            "1200",
            "--devices",
            "2",
            "--workers",
            "2",
            "--lease",
            "2",
            "--ingest-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .stdout(std::fs::File::create(dir.join(out)).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{out}.err"))).unwrap())
        .spawn()
        .expect("start fleetscore up")
}

/// What `up` printed to `dir/{out}` and `dir/{out}.err` (their last 40 lines), and the
/// schedule's ticks: what a failed wait shows.
fn said(dir: &Path, out: &str) -> String {
    let tail = |name: String| {
        let text = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {name}\n{}\n",
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    };
    format!(
        "{}{}--- ticks\n{:?}",
        tail(out.to_string()),
        tail(format!("{out}.err")),
        ticks(dir)
    )
}

/// The demo schedule's ticks: (tick, state, attempts, run id).
fn ticks(dir: &Path) -> Vec<(i64, String, u64, String)> {
    let o = bin()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["schedule", "show", "demo", "--json", "--history", "1000"])
        .output()
        .unwrap();
    if !o.status.success() {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                fleetscore_core::parse_time(t["tick"].as_str().unwrap()).unwrap(),
                t["state"].as_str().unwrap().to_string(),
                t["attempts"].as_u64().unwrap(),
                t["run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn succeeded(dir: &Path) -> usize {
    ticks(dir).iter().filter(|t| t.1 == "succeeded").count()
}

/// Waits until `done`, failing after `limit` with `context()`.
fn wait_for(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    mut done: impl FnMut() -> bool,
) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < limit,
            "no {what} within {limit:?}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn up_demo_scores_windows_survives_sigkill_and_stops_on_sigterm() {
    let dir = tempdir("demo");
    let mut first = KillOnDrop(up(&dir, "first.out"));
    let first_said = || said(&dir, "first.out");
    wait_for(
        "two scored windows",
        Duration::from_secs(90),
        first_said,
        || succeeded(&dir) >= 2,
    );
    // The dashboard's API shows them too.
    let out = std::fs::read_to_string(dir.join("first.out")).unwrap();
    let dashboard = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("dashboard  http://"))
        .expect("up prints the dashboard's address")
        .trim_end_matches('/')
        .to_string();
    let (status, body) = common::request(
        dashboard.parse().unwrap(),
        "GET",
        "/api/v1/schedules",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"demo\""), "{body}");
    // Ingest publishes what it took in by source, and the monitor shows it.
    wait_for(
        "ingest counters",
        Duration::from_secs(30),
        first_said,
        || {
            let (_, body) = common::request(
                dashboard.parse().unwrap(),
                "GET",
                "/api/v1/ingest",
                &[],
                b"",
            )
            .unwrap();
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["sources"][0]["source"] == "http"
                && v["sources"][0]["counts"]["accepted"].as_u64() > Some(0)
        },
    );

    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before = succeeded(&dir);

    let mut second = KillOnDrop(up(&dir, "second.out"));
    let second_said = || said(&dir, "second.out");
    wait_for(
        "two more scored windows",
        Duration::from_secs(120),
        second_said,
        || succeeded(&dir) >= before + 2,
    );
    // SIGTERM: everything stops gracefully, exit 0 within 10 s.
    let pid = second.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let stopping = Instant::now();
    let status = loop {
        if let Some(s) = second.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");

    // No window scored twice, none skipped: the ticks are consecutive hours, each with its own
    // run, and every finished one succeeded on its first run (a tick whose run the kill
    // interrupted was adopted and finished, not started again).
    let ticks = ticks(&dir);
    let mut hours: Vec<i64> = ticks.iter().map(|t| t.0).collect();
    hours.sort();
    for pair in hours.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            3_600_000,
            "a gap in the ticks: {ticks:?}"
        );
    }
    let runs: BTreeSet<&String> = ticks.iter().map(|t| &t.3).collect();
    assert_eq!(runs.len(), ticks.len(), "a run per tick: {ticks:?}");
    for t in ticks.iter().filter(|t| t.1 == "succeeded") {
        assert_eq!(t.2, 1, "scored once: {t:?}");
    }
    // Each scored run's predictions hold every (device, tag, ts) once.
    for t in ticks.iter().filter(|t| t.1 == "succeeded") {
        let export = dir.join("export").join(&t.3);
        let o = bin()
            .arg("--store")
            .arg(dir.join("store"))
            .args([
                "predictions",
                "export",
                "--run",
                &t.3,
                "--format",
                "csv",
                "--output",
            ])
            .arg(&export)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut seen = BTreeSet::new();
        for entry in std::fs::read_dir(&export).unwrap() {
            let file = std::fs::File::open(entry.unwrap().path()).unwrap();
            for line in BufReader::new(file).lines().skip(1) {
                let line = line.unwrap();
                let key: Vec<&str> = line.split(',').take(3).collect();
                assert!(seen.insert(key.join(",")), "scored twice: {line}");
            }
        }
        assert!(!seen.is_empty(), "run {} scored nothing", t.3);
        same_as_models_score(&dir, t.0, &export);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The text of row `i` of a stored readings column (plain or dictionary-encoded).
fn text(column: &ArrayRef, i: usize) -> String {
    match column.data_type() {
        DataType::Dictionary(..) => {
            let d = column.as_dictionary::<Int32Type>();
            let key = d.keys().value(i) as usize;
            d.values().as_string::<i32>().value(key).to_string()
        }
        _ => column.as_string::<i32>().value(i).to_string(),
    }
}

/// `(ts, flag)` of a predictions or `models score` CSV: the first column's time, and the column
/// named `flag` (0 or 1).
fn flags(path: &Path, flag: &str) -> BTreeMap<i64, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = header.iter().position(|c| *c == flag).unwrap();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let ts = fleetscore_core::parse_time(cells[0]).unwrap();
            (ts, cells[at].to_string())
        })
        .collect()
}

/// The run that scored the hour ending at `end` flagged the same readings as `models score`
/// does with each current model file on the raw readings the pipeline archived for that hour.
fn same_as_models_score(dir: &Path, end: i64, export: &Path) {
    let start = end - 3_600_000;
    // Every archived reading of the hour, as one CSV file.
    let csv = export.join("hour.csv.in");
    let mut out = String::from("TS,Device,Tag,Val\n");
    let mut files = Vec::new();
    for hour in std::fs::read_dir(dir.join("store/readings")).unwrap() {
        for bucket in std::fs::read_dir(hour.unwrap().path()).unwrap() {
            for file in std::fs::read_dir(bucket.unwrap().path()).unwrap() {
                files.push(file.unwrap().path());
            }
        }
    }
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
    {
        for batch in fleetscore_table::open(file, 65_536).unwrap() {
            let batch = batch.unwrap();
            let ts = batch.column(0).as_primitive::<TimestampMillisecondType>();
            let value = batch.column(3).as_primitive::<Float64Type>();
            for i in 0..batch.num_rows() {
                let t = ts.value(i);
                if (start..end).contains(&t) {
                    out.push_str(&format!(
                        "{},{},{},{}\n",
                        fleetscore_core::rfc3339(t),
                        text(batch.column(1), i),
                        text(batch.column(2), i),
                        value.value(i)
                    ));
                }
            }
        }
    }
    std::fs::write(&csv, out).unwrap();
    let csv_input = export.join("hour.csv");
    std::fs::rename(&csv, &csv_input).unwrap();

    let o = bin()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["models", "list", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut compared = 0;
    for line in String::from_utf8(o.stdout).unwrap().lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        let (device, tag, version) = (
            m["device"].as_str().unwrap(),
            m["tag"].as_str().unwrap(),
            m["version"].as_str().unwrap(),
        );
        // The stored version, as `models export` gives it back.
        let model = export.join(format!("model_{device}_{tag}"));
        let o = bin()
            .arg("--store")
            .arg(dir.join("store"))
            .args(["models", "export", &format!("{device}/{tag}")])
            .args(["--version", version, "--output"])
            .arg(&model)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let scored = export.join(format!("scored_{device}_{tag}.csv"));
        let o = bin()
            .args(["models", "score"])
            .arg(&model)
            .arg("--input")
            .arg(&csv_input)
            .args(["--where", &format!("Device={device}")])
            .args(["--where", &format!("Tag={tag}")])
            .args(["--features", "Val", "--output"])
            .arg(&scored)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // A model without readings in the hour has no predictions file, and `models score`
        // finds no rows for it either.
        let predictions = export.join(format!("predictions_{device}_{tag}.csv"));
        let ours = if predictions.exists() {
            flags(&predictions, "Prediction")
        } else {
            BTreeMap::new()
        };
        let theirs = flags(&scored, "anomaly");
        assert_eq!(ours, theirs, "{device}/{tag} in the hour ending {end}");
        compared += ours.len();
    }
    assert!(compared > 0);
}

/// A part that cannot start stops `up` with one line before anything runs; a `scheduler` stops
/// on SIGTERM with exit 0.
#[test]
fn a_taken_port_stops_up_at_once_and_the_scheduler_stops_on_sigterm() {
    let dir = tempdir("taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = bin()
        .args([
            "up",
            "--ingest-listen",
            &addr,
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("ingest cannot listen on {addr}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("fleetscore up: the pipeline"),
        "nothing started"
    );

    let mut scheduler = bin()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["scheduler", "--workers", "1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It says it runs (on standard error) once it is set up, signal handlers included.
    let mut line = String::new();
    BufReader::new(scheduler.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("SIGTERM stops it"), "{line}");
    std::process::Command::new("kill")
        .args(["-TERM", &scheduler.id().to_string()])
        .status()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = scheduler.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `up --mqtt`: readings published to a Mosquitto broker reach the log beside HTTP's, and the
/// monitor counts them by source; a message that is not a reading is counted as invalid.
#[test]
fn up_takes_readings_from_mqtt_too() {
    let (Ok(broker_bin), Ok(pub_bin)) = (
        std::env::var("FLEETSCORE_TEST_MOSQUITTO"),
        std::env::var("FLEETSCORE_TEST_MOSQUITTO_PUB"),
    ) else {
        eprintln!("FLEETSCORE_TEST_MOSQUITTO(_PUB) not set: up --mqtt not checked");
        return;
    };
    let dir = tempdir("mqtt");
    let port = common::free_port();
    let _broker = common::start_broker(&broker_bin, &dir.join("broker"), port);
    let mut up = KillOnDrop(
        bin()
            .args([
                "up",
                "--mqtt",
                &format!("mqtt://127.0.0.1:{port}"),
                "--no-workers",
                "--no-scheduler",
                "--ingest-listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
                "--dir",
            ])
            .arg(&dir)
            .stdout(std::fs::File::create(dir.join("up.out")).unwrap())
            .stderr(std::fs::File::create(dir.join("up.out.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let up_said = || said(&dir, "up.out");
    let mut dashboard = None;
    wait_for("up's addresses", Duration::from_secs(30), up_said, || {
        let out = std::fs::read_to_string(dir.join("up.out")).unwrap_or_default();
        dashboard = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("dashboard  http://"))
            .map(|a| a.trim_end_matches('/').to_string());
        dashboard.is_some()
    });
    let dashboard: std::net::SocketAddr = dashboard.unwrap().parse().unwrap();
    let sources = || -> serde_json::Value {
        let (_, body) = common::request(dashboard, "GET", "/api/v1/ingest", &[], b"").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["sources"].clone()
    };
    let mqtt = |s: &serde_json::Value| {
        s.as_array()
            .and_then(|a| a.iter().find(|x| x["source"] == "mqtt"))
            .cloned()
            .unwrap_or_default()
    };
    let lines: Vec<String> = (0..20)
        .map(|i| {
            format!(
                r#"{{"ts":{},"value":{i}}}"#,
                1_767_225_600_000i64 + i * 1000
            )
        })
        .collect();
    // The subscription may not be in place yet: publish probes (another device) until the
    // counters, published every 5 s, show some arrived.
    let mut probes: u64 = 0;
    wait_for(
        "readings from MQTT",
        Duration::from_secs(60),
        up_said,
        || {
            if mqtt(&sources())["counts"]["accepted"].as_u64() >= Some(1) {
                return true;
            }
            let probe = format!(r#"{{"ts":{},"value":0}}"#, 1_767_225_600_000u64 + probes);
            assert!(common::publish(
                &pub_bin,
                port,
                "sensors/probe/temp",
                &[probe]
            ));
            probes += 1;
            std::thread::sleep(Duration::from_millis(250));
            false
        },
    );
    assert!(common::publish(&pub_bin, port, "sensors/d1/temp", &lines));
    assert!(common::publish(
        &pub_bin,
        port,
        "sensors/d1/temp",
        &["not a number".into()]
    ));
    wait_for(
        "20 readings and one refusal",
        Duration::from_secs(30),
        up_said,
        || {
            let m = mqtt(&sources());
            m["counts"]["accepted"].as_u64() >= Some(20 + 1) && m["counts"]["invalid"] == 1
        },
    );
    let m = mqtt(&sources());
    // The 20 readings, and the probes that arrived.
    let accepted = m["counts"]["accepted"].as_u64().unwrap();
    assert!(
        (21..=20 + probes).contains(&accepted),
        "{probes} probes: {m}"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &up.0.id().to_string()])
        .status()
        .unwrap();
    assert!(up.0.wait().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
