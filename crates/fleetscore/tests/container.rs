//! The image `scripts/image` builds (deploy/Containerfile: the static binary FROM scratch), run
//! in containers with podman as Kubernetes runs it (deploy/k8s): the reference job against a
//! store on a mounted volume, workers on the PostgreSQL coordinator that die mid-run, and
//! `podman stop` on a worker, on `ingest serve` and on `aggregate run`, each the container's PID 1.
//!
//! `scripts/test` builds the image and sets `FLEETSCORE_TEST_IMAGE` (its name) and
//! `FLEETSCORE_TEST_PODMAN` (the podman to run it with); without them these tests say so and
//! check nothing.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;

use common::bin;

/// Settings of the worker Deployment in deploy/k8s/worker.yaml that a test reproduces: the
/// image's user, a read-only root file system with /tmp writable, no capabilities, no
/// privilege escalation.
const K8S_SECURITY: &[&str] = &[
    "--read-only",
    "--tmpfs",
    "/tmp:mode=1777",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
];

/// podman and the image under test.
struct Podman {
    podman: String,
    image: String,
}

impl Podman {
    fn from_env(unchecked: &str) -> Option<Podman> {
        match (
            std::env::var("FLEETSCORE_TEST_PODMAN"),
            std::env::var("FLEETSCORE_TEST_IMAGE"),
        ) {
            (Ok(podman), Ok(image)) => Some(Podman { podman, image }),
            _ => {
                eprintln!(
                    "FLEETSCORE_TEST_PODMAN or FLEETSCORE_TEST_IMAGE not set: {unchecked} not checked"
                );
                None
            }
        }
    }

    /// `podman` with the runtime and limits scripts/image documents: runc (crun fails on some
    /// kernels' cgroups), and explicit ulimits (podman's defaults are refused on some hosts).
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.podman);
        c.args(["--runtime", "runc"]);
        c
    }

    /// `podman run` of the image with the Kubernetes settings, named `name`, on the host's
    /// network (PostgreSQL and the tests' HTTP client are on loopback); `options` go before
    /// the image, `args` to fleetscore.
    fn run(&self, name: &str, options: &[&str], args: &[&str]) -> Command {
        let mut c = self.cmd();
        c.args(["run", "--name", name, "--network", "host"])
            .args([
                "--ulimit",
                "nofile=4096:4096",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(K8S_SECURITY)
            .args(options)
            .arg(&self.image)
            .args(args);
        c
    }

    /// Runs the image to completion (removed after), like a CronJob's pod.
    fn run_once(&self, name: &str, options: &[&str], args: &[&str]) -> Output {
        let mut c = self.run(name, &[&["--rm"], options].concat(), args);
        c.output().expect("podman run")
    }

    /// Starts the image in the background; removed when the returned guard is dropped.
    fn start(&self, name: &str, options: &[&str], args: &[&str]) -> Container<'_> {
        let o = self
            .run(name, &[&["--detach"], options].concat(), args)
            .output()
            .expect("podman run --detach");
        assert!(o.status.success(), "podman run --detach: {}", stderr(&o));
        Container {
            podman: self,
            name: name.to_string(),
        }
    }
}

/// A container started in the background, removed (killed if still running) when dropped.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl Container<'_> {
    /// What the container printed so far, stdout and stderr.
    fn logs(&self) -> String {
        let o = self
            .podman
            .cmd()
            .args(["logs", &self.name])
            .output()
            .expect("podman logs");
        format!("{}{}", stdout(&o), stderr(&o))
    }

    /// Polls the logs (every 100 ms, at most 600 times) until `pred` holds; panics with the
    /// logs if it never does.
    fn wait_for_logs(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..600 {
            let logs = self.logs();
            if pred(&logs) {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{}: never {what}; logs:\n{}", self.name, self.logs());
    }

    /// `podman stop --time GRACE`: SIGTERM to PID 1, SIGKILL after GRACE seconds. Returns the
    /// exit code (137 if it took the SIGKILL).
    fn stop(&self, grace: u32) -> i32 {
        let o = self
            .podman
            .cmd()
            .args(["stop", "--time", &grace.to_string(), &self.name])
            .output()
            .expect("podman stop");
        assert!(o.status.success(), "podman stop: {}", stderr(&o));
        self.exit_code()
    }

    fn kill(&self) {
        let o = self
            .podman
            .cmd()
            .args(["kill", "--signal", "KILL", &self.name])
            .output()
            .expect("podman kill");
        assert!(o.status.success(), "podman kill: {}", stderr(&o));
        // `podman kill` returns once the signal is sent; wait for the process to be gone.
        let o = self
            .podman
            .cmd()
            .args(["wait", &self.name])
            .output()
            .expect("podman wait");
        assert!(o.status.success(), "podman wait: {}", stderr(&o));
    }

    fn exit_code(&self) -> i32 {
        let o = self
            .podman
            .cmd()
            .args(["inspect", "--format", "{{.State.ExitCode}}", &self.name])
            .output()
            .expect("podman inspect");
        assert!(o.status.success(), "podman inspect: {}", stderr(&o));
        stdout(&o).trim().parse().expect("an exit code")
    }

    /// PID 1 in the container is fleetscore itself (no init, no shell).
    fn pid_1_command(&self) -> String {
        let o = self
            .podman
            .cmd()
            .args(["top", &self.name, "pid", "args"])
            .output()
            .expect("podman top");
        assert!(o.status.success(), "podman top: {}", stderr(&o));
        stdout(&o)
            .lines()
            .find_map(|l| l.trim().strip_prefix("1 ").map(|c| c.trim().to_string()))
            .unwrap_or_else(|| panic!("no PID 1 in `podman top`:\n{}", stdout(&o)))
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .cmd()
            .args(["rm", "--force", "--time", "0", &self.name])
            .output();
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn reference(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/data/reference")
        .join(path)
}

/// A container name for this test process.
fn name(what: &str) -> String {
    format!("fleetscore-test-{}-{what}", std::process::id())
}

/// A fresh folder that the image's user (uid 10001, not ours) may write in.
fn shared_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fleetscore-container-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    open_to_all(&dir);
    dir
}

/// Makes everything under `path` readable and writable by every user, so that a container
/// running as uid 10001 can write where the host wrote before.
fn open_to_all(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    let mode = if meta.is_dir() { 0o777 } else { 0o666 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            open_to_all(&entry.unwrap().path());
        }
    }
}

fn volume(host: &Path, container: &str) -> String {
    format!("{}:{container}", host.display())
}

/// Every prediction in the CSV files of `dir` (`predictions export --format csv`), as
/// (TS, Device, Tag) -> Prediction, checking that none appears twice.
fn exported_predictions(dir: &Path) -> std::collections::HashMap<(String, String, String), String> {
    let mut got = std::collections::HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("TS,Device,Tag,Val,Prediction"));
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            let key = (f[0].to_string(), f[1].to_string(), f[2].to_string());
            assert!(
                got.insert(key, f[4].to_string()).is_none(),
                "predicted twice: {l}"
            );
        }
    }
    got
}

/// Every one of scikit-learn's 17,768 predictions (expected.csv) is among `got`, and nothing
/// else is.
fn assert_equal_to_scikit_learn(got: &std::collections::HashMap<(String, String, String), String>) {
    let expected = std::fs::read_to_string(reference("expected.csv")).unwrap();
    let mut same = 0;
    let mut want = 0;
    for l in expected.lines().skip(1) {
        let f: Vec<&str> = l.split(',').collect();
        want += 1;
        let key = (f[0].to_string(), f[1].to_string(), f[2].to_string());
        let anomaly = if f[5] == "-1" { "1" } else { "0" };
        assert_eq!(
            got.get(&key).map(String::as_str),
            Some(anomaly),
            "prediction for {key:?}"
        );
        same += 1;
    }
    assert_eq!(want, 17768);
    assert_eq!(same, got.len(), "predictions scikit-learn did not make");
}

/// The reference job (scripts/reference-job's steps) entirely inside containers of the image,
/// against a local store on a mounted volume, the reference data mounted read-only: its 17,768
/// predictions equal scikit-learn's.
#[test]
fn the_reference_job_in_a_container_equals_scikit_learn() {
    let Some(podman) = Podman::from_env("the reference job in a container") else {
        return;
    };
    let dir = shared_dir("reference");
    let work = volume(&dir, "/work");
    let data = format!("{}:/reference:ro", reference("").display());
    let job = |step: &str, args: &[&str]| {
        let o = podman.run_once(
            &name(step),
            &["--volume", &work, "--volume", &data],
            &[&["--store", "/work/store"], args].concat(),
        );
        assert!(o.status.success(), "{step}: {}{}", stdout(&o), stderr(&o));
        format!("{}{}", stdout(&o), stderr(&o))
    };
    let out = job(
        "import",
        &[
            "models",
            "import",
            "/reference/models",
            "--pattern",
            "model_{device}_{tag}",
        ],
    );
    assert!(out.contains("15 imported, 0 unchanged, 0 refused"), "{out}");
    let out = job("data", &["data", "import", "/reference/sensor_data.csv"]);
    assert!(
        out.contains("imported 17768 readings of 15 sensors"),
        "{out}"
    );
    let out = job(
        "run",
        &[
            "run",
            "--from",
            "2018-08-28T00:00:00Z",
            "--to",
            "2018-08-30T00:00:00Z",
            "--run-id",
            "reference",
        ],
    );
    assert!(
        out.contains("run reference: succeeded — 15 models scored"),
        "{out}"
    );
    job(
        "export",
        &[
            "predictions",
            "export",
            "--run",
            "reference",
            "--format",
            "csv",
            "--output",
            "/work/predictions",
        ],
    );

    // Written by the image's user, not root.
    let record = dir.join("store/runs/reference.json");
    let inspect = podman
        .cmd()
        .args([
            "image",
            "inspect",
            "--format",
            "{{.Config.User}}",
            &podman.image,
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&inspect).trim(), "10001:10001");
    // As root, podman maps no user ids: the file's owner is the container's user. (Rootless,
    // uid 10001 maps to one of ours' subordinate ids.)
    let uid = |p: &Path| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(p).unwrap());
    if uid(&dir) == 0 {
        assert_eq!(uid(&record), 10001, "{}", record.display());
    }
    assert_equal_to_scikit_learn(&exported_predictions(&dir.join("predictions")));
}

/// Two worker containers on the PostgreSQL coordinator (the server `scripts/test` starts) and a
/// store on a volume the host shares: the host plans the reference run with `--detach`; the
/// first container claims a task and is killed (SIGKILL) in the middle of it; the second, which
/// reaches PostgreSQL by a host name (static glibc resolving through /etc/hosts), does the rest
/// and the abandoned task once its lease expires. The run completes, every reading predicted
/// exactly once, as scikit-learn predicts it.
#[test]
fn worker_containers_complete_a_run_once_when_one_is_killed_mid_task() {
    let Some(podman) = Podman::from_env("workers in containers") else {
        return;
    };
    let Some(db) = common::postgres_schema("container_workers", "workers in containers") else {
        return;
    };
    let dir = shared_dir("workers");
    let store = dir.join("store");
    let host = |args: &[&str]| {
        let o = bin()
            .arg("--store")
            .arg(&store)
            .args(["--db", &db])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    host(&[
        "models",
        "import",
        reference("models").to_str().unwrap(),
        "--pattern",
        "model_{device}_{tag}",
    ]);
    host(&[
        "data",
        "import",
        reference("sensor_data.csv").to_str().unwrap(),
    ]);
    let planned = host(&[
        "run",
        "--detach",
        "--from",
        "2018-08-28T00:00:00Z",
        "--to",
        "2018-08-30T00:00:00Z",
        "--run-id",
        "c",
    ]);
    assert!(planned.contains("run c: planned 15 models"), "{planned}");
    open_to_all(&dir);

    let store_volume = volume(&store, "/store");
    let worker_args = |worker: &str| {
        [
            "--store",
            "/store",
            "worker",
            "--threads",
            "1",
            "--lease",
            "2",
            "--idle-exit",
            "4",
            "--name",
            worker,
        ]
        .map(str::to_string)
    };
    let doomed_args = worker_args("doomed");
    let doomed_args: Vec<&str> = doomed_args.iter().map(String::as_str).collect();
    let doomed = podman.start(
        &name("doomed"),
        &[
            "--volume",
            &store_volume,
            "--env",
            &format!("FLEETSCORE_DB={db}"),
            "--env",
            "FLEETSCORE_FAULT_TASK_DELAY_MS=600000",
        ],
        &doomed_args,
    );
    let claimed = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        host(&["runs", "show", "c"]).contains("doomed-0")
    });
    assert!(
        claimed,
        "the first worker never claimed a task:\n{}",
        doomed.logs()
    );
    assert_eq!(
        doomed.pid_1_command(),
        "/usr/local/bin/fleetscore --store /store worker --threads 1 --lease 2 --idle-exit 4 --name doomed"
    );

    // The second worker, started while the first holds its task, reaches PostgreSQL by name.
    let by_name = db.replacen("@127.0.0.1:", "@fleetscore-db:", 1);
    assert_ne!(
        by_name, db,
        "FLEETSCORE_TEST_POSTGRES is not on 127.0.0.1: {db}"
    );
    let survivor_args = worker_args("survivor");
    let survivor_args: Vec<&str> = survivor_args.iter().map(String::as_str).collect();
    let survivor_name = name("survivor");
    let survivor = podman
        .run(
            &survivor_name,
            &[
                "--rm",
                "--add-host",
                "fleetscore-db:127.0.0.1",
                "--volume",
                &store_volume,
                "--env",
                &format!("FLEETSCORE_DB={by_name}"),
            ],
            &survivor_args,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("podman run (survivor)");
    // Killed as a node dies: no signal it could handle.
    doomed.kill();
    assert_eq!(doomed.exit_code(), 137);

    let survivor = survivor.wait_with_output().unwrap();
    assert!(survivor.status.success(), "{}", stderr(&survivor));
    assert!(
        stderr(&survivor).contains("(1 runs finished here)"),
        "{}",
        stderr(&survivor)
    );

    let record: serde_json::Value =
        serde_json::from_str(&host(&["runs", "show", "c", "--json"])).unwrap();
    assert_eq!(record["status"], "succeeded", "{record}");
    assert_eq!(record["models_scored"], 15, "{record}");
    assert_eq!(record["rows"], 17768, "{record}");
    let tasks = host(&["runs", "show", "c"]);
    // The task the killed container held was done by the survivor, on the second attempt;
    // every other task once, by the survivor too.
    let rows: Vec<Vec<&str>> = tasks
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 3 && f[0].parse::<u32>().is_ok())
        .collect();
    assert!(!rows.is_empty(), "{tasks}");
    assert!(
        rows.iter().all(|f| f[1] == "done" && f[3] == "survivor-0"),
        "{tasks}"
    );
    assert_eq!(
        rows.iter().filter(|f| f[2] == "2").count(),
        1,
        "one task retried: {tasks}"
    );

    let export = dir.join("export");
    host(&[
        "predictions",
        "export",
        "--run",
        "c",
        "--format",
        "csv",
        "--output",
        export.to_str().unwrap(),
    ]);
    assert_equal_to_scikit_learn(&exported_predictions(&export));
}

/// `podman stop` (SIGTERM to PID 1, SIGKILL after the grace period) on a worker container:
/// idle, it stops at once; in the middle of a task, after its drain time, leaving the task to
/// others. Either way it exits 0, not 137 (the SIGKILL a PID 1 that ignores SIGTERM gets).
#[test]
fn podman_stop_ends_a_worker_with_status_0_as_pid_1() {
    let Some(podman) = Podman::from_env("podman stop on a worker") else {
        return;
    };
    let Some(db) = common::postgres_schema("container_stop", "podman stop on a worker") else {
        return;
    };
    let env_db = format!("FLEETSCORE_DB={db}");

    // Idle: no run planned.
    let idle = podman.start(
        &name("idle"),
        &["--env", &env_db],
        &["--store", "/tmp/store", "worker", "--threads", "2"],
    );
    idle.wait_for_logs("started", |l| l.contains("threads serving every run"));
    assert_eq!(
        idle.pid_1_command(),
        "/usr/local/bin/fleetscore --store /tmp/store worker --threads 2"
    );
    assert_eq!(idle.stop(10), 0, "{}", idle.logs());
    assert!(
        idle.logs()
            .contains("stopped by a signal, exiting after 0 tasks"),
        "{}",
        idle.logs()
    );

    // In a task that would take ten minutes: the drain (1 s) ends it, well within the grace
    // period (10 s), and the task is left for other workers.
    let dir = shared_dir("stop");
    let store = dir.join("store");
    for args in [
        vec![
            "models",
            "import",
            reference("models").to_str().unwrap(),
            "--pattern",
            "model_{device}_{tag}",
        ],
        vec![
            "data",
            "import",
            reference("sensor_data.csv").to_str().unwrap(),
        ],
        vec![
            "run",
            "--detach",
            "--from",
            "2018-08-28T00:00:00Z",
            "--to",
            "2018-08-30T00:00:00Z",
            "--run-id",
            "s",
        ],
    ] {
        let o = bin()
            .arg("--store")
            .arg(&store)
            .args(["--db", &db])
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    open_to_all(&dir);
    let busy = podman.start(
        &name("busy"),
        &[
            "--volume",
            &volume(&store, "/store"),
            "--env",
            &env_db,
            "--env",
            "FLEETSCORE_FAULT_TASK_DELAY_MS=600000",
        ],
        &[
            "--store",
            "/store",
            "worker",
            "--threads",
            "1",
            "--drain",
            "1",
            "--name",
            "busy",
        ],
    );
    let claimed = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let o = bin()
            .arg("--store")
            .arg(&store)
            .args(["--db", &db, "runs", "show", "s"])
            .output()
            .unwrap();
        stdout(&o).contains("busy-0")
    });
    assert!(claimed, "the worker never claimed a task:\n{}", busy.logs());
    assert_eq!(busy.stop(10), 0, "{}", busy.logs());
    assert!(
        busy.logs()
            .contains("stopped by a signal with tasks still in progress after 1s"),
        "{}",
        busy.logs()
    );
}

/// `podman stop` on `ingest serve` as PID 1: it answers, stops on SIGTERM with status 0, and
/// the reading it acknowledged is in the durable log on the volume afterwards. Then the same on
/// `aggregate run` following that log: it stops with status 0 after a checkpoint.
#[test]
fn podman_stop_ends_ingest_serve_and_aggregate_run_with_status_0_as_pid_1() {
    let Some(podman) = Podman::from_env("podman stop on ingest serve") else {
        return;
    };
    let dir = shared_dir("ingest");
    let serve = podman.start(
        &name("ingest"),
        &["--volume", &volume(&dir, "/work")],
        &[
            "ingest",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-dir",
            "/work/log",
        ],
    );
    let logs = serve.wait_for_logs("listening", |l| l.contains("listening on http://"));
    let addr: SocketAddr = logs
        .lines()
        .find_map(|l| l.trim().strip_prefix("listening on http://"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        serve
            .pid_1_command()
            .starts_with("/usr/local/bin/fleetscore ingest serve"),
        "{}",
        serve.pid_1_command()
    );
    let (status, body) = common::post(
        addr,
        "application/x-ndjson",
        None,
        r#"{"device":"d1","tag":"t","ts":"2026-01-01T00:00:05Z","value":1.5}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1, "{body}");

    assert_eq!(serve.stop(10), 0, "{}", serve.logs());

    let read = bin()
        .args(["log", "read", "--log-dir"])
        .arg(dir.join("log"))
        .output()
        .unwrap();
    assert!(read.status.success(), "{}", stderr(&read));
    let lines: Vec<String> = BufReader::new(read.stdout.as_slice())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"device\":\"d1\""), "{lines:?}");

    open_to_all(&dir);
    let aggregate = podman.start(
        &name("aggregate"),
        &["--volume", &volume(&dir, "/work")],
        &[
            "--store",
            "/work/store",
            "aggregate",
            "run",
            "--log-dir",
            "/work/log",
        ],
    );
    // The first epoch (the one reading) is read and checkpointed.
    aggregate.wait_for_logs("read the reading", |l| l.contains("epoch 1: 1 readings"));
    assert_eq!(aggregate.stop(10), 0, "{}", aggregate.logs());
    assert!(aggregate.logs().contains("done in"), "{}", aggregate.logs());
    let status = bin()
        .arg("--store")
        .arg(dir.join("store"))
        .args(["aggregate", "status"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        stdout(&status).contains("\"epoch\": 1"),
        "{}",
        stdout(&status)
    );
}
