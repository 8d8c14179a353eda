#!/usr/bin/env python3
"""Benchmark stateless workers on a PostgreSQL coordinator: per-task coordination overhead, and a
fleet run's wall time with 1, 2 and 4 `fleetscore worker` processes, on this machine.

    python scripts/bench/workers.py [--processes 1 --processes 2 --processes 4] [--repeats 2]
                                    [--tasks 2000] [--max-models-per-task 250]
                                    [--fleet-dir DIR] [--out-dir DIR] [--fleetscore PATH]
                                    [--overhead PATH] [--keep] [--write BENCHMARKS.md]
    python scripts/bench/workers.py --from-results OUT_DIR/workers-results.json [--write BENCHMARKS.md]

Normally run through scripts/bench/run-workers.sh, which builds the venv, the release binary and
the coordinator_overhead example first.

1. PostgreSQL: `scripts/services/postgres.sh start` (its last stdout line is the URL); stopped
   again at the end unless it was already running. Each measurement gets a fresh schema
   (`CREATE SCHEMA`, then `URL?options=-csearch_path%3DSCHEMA`); the schemas are dropped at the
   end.
2. Coordination overhead: `target/release/examples/coordinator_overhead DB TASKS THREADS` (TASKS
   empty tasks, each claimed and completed by one of THREADS threads with a connection each; one
   JSON line) against PostgreSQL and against a fresh SQLite file, with 1 and 4 threads.
3. The fleet: the cached 5,000-model fleet of scripts/bench/fleet.py (DIR/fleet-1000, generated
   when missing), imported once into a fresh local-folder store under --out-dir.
4. For each P in --processes: a fresh schema, `fleetscore run --detach --max-models-per-task M
   --run-id workers-P` (plans the tasks into PostgreSQL), then P processes `fleetscore worker
   --threads T --idle-exit 1` with T = max(1, cores // P). The run's wall time is from starting
   the workers until the run's record is no longer `running` (the store's runs/ID.json, which
   `runs show --json` prints, read every 50 ms: no extra process on the cores); the processes
   must then exit by themselves (idle exit). Per-process peak RSS via `/usr/bin/time -f %M`. The
   final record (`runs show --json`) is checked: every model scored, every row, no failure.
5. For comparison, the same run in one process on the embedded SQLite coordinator:
   `fleetscore --store S run ... --run-id local` (wall time of the process).
6. A Markdown report: printed, and with --write, put between the markers
   <!-- bench:workers:start --> and <!-- bench:workers:end --> of that file.

Steps 2, 4 and 5 are repeated --repeats times; the report gives the best of each (and lists
every repeat). Every number in the report is measured by this run, except the estimates in the
last part, which say what they assume. Raw results go to OUT_DIR/workers-results.json;
--from-results renders the report again from such a file without measuring anything.
"""

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cores, div, f_rate, f_ratio, fleetscore_version, git_commit, loadavg, run_facts, write_section
from fleet import READINGS, TAGS, WINDOW_FROM, WINDOW_TO, ensure_fleet, f_bytes, f_mib, f_secs

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MARK_START = "<!-- bench:workers:start -->"
MARK_END = "<!-- bench:workers:end -->"
DEVICES = 1000  # the 5,000-model fleet of fleet.py
POLL_S = 0.05
RUN_TIMEOUT_S = 900  # a run that takes longer than this is stuck
EXIT_TIMEOUT_S = 60  # workers exit 1 s after their last task; give them this long
BUSY_LOAD = 0.5
TIME_BIN = "/usr/bin/time"
# Published object-store request-rate targets, for the estimate (assumptions, not measured).
AZURE_ACCOUNT_RPS = 20_000  # Azure Storage standard account, default maximum request rate
S3_PREFIX_GET_RPS = 5_500  # Amazon S3, GET/HEAD per partitioned prefix
AZURE_INGRESS_GBPS = 10  # Azure Storage standard account ingress, lowest published US/Europe default
AZURE_EGRESS_GBPS = 50  # Azure Storage standard account egress, lowest published default

_T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    raise SystemExit(f"error: {msg}")


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

_LIVE = []  # worker Popen objects (each the leader of its own process group) not yet reaped


def kill_group(p):
    """Ends a process we started (and its children, in its own process group)."""
    if p.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def kill_live():
    while _LIVE:
        p = _LIVE.pop()
        if p.poll() is None:
            log(f"  stopping worker process {p.pid}")
            kill_group(p)


def run_cmd(cmd, what, timeout=600, check=True):
    """Runs a short command; returns (stdout, wall seconds). Exits with its output on failure."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"{what} did not finish within {timeout} s: {shlex.join(cmd)}")
    wall = time.perf_counter() - t
    if check and proc.returncode != 0:
        fail(f"{what} failed (exit {proc.returncode}): {shlex.join(cmd)}\n{proc.stdout[-3000:]}\n"
             f"{proc.stderr[-3000:]}")
    return proc.stdout, wall


def timed(cmd, rss_file):
    """cmd wrapped to write its peak RSS (KiB) into rss_file, when /usr/bin/time exists."""
    if os.access(TIME_BIN, os.X_OK):
        return [TIME_BIN, "-f", "%M", "-o", str(rss_file)] + cmd
    return cmd


def read_rss(rss_file):
    try:
        lines = [x for x in Path(rss_file).read_text().split() if x.isdigit()]
        return int(lines[-1]) if lines else None
    except OSError:
        return None


# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

class Postgres:
    def __init__(self, work):
        self.script = ROOT / "scripts" / "services" / "postgres.sh"
        self.port = os.environ.get("POSTGRES_TEST_PORT", "10432")
        self.psql = shutil.which("psql")
        self.url = None
        self.was_running = False
        self.started = False
        self.schemas = []
        self.work = work

    def _ready(self):
        if not self.psql:
            return False
        env = dict(os.environ, PGCONNECT_TIMEOUT="2")
        r = subprocess.run([self.psql, "-X", "-q", "-h", "127.0.0.1", "-p", self.port, "-U", "postgres",
                            "-d", "postgres", "-c", "select 1"], capture_output=True, env=env)
        return r.returncode == 0

    def start(self):
        self.was_running = self._ready()
        log(f"PostgreSQL: {'already running' if self.was_running else 'starting'} "
            f"(scripts/services/postgres.sh start, port {self.port})")
        proc = subprocess.run(["bash", str(self.script), "start"], capture_output=True, text=True)
        if proc.returncode != 0:
            fail(f"scripts/services/postgres.sh start failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        self.started = not self.was_running
        lines = [x.strip() for x in proc.stdout.splitlines() if x.strip()]
        if not lines or not lines[-1].startswith(("postgres://", "postgresql://")):
            fail(f"scripts/services/postgres.sh start printed no URL:\n{proc.stdout}\n{proc.stderr}")
        self.url = lines[-1]
        self.psql = self.psql or shutil.which("psql")
        if not self.psql:
            fail("psql not found (needed to create the benchmark's schemas)")
        return self.url

    def sql(self, statement):
        out, _ = run_cmd([self.psql, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", self.url, "-c", statement],
                         f"psql -c {statement!r}", timeout=60)
        return out.strip()

    def facts(self):
        return {
            "version": self.sql("SHOW server_version"),
            "fsync": self.sql("SHOW fsync"),
            "synchronous_commit": self.sql("SHOW synchronous_commit"),
            "wal_sync_method": self.sql("SHOW wal_sync_method"),
        }

    def fresh(self, label):
        """A new empty schema; returns the URL whose connections use it."""
        name = f"bench_workers_{os.getpid()}_{len(self.schemas)}_{re.sub(r'[^a-z0-9_]', '_', label)}"
        self.sql(f"CREATE SCHEMA {name}")
        self.schemas.append(name)
        sep = "&" if "?" in self.url else "?"
        return f"{self.url}{sep}options=-csearch_path%3D{name}"

    def cleanup(self):
        if self.url and self.schemas and self.psql:
            stmt = "; ".join(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in self.schemas)
            r = subprocess.run([self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c", stmt],
                               capture_output=True, text=True)
            if r.returncode != 0:
                log(f"warning: could not drop the benchmark's schemas: {r.stderr.strip()}")
            else:
                self.schemas = []
        if self.started:
            log("PostgreSQL: stopping it (it was not running before this benchmark)")
            r = subprocess.run(["bash", str(self.script), "stop"], capture_output=True, text=True)
            if r.returncode != 0:
                log(f"warning: scripts/services/postgres.sh stop failed: {r.stderr.strip()}")
            self.started = False
        elif self.was_running:
            log("PostgreSQL: left running (it was running before this benchmark)")


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def overhead(example, db, tasks, threads, label):
    out, wall = run_cmd([str(example), db, str(tasks), str(threads)], f"coordinator_overhead on {label}",
                        timeout=900)
    line = [x for x in out.splitlines() if x.strip().startswith("{")]
    if not line:
        fail(f"coordinator_overhead printed no JSON:\n{out}")
    r = json.loads(line[-1])
    if r.get("tasks") != tasks:
        fail(f"coordinator_overhead on {label} completed {r.get('tasks')} tasks, not {tasks}")
    r["process_wall_seconds"] = wall
    log(f"  {label}, {threads} thread(s): {r['tasks_per_second']:.0f} tasks/s, p50 {r['p50_us']:.0f} µs, "
        f"p99 {r['p99_us']:.0f} µs")
    return r


def runs_show(fsx, run_id):
    """The run record (`runs show --json`) and its tasks (parsed from `runs show`)."""
    out, _ = run_cmd(fsx + ["runs", "show", run_id, "--json"], f"runs show {run_id} --json", timeout=120)
    try:
        rec = json.loads(out)
    except ValueError:
        fail(f"runs show {run_id} --json printed no JSON:\n{out}")
    text, _ = run_cmd(fsx + ["runs", "show", run_id], f"runs show {run_id}", timeout=120)
    tasks = []
    for line in text.splitlines():
        m = re.match(r"^\s+(\d+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\S+)", line)
        if m:
            tasks.append({"shard": int(m.group(1)), "status": m.group(2), "attempts": int(m.group(3)),
                          "worker": m.group(4), "models": int(m.group(5)), "rows": int(m.group(6)),
                          "seconds": None if m.group(7) == "-" else float(m.group(7))})
    return rec, tasks


def check_record(rec, tasks, n_models, n_rows):
    problems = []
    if not isinstance(rec, dict):
        return [f"no run record ({rec!r})"]
    if rec.get("status") != "succeeded":
        problems.append(f"status {rec.get('status')}")
    if rec.get("models_scored") != n_models:
        problems.append(f"models_scored {rec.get('models_scored')} != {n_models}")
    if rec.get("rows") != n_rows:
        problems.append(f"rows {rec.get('rows')} != {n_rows}")
    if rec.get("models_failed") or rec.get("tasks_failed") or rec.get("failures") or rec.get("task_failures"):
        problems.append(f"failures: models_failed {rec.get('models_failed')}, tasks_failed {rec.get('tasks_failed')}")
    if len(tasks) != rec.get("tasks"):
        problems.append(f"`runs show` lists {len(tasks)} tasks, the record says {rec.get('tasks')}")
    if any(t["status"] != "done" for t in tasks):
        problems.append("not every task is done")
    retried = sum(1 for t in tasks if t["attempts"] > 1)
    if retried:
        problems.append(f"{retried} task(s) took more than one attempt")
    return problems


def task_stats(tasks):
    secs = sorted(t["seconds"] for t in tasks if t["seconds"] is not None)
    if not secs:
        return None
    n = len(secs)
    return {"n": n, "mean": sum(secs) / n, "median": secs[n // 2] if n % 2 else (secs[n // 2 - 1] + secs[n // 2]) / 2,
            "min": secs[0], "max": secs[-1], "sum": sum(secs)}


def read_record_file(store, run_id):
    """The run record as the store holds it (what `runs show --json` prints), or None."""
    try:
        return json.loads((store / "runs" / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return None  # not there yet, or being replaced (the local store renames into place)


def fleet_run_workers(fs, store, pg, n_procs, threads, max_models, n_models, n_rows, work, rep):
    run_id = f"workers-{n_procs}"
    db = pg.fresh(f"p{n_procs}_r{rep}")
    fsx = [str(fs), "--store", str(store), "--db", db]
    out, plan_wall = run_cmd(fsx + ["run", "--from", WINDOW_FROM, "--to", WINDOW_TO, "--run-id", run_id, "--detach",
                                    "--max-models-per-task", str(max_models)], f"run --detach ({run_id})")
    m = re.search(r"planned (\d+) models in (\d+) tasks", out)
    if not m:
        fail(f"no `planned N models in T tasks` in the output of run --detach:\n{out}")
    planned_models, planned_tasks = int(m.group(1)), int(m.group(2))
    rec0 = read_record_file(store, run_id)
    if not rec0 or rec0.get("status") != "running":
        fail(f"after run --detach the record of {run_id} is {rec0!r}, expected status running")

    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    load = loadavg()
    t0 = time.perf_counter()
    try:
        for i in range(n_procs):
            name = f"p{n_procs}-{i}"
            rss = logs / f"{run_id}.r{rep}.{name}.rss"
            err = open(logs / f"{run_id}.r{rep}.{name}.stderr", "w")
            cmd = timed(fsx + ["worker", "--threads", str(threads), "--idle-exit", "1", "--name", name], rss)
            p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            err.close()
            _LIVE.append(p)
            procs.append((name, p, rss))
        # The run's wall time: until its record is no longer `running`.
        done_at = None
        while done_at is None:
            rec = read_record_file(store, run_id)
            if rec and rec.get("status") != "running":
                done_at = time.perf_counter()
                break
            if time.perf_counter() - t0 > RUN_TIMEOUT_S:
                fail(f"{run_id} still running after {RUN_TIMEOUT_S} s")
            if all(p.poll() is not None for _, p, _ in procs):
                rec = read_record_file(store, run_id)
                if rec and rec.get("status") != "running":
                    done_at = time.perf_counter()
                    break
                fail(f"every worker process exited but {run_id} is still running; see {logs}")
            time.sleep(POLL_S)
        wall = done_at - t0
        # ... and the processes exit by themselves (idle exit after 1 s).
        exits = []
        for name, p, rss in procs:
            left = EXIT_TIMEOUT_S - (time.perf_counter() - done_at)
            try:
                p.wait(timeout=max(1.0, left))
            except subprocess.TimeoutExpired:
                fail(f"worker {name} did not exit within {EXIT_TIMEOUT_S} s of the run finishing")
            exits.append(time.perf_counter() - t0)
            _LIVE.remove(p)
    finally:
        kill_live()
    bad = [(name, p.returncode) for name, p, _ in procs if p.returncode != 0]
    if bad:
        fail(f"worker process(es) exited with an error: {bad}; see {logs}")
    rec, tasks = runs_show(fsx, run_id)
    problems = check_record(rec, tasks, n_models, n_rows)
    if planned_tasks != len(tasks):
        problems.append(f"planned {planned_tasks} tasks, `runs show` lists {len(tasks)}")
    per_proc = {}
    for t in tasks:
        per_proc[t["worker"].rsplit("-", 1)[0]] = per_proc.get(t["worker"].rsplit("-", 1)[0], 0) + 1
    r = {
        "setup": "postgres", "processes": n_procs, "threads": threads, "repeat": rep, "run_id": run_id,
        "planned_models": planned_models, "tasks": planned_tasks, "plan_wall_seconds": plan_wall,
        "wall_seconds": wall, "all_exited_seconds": max(exits), "loadavg_before": load,
        "peak_rss_kib": [read_rss(rss) for _, _, rss in procs],
        "tasks_per_process": {name: per_proc.get(name, 0) for name, _, _ in procs},
        "task_seconds": task_stats(tasks), "tasks_detail": tasks, "record": rec, "problems": problems,
    }
    log(f"  {n_procs} process(es) × {threads} thread(s), repeat {rep + 1}: {planned_tasks} tasks, wall "
        f"{f_secs(wall)} (all exited at {f_secs(max(exits))}), tasks per process "
        f"{list(r['tasks_per_process'].values())}, peak RSS {[f_mib(x) for x in r['peak_rss_kib']]}"
        + (f"; PROBLEMS: {'; '.join(problems)}" if problems else "; record verified"))
    return r


def fleet_run_local(fs, store, max_models, n_models, n_rows, work, rep):
    run_id = "local"
    # A fresh embedded coordinator (the store's default coordinator.sqlite), like PostgreSQL's fresh schema.
    for suffix in ("", "-wal", "-shm"):
        (store / f"coordinator.sqlite{suffix}").unlink(missing_ok=True)
    fsx = [str(fs), "--store", str(store)]
    rss = work / "logs" / f"local.r{rep}.rss"
    (work / "logs").mkdir(exist_ok=True)
    cmd = timed(fsx + ["run", "--from", WINDOW_FROM, "--to", WINDOW_TO, "--run-id", run_id,
                       "--max-models-per-task", str(max_models)], rss)
    load = loadavg()
    out, wall = run_cmd(cmd, "run (embedded SQLite)", timeout=RUN_TIMEOUT_S)
    rec, tasks = runs_show(fsx, run_id)
    problems = check_record(rec, tasks, n_models, n_rows)
    r = {
        "setup": "sqlite", "processes": 1, "threads": cores(), "repeat": rep, "run_id": run_id,
        "tasks": len(tasks), "wall_seconds": wall, "loadavg_before": load, "peak_rss_kib": [read_rss(rss)],
        "task_seconds": task_stats(tasks), "tasks_detail": tasks, "record": rec, "problems": problems,
        "stdout": out[-2000:],
    }
    log(f"  embedded SQLite, one `run` process, repeat {rep + 1}: {len(tasks)} tasks, wall {f_secs(wall)}, "
        f"peak RSS {f_mib(r['peak_rss_kib'][0])}"
        + (f"; PROBLEMS: {'; '.join(problems)}" if problems else "; record verified"))
    return r


def dir_stats(path, pattern="*"):
    files = [f for f in Path(path).rglob(pattern) if f.is_file()] if Path(path).exists() else []
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def store_traffic(store, run_id, tasks):
    """Bytes and object-store requests per task, from what the run read and wrote in the store."""
    readings = dir_stats(store / "readings", "*.parquet")
    bucket_hours = len({f.parent for f in (store / "readings").rglob("*.parquet")})
    models = dir_stats(store / "models", "*.model")
    preds = dir_stats(store / "predictions" / f"run={run_id}")
    logs = dir_stats(store / "logs" / f"run={run_id}")
    read_b = readings["bytes"] + models["bytes"]
    write_b = preds["bytes"] + logs["bytes"]
    # The code's object-store calls per task: one LIST per (hour, bucket) of the task, one GET per
    # readings file and per model file, one PUT each for the predictions and the log.
    requests = bucket_hours + readings["files"] + models["files"] + preds["files"] + logs["files"]
    return {
        "readings": readings, "bucket_hours": bucket_hours, "models": models, "predictions": preds, "logs": logs,
        "read_bytes_per_task": read_b / tasks, "written_bytes_per_task": write_b / tasks,
        "bytes_per_task": (read_b + write_b) / tasks, "requests_per_task": requests / tasks,
        "model_gets_per_task": models["files"] / tasks,
        "gets_per_task": (readings["files"] + models["files"]) / tasks,
    }


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def f_us(us):
    if us is None:
        return "—"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def f_mbs(bps):
    return "—" if bps is None else f"{bps / 1e6:.1f} MB/s"


def best(items, key="wall_seconds"):
    return min(items, key=lambda x: x[key]) if items else None


def render(r):
    L = []
    add = L.append
    c = r["cores"]
    add("## Workers: coordination overhead and wall time with 1, 2 and 4 worker processes")
    add("")
    add(f"Measured on {r['date']} by `scripts/bench/workers.py` in {f_secs(r['total_seconds'])}. Every number below "
        "is what that run measured, except the estimates at the end, which say what they assume; rerun the "
        "command to refresh this section.")
    la = r["loadavg_start"]
    if la is not None and la[0] > BUSY_LOAD:
        add("")
        add(f"**The machine was not idle when this run started (load average {la[0]:.2f} over 1 min): "
            "other processes shared the cores, so the timings are low and noisy.**")
    bad = [x for x in r["fleet"] if x["problems"]]
    for x in bad:
        add("")
        add(f"**{x['run_id']} (repeat {x['repeat'] + 1}): " + "; ".join(x["problems"]) + ".**")
    add("")
    add("### Machine and versions")
    add("")
    m, v, pg = r["machine"], r["versions"], r["postgres"]
    add(f"- CPU: {m['cpu']}, {c} cores available to the benchmark; memory {m['mem_gib']:.1f} GiB; Linux {m['kernel']}")
    if la is not None:
        add(f"- Load average when the run started: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1 / 5 / 15 min)")
    per = [f"{x['run_id']}: {x['loadavg_before'][0]:.2f}" for x in r["best_fleet"] if x.get("loadavg_before")]
    if per:
        add(f"- Load average (1 min) just before each best fleet run: {'; '.join(per)} (includes this benchmark's own "
            "preceding steps)")
    add(f"- fleetscore: commit {v['fleetscore_commit']}, `{v['fleetscore_binary']}` ({v['fleetscore_version']}); "
        f"`{v['overhead_binary']}`")
    add(f"- PostgreSQL {pg['version']} from `scripts/services/postgres.sh` on this machine (127.0.0.1, same disk as "
        f"the store): fsync {pg['fsync']}, synchronous_commit {pg['synchronous_commit']}, wal_sync_method "
        f"{pg['wal_sync_method']} — every commit waits for its WAL flush. SQLite: the embedded coordinator "
        "(WAL, synchronous NORMAL).")
    add("- Reproduce (builds the venv `.venv/bench`, the release binary and the `coordinator_overhead` example; "
        "starts PostgreSQL with `scripts/services/postgres.sh` and stops it again unless it was running):")
    add("")
    add("  ```sh")
    add(f"  {r['reproduce']}")
    add("  ```")
    add("")
    add(f"  This run: `{r['invocation']}`")
    add("")

    add("### Coordination overhead per task")
    add("")
    add(f"`target/release/examples/coordinator_overhead DB {r['overhead_tasks']} THREADS`: one run of "
        f"{r['overhead_tasks']:,} empty tasks, each claimed and completed by one of THREADS threads (a connection "
        "each), so the time is the coordinator's alone. A claim is one `UPDATE … FOR UPDATE SKIP LOCKED` statement, a "
        "completion one `UPDATE`: two commits, each waiting for its WAL flush. Latency is one claim + complete round "
        f"trip. PostgreSQL gets a fresh schema per measurement, SQLite a fresh file. Best of {r['repeats']} by "
        "tasks/s.")
    add("")
    add("| coordinator | threads | tasks/s | p50 claim + complete | p99 claim + complete | all repeats (tasks/s) |")
    add("|---|---|---|---|---|---|")
    for (coord, threads), items in r["overhead_groups"]:
        b = max(items, key=lambda x: x["tasks_per_second"])
        label = "PostgreSQL" if coord == "postgres" else "SQLite file"
        add(f"| {label} | {threads} | **{f_rate(b['tasks_per_second'])}** | {f_us(b['p50_us'])} | {f_us(b['p99_us'])} "
            f"| {', '.join('%.0f' % x['tasks_per_second'] for x in items)} |")
    add("")

    fl = r["fleet_facts"]
    bf = r["best_fleet"]
    base = bf[0]  # the fewest worker processes
    add("### The fleet run with 1, 2 and 4 worker processes")
    add("")
    add(f"The fleet of `scripts/bench/fleet.py` at N={DEVICES:,}: {fl['models']:,} models (one pickled "
        f"`Pipeline(StandardScaler, OneClassSVM)` per sensor) and {fl['rows']:,} readings (one hour), imported once "
        f"into a local-folder store. PostgreSQL: a fresh schema, then `fleetscore --store S --db URL run --from "
        f"'{WINDOW_FROM}' --to '{WINDOW_TO}' --run-id workers-P --detach --max-models-per-task "
        f"{r['max_models_per_task']}` plans the run ({base['tasks']} tasks of at most "
        f"{r['max_models_per_task']} models, so that several processes have work), then P processes `fleetscore "
        f"worker --threads T --idle-exit 1` start together, T = max(1, {c} cores ÷ P). **Wall** is from starting the "
        "workers until the run's record is no longer `running` (the record file in the store — what `runs show "
        f"--json` prints — polled every {POLL_S * 1000:.0f} ms; reading the file instead of starting a `runs show` "
        "process 20 times a second keeps the polling off the cores being measured); it includes each process "
        "starting, connecting and creating the schema's tables. The planning (`run --detach`) is not in it. Embedded "
        "SQLite: the same run as one `fleetscore --store S run … --run-id local` process with its default "
        f"{c} worker threads, wall time of the whole process (planning included). Every run's record was checked: "
        f"{fl['models']:,} models scored, {fl['rows']:,} rows, no failure, every task done in one attempt. Best of "
        f"{r['repeats']} repeats of the whole series.")
    add("")
    add(f"| setup | worker processes × threads | tasks | wall | rows/s | speed-up vs {base['processes']} process{'es' if base['processes'] > 1 else ''} | tasks done per process "
        "| peak RSS per process | all processes exited | all repeats (wall) |")
    add("|---|---|---|---|---|---|---|---|---|---|")
    for x in bf:
        reps = [y for y in r["fleet"] if y["setup"] == x["setup"] and y["processes"] == x["processes"]]
        if x["setup"] == "postgres":
            setup = "PostgreSQL, `fleetscore worker`"
            exited = f_secs(x["all_exited_seconds"])
            per_proc = " / ".join(str(n) for n in x["tasks_per_process"].values())
        else:
            setup = "embedded SQLite, one `fleetscore run`"
            exited = "—"
            per_proc = str(x["tasks"])
        add(f"| {setup} | {x['processes']} × {x['threads']} | {x['tasks']} | **{f_secs(x['wall_seconds'])}** "
            f"| {f_rate(div(fl['rows'], x['wall_seconds']))} "
            f"| {f_ratio(div(base['wall_seconds'], x['wall_seconds']))} | {per_proc} "
            f"| {' / '.join(f_mib(k) for k in x['peak_rss_kib'])} | {exited} "
            f"| {', '.join(f_secs(y['wall_seconds']) for y in reps)} |")
    add("")
    add("\"All processes exited\" is from the same start: each worker leaves 1 s after its last task (`--idle-exit "
        "1`). Planning with `run --detach` took " + ", ".join(
            f"{f_secs(x['plan_wall_seconds'])} (P={x['processes']})" for x in bf if x["setup"] == "postgres")
        + " as a process of its own.")
    add("")

    e = r["estimate"]
    add("### What saturates first as machines are added")
    add("")
    add("*The per-file estimate, from before model packs (issue 19): its request counts assume one GET per model "
        "file per task, and its conclusion (the object store's request rate first) no longer holds. The measured "
        "requests with packs, and the limits redone from them, are in \"Scale-out: store requests with model "
        "packs\" (`scripts/bench/run-scaleout.sh`).*")
    add("")
    add(f"**This machine has {c} cores, so more processes cannot add cores**: 2 processes × 1 thread and 4 processes "
        "× 1 thread do the same work on the same 2 cores as 1 process × 2 threads (4 processes even oversubscribe "
        "them, alongside PostgreSQL). The table above shows the cost of splitting one run over several processes — "
        "each starting, connecting, and claiming through PostgreSQL — not scale-out. " + r["verdict_speedup"])
    add("")
    add(f"Per task, measured: in the best {base['processes']}-process PostgreSQL run a task took {f_secs(e['task_mean'])} on average "
        f"(median {f_secs(e['task_median'])}; claim to completion, from the per-task seconds of `runs show`) for "
        f"{e['models_per_task']:.0f} models and {e['rows_per_task']:,.0f} rows, while the coordinator's claim + "
        f"complete round trip took {f_us(e['pg_p50_us'])} at the median with 1 connection ({f_us(e['pg4_p50_us'])} "
        f"with 4): PostgreSQL round trips (two commits, each flushed to disk) are **{e['overhead_share']:.1%} of a "
        f"task's time**. A task moved {f_bytes(e['bytes_per_task'])} through the store — "
        f"{f_bytes(e['read_bytes_per_task'])} read (its readings Parquet and its {e['model_gets_per_task']:.0f} "
        f"model files) and {f_bytes(e['written_bytes_per_task'])} written (its predictions Parquet and log) — in "
        f"about {e['requests_per_task']:.0f} object-store requests ({e['gets_per_task']:.0f} GETs; by the code: one "
        "LIST per bucket-hour, one GET per readings file and per model file, one PUT each for predictions and log).")
    add("")
    add(f"*Estimates* from those numbers (nothing below was measured with more machines). One worker thread running "
        f"tasks back to back asks the coordinator for {e['tasks_per_s_per_thread']:.1f} tasks/s and the store for "
        f"{f_mbs(e['bytes_per_s_per_thread'])} in ~{e['requests_per_s_per_thread']:,.0f} requests/s. Each limit "
        "below caps the whole fleet's tasks per second; dividing by one thread's demand gives the worker threads "
        "it can serve at this machine's task time. Because every limit is in tasks/s, which one comes first does "
        "not depend on how long a task takes (on a cloud store tasks take longer than on this local disk, which "
        "lowers each worker's demand on all of them alike).")
    add("")
    add("| limit | source | fleet-wide tasks/s | worker threads at this task time |")
    add("|---|---|---|---|")
    for lim in e["limits"]:
        add(f"| {lim['name']} | {lim['source']} | {f_rate(lim['tps'])} | ~{lim['threads']:,.0f} |")
    add("")
    coord = next(x for x in e["limits"] if x["kind"] == "coordinator")
    azure = [x for x in e["limits"] if "Azure" in x["name"] or x["kind"] == "coordinator"]  # sorted, lowest first
    s3 = next(x for x in e["limits"] if "S3" in x["name"])
    store_lims = [x for x in e["limits"] if x["kind"] != "coordinator"]

    def at(x):
        return f"{x['name']} at ~{x['threads']:,.0f} worker threads (~{x['threads'] / c:,.0f} {c}-core machines)"

    chain = "; then ".join(at(x) for x in azure)
    if store_lims[0]["tps"] < coord["tps"]:
        first = (f"So, adding machines at this task size ({e['models_per_task']:.0f} models per task), the **object "
                 "store, not the coordinator, saturates first** under the stated assumptions, "
                 + ("by its request rate before its bandwidth" if store_lims[0]["kind"] == "requests"
                    else "by its bandwidth") + f". With Azure Blob Storage, in order: {chain}. ")
    else:
        first = (f"So, adding machines at this task size ({e['models_per_task']:.0f} models per task), the **PostgreSQL "
                 f"coordinator saturates first** under the stated assumptions. With Azure Blob Storage, in order: {chain}. ")
    add(first
        + f"On S3, {at(s3)}, until S3 splits the busy key range. The requests are many because every model is its "
        "own file, fetched with one GET per task that scores it; the bandwidth is mostly the "
        + ("predictions written. " if e["written_bytes_per_task"] > e["read_bytes_per_task"] else "data read. ")
        + "The coordinator figure is conservative in one way and generous in another: it was measured on this 2-core "
        "machine that also ran the 4 client threads (a dedicated server does more), with empty tasks (a real claim "
        "returns the task's model list, and a real worker also reads the run's state once per task to see whether it "
        "finished the run, and heartbeats every 20 s). Larger tasks (`--max-models-per-task`) lower the "
        "coordinator's share, not the store's requests and bytes per model.")
    add("")
    return "\n".join(L)


def summarize(r):
    """Best-of summaries and the estimates, from the raw measurements in r."""
    procs_list = r["processes"]
    n_models, n_rows = r["fleet_facts"]["models"], r["fleet_facts"]["rows"]
    groups = {}
    for x in r["overhead"]:
        groups.setdefault((x["coordinator"], x["threads"]), []).append(x)
    r["overhead_groups"] = sorted(groups.items(), key=lambda kv: (kv[0][0] != "postgres", kv[0][1]))
    r["best_fleet"] = [best([x for x in r["fleet"] if x["setup"] == "postgres" and x["processes"] == n])
                       for n in procs_list]
    r["best_fleet"].append(best([x for x in r["fleet"] if x["setup"] == "sqlite"]))

    def ovh(coord, threads):
        return max(groups[(coord, threads)], key=lambda x: x["tasks_per_second"])

    base = r["best_fleet"][0]  # the fewest worker processes (1 unless --processes says otherwise)
    ts = base["task_seconds"]
    tr = r["traffic"]
    pg1, pg4 = ovh("postgres", 1), ovh("postgres", 4)
    per_thread_tps = 1.0 / ts["mean"]
    e = {
        "task_mean": ts["mean"], "task_median": ts["median"],
        "models_per_task": n_models / base["tasks"], "rows_per_task": n_rows / base["tasks"],
        "pg_p50_us": pg1["p50_us"], "pg4_p50_us": pg4["p50_us"], "pg4_tps": pg4["tasks_per_second"],
        "overhead_share": pg1["p50_us"] / 1e6 / ts["mean"],
        "bytes_per_task": tr["bytes_per_task"], "read_bytes_per_task": tr["read_bytes_per_task"],
        "written_bytes_per_task": tr["written_bytes_per_task"], "requests_per_task": tr["requests_per_task"],
        "model_gets_per_task": tr["model_gets_per_task"],
        "tasks_per_s_per_thread": per_thread_tps,
        "bytes_per_s_per_thread": tr["bytes_per_task"] * per_thread_tps,
        "requests_per_s_per_thread": tr["requests_per_task"] * per_thread_tps,
        "gets_per_task": tr["gets_per_task"],
    }
    lim = [
        ("coordinator", "the PostgreSQL coordinator", "measured: claim + complete round trips/s, 4 connections",
         pg4["tasks_per_second"]),
        ("requests", "an Azure Storage account's request rate",
         f"assumed: {AZURE_ACCOUNT_RPS:,} requests/s, the published default target", AZURE_ACCOUNT_RPS / tr["requests_per_task"]),
        ("requests", "an S3 prefix's GET rate",
         f"assumed: {S3_PREFIX_GET_RPS:,} GET/s per partitioned prefix, the published figure (S3 partitions "
         "busy prefixes further over time)", S3_PREFIX_GET_RPS / tr["gets_per_task"]),
        ("bandwidth", "an Azure Storage account's ingress (writes)",
         f"assumed: {AZURE_INGRESS_GBPS} Gbit/s, the lowest published default target for US/Europe regions",
         AZURE_INGRESS_GBPS * 1e9 / 8 / tr["written_bytes_per_task"]),
        ("bandwidth", "an Azure Storage account's egress (reads)",
         f"assumed: {AZURE_EGRESS_GBPS} Gbit/s, the lowest published default target",
         AZURE_EGRESS_GBPS * 1e9 / 8 / tr["read_bytes_per_task"]),
    ]
    e["limits"] = sorted(({"kind": k, "name": n, "source": src, "tps": tps, "threads": tps / per_thread_tps}
                          for k, n, src, tps in lim), key=lambda x: x["tps"])
    r["estimate"] = e
    walls = {x["processes"]: x["wall_seconds"] for x in r["best_fleet"] if x["setup"] == "postgres"}
    local = next(x for x in r["best_fleet"] if x["setup"] == "sqlite")
    parts = []
    b = procs_list[0]
    for n in procs_list[1:]:
        ratio = walls[n] / walls[b]
        parts.append(f"{n} processes took {ratio:.2f}× the {b}-process wall time"
                     + (f" ({(ratio - 1) * 100:+.0f}%)" if abs(ratio - 1) >= 0.005 else ""))
    parts.append(f"the embedded-SQLite single process took {local['wall_seconds'] / walls[b]:.2f}× the "
                 f"{b}-process PostgreSQL wall time (its wall includes planning, "
                 f"{f_secs(local['record'].get('plan_seconds'))} by its record)")
    r["verdict_speedup"] = ("Measured: " + "; ".join(parts) + ".") if parts else ""


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--processes", type=int, action="append",
                    help="worker processes for the fleet run; repeat (default 1, 2, 4)")
    ap.add_argument("--repeats", type=int, default=2, help="repeat every measurement this often, report the best (default 2)")
    ap.add_argument("--tasks", type=int, default=2000, help="empty tasks per coordination-overhead run (default 2000)")
    ap.add_argument("--max-models-per-task", type=int, default=250, help="for the fleet runs (default 250)")
    ap.add_argument("--fleet-dir", type=Path, default=ROOT / "target" / "bench" / "fleet",
                    help="where fleet.py caches its fleets (default target/bench/fleet); fleet-1000 is used")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "target" / "bench" / "workers",
                    help="store, logs and results go here (default target/bench/workers)")
    ap.add_argument("--fleetscore", type=Path, default=ROOT / "target" / "release" / "fleetscore",
                    help="the fleetscore binary (default target/release/fleetscore)")
    ap.add_argument("--overhead", type=Path, default=ROOT / "target" / "release" / "examples" / "coordinator_overhead",
                    help="the coordinator_overhead example (default target/release/examples/coordinator_overhead)")
    ap.add_argument("--keep", action="store_true", help="keep the store (default: deleted at the end)")
    ap.add_argument("--write", type=Path, help="put the report between the markers in this Markdown file")
    ap.add_argument("--from-results", type=Path, metavar="JSON",
                    help="measure nothing: render the report again from a workers-results.json of an earlier run")
    args = ap.parse_args()

    if args.from_results:
        r = json.loads(args.from_results.read_text())
        summarize(r)
        section = render(r)
        print(section)
        if args.write:
            write_section(args.write, section, MARK_START, MARK_END)
            log(f"wrote the report into {args.write}")
        return

    procs_list = sorted(set(args.processes or [1, 2, 4]))
    if procs_list[0] < 1 or args.repeats < 1 or args.tasks < 1 or args.max_models_per_task < 1:
        fail("--processes, --repeats, --tasks and --max-models-per-task must be at least 1")
    fs = args.fleetscore.resolve()
    example = args.overhead.resolve()
    for path, what in ((fs, "fleetscore binary"), (example, "coordinator_overhead example")):
        if not os.access(path, os.X_OK):
            fail(f"no {what} at {path} (build it: bash scripts/bench/run-workers.sh, or pass --fleetscore/--overhead)")
    if subprocess.run([str(fs), "worker", "--help"], capture_output=True).returncode != 0:
        fail(f"{fs} has no `worker` command: it predates the PostgreSQL workers; rebuild it "
             "(cargo build --release -p fleetscore)")
    if "debug" in fs.parts:
        log("warning: a debug build: the timings say nothing about fleetscore's speed")
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    r = {
        **run_facts(),
        "versions": {
            "fleetscore_commit": git_commit(),
            "fleetscore_binary": os.path.relpath(fs, ROOT),
            "fleetscore_version": fleetscore_version(fs),
            "overhead_binary": os.path.relpath(example, ROOT),
        },
        "reproduce": os.environ.get("BENCH_COMMAND") or "bash scripts/bench/run-workers.sh",
        "invocation": shlex.join(["python", os.path.relpath(__file__, Path.cwd())] + sys.argv[1:]),
        "repeats": args.repeats, "overhead_tasks": args.tasks, "max_models_per_task": args.max_models_per_task,
        "processes": procs_list, "overhead": [], "fleet": [],
    }
    la = r["loadavg_start"]
    if la and la[0] > BUSY_LOAD:
        log(f"warning: load average {la[0]:.2f}: the machine is not idle, timings will be noisy")

    fleet = ensure_fleet(args.fleet_dir.resolve() / f"fleet-{DEVICES}", DEVICES, 2)
    n_models, n_rows = DEVICES * len(TAGS), DEVICES * len(TAGS) * READINGS
    if fleet["models"] != n_models or fleet["rows"] != n_rows:
        fail(f"the cached fleet has {fleet['models']} models / {fleet['rows']} rows, expected {n_models} / {n_rows}")
    r["fleet_facts"] = {"models": n_models, "rows": n_rows, "data_bytes": fleet["data_bytes"],
                        "model_bytes": fleet["model_bytes"]}
    fleet_dir = args.fleet_dir.resolve() / f"fleet-{DEVICES}"

    pg = Postgres(out)
    results_path = out / "workers-results.json"

    def save():
        results_path.write_text(json.dumps(r, indent=2, default=str) + "\n")

    try:
        pg.start()
        r["postgres"] = pg.facts()
        r["postgres"]["was_running"] = pg.was_running
        log(f"PostgreSQL {r['postgres']['version']} at {pg.url} (fsync {r['postgres']['fsync']}, "
            f"synchronous_commit {r['postgres']['synchronous_commit']})")

        # --- coordination overhead ---
        log(f"coordination overhead: {args.tasks} empty tasks, claim + complete")
        with tempfile.TemporaryDirectory(prefix="workers-overhead-") as tmp:
            for rep in range(args.repeats):
                for threads in (1, 4):
                    x = overhead(example, pg.fresh(f"overhead_t{threads}_r{rep}"), args.tasks, threads, "PostgreSQL")
                    r["overhead"].append(dict(x, coordinator="postgres", repeat=rep))
                    x = overhead(example, str(Path(tmp) / f"overhead-t{threads}-r{rep}.sqlite"), args.tasks, threads,
                                 "SQLite")
                    r["overhead"].append(dict(x, coordinator="sqlite", repeat=rep))
        save()

        # --- the store ---
        work = out / "work"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        store = work / "store"
        log(f"importing the fleet into {store}")
        _, t_models = run_cmd([str(fs), "--store", str(store), "models", "import", str(fleet_dir / "models"),
                               "--pattern", "model_{device}_{tag}"], "models import", timeout=1800)
        _, t_data = run_cmd([str(fs), "--store", str(store), "data", "import", str(fleet_dir / "data.parquet")],
                            "data import", timeout=1800)
        r["import_seconds"] = {"models": t_models, "data": t_data}
        log(f"  models import {f_secs(t_models)}, data import {f_secs(t_data)}")

        # --- the fleet runs ---
        for rep in range(args.repeats):
            log(f"fleet runs, repeat {rep + 1} of {args.repeats}")
            for n in procs_list:
                threads = max(1, r["cores"] // n)
                r["fleet"].append(fleet_run_workers(fs, store, pg, n, threads, args.max_models_per_task, n_models,
                                                    n_rows, work, rep))
                save()
            r["fleet"].append(fleet_run_local(fs, store, args.max_models_per_task, n_models, n_rows, work, rep))
            save()

        # --- traffic per task, from the store ---
        first = next(x for x in r["fleet"] if x["setup"] == "postgres")
        r["traffic"] = store_traffic(store, first["run_id"], first["tasks"])
    finally:
        kill_live()
        pg.cleanup()

    summarize(r)

    r["total_seconds"] = time.perf_counter() - _T0
    save()
    section = render(r)
    print(section)
    if args.write:
        write_section(args.write, section, MARK_START, MARK_END)
        log(f"wrote the report into {args.write}")
    if not args.keep:
        shutil.rmtree(out / "work", ignore_errors=True)
    log(f"done in {r['total_seconds']:.0f} s; raw results in {results_path}")
    if any(x["problems"] for x in r["fleet"]):
        log("error: a run did not score everything or had failures (see the report)")
        sys.exit(1)


if __name__ == "__main__":
    # A SIGTERM (e.g. from a CI timeout) unwinds like an error: worker processes stopped, PostgreSQL cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        kill_live()
        raise
