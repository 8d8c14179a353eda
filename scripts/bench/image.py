#!/usr/bin/env python3
"""Benchmark the container image: its size, a container's start to the first request served,
and a worker's throughput in a container against the same binary on the host.

    python scripts/bench/image.py --image fleetscore:0.1.0 --binary PATH [--copies 500]
                                  [--starts 10] [--repeats 3] [--out-dir DIR] [--write BENCHMARKS.md]

Normally run through scripts/bench/run-image.sh, which builds the release image first. Only the
Python standard library is needed.

1. Size: `podman image inspect` of the image, the binary in it, the OCI archive scripts/image
   wrote (out/image/fleetscore-VERSION.oci.tar) when there is one.
2. Start to the first request served, --starts times each: `fleetscore ingest serve` on a
   fixed loopback port, started as a host process and as a container (`podman run --detach`,
   host network, the Kubernetes settings of deploy/k8s: read-only root, /tmp a tmpfs, no
   capabilities); the time from launching it until a POST of one reading has been answered 200
   (the reading is then on disk: fsync'd), the port polled every 2 ms. Each is then stopped
   with SIGTERM (`podman stop`).
3. A worker's throughput: a fleet of --copies copies of the reference fleet's 15 models and
   17,768 readings (device ids renumbered per copy), imported once into a local-folder store;
   for each repeat and setup, a fresh PostgreSQL schema, `run --detach --max-models-per-task
   100`, then one `fleetscore worker --threads T --idle-exit 1` (T = the cores) on the host or
   in a container (the store a mounted volume, PostgreSQL on loopback via the host network).
   Wall time from launching the worker until the run's record (the store's runs/ID.json) is no
   longer `running`, read every 20 ms; the record must say every model scored and every row.
   The sum of the tasks' own durations (`runs show`) is given too: the time inside tasks,
   without process or container start.

The host runs the same static binary that is in the image, so the comparison is of the
container, not of two builds. Raw results go to OUT_DIR/image-results.json.
"""

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import cores, git_commit, loadavg, run_facts, write_section

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "crates" / "models" / "tests" / "data" / "reference"
MARK_START = "<!-- bench:image:start -->"
MARK_END = "<!-- bench:image:end -->"
PODMAN_OPTS = ["--runtime", "runc"]
RUN_OPTS = ["--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
            "--read-only", "--tmpfs", "/tmp:mode=1777", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges"]
WINDOW = ["--from", "2018-08-28T00:00:00Z", "--to", "2018-08-30T00:00:00Z"]
READING = b'{"device":"d1","tag":"t","ts":"2026-01-01T00:00:05Z","value":1.5}\n'
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 900


def log(msg):
    print(f"[image bench] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    raise SystemExit(f"image bench: {msg}")


def sh(cmd, what, timeout=600):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        fail(f"{what} failed (exit {p.returncode}): {' '.join(map(str, cmd))}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    return p.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_once(port):
    """True when one reading POSTed to 127.0.0.1:port was answered 200."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /v1/readings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      b"Content-Type: application/x-ndjson\r\nContent-Length: "
                      + str(len(READING)).encode() + b"\r\n\r\n" + READING)
            answer = b""
            while chunk := s.recv(4096):
                answer += chunk
            return answer.startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def until_served(port, t0, what):
    while not post_once(port):
        if time.perf_counter() - t0 > START_TIMEOUT_S:
            fail(f"{what} served nothing on port {port} within {START_TIMEOUT_S} s")
        time.sleep(0.002)
    return time.perf_counter() - t0


def start_times(podman, image, binary, n, work):
    host, container = [], []
    for i in range(n):
        port = free_port()
        logdir = Path(tempfile.mkdtemp(dir=work))
        t0 = time.perf_counter()
        p = subprocess.Popen([binary, "ingest", "serve", "--listen", f"127.0.0.1:{port}", "--log-dir", logdir],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            host.append(until_served(port, t0, "ingest serve (host)"))
        finally:
            p.terminate()
            if p.wait(timeout=30) != 0:
                fail(f"ingest serve (host) exited {p.returncode} on SIGTERM")
            shutil.rmtree(logdir)
        port = free_port()
        name = f"fleetscore-bench-{os.getpid()}-{i}"
        t0 = time.perf_counter()
        sh([podman, *PODMAN_OPTS, "run", "--detach", "--rm", "--name", name, *RUN_OPTS, image,
            "ingest", "serve", "--listen", f"127.0.0.1:{port}", "--log-dir", "/tmp/log"], "podman run")
        try:
            container.append(until_served(port, t0, "ingest serve (container)"))
        finally:
            sh([podman, *PODMAN_OPTS, "stop", "--time", "10", name], "podman stop")
        log(f"  start {i + 1}/{n}: host {host[-1] * 1000:.1f} ms, container {container[-1] * 1000:.0f} ms")
    return host, container


class Postgres:
    def __init__(self):
        self.script = ROOT / "scripts" / "services" / "postgres.sh"
        self.url = sh(["bash", self.script, "start"], "scripts/services/postgres.sh start").strip().splitlines()[-1]
        self.psql = shutil.which("psql") or fail("psql not found")
        self.schemas = []

    def fresh(self, label):
        name = f"bench_image_{os.getpid()}_{len(self.schemas)}_{label}"
        sh([self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url, "-c", f"CREATE SCHEMA {name}"], "psql")
        self.schemas.append(name)
        return f"{self.url}?options=-csearch_path%3D{name}"

    def cleanup(self):
        if self.schemas:
            sh([self.psql, "-X", "-q", self.url, "-c",
                "; ".join(f"DROP SCHEMA IF EXISTS {s} CASCADE" for s in self.schemas)], "psql")


def make_fleet(binary, copies, work):
    """The store holding `copies` copies of the reference fleet; returns (store, models, rows)."""
    store = work / f"store-{copies}"
    done = store / ".bench-fleet-complete"
    src = work / f"fleet-{copies}"
    if not done.exists():
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
        (src / "models").mkdir(parents=True)
        lines = (REFERENCE / "sensor_data.csv").read_text().splitlines()
        with open(src / "readings.csv", "w") as out:
            out.write(lines[0] + "\n")
            for c in range(copies):
                for m in sorted((REFERENCE / "models").iterdir()):
                    _, d, t = m.name.split("_")
                    shutil.copyfile(m, src / "models" / f"model_{c * 100 + int(d)}_{t}")
                for line in lines[1:]:
                    ts, d, rest = line.split(",", 2)
                    out.write(f"{ts},{c * 100 + int(d)},{rest}\n")
        fs = [binary, "--store", store]
        sh(fs + ["models", "import", src / "models", "--pattern", "model_{device}_{tag}"], "models import")
        sh(fs + ["data", "import", src / "readings.csv", "--time-column", "TS", "--device-column", "Device",
                 "--tag-column", "Tag", "--value-column", "Value"], "data import")
        done.touch()
    return store, copies * 15, copies * 17768


def open_to_all(store):
    """The image's user (uid 10001) writes where the host wrote (the fleet, the planned run)."""
    for d, dirs, files in os.walk(store):
        os.chmod(d, 0o777)
        for f in files:
            os.chmod(os.path.join(d, f), 0o666)


def record(store, run_id):
    try:
        return json.loads((store / "runs" / f"{run_id}.json").read_text())
    except (OSError, ValueError):
        return None


def task_seconds(binary, store, db, run_id):
    text = sh([binary, "--store", store, "--db", db, "runs", "show", run_id], "runs show")
    secs = [float(m.group(1)) for m in re.finditer(r"^\s+\d+\s+done\s+\d+\s+\S+\s+\d+\s+\d+\s+([0-9.]+)", text, re.M)]
    return sum(secs), len(secs)


def worker_run(setup, podman, image, binary, store, pg, models, rows, threads, rep):
    run_id = f"image-{setup}-{rep}"
    db = pg.fresh(f"{setup}_{rep}")
    sh([binary, "--store", store, "--db", db, "run", *WINDOW, "--run-id", run_id, "--detach",
        "--max-models-per-task", "100"], "run --detach")
    open_to_all(store)
    worker = ["worker", "--threads", str(threads), "--idle-exit", "1", "--name", setup]
    name = f"fleetscore-bench-{os.getpid()}-worker-{rep}"
    t0 = time.perf_counter()
    if setup == "host":
        p = subprocess.Popen([binary, "--store", store, "--db", db, *worker],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    else:
        p = subprocess.Popen([podman, *PODMAN_OPTS, "run", "--rm", "--name", name, *RUN_OPTS,
                              "--volume", f"{store}:/store", "--env", f"FLEETSCORE_DB={db}", image,
                              "--store", "/store", *worker],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while True:
        r = record(store, run_id)
        if r and r.get("status") != "running":
            wall = time.perf_counter() - t0
            break
        if time.perf_counter() - t0 > RUN_TIMEOUT_S:
            p.kill()
            fail(f"{run_id} still running after {RUN_TIMEOUT_S} s")
        if p.poll() is not None:
            fail(f"the {setup} worker exited ({p.returncode}) before {run_id} finished: {p.stderr.read()[-2000:]}")
        time.sleep(0.02)
    _, err = p.communicate(timeout=60)
    if p.returncode != 0:
        fail(f"the {setup} worker exited {p.returncode}: {err[-2000:]}")
    if r.get("status") != "succeeded" or r.get("models_scored") != models or r.get("rows") != rows:
        fail(f"{run_id}: record {r.get('status')}, {r.get('models_scored')} models, {r.get('rows')} rows; "
             f"expected succeeded, {models}, {rows}")
    busy, tasks = task_seconds(binary, store, db, run_id)
    log(f"  {setup}, repeat {rep + 1}: {wall:.2f} s wall, {rows / wall:,.0f} rows/s; {tasks} tasks, {busy:.2f} s in tasks")
    return {"setup": setup, "repeat": rep, "wall_seconds": wall, "rows": rows, "models": models,
            "tasks": tasks, "task_seconds": busy}


def ms(x):
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def report(res, command):
    f = res["facts"]
    size = res["size"]
    sh_, sc = res["start"]["host"], res["start"]["container"]
    lines = [
        "## Container image: size, start to the first request, a worker in a container",
        "",
        f"Measured on {f['date']} by `scripts/bench/image.py`: every number below is what that run measured.",
        "",
    ]
    la = f["loadavg_start"]
    if la and la[0] > 0.5:
        lines += [f"**The machine was not idle (load average {la[0]:.2f} over 1 min when the run started): other "
                  "builds shared the 2 cores, so the timings are noisy; compare the host and container columns "
                  "with each other, not with other sections.**", ""]
    m = f["machine"]
    lines += [
        f"- Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']:.1f} GiB, Linux {m['kernel']}; "
        f"podman {res['podman_version']} with runc; load average at the start {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f}",
        f"- fleetscore: commit {res['commit']}; the image `{res['image']}`, and on the host the same bytes as the "
        f"binary in it (`{res['binary']}`, the static release build as scripts/image puts it in the image)",
        f"- Reproduce: `{command}`",
        "",
        "**Size**",
        "",
        "| | bytes | MB |",
        "|---|---|---|",
        f"| image (`podman image inspect`) | {size['image']:,} | {size['image'] / 1e6:.1f} |",
        f"| the binary in it (debug info stripped) | {size['binary']:,} | {size['binary'] / 1e6:.1f} |",
    ]
    if size.get("archive"):
        lines.append(f"| OCI archive (`podman save --format oci-archive`, compressed layers) | {size['archive']:,} | {size['archive'] / 1e6:.1f} |")
    lines += [
        "",
        f"The rest of the image is the CA bundle, passwd, group and nsswitch.conf "
        f"({size['image'] - size['binary']:,} bytes).",
        "",
        f"**Start to the first request served** (`ingest serve`, launch until one POSTed reading is "
        f"acknowledged, {len(sh_)} starts each)",
        "",
        "| | median | min | max |",
        "|---|---|---|---|",
        f"| host process | {ms(statistics.median(sh_))} | {ms(min(sh_))} | {ms(max(sh_))} |",
        f"| container (`podman run --detach` to the answer) | {ms(statistics.median(sc))} | {ms(min(sc))} | {ms(max(sc))} |",
        "",
        f"The difference, {(statistics.median(sc) - statistics.median(sh_)) * 1000:.0f} ms at the median, is what "
        "`podman run --detach` adds before and around the same binary's start: podman and runc create the "
        "container, its mounts and namespaces.",
        "",
    ]
    w = res["workers"]
    fl = w["fleet"]
    lines += [
        f"**A worker's throughput** ({fl['models']:,} models, {fl['rows']:,} readings: {fl['copies']} copies of the "
        f"reference fleet; `run --detach --max-models-per-task 100`, then one `worker --threads {w['threads']}` "
        f"on a PostgreSQL coordinator on loopback, the store a local folder — a volume for the container; "
        f"best of {w['repeats']})",
        "",
        "| | wall (launch to run done) | rows/s | time in tasks (sum) | repeats (wall) |",
        "|---|---|---|---|---|",
    ]
    best = {}
    for setup in ("host", "container"):
        runs = [r for r in w["runs"] if r["setup"] == setup]
        b = min(runs, key=lambda r: r["wall_seconds"])
        best[setup] = b
        walls = ", ".join(f"{r['wall_seconds']:.2f}" for r in runs)
        lines.append(f"| {setup} | {b['wall_seconds']:.2f} s | {b['rows'] / b['wall_seconds']:,.0f} | "
                     f"{b['task_seconds']:.2f} s | {walls} |")
    ratio = best["container"]["rows"] / best["container"]["wall_seconds"] / (best["host"]["rows"] / best["host"]["wall_seconds"])
    extra = best["container"]["wall_seconds"] - best["host"]["wall_seconds"]
    start = statistics.median(sc) - statistics.median(sh_)
    spread = max(max(r["wall_seconds"] for r in w["runs"] if r["setup"] == s_) -
                 min(r["wall_seconds"] for r in w["runs"] if r["setup"] == s_) for s_ in ("host", "container"))
    lines += [
        "",
        f"In a container the worker does {ratio:.2f}× the host's rows per second, container start included "
        f"(its wall time counts from `podman run`): its best run took {extra:+.2f} s against the host's, where "
        f"starting a container costs {start:.2f} s more than starting the process (above), and the repeats of one "
        f"setup differ by up to {spread:.2f} s on this machine.",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", required=True)
    ap.add_argument("--binary", required=True, help="the static binary that is in the image")
    ap.add_argument("--podman", default=shutil.which("podman"))
    ap.add_argument("--archive", help="the image's OCI archive, for its size")
    ap.add_argument("--copies", type=int, default=500)
    ap.add_argument("--starts", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-dir", default=str(ROOT / "target" / "bench" / "image"))
    ap.add_argument("--write")
    ap.add_argument("--command", default="bash scripts/bench/run-image.sh")
    a = ap.parse_args()
    if not a.podman:
        fail("podman not found (bash scripts/services/podman.sh install)")
    work = Path(a.out_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    binary = str(Path(a.binary).resolve())
    res = {"facts": run_facts(), "commit": git_commit(), "image": a.image, "binary": os.path.relpath(binary, ROOT),
           "podman_version": sh([a.podman, "--version"], "podman --version").split()[-1]}
    res["size"] = {
        "image": int(sh([a.podman, "image", "inspect", "--format", "{{.Size}}", a.image], "podman image inspect")),
        "binary": os.path.getsize(binary),
        "archive": os.path.getsize(a.archive) if a.archive and os.path.exists(a.archive) else None,
    }
    log(f"image {a.image}: {res['size']['image']:,} bytes")
    host, container = start_times(a.podman, a.image, binary, a.starts, work)
    res["start"] = {"host": host, "container": container}

    pg = Postgres()
    try:
        log(f"fleet: {a.copies} copies of the reference fleet")
        store, models, rows = make_fleet(binary, a.copies, work)
        threads = cores()
        runs = []
        for rep in range(a.repeats):
            for setup in ("host", "container"):
                runs.append(worker_run(setup, a.podman, a.image, binary, store, pg, models, rows, threads, rep))
        res["workers"] = {"fleet": {"copies": a.copies, "models": models, "rows": rows}, "threads": threads,
                          "repeats": a.repeats, "runs": runs}
    finally:
        pg.cleanup()
    res["loadavg_end"] = loadavg()
    (work / "image-results.json").write_text(json.dumps(res, indent=2))
    text = report(res, a.command)
    print(text)
    if a.write:
        write_section(a.write, text, MARK_START, MARK_END)
        log(f"wrote the section into {a.write}")


if __name__ == "__main__":
    main()
