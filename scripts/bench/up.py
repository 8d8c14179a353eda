"""`fleetscore up --demo` at fleet scale: can one process on this machine take N devices' readings,
archive them, and score every window as it closes?

For each N (default 10,000): a fresh folder; the demo's schedule made beforehand as an
every-minute watermark schedule (the demo makes an hourly one when none exists; a minute gives
many windows in a few minutes of wall clock); then `fleetscore up --demo --devices N --speed S`
with S chosen so that every sensor reads every 5 s of wall clock (the reference data has one
reading per sensor about every 12.9 s of event time). N devices plus the 3 reference devices,
5 sensors each: 5N models, about N readings/s, posted by the demo's own simulator thread (which
is inside the measured process).

Measured, while it runs for --minutes of wall clock:
- CPU (user + system seconds per wall second, from /proc/PID/stat) and memory (RSS sampled,
  and the peak VmHWM) of the whole `up` process;
- readings per second accepted (the ingest counter at /metrics), and how far the simulator fell
  behind its own event clock (demo.json: sent_until against the clock);
- per scored window: from its close (the instant the event clock passed the window's end, from
  demo.json's clock) to its run record's finished_at. The window's close includes the
  aggregator's 10 s of event-time delay (3.9 s of wall clock at this speed) that `up` waits for
  late readings by default: that wait is reported separately, and the latency quoted against
  the target is from the end of that wait.

    python3 scripts/bench/up.py [--devices N ...] [--minutes M] [--write BENCHMARKS.md]

run-up.sh builds the release binary first and writes BENCHMARKS.md.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common  # noqa: E402

ROOT = HERE.parents[1]
MARK_START = "<!-- bench:up:start -->"
MARK_END = "<!-- bench:up:end -->"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
# Event-time seconds between one sensor's readings in the embedded reference data.
REFERENCE_INTERVAL_S = 12.9
DELAY_S = 10.0  # up's default --delay


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid):
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def hwm_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def metric(url, name):
    """The sum of a counter's samples in /metrics (all label sets)."""
    total = 0.0
    with urllib.request.urlopen(url + "metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def ms_of(text):
    return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def bench_n(fs, work, n, minutes, speed):
    d = work / f"up-{n}"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    store = d / "store"
    start = (int(time.time()) // 60) * 60
    subprocess.run([str(fs), "--store", str(store), "schedule", "add", "demo", "--every", "1m",
                    "--window", "1m", "--trigger", "watermark", "--max-active", "2", "--start",
                    datetime.datetime.fromtimestamp(start, datetime.timezone.utc).strftime(
                        "%Y-%m-%d %H:%M:%S")],
                   check=True, capture_output=True)
    t0 = time.time()
    p = subprocess.Popen([str(fs), "up", "--demo", "--devices", str(n), "--speed", str(speed),
                          "--dir", str(d), "--ingest-listen", "127.0.0.1:0", "--listen",
                          "127.0.0.1:0"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    dashboard = None
    scored = []
    ready = threading.Event()

    def follow():
        nonlocal dashboard
        for line in p.stdout:
            m = re.search(r"dashboard\s+(http://\S+)", line)
            if m:
                dashboard = m.group(1)
                ready.set()
            if line.startswith("scored "):
                scored.append((time.time(), line.strip()))

    threading.Thread(target=follow, daemon=True).start()
    if not ready.wait(600):
        p.kill()
        raise SystemExit(f"up --devices {n}: no dashboard line within 10 minutes")
    startup = time.time() - t0
    log(f"  N={n}: up printed its addresses after {startup:.1f} s (models imported)")
    samples = []  # (wall, cpu seconds, rss MiB, accepted readings)
    end = time.time() + minutes * 60
    while time.time() < end and p.poll() is None:
        try:
            accepted = metric(dashboard, "fleetscore_log_end_offset")
        except OSError:
            accepted = None
        samples.append((time.time(), cpu_seconds(p.pid), rss_mib(p.pid), accepted))
        time.sleep(5)
    peak = hwm_mib(p.pid)
    state = json.loads((d / "demo.json").read_text())
    now_ms = int(time.time() * 1000)
    event_now = state["event_base_ms"] + (now_ms - state["wall_base_ms"]) * state["speed"]
    sim_lag_s = (event_now - state["sent_until_ms"]) / 1000 / state["speed"]
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
    # Every scored window: close on the event clock (as wall time) -> run finished.
    rows = subprocess.run([str(fs), "--store", str(store), "schedule", "show", "demo", "--json",
                           "--history", "10000"], capture_output=True, text=True, check=True)
    history = json.loads(rows.stdout)["history"]
    lat = []
    for t in history:
        if t["state"] != "succeeded":
            continue
        tick = ms_of(t["tick"])
        rec = subprocess.run([str(fs), "--store", str(store), "runs", "show", t["run_id"], "--json"],
                             capture_output=True, text=True)
        if rec.returncode != 0:
            continue
        r = json.loads(rec.stdout)
        closed_wall = state["wall_base_ms"] + (tick - state["event_base_ms"]) / state["speed"]
        if closed_wall < t0 * 1000 + startup * 1000:
            continue  # a window that closed while models were being imported
        done = ms_of(r["finished_at"])
        lat.append({"run": t["run_id"], "from_close": (done - closed_wall) / 1000,
                    "rows": r["rows"], "execute_seconds": r.get("execute_seconds")})
    first, last = samples[0], samples[-1]
    wall = last[0] - first[0]
    rate = None
    if first[3] is not None and last[3] is not None and wall > 0:
        rate = (last[3] - first[3]) / wall
    wait = DELAY_S / speed
    res = {
        "devices": n, "models": 5 * (n + 3), "speed": speed, "minutes": minutes,
        "startup_seconds": startup,
        "cpu_cores": (last[1] - first[1]) / wall if wall else None,
        "rss_mib_median": sorted(s[2] for s in samples)[len(samples) // 2],
        "peak_mib": peak, "readings_per_second": rate, "simulator_lag_seconds": sim_lag_s,
        "delay_wall_seconds": wait, "latencies": lat,
    }
    s = sorted(x["from_close"] - wait for x in lat)
    if s:
        res["p50"] = s[len(s) // 2]
        res["p99"] = s[min(len(s) - 1, int(len(s) * 0.99))]
        res["worst"] = s[-1]
    log(f"  N={n}: {len(lat)} windows; cpu {res['cpu_cores']:.2f} cores; rss {res['rss_mib_median']:.0f} MiB"
        f" (peak {peak:.0f}); {rate or 0:.0f} readings/s; simulator lag {sim_lag_s:.1f} s;"
        + (f" after the delay p50 {res['p50']:.2f} s p99 {res['p99']:.2f} s" if s else " no window"))
    return res


def keeps_up(r):
    return bool(r.get("latencies")) and r.get("p99", 99) < 2.0 and r["simulator_lag_seconds"] < 10


def render(r):
    lines = [
        "## The whole pipeline in one process (`up`)",
        "",
        f"Measured {r['date']} on {r['facts']['cpu']} ({r['facts']['cores']} cores), commit "
        f"`{r['facts']['commit']}`, load before {r['facts']['load']}. Reproduce: `{r['command']}`.",
        "",
        "`fleetscore up --demo --devices N` with every sensor reading every 5 s of wall clock "
        f"(`--speed {r['runs'][0]['speed']}`), the demo schedule every minute on the watermark "
        "trigger, for a few minutes each. One process does everything: the simulator posting "
        "readings over HTTP, ingest, the aggregator (windows and the raw archive), the scheduler, "
        "the workers and the monitor. Latency is from the end of each window's 10 s event-time "
        f"delay for late readings ({r['runs'][0]['delay_wall_seconds']:.1f} s of wall clock at this "
        "speed, which `--delay` sets) to the run record's `finished_at`.",
        "",
        "| N devices | models | readings/s | CPU (cores) | RSS (median, peak) | windows | p50 | p99 | worst | simulator behind | keeps up |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in r["runs"]:
        lines.append(
            f"| {x['devices']:,} | {x['models']:,} | {common.f_rate(x['readings_per_second'])} | "
            f"{x['cpu_cores']:.2f} | {x['rss_mib_median']:.0f} MiB, {x['peak_mib']:.0f} MiB | "
            f"{len(x['latencies'])} | "
            + (f"{x['p50']:.2f} s | {x['p99']:.2f} s | {x['worst']:.2f} s | " if x.get("latencies") else "— | — | — | ")
            + f"{x['simulator_lag_seconds']:.1f} s | {'yes' if keeps_up(x) else 'no'} |")
    lines += [
        "",
        "Keeps up: the 99th percentile under 2 s (the target) and the simulator less than 10 s "
        "behind its own clock at the end. "
        + (f"The largest N measured here that keeps up: {max(x['devices'] for x in r['runs'] if keeps_up(x)):,}. "
           if any(keeps_up(x) for x in r["runs"]) else "No N measured here keeps up. ")
        + "Readings per second above N include the catch-up after startup. Startup (importing "
        "the 5N models into the registry before the addresses are printed): "
        + ", ".join(f"{x['startup_seconds']:.0f} s at N={x['devices']:,}" for x in r["runs"]) + ".",
        "",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fs", default=str(ROOT / "target/release/fleetscore"))
    ap.add_argument("--work", default=str(ROOT / "target/bench/up"))
    ap.add_argument("--devices", type=int, action="append")
    ap.add_argument("--minutes", type=float, default=4)
    ap.add_argument("--write")
    a = ap.parse_args()
    speed = round(REFERENCE_INTERVAL_S / 5.0, 2)
    r = {"date": datetime.date.today().isoformat(),
         "command": os.environ.get("BENCH_COMMAND", "python3 scripts/bench/up.py"),
         "facts": {"cpu": common.cpu_model(), "cores": common.cores(), "commit": common.git_commit(),
                   "load": common.loadavg()},
         "runs": []}
    for n in a.devices or [10_000]:
        log(f"up --demo --devices {n}")
        r["runs"].append(bench_n(Path(a.fs), Path(a.work), n, a.minutes, speed))
    text = render(r)
    print(text)
    Path(a.work).mkdir(parents=True, exist_ok=True)
    (Path(a.work) / "result.json").write_text(json.dumps(r, indent=2, default=str))
    if a.write:
        common.write_section(a.write, text, MARK_START, MARK_END)


if __name__ == "__main__":
    main()
