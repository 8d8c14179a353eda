"""What scheduling costs, and how fast a window's close reaches its predictions.

1. Overhead per tick: a schedule ticking every minute over an empty store, `scheduler --once`
   over 240 ticks (each an empty run: planned, handed to the coordinator, finalized), and the
   same 240 windows as 240 `fleetscore run` processes: seconds per tick.
2. Backfill against one run: the N=1,000 fleet (5,000 OneClassSVM models, fleet.py's) with 24
   hours of readings (one a minute per sensor, 7.2M readings); `backfill` of 24 hourly windows
   against one `run` over the same 24 hours. The backfill's cost over the run is what scheduling
   (and 24 plans instead of one) adds.
3. Watermark latency: the same models fed window means, readings posted to `ingest serve` every
   5 s for every sensor (1,000 readings/s at N=1,000) with event time = now, `aggregate run`
   with 10 s windows, and `scheduler` with an every-minute schedule on the watermark trigger.
   For each minute: from the moment the aggregator reported (its JSON epoch line) that every
   window before the minute's end is in the store, to the run record's `finished_at`.

    python scripts/bench/schedule.py --write BENCHMARKS.md     (run-schedule.sh does this)
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402
import fleet  # noqa: E402

ROOT = HERE.parents[1]
MARK_START = "<!-- bench:schedule:start -->"
MARK_END = "<!-- bench:schedule:end -->"
DAY0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def log(msg):
    fleet.log(msg)


def timed(cmd, **kw):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t
    if p.returncode not in (0, 2):
        raise SystemExit(f"error: {' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return wall, p


def overhead(fs, work, ticks):
    store = work / "empty"
    fsx = [str(fs), "--store", str(store)]
    start = DAY0.strftime("%Y-%m-%d %H:%M:%S")
    now = (DAY0 + datetime.timedelta(minutes=ticks)).strftime("%Y-%m-%d %H:%M:%S")
    timed(fsx + ["schedule", "add", "m", "--every", "1m", "--window", "1m", "--start", start,
                 "--max-active", "4", "--now", now])
    wall, p = timed(fsx + ["scheduler", "--once", "--now", now, "--workers", "2"])
    runs = len(re.findall(r" started run ", p.stdout))
    if runs != ticks:
        raise SystemExit(f"error: {runs} runs for {ticks} ticks:\n{p.stdout[-2000:]}")
    store2 = work / "empty-runs"
    t = time.perf_counter()
    for i in range(ticks):
        a = (DAY0 + datetime.timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S")
        b = (DAY0 + datetime.timedelta(minutes=i + 1)).strftime("%Y-%m-%d %H:%M:%S")
        timed([str(fs), "--store", str(store2), "run", "--from", a, "--to", b, "--workers", "2"])
    runs_wall = time.perf_counter() - t
    return {"ticks": ticks, "scheduler_seconds": wall, "per_tick": wall / ticks,
            "run_processes_seconds": runs_wall, "per_run_process": runs_wall / ticks}


def day_of_readings(fleet_dir, path):
    """24 hours of the fleet's readings, one a minute per sensor: the scored hour's every 12th
    reading, repeated each hour."""
    if path.exists():
        return pq.read_metadata(path).num_rows
    hour = pq.read_table(fleet_dir / "data.parquet")
    ts = pc.strptime(hour["TS"], format="%Y-%m-%d %H:%M:%S.000", unit="ms")
    ms = pc.cast(ts, pa.int64()).to_numpy()
    keep = ((ms - ms.min()) // 5_000) % 12 == 0
    base = hour.filter(pa.array(keep))
    base_ms = pc.cast(pc.strptime(base["TS"], format="%Y-%m-%d %H:%M:%S.000", unit="ms"),
                      pa.int64()).to_numpy()
    tmp = path.with_name(path.name + ".tmp")
    schema = pa.schema([("TS", pa.timestamp("ms", tz="UTC")), ("Device", pa.string()),
                        ("Tag", pa.int64()), ("Value", pa.float64())])
    rows = 0
    with pq.ParquetWriter(tmp, schema) as w:
        for h in range(24):
            t = pa.array(base_ms + h * 3_600_000, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))
            table = pa.table({"TS": t, "Device": base["Device"], "Tag": base["Tag"],
                              "Value": base["Value"]}, schema=schema)
            w.write_table(table)
            rows += table.num_rows
    tmp.replace(path)
    return rows


def backfill_vs_run(fs, work, fleet_dir):
    data = fleet_dir / "day.parquet"
    rows = day_of_readings(fleet_dir, data)
    out = {"readings": rows}
    for kind in ("run", "backfill"):
        store = work / f"day-{kind}"
        fsx = [str(fs), "--store", str(store)]
        timed(fsx + ["models", "import", str(fleet_dir / "models"), "--pattern", "model_{device}_{tag}"])
        timed(fsx + ["data", "import", str(data), "--time-column", "TS", "--device-column", "Device",
                     "--tag-column", "Tag", "--value-column", "Value"])
        frm = DAY0.strftime("%Y-%m-%d %H:%M:%S")
        to = (DAY0 + datetime.timedelta(hours=24)).strftime("%Y-%m-%d %H:%M:%S")
        if kind == "run":
            wall, p = timed(fsx + ["run", "--from", frm, "--to", to])
            got = int(re.search(r"; (\d+) rows", p.stdout).group(1))
        else:
            timed(fsx + ["schedule", "add", "hourly", "--every", "1h", "--window", "1h",
                         "--start", "2030-01-01 00:00:00"])
            wall, p = timed(fsx + ["backfill", "--schedule", "hourly", "--from", frm, "--to", to])
            if "24 windows run, 0 did not succeed" not in p.stdout:
                raise SystemExit(f"error: backfill:\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}")
            got = sum(int(x) for x in re.findall(r"succeeded: run \S+, (\d+) rows", p.stdout))
        if got != rows:
            raise SystemExit(f"error: {kind} scored {got} rows of {rows}")
        out[kind] = wall
        log(f"  {kind}: {wall:.2f} s for {rows:,} readings")
        shutil.rmtree(store)
    return out


def watermark_latency(fs, work, fleet_dir, n_devices, minutes):
    store, logdir = work / "live", work / "live-log"
    for d in (store, logdir):
        if d.exists():
            shutil.rmtree(d)
    fsx = [str(fs), "--store", str(store)]
    timed(fsx + ["models", "import", str(fleet_dir / "models"), "--pattern", "model_{device}_{tag}",
                 "--features", "mean"])
    now = time.time()
    start = datetime.datetime.fromtimestamp((int(now) // 60 + 1) * 60, datetime.timezone.utc)
    timed(fsx + ["schedule", "add", "live", "--every", "1m", "--window", "1m", "--trigger", "watermark",
                 "--start", start.strftime("%Y-%m-%d %H:%M:%S"), "--max-active", "2"])
    procs = []
    ingest = subprocess.Popen([str(fs), "ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir",
                               str(logdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs.append(ingest)
    addr = None
    for line in ingest.stdout:
        m = re.search(r"(127\.0\.0\.1:\d+)", line)
        if m:
            addr = m.group(1)
            break
    threading.Thread(target=lambda: [None for _ in ingest.stdout], daemon=True).start()
    closes = {}  # complete_before (ms) -> wall time first reported

    def follow(p):
        for line in p.stdout:
            try:
                cb = json.loads(line).get("complete_before")
            except ValueError:
                continue
            if cb:
                ms = int(datetime.datetime.fromisoformat(cb.replace("Z", "+00:00")).timestamp() * 1000)
                closes.setdefault(ms, time.time())

    agg = subprocess.Popen(fsx + ["aggregate", "run", "--log-dir", str(logdir), "--window", "10s",
                                  "--delay", "2s", "--idle-timeout", "5s", "--epoch-interval-ms", "250",
                                  "--poll-ms", "100", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    procs.append(agg)
    threading.Thread(target=follow, args=(agg,), daemon=True).start()
    sched = subprocess.Popen(fsx + ["scheduler", "--poll", "100ms"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    procs.append(sched)
    finished = {}  # run id -> wall time the scheduler printed success

    def follow_sched(p):
        for line in p.stdout:
            m = re.search(r"succeeded: run (\S+),", line)
            if m:
                finished[m.group(1)] = time.time()

    threading.Thread(target=follow_sched, args=(sched,), daemon=True).start()
    devices = [fleet.device_name(d) for d in range(n_devices)]
    rng = np.random.default_rng(7)
    end = start.timestamp() + minutes * 60 + 5
    sent = 0
    try:
        while time.time() < end:
            t = time.time()
            ts = int(t * 1000)
            v = rng.normal(20.0, 1.5, size=n_devices * 5)
            body = "\n".join(
                json.dumps({"device": d, "tag": str(tag), "ts": ts, "value": round(float(v[i * 5 + tag - 1]), 2)})
                for i, d in enumerate(devices) for tag in range(1, 6))
            req = urllib.request.Request(f"http://{addr}/v1/readings", data=body.encode(),
                                         headers={"Content-Type": "application/x-ndjson"})
            urllib.request.urlopen(req, timeout=30).read()
            sent += n_devices * 5
            time.sleep(max(0.0, 5.0 - (time.time() - t)))
        deadline = time.time() + 30
        while time.time() < deadline and len(finished) < minutes:
            time.sleep(0.5)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
    lat = []
    for k in range(1, minutes + 1):
        tick = int(start.timestamp() * 1000) + k * 60_000
        run_id = (datetime.datetime.fromtimestamp((tick - 60_000) / 1000, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                  + "_" + datetime.datetime.fromtimestamp(tick / 1000, datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"))
        closed = min((w for cb, w in closes.items() if cb >= tick), default=None)
        rec = subprocess.run(fsx + ["runs", "show", run_id, "--json"], capture_output=True, text=True)
        if closed is None or rec.returncode != 0:
            log(f"  minute {k}: no close or no run ({run_id})")
            continue
        r = json.loads(rec.stdout)
        done = datetime.datetime.fromisoformat(r["finished_at"].replace("Z", "+00:00")).timestamp()
        lat.append({"run": run_id, "seconds": done - closed, "rows": r["rows"], "status": r["status"],
                    "execute_seconds": r["execute_seconds"]})
        log(f"  minute {k}: {done - closed:.2f} s from close to succeeded ({r['rows']} rows)")
    return {"sent": sent, "minutes": minutes, "latencies": lat}


def render(r):
    o, b, w = r["overhead"], r.get("backfill"), r.get("watermark")
    lines = [
        "## Scheduling",
        "",
        f"Measured {r['date']} on {r['facts']['cpu']} ({r['facts']['cores']} cores), commit "
        f"`{r['facts']['commit']}`, load before {r['facts']['load']}. Reproduce: `{r['command']}`.",
        "",
        f"- **Overhead per tick**: `scheduler --once` over {o['ticks']} every-minute ticks of an "
        f"empty store (each tick recorded, its run planned, handed to the coordinator and "
        f"finalized, the tick's outcome recorded): {o['scheduler_seconds']:.1f} s, "
        f"**{o['per_tick'] * 1000:.0f} ms per tick**; the same windows as {o['ticks']} "
        f"`fleetscore run` processes: {o['per_run_process'] * 1000:.0f} ms each.",
    ]
    if b:
        lines.append(
            f"- **Backfill of 24 hourly windows** of the N=1,000 fleet (5,000 models, "
            f"{b['readings']:,} readings over 24 h): {b['backfill']:.1f} s, against "
            f"{b['run']:.1f} s for one run over the same 24 hours: the backfill costs "
            f"**{b['backfill'] / b['run']:.2f}x** the single run ({b['backfill'] - b['run']:+.1f} s "
            f"for 24 plans, ticks and records instead of one).")
    if w and w["latencies"]:
        s = sorted(x["seconds"] for x in w["latencies"])
        lines.append(
            f"- **Watermark trigger**: readings streamed into `ingest serve` at N=1,000 "
            f"(5,000 sensors every 5 s, {w['sent']:,} readings in {w['minutes']} minutes), "
            f"`aggregate run` (10 s windows), `scheduler` on an every-minute watermark schedule: "
            f"from the aggregator reporting a minute's windows closed to that minute's run record "
            f"saying succeeded, median **{statistics.median(s):.2f} s**, worst {s[-1]:.2f} s over "
            f"{len(s)} minutes (target: under 2 s).")
    lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fs", default=str(ROOT / "target/release/fleetscore"))
    ap.add_argument("--work", default=str(ROOT / "target/bench/schedule"))
    ap.add_argument("--ticks", type=int, default=240)
    ap.add_argument("--minutes", type=int, default=2)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--skip", action="append", default=[], choices=["backfill", "watermark"])
    ap.add_argument("--write")
    a = ap.parse_args()
    fs, work = Path(a.fs), Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    r = {"date": datetime.date.today().isoformat(), "command": os.environ.get("BENCH_COMMAND", "python scripts/bench/schedule.py"),
         "facts": {"cpu": common.cpu_model(), "cores": common.cores(), "commit": common.git_commit(),
                   "load": common.loadavg()}}
    log("overhead per tick")
    r["overhead"] = overhead(fs, work, a.ticks)
    log(f"  {r['overhead']['per_tick'] * 1000:.0f} ms per tick")
    if "backfill" not in a.skip or "watermark" not in a.skip:
        fleet_dir = ROOT / "target/bench/fleet" / f"fleet-{a.devices}"
        fleet.ensure_fleet(fleet_dir, a.devices, 2)
    if "backfill" not in a.skip:
        log("backfill against one run")
        r["backfill"] = backfill_vs_run(fs, work, fleet_dir)
    if "watermark" not in a.skip:
        log("watermark latency")
        r["watermark"] = watermark_latency(fs, work, fleet_dir, a.devices, a.minutes)
    text = render(r)
    print(text)
    (work / "result.json").write_text(json.dumps(r, indent=2, default=str))
    if a.write:
        common.write_section(a.write, text, MARK_START, MARK_END)


if __name__ == "__main__":
    main()
