#!/usr/bin/env python3
"""Benchmark ingest: readings/s and acknowledgement latency over HTTP on loopback with durable
acks, memory under overload, and a peer (Mosquitto with persistence) doing the same job on this
machine.

    python scripts/bench/ingest.py [--write BENCHMARKS.md] [--seconds 8]

Normally run through scripts/bench/run-ingest.sh, which builds the release binary and the load
generator first. Steps:

1. fleetscore over HTTP: `fleetscore ingest serve` on a fresh log, and the load generator
   (crates/ingest/examples/loadgen.rs: keep-alive connections posting JSON-lines batches back to
   back) at several batch sizes; readings/s, p50/p99 latency of a request until its 200 (which
   comes after the fsync), and the server's peak RSS.
2. Overload: the same server with small --max-inflight/--max-pending bounds and many large
   requests; how many were refused with 429 and the server's peak RSS (bounded, not growing
   with the offered load).
3. The peer: Mosquitto (Debian) with persistence, an offline persistent QoS 1 subscriber so the
   broker keeps every message for it, and 4 publishers (examples/mqttgen.rs) sending one reading per
   message; readings/s until every PUBACK. Mosquitto does not fsync per message
   (it snapshots every `autosave_interval`), so its acknowledgements are not durable the way
   fleetscore's are.
4. fleetscore's MQTT source in the same setup: the same publishers into the same broker, with
   `fleetscore ingest serve --mqtt` subscribed; readings/s until all of them are durable in the
   log (each acknowledged to the broker after its fsync).

Every number in the report is measured by this run; raw results go to
target/bench/ingest/ingest-results.json.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (ROOT, f_rate, fleetscore_version, git_commit, loadavg, run_facts,  # noqa: E402
                    write_section)

MARK_START = "<!-- bench:ingest:start -->"
MARK_END = "<!-- bench:ingest:end -->"
OUT = ROOT / "target" / "bench" / "ingest"
FS = ROOT / "target" / "release" / "fleetscore"
LOADGEN = ROOT / "target" / "release" / "examples" / "loadgen"
MQTTGEN = ROOT / "target" / "release" / "examples" / "mqttgen"


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


T0 = time.monotonic()


def peak_rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def start_server(log_dir, *extra):
    p = subprocess.Popen([str(FS), "ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir", str(log_dir), *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on http://"):
        p.kill()
        raise SystemExit(f"error: ingest serve said {line!r}")
    return p, line.removeprefix("listening on http://")


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()


def loadgen(addr, connections, batch, seconds):
    out = subprocess.run([str(LOADGEN), "--addr", addr, "--connections", str(connections), "--batch", str(batch),
                          "--seconds", str(seconds)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def stats(addr):
    with urllib.request.urlopen(f"http://{addr}/v1/stats", timeout=10) as r:
        return json.loads(r.read())


def start_broker(d, port):
    (d / "data").mkdir(parents=True, exist_ok=True)
    conf = d / "mosquitto.conf"
    text = (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {d / 'data'}/\nautosave_interval 1\nmax_inflight_messages 1000\n"
            "max_queued_messages 0\nlog_dest none\n")
    if os.geteuid() == 0:
        text += "user root\n"
    conf.write_text(text)
    broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    p = subprocess.Popen([broker, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            import socket
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.05)
    raise SystemExit("error: mosquitto did not start")


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def publish_all(port, n):
    """crates/ingest/examples/mqttgen.rs: 4 publishers, n readings as QoS 1 messages, 1,000 in
    flight each, until every PUBACK; (wall seconds, its JSON)."""
    t = time.monotonic()
    out = subprocess.run([str(MQTTGEN), "--port", str(port), "--messages", str(n), "--publishers", "4",
                          "--inflight", "1000"], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        lines = out.stderr.splitlines()
        why = [l for i, l in enumerate(lines) if "panicked" in l or (i > 0 and "panicked" in lines[i - 1])]
        raise SystemExit(f"error: mqttgen failed: {' '.join(why) or out.stderr[-2000:]}")
    return time.monotonic() - t, json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--mqtt-readings", type=int, default=200_000)
    a = ap.parse_args()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    r = {"facts": run_facts(), "commit": git_commit(), "version": fleetscore_version(FS), "http": [],
         "seconds": a.seconds}

    # 1. HTTP at several batch sizes, one server.
    server, addr = start_server(OUT / "log-http", "--partitions", "8")
    for connections, batch in [(8, 100), (8, 1000), (16, 5000)]:
        log(f"HTTP: {connections} connections, {batch} readings a request, {a.seconds:.0f} s")
        res = loadgen(addr, connections, batch, a.seconds)
        res["loadavg_before"] = loadavg()
        log(f"  {res['readings_per_second']:,.0f} readings/s, p50 {res['p50_ms']} ms, p99 {res['p99_ms']} ms")
        r["http"].append(res)
    r["http_server_peak_rss_mib"] = peak_rss_mib(server.pid)
    r["http_log_bytes"] = sum(f.stat().st_size for f in (OUT / "log-http").rglob("*.seg"))
    stop(server)

    # 2. Overload: small bounds, many large requests.
    server, addr = start_server(OUT / "log-overload", "--partitions", "8", "--max-inflight", str(32 << 20),
                                "--max-pending", str(16 << 20))
    log("overload: 64 connections, 20,000 readings a request, bounds 32 MiB in flight / 16 MiB pending")
    res = loadgen(addr, 64, 20_000, a.seconds)
    res["server_peak_rss_mib"] = peak_rss_mib(server.pid)
    log(f"  {res['readings_per_second']:,.0f} readings/s, {res['refused']} of {res['requests']} requests "
        f"refused with 429, server peak RSS {res['server_peak_rss_mib']:.0f} MiB")
    r["overload"] = res
    stop(server)

    # 3. and 4.: Mosquitto with persistence, and fleetscore's MQTT source behind it.
    if shutil.which("mosquitto_pub") and (shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()):
        n = a.mqtt_readings
        port = free_port()
        broker = start_broker(OUT / "broker-peer", port)
        # An offline persistent subscriber: the broker keeps every message for it.
        subprocess.run(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-c", "-i", "bench-offline", "-q", "1",
                        "-t", "sensors/#", "-W", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        log(f"peer: Mosquitto, {n:,} readings as QoS 1 messages from 4 publishers")
        secs, _ = publish_all(port, n)
        r["mosquitto"] = {"readings": n, "seconds": secs, "readings_per_second": n / secs,
                          "broker_peak_rss_mib": peak_rss_mib(broker.pid)}
        log(f"  {n / secs:,.0f} readings/s, broker peak RSS {r['mosquitto']['broker_peak_rss_mib']:.0f} MiB")
        stop(broker)

        port = free_port()
        broker = start_broker(OUT / "broker-fs", port)
        server, addr = start_server(OUT / "log-mqtt", "--partitions", "8", "--mqtt", f"mqtt://127.0.0.1:{port}",
                                    "--mqtt-client-id", "bench-fleetscore")
        for _ in range(100):
            if (stats(addr).get("mqtt") or {}).get("connected"):
                break
            time.sleep(0.1)
        log(f"fleetscore MQTT source: the same {a.mqtt_readings:,} readings through the broker into the log")
        t = time.monotonic()
        pub_secs, _ = publish_all(port, n)
        while stats(addr)["mqtt"]["accepted"] < n:
            if time.monotonic() - t > 300:
                raise SystemExit(f"error: the MQTT source stored {stats(addr)['mqtt']['accepted']:,} of {n:,} "
                                 "readings in 5 minutes")
            time.sleep(0.05)
        secs = time.monotonic() - t
        r["fleetscore_mqtt"] = {"readings": n, "seconds": secs, "publish_seconds": pub_secs,
                                "readings_per_second": n / secs,
                                "server_peak_rss_mib": peak_rss_mib(server.pid),
                                "broker_peak_rss_mib": peak_rss_mib(broker.pid)}
        log(f"  {n / secs:,.0f} readings/s durable in the log")
        stop(server)
        stop(broker)
    else:
        log("mosquitto not installed: the peer is skipped (scripts/services/mosquitto.sh install)")

    (OUT / "ingest-results.json").write_text(json.dumps(r, indent=2))
    section = report(r)
    print(section)
    if a.write:
        write_section(a.write, section, MARK_START, MARK_END)
        log(f"wrote the report into {a.write}")


def report(r):
    f = r["facts"]
    la = f["loadavg_start"]
    busy = la and la[0] > 0.5
    lines = [
        "## Ingest: readings over HTTP and MQTT into the durable log",
        "",
        f"Measured on {f['date']} by `scripts/bench/ingest.py`. Every number below is what that run measured; "
        "rerun the command to refresh this section.",
        "",
    ]
    if busy:
        lines += [f"**The machine was not idle when this run started (load average {la[0]:.2f} over 1 min): other "
                  "processes shared the cores, so the timings are low and noisy.**", ""]
    m = f["machine"]
    lines += [
        "- CPU: " + f"{m['cpu']}, {m['cores']} cores available; memory {m['mem_gib']:.1f} GiB; Linux {m['kernel']}",
        f"- fleetscore: commit {r['commit']}, `target/release/fleetscore` ({r['version']})",
        "- The load generator and the publishers run on the same 2 cores as the server or broker they load.",
        "- Reproduce: `bash scripts/bench/run-ingest.sh` (builds the release binary and the load generators "
        "`crates/ingest/examples/loadgen.rs` (HTTP) and `mqttgen.rs` (MQTT); installs Mosquitto if missing)",
        "",
        "### HTTP, durable acknowledgements",
        "",
        "`fleetscore ingest serve` (8 partitions) and the load generator: keep-alive connections, each posting "
        "JSON-lines batches of distinct readings back to back. A request's latency is until its 200, which the "
        "server sends only after the log's writer has written and `fdatasync`'d every partition the request "
        f"touched (group commit). {r['seconds']:.0f} s per row.",
        "",
        "| connections | readings per request | readings/s | requests/s | p50 latency | p99 latency | max latency |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in r["http"]:
        lines.append(f"| {h['connections']} | {h['batch']:,} | **{f_rate(h['readings_per_second'])}** | "
                     f"{f_rate(h['requests'] / h['seconds'])} | {h['p50_ms']:.1f} ms | {h['p99_ms']:.1f} ms | "
                     f"{h['max_ms']:.1f} ms |")
    lines += ["", f"Server peak RSS over all three: {r['http_server_peak_rss_mib']:.0f} MiB; the log grew to "
                  f"{r['http_log_bytes'] / 2**20:,.0f} MiB.", ""]
    o = r["overload"]
    lines += [
        "### Overload",
        "",
        f"64 connections posting 20,000 readings per request (about 1.3 MB each) at a server started with "
        "`--max-inflight 33554432 --max-pending 16777216`: requests beyond those bounds are refused at once with "
        "429 and `Retry-After` (the load generator waits 10 ms and retries) instead of being queued.",
        "",
        "| offered | readings/s stored | requests | refused with 429 | connection errors | server peak RSS |",
        "|---|---|---|---|---|---|",
        f"| 64 × 20,000 readings | {f_rate(o['readings_per_second'])} | {o['requests']:,} | {o['refused']:,} | "
        f"{o.get('errors', 0):,} | {o['server_peak_rss_mib']:.0f} MiB |",
        "",
    ]
    if "mosquitto" in r:
        p, q = r["mosquitto"], r["fleetscore_mqtt"]
        lines += [
            "### MQTT, and the peer",
            "",
            f"The same {p['readings']:,} readings, one per QoS 1 message, from 4 publishers "
            "(`crates/ingest/examples/mqttgen.rs`, rumqttc, 1,000 messages in flight each) into Mosquitto 2 "
            "(Debian) with persistence (`autosave_interval 1`, 1,000 in-flight messages per client, unbounded "
            "queue). Peer: the broker alone, keeping every message for an offline persistent subscriber; "
            "the time until every PUBACK. Mosquitto acknowledges before its data reaches disk (it snapshots "
            "once a second), so a crash can lose up to a second of acknowledged messages; fleetscore's "
            "acknowledgements come after the fsync. fleetscore: the same publishers into the same kind of "
            "broker, with `fleetscore ingest serve --mqtt` subscribed (QoS 1, persistent session); the time "
            "until every reading is durable in fleetscore's log and acknowledged to the broker.",
            "",
            "| setup | readings/s | wall | peak RSS |",
            "|---|---|---|---|",
            f"| Mosquitto alone (publish → PUBACK, no fsync) | {f_rate(p['readings_per_second'])} | "
            f"{p['seconds']:.2f} s | broker {p['broker_peak_rss_mib']:.0f} MiB |",
            f"| Mosquitto → fleetscore's MQTT source → log (fsync'd) | {f_rate(q['readings_per_second'])} | "
            f"{q['seconds']:.2f} s (publishing took {q['publish_seconds']:.2f} s) | fleetscore "
            f"{q['server_peak_rss_mib']:.0f} MiB, broker {q['broker_peak_rss_mib']:.0f} MiB |",
            "",
            f"Batched HTTP (the top table) against one-reading MQTT messages: fleetscore over HTTP with "
            f"{r['http'][-1]['batch']:,}-reading requests stores "
            f"{r['http'][-1]['readings_per_second'] / p['readings_per_second']:.1f}× the readings per second that "
            "Mosquitto acknowledges, and durably.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
