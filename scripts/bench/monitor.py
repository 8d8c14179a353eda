"""The monitor's latency and memory on a large store: starts `fleetscore serve` on the store
`bench_store` built, times every page, API call and /metrics scrape (a warm-up, then N timed
requests each, one at a time over loopback), reads the server's memory from /proc, and reports
how long its refresh passes take (from its debug log). Standard library only.

    python3 scripts/bench/monitor.py --bin target/release/fleetscore --store out/bench-monitor/store \
        [--requests 20] [--write BENCHMARKS.md]
"""

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request

START, END = "<!-- bench:monitor:start -->", "<!-- bench:monitor:end -->"


def fetch(url):
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.status, r.read()


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) * 1024
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--write")
    ap.add_argument("--command", default="bash scripts/bench/run-monitor.sh")
    a = ap.parse_args()

    env = dict(os.environ, FLEETSCORE_LOG="debug")
    t0 = time.monotonic()
    server = subprocess.Popen(
        [a.bin, "--store", a.store, "serve", "--listen", "127.0.0.1:0", "--refresh", "2s"],
        stdout=subprocess.PIPE, stderr=open(os.path.join(os.path.dirname(a.store), "serve.err"), "w"),
        text=True, env=env,
    )
    try:
        line = server.stdout.readline()
        startup = time.monotonic() - t0
        m = re.match(r"monitor listening on (http://\S+)", line)
        if not m:
            sys.exit(f"serve did not start: {line!r}")
        base = m.group(1)
        overview = fetch(base + "/api/v1/overview")[1].decode()
        import json
        o = json.loads(overview)
        run_id = o["last_scored_window"]["run_id"]
        flagged = o["attention"][0] if o["attention"] else None
        model = f"{flagged['device']}/{flagged['tag']}" if flagged else "dev-00000/t1"
        urls = [
            ("page", "/"), ("page", "/windows"), ("page", "/runs"), ("page", f"/runs/{run_id}"),
            ("page", "/trends"), ("page", "/trends?last=5000"), ("page", "/models"),
            ("page", "/models?flag=any"), ("page", "/models?q=dev-0999"), ("page", f"/models/{model}"),
            ("page", "/workers"), ("page", "/ingest"), ("page", "/schedules"),
            ("api", "/api/v1/overview"), ("api", "/api/v1/runs?status=completed_with_failures&limit=100"),
            ("api", "/api/v1/runs?from=2025-06-01&to=2025-07-01&limit=1000"),
            ("api", f"/api/v1/runs/{run_id}"), ("api", "/api/v1/models?limit=1000"),
            ("api", "/api/v1/models?flag=always_anomalous&limit=1000"), ("api", f"/api/v1/models/{model}"),
            ("api", "/api/v1/health"), ("api", "/api/v1/workers"), ("metrics", "/metrics"),
        ]
        rows = []
        for kind, path in urls:
            status, body = fetch(base + path)
            assert status == 200, (path, status)
            times = []
            for _ in range(a.requests):
                s = time.perf_counter()
                fetch(base + path)
                times.append((time.perf_counter() - s) * 1e3)
            times.sort()
            p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
            rows.append((kind, path, len(body), statistics.median(times), p95, times[-1]))
            print(f"{path:60} {len(body):>9} B  median {statistics.median(times):7.1f} ms  p95 {p95:7.1f} ms", flush=True)
        # Let a few refresh passes run, then read memory.
        time.sleep(6)
        mem = proc_status(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    with open(os.path.join(os.path.dirname(a.store), "serve.err")) as f:
        log = f.read()
    first = re.search(r"read (\d+) runs and (\d+) models in ([\d.]+)s", log)
    passes = [float(x) for x in re.findall(r"monitor refreshed in ([\d.]+)s", log)]
    print(f"startup {startup:.2f}s; {first.group(0) if first else '?'}; refresh passes {passes}")
    print(f"memory: RSS {mem['VmRSS'] / 2**20:.0f} MiB, peak {mem['VmHWM'] / 2**20:.0f} MiB")

    if not a.write:
        return
    load = os.getloadavg()
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
            cpu = f"{names[0]}, {len(names)} cores" if names else "?"
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    worst = max(r[4] for r in rows if r[0] != "metrics")
    metrics = [r for r in rows if r[0] == "metrics"][0]
    md = [START, "## Monitor: page, API and /metrics latency on 10,000 runs and 50,000 models", "",
          f"Measured on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `{a.command}` "
          f"(commit {commit}; {cpu}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} when it started). "
          "Every number below is what that run measured.", "",
          f"The store (`crates/monitor/examples/bench_store.rs`): {first.group(2) if first else '?'} models in the "
          f"registry (imported from the reference fleet's real pickles), {first.group(1) if first else '?'} hourly "
          "run records, the task summaries of the latest 48 runs (50 tasks of 1,000 models; 1 % of the models flag "
          "every reading, some fail, go silent or drift), and the latest 48 runs' tasks in the SQLite coordinator. "
          "Older runs' summaries are not written: the monitor reads only the runs health looks at.", "",
          f"- `fleetscore serve` answered {startup:.2f} s after it started (its first full read: "
          f"{first.group(3) if first else '?'} s); a refresh pass with nothing new took "
          f"{statistics.median(passes) * 1e3:.0f} ms (median of {len(passes)}), on its own thread." if passes else "",
          f"- Memory of `serve` after the requests: {mem['VmRSS'] / 2**20:.0f} MiB resident, "
          f"{mem['VmHWM'] / 2**20:.0f} MiB at its peak.",
          f"- Slowest page or API call at the 95th percentile: {worst:.1f} ms (target: under 100 ms); "
          f"`/metrics`: {metrics[4]:.1f} ms (target: under 50 ms).", "",
          f"Each URL: one warm-up, then {a.requests} requests one after another over loopback (Python's urllib, "
          "so each time includes the client's own overhead).", "",
          "| kind | URL | bytes | median ms | p95 ms | max ms |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for kind, path, size, med, p95, mx in rows:
        md.append(f"| {kind} | `{path}` | {size:,} | {med:.1f} | {p95:.1f} | {mx:.1f} |")
    md.append(END)
    text = open(a.write).read()
    section = "\n".join(l for l in md) + "\n"
    if START in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    open(a.write, "w").write(text)
    print(f"wrote {a.write}")


if __name__ == "__main__":
    main()
