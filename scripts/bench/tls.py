#!/usr/bin/env python3
"""Benchmark the cost of encryption on ingest: readings/s and server CPU per reading over HTTPS
against plain HTTP, and consuming Kafka through TLS + SASL against plaintext, on one machine.

    python scripts/bench/tls.py [--write BENCHMARKS.md] [--seconds 8]

Normally run through scripts/bench/run-tls.sh, which builds the release binary, the load
generator and the Kafka gate first. Steps:

1. A test CA and a server certificate for localhost, made with the openssl command.
2. HTTP against HTTPS: `fleetscore ingest serve` on a fresh log, plain or with --tls-cert/
   --tls-key, loaded by crates/ingest/examples/loadgen.rs (keep-alive connections posting
   JSON-lines batches back to back; --tls-ca for HTTPS: one TLS session per connection) at two
   batch sizes; readings/s, latency, and the server's CPU seconds per reading (/proc).
3. Kafka: tansu (plaintext, in memory) holding the readings, and the relay of the Kafka tests
   (crates/fleetscore/examples/kafka_gate.rs) in front of it, either with TLS and SASL
   SCRAM-SHA-512 or in plaintext: the same relay both ways, so the difference is TLS + SASL.
   `fleetscore ingest serve --kafka` consumes everything into a fresh log; readings/s from
   joining the group to the last reading durable, and the server's CPU seconds per reading.

Raw results go to target/bench/tls/tls-results.json.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, f_rate, fleetscore_version, git_commit, run_facts, write_section  # noqa: E402

MARK_START = "<!-- bench:tls:start -->"
MARK_END = "<!-- bench:tls:end -->"
OUT = ROOT / "target" / "bench" / "tls"
# Where cargo put the release binaries (CARGO_TARGET_DIR if set).
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
FS = TARGET / "release" / "fleetscore"
LOADGEN = TARGET / "release" / "examples" / "loadgen"
GATE = TARGET / "release" / "examples" / "kafka_gate"
TICKS = os.sysconf("SC_CLK_TCK")
T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """User + system CPU seconds of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
        p.wait()


def start_server(log_dir, *extra):
    p = subprocess.Popen([str(FS), "ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir", str(log_dir),
                          "--partitions", "8", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline().strip()
    for scheme in ("http://", "https://"):
        if line.startswith("listening on " + scheme):
            return p, line.removeprefix("listening on " + scheme)
    p.kill()
    raise SystemExit(f"error: ingest serve said {line!r}")


def stats(addr):
    with urllib.request.urlopen(f"http://{addr}/v1/stats", timeout=10) as r:
        return json.loads(r.read())


def make_certs(d):
    d.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
        "-subj", "/CN=bench CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"), "-CAkey",
        str(d / "ca.key"), "-CAcreateserial", "-days", "30", "-extfile", str(d / "server.ext"),
        "-out", str(d / "server.pem"))


def http_row(tls, certs, connections, batch, seconds, n):
    extra = ["--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")] if tls else []
    server, addr = start_server(OUT / f"log-http-{n}", *extra)
    cpu0 = cpu_seconds(server.pid)
    cmd = [str(LOADGEN), "--addr", addr, "--connections", str(connections), "--batch", str(batch),
           "--seconds", str(seconds)]
    if tls:
        cmd += ["--tls-ca", str(certs / "ca.pem")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["server_cpu_seconds"] = cpu_seconds(server.pid) - cpu0
    res["tls"] = tls
    stop(server)
    shutil.rmtree(OUT / f"log-http-{n}", ignore_errors=True)
    return res


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


PRODUCE = r"""
import sys, json
from kafka import KafkaProducer
p = KafkaProducer(bootstrap_servers=sys.argv[1], acks="all", linger_ms=20, batch_size=1 << 20)
records, per = int(sys.argv[2]), int(sys.argv[3])
i = 0
for r in range(records):
    lines = []
    for _ in range(per):
        lines.append(json.dumps({"device": f"k{i % 997}", "tag": "t", "ts": 1767225600000 + i, "value": i % 100}))
        i += 1
    p.send("readings", "\n".join(lines).encode(), key=f"k{r % 997}".encode())
p.flush()
"""


def kafka_run(mode, gate_port, certs, readings, n):
    log_dir = OUT / f"log-kafka-{n}"
    if mode == "tls":
        extra = ["--kafka", f"kafkas://localhost:{gate_port}/readings", "--kafka-ca", str(certs / "ca.pem"),
                 "--kafka-sasl-mechanism", "SCRAM-SHA-512", "--kafka-username", "bench"]
    else:
        extra = ["--kafka", f"kafka://localhost:{gate_port}/readings"]
    env = dict(os.environ)
    env.pop("FLEETSCORE_KAFKA_PASSWORD", None)
    if mode == "tls":
        env["FLEETSCORE_KAFKA_PASSWORD"] = "bench-pw"
    p = subprocess.Popen([str(FS), "ingest", "serve", "--listen", "127.0.0.1:0", "--log-dir", str(log_dir),
                          "--partitions", "8", "--kafka-group", f"bench-{n}", *extra],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on http://"):
        raise SystemExit(f"error: ingest serve --kafka ({mode}) did not start: {line!r}")
    addr = line.removeprefix("listening on http://")
    deadline = time.monotonic() + 120
    while not (stats(addr).get("kafka") or {}).get("joined"):
        if time.monotonic() > deadline:
            raise SystemExit(f"error: the {mode} member did not join in 2 minutes")
        time.sleep(0.01)
    t, cpu0 = time.monotonic(), cpu_seconds(p.pid)
    while stats(addr)["kafka"]["accepted"] < readings:
        if time.monotonic() > deadline:
            raise SystemExit(f"error: the {mode} member stored {stats(addr)['kafka']['accepted']:,} of {readings:,}")
        time.sleep(0.01)
    secs, cpu = time.monotonic() - t, cpu_seconds(p.pid) - cpu0
    stop(p)
    shutil.rmtree(log_dir, ignore_errors=True)
    return {"mode": mode, "readings": readings, "seconds": secs, "readings_per_second": readings / secs,
            "server_cpu_seconds": cpu}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--write")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kafka-records", type=int, default=100_000)
    ap.add_argument("--kafka-per-record", type=int, default=10)
    ap.add_argument("--tansu", default=os.environ.get("FLEETSCORE_TEST_TANSU"))
    ap.add_argument("--python", default=os.environ.get("FLEETSCORE_TEST_PYTHON"))
    a = ap.parse_args()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    certs = OUT / "certs"
    make_certs(certs)
    r = {"facts": run_facts(), "commit": git_commit(), "version": fleetscore_version(FS), "http": [],
         "seconds": a.seconds, "kafka": []}

    # Rounds alternate HTTP and HTTPS, so that a neighbour's load falls on both alike; the
    # report takes each setting's median.
    n = 0
    r["rounds"] = a.rounds
    for connections, batch in [(8, 100), (8, 1000)]:
        for round_ in range(a.rounds):
            for tls in (False, True):
                n += 1
                log(f"{'HTTPS' if tls else 'HTTP'}: {connections} connections, {batch} readings a request, "
                    f"round {round_ + 1} of {a.rounds}")
                res = http_row(tls, certs, connections, batch, a.seconds, n)
                log(f"  {res['readings_per_second']:,.0f} readings/s, p50 {res['p50_ms']} ms, "
                    f"server CPU {res['server_cpu_seconds'] / res['readings'] * 1e6:.2f} µs a reading")
                r["http"].append(res)

    if a.tansu and a.python:
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        tansu = subprocess.Popen([a.tansu, "broker", "--listener-url", url, "--advertised-listener-url", url,
                                  "--storage-engine", "memory://tansu/"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        subprocess.run([a.tansu, "topic", "create", "--broker", url, "--partitions", "3", "readings"],
                       check=True, capture_output=True)
        readings = a.kafka_records * a.kafka_per_record
        log(f"Kafka: producing {readings:,} readings in {a.kafka_records:,} records")
        subprocess.run([a.python, "-c", PRODUCE, f"127.0.0.1:{port}", str(a.kafka_records),
                        str(a.kafka_per_record)], check=True)
        env = dict(os.environ, KAFKA_GATE_PASSWORD="bench-pw")
        gates = {}
        for mode in ("plaintext", "tls"):
            args = [str(GATE), "--upstream", f"127.0.0.1:{port}"]
            args += ["--plaintext"] if mode == "plaintext" else [
                "--cert", str(certs / "server.pem"), "--key", str(certs / "server.key"), "--user", "bench"]
            g = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            gates[mode] = (g, int(g.stdout.readline()))
        for mode in ("plaintext", "tls") * a.rounds:
            n += 1
            log(f"Kafka through the relay, {mode}")
            res = kafka_run(mode, gates[mode][1], certs, readings, n)
            log(f"  {res['readings_per_second']:,.0f} readings/s, "
                f"server CPU {res['server_cpu_seconds'] / readings * 1e6:.2f} µs a reading")
            r["kafka"].append(res)
        for g, _ in gates.values():
            stop(g)
        stop(tansu)
    else:
        log("FLEETSCORE_TEST_TANSU or FLEETSCORE_TEST_PYTHON not set: the Kafka rows are skipped")

    (OUT / "tls-results.json").write_text(json.dumps(r, indent=2))
    section = report(r)
    print(section)
    if a.write:
        write_section(a.write, section, MARK_START, MARK_END)
        log(f"wrote the report into {a.write}")


def within(plain, tls, ratio):
    """Whether a difference stands out of the run-to-run spread of the plaintext runs."""
    rates = [x["readings_per_second"] for x in plain]
    spread = (max(rates) - min(rates)) / statistics.median(rates)
    if abs(ratio - 1) <= spread:
        return f"within the {spread:.0%} spread between runs of the same setting, so not resolved here"
    return f"outside the {spread:.0%} spread between runs of the same setting"


def report(r):
    f = r["facts"]
    la = f["loadavg_start"]
    m = f["machine"]
    lines = [
        "## Ingest over TLS: the cost of encryption",
        "",
        f"Measured on {f['date']} by `scripts/bench/tls.py`. Every number below is what that run measured; "
        "rerun the command to refresh this section.",
        "",
    ]
    if la and la[0] > 0.5:
        lines += [f"**The machine was not idle when this run started (load average {la[0]:.2f} over 1 min): other "
                  "processes shared the cores, so the timings are low and noisy.**", ""]
    lines += [
        f"- CPU: {m['cpu']}, {m['cores']} cores available; memory {m['mem_gib']:.1f} GiB; Linux {m['kernel']}",
        f"- fleetscore: commit {r['commit']}, `target/release/fleetscore` ({r['version']})",
        "- Clients, relay and broker run on the same cores as the server they load.",
        "- Reproduce: `bash scripts/bench/run-tls.sh` (builds the release binary, `loadgen` and `kafka_gate`; "
        "the Kafka rows need tansu and kafka-python: `FLEETSCORE_TEST_TANSU`, `FLEETSCORE_TEST_PYTHON`, "
        "as `scripts/test` sets them)",
        "",
        "### HTTP against HTTPS",
        "",
        "`fleetscore ingest serve` (8 partitions, durable acknowledgements), plain or with `--tls-cert`/"
        "`--tls-key` (rustls, aws-lc-rs, TLS 1.3, ECDSA P-256 certificate), loaded by "
        "`crates/ingest/examples/loadgen.rs` with keep-alive connections (one TLS session each, so the "
        f"handshake is paid once per connection). {r['seconds']:.0f} s per row. Server CPU is its user + system "
        "time over the row, divided by the readings stored.",
        "",
        f"Each setting ran {r['rounds']} times, HTTP and HTTPS alternating; the table gives the median of "
        "each column over its runs, and every run's readings/s.",
        "",
        "| connections | readings per request | protocol | readings/s (median) | every run | p50 latency | p99 latency | server CPU per reading |",
        "|---|---|---|---|---|---|---|---|",
    ]
    med = statistics.median
    per_reading = lambda h: h["server_cpu_seconds"] / max(h["readings"], 1) * 1e6  # noqa: E731
    rows = {}
    for h in r["http"]:
        rows.setdefault((h["connections"], h["batch"], h["tls"]), []).append(h)
    for (connections, batch, tls), hs in rows.items():
        lines.append(f"| {connections} | {batch:,} | {'HTTPS' if tls else 'HTTP'} | "
                     f"**{f_rate(med(h['readings_per_second'] for h in hs))}** | "
                     f"{', '.join(f_rate(h['readings_per_second']) for h in hs)} | "
                     f"{med(h['p50_ms'] for h in hs):.1f} ms | {med(h['p99_ms'] for h in hs):.1f} ms | "
                     f"{med(per_reading(h) for h in hs):.2f} µs |")
    lines.append("")
    for (connections, batch, tls), hs in rows.items():
        if tls:
            continue
        ts = rows[(connections, batch, True)]
        ratio = med(h['readings_per_second'] for h in ts) / med(h['readings_per_second'] for h in hs)
        lines.append(f"- {batch:,} readings a request: HTTPS stores {ratio:.2f}× the readings per second of HTTP "
                     f"(medians; {within(hs, ts, ratio)}); the server's CPU per reading differs by "
                     f"{med(per_reading(h) for h in ts) - med(per_reading(h) for h in hs):+.2f} µs.")
    lines.append("")
    if r["kafka"]:
        k = r["kafka"]
        lines += [
            "### Kafka: TLS + SASL against plaintext",
            "",
            f"{k[0]['readings']:,} readings (JSON lines, 10 to a record) in a 3-partition topic of tansu, consumed by "
            "`fleetscore ingest serve --kafka` (a fresh group each time) through the relay of the Kafka tests "
            "(`crates/fleetscore/examples/kafka_gate.rs`): with TLS and SASL SCRAM-SHA-512 (`kafkas://`), or the "
            "same relay in plaintext (`kafka://`), so the difference is the encryption and the authentication. "
            "Timed from joining the group to the last reading durable in the log (offsets committed once a "
            "second); the runs alternate.",
            "",
            "| run | transport | readings/s | wall | server CPU per reading |",
            "|---|---|---|---|---|",
        ]
        for i, x in enumerate(k, 1):
            lines.append(f"| {i} | {'TLS + SASL' if x['mode'] == 'tls' else 'plaintext'} | "
                         f"**{f_rate(x['readings_per_second'])}** | {x['seconds']:.2f} s | "
                         f"{x['server_cpu_seconds'] / x['readings'] * 1e6:.2f} µs |")
        plain = [x for x in k if x["mode"] == "plaintext"]
        tls = [x for x in k if x["mode"] == "tls"]
        med = statistics.median
        per = lambda xs: med(x["server_cpu_seconds"] / x["readings"] * 1e6 for x in xs)  # noqa: E731
        rate = lambda xs: med(x["readings_per_second"] for x in xs)  # noqa: E731
        lines += ["", f"Medians: TLS + SASL consumes {rate(tls) / rate(plain):.2f}× the readings per second of "
                      f"plaintext ({within(plain, tls, rate(tls) / rate(plain))}); the server's CPU per reading "
                      f"differs by {per(tls) - per(plain):+.2f} µs.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
