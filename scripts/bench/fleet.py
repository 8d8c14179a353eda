#!/usr/bin/env python3
"""Benchmark a whole fleet run: fleetscore vs "the Python way", on this machine.

    python scripts/bench/fleet.py --devices N [--devices M ...] [--out-dir DIR]
                                  [--write BENCHMARKS.md] [--fleetscore PATH]
                                  [--repeat K] [--repeat-max-devices N]

Normally run through scripts/bench/run-fleet.sh, which builds the venv and the
release binary first. For each N:

1. A synthetic fleet (deterministic, seeded), cached in DIR/fleet-N and reused when
   complete: N devices x 5 tags, one hour of 5-second readings per sensor (720 each)
   with a few injected anomalies (spikes, and a level shift on a few sensors), in the
   long shape TS, Device, Tag, Value, as ONE Parquet file; and one
   Pipeline(StandardScaler, OneClassSVM(rbf)) per sensor, fitted by scikit-learn on
   that sensor's own training rows (separate from the scored hour) and pickled
   (protocol 4) as models/model_{device}_{tag}. The models are fitted by
   --jobs processes (default 2) at nice 5.
2. fleetscore, each step a separate process timed for wall clock and peak RSS
   (/usr/bin/time -v) on a fresh store: `models import`, `data import`, `run` (the
   headline number), `runs show --json` (checked: every model scored, every row, no
   failure) and `predictions export --format parquet`. For N <= --repeat-max-devices
   (default 1,000), `data import`, `run` and `predictions export` are each the best of
   --repeat tries (default 3; the other tries of `data import` go into stores of their
   own); above it, each runs once.
3. The Python way: scripts/bench/python_fleet.py (read the Parquet once with pandas,
   group by sensor, unpickle each model, decision_function + predict, write one
   Parquet file), one process, timed the same way and tried as often as fleetscore's
   steps.
4. fleetscore's predictions vs the Python loop's, joined by (device, tag, ts):
   anomaly flags (anomaly == 1 <=> predict == -1) and scores.
5. A Markdown report: printed, and with --write, put between the markers
   <!-- bench:fleet:start --> and <!-- bench:fleet:end --> of that file.

Nothing is deleted until every step is measured (see delete_later). Every number in
the report is measured by this run; raw results go to DIR/fleet-results.json.
"""

import argparse
import datetime
import json
import multiprocessing
import os
import pickle
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    git_commit,
    run_facts,
    div,
    f_rate,
    f_ratio,
    f_sci,
    fleetscore_version,
    loadavg,
    write_section,
)

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy
import sklearn
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MARK_START = "<!-- bench:fleet:start -->"
MARK_END = "<!-- bench:fleet:end -->"

# --- the synthetic fleet (changing any of these invalidates the cached fleets) ---
GEN_VERSION = 1
SEED = 20260101
TAGS = {  # tag: (what it measures, typical level, typical noise)
    1: ("temperature", 20.0, 1.5),
    2: ("pressure", 1013.0, 4.0),
    3: ("humidity", 45.0, 5.0),
    4: ("vibration", 4.0, 0.3),
    5: ("current", 12.0, 0.8),
}
READINGS = 720  # one hour of 5-second readings per sensor
STEP_MS = 5_000
START = datetime.datetime(2026, 1, 1, 0, 0, 0, tzinfo=datetime.timezone.utc)
WINDOW_FROM = "2026-01-01 00:00:00"
WINDOW_TO = "2026-01-01 01:00:00"
TRAIN_ROWS = 200  # each model's own training rows, separate from the scored hour
NU = 0.03
GAMMA = 0.05
SPIKE_RATE = 0.0005  # share of readings replaced by a 6-10 sigma spike
SHIFT_SENSORS = 0.001  # share of sensors (at least 1) with a level shift ...
SHIFT_FROM = 600  # ... of 4-6 sigma over their last 10 minutes
CHUNK_ROWS = 4_000_000  # rows generated (and written as a row group) at a time
REL_FLOOR = 1e-6  # relative score differences are taken over rows with |score| >= this
BUSY_LOAD = 0.5

_T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The synthetic fleet
# ---------------------------------------------------------------------------

def fleet_params(n_devices):
    return {
        "gen_version": GEN_VERSION, "seed": SEED, "devices": n_devices, "tags": len(TAGS),
        "readings_per_sensor": READINGS, "step_ms": STEP_MS, "start": START.isoformat(),
        "train_rows": TRAIN_ROWS, "nu": NU, "gamma": GAMMA, "spike_rate": SPIKE_RATE,
        "shift_sensors": SHIFT_SENSORS, "shift_from": SHIFT_FROM, "chunk_rows": CHUNK_ROWS,
        "pickle_protocol": 4, "sklearn": sklearn.__version__, "numpy": np.__version__,
    }


def device_name(d):
    return f"dev{d:05d}"


def ts_strings():
    return [(START + datetime.timedelta(milliseconds=i * STEP_MS)).strftime("%Y-%m-%d %H:%M:%S.000")
            for i in range(READINGS)]


def sensor_levels(n_devices):
    """Per sensor (index device*5 + tag-1): mean and noise, around its tag's typical values."""
    rng = np.random.default_rng([SEED, 1, n_devices])
    base = np.tile(np.array([TAGS[t][1] for t in sorted(TAGS)]), n_devices)
    sd = np.tile(np.array([TAGS[t][2] for t in sorted(TAGS)]), n_devices)
    mu = base + rng.normal(0.0, 3.0, size=base.size) * sd
    sigma = sd * rng.uniform(0.6, 1.4, size=sd.size)
    return mu, sigma


def make_ocsvm():
    return Pipeline([("scaler", StandardScaler()),
                     ("ocsvm", OneClassSVM(kernel="rbf", nu=NU, gamma=GAMMA))])


def _fit_chunk(task):
    """Worker: fit and pickle the models of devices [lo, hi)."""
    models_dir, lo, hi, mu, sigma = task
    n_tags = len(TAGS)
    svs, nbytes = [], 0
    for d in range(lo, hi):
        for t in range(1, n_tags + 1):
            i = (d - lo) * n_tags + (t - 1)
            rng = np.random.default_rng([SEED, 2, d, t])
            x = np.round(mu[i] + sigma[i] * rng.standard_normal((TRAIN_ROWS, 1)), 2)
            pipe = make_ocsvm().fit(x)
            blob = pickle.dumps(pipe, protocol=4)
            with open(os.path.join(models_dir, f"model_{device_name(d)}_{t}"), "wb") as f:
                f.write(blob)
            svs.append(int(pipe[-1].support_vectors_.shape[0]))
            nbytes += len(blob)
    return svs, nbytes


def _nice_worker():
    try:
        os.nice(5)
    except OSError:
        pass


def fit_models(models_dir, n_devices, mu, sigma, jobs):
    n_tags = len(TAGS)
    per_task = 25
    tasks = [(str(models_dir), lo, min(lo + per_task, n_devices),
              mu[lo * n_tags:min(lo + per_task, n_devices) * n_tags],
              sigma[lo * n_tags:min(lo + per_task, n_devices) * n_tags])
             for lo in range(0, n_devices, per_task)]
    svs, nbytes, done = [], 0, 0
    t = time.perf_counter()
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes=jobs, initializer=_nice_worker) as pool:
        for s, b in pool.imap_unordered(_fit_chunk, tasks):
            svs.extend(s)
            nbytes += b
            done += 1
            if done % max(1, len(tasks) // 10) == 0 or done == len(tasks):
                log(f"  fitted {len(svs):,} of {n_devices * n_tags:,} models "
                    f"({time.perf_counter() - t:.0f} s)")
    return np.array(svs), nbytes, time.perf_counter() - t


def write_data(path, n_devices, mu, sigma):
    """Write the scored hour as one Parquet file; returns (rows, injected keys)."""
    n_tags = len(TAGS)
    S = n_devices * n_tags
    ts_dict = pa.array(ts_strings(), pa.string())
    dev_dict = pa.array([device_name(d) for d in range(n_devices)], pa.string())
    rng_shift = np.random.default_rng([SEED, 4, n_devices])
    n_shift = max(1, int(round(S * SHIFT_SENSORS)))
    shifted = np.zeros(S, dtype=bool)
    shifted[rng_shift.choice(S, size=n_shift, replace=False)] = True
    shift = np.where(shifted, rng_shift.uniform(4.0, 6.0, size=S), 0.0)

    schema = pa.schema([("TS", pa.string()), ("Device", pa.string()), ("Tag", pa.int64()),
                        ("Value", pa.float64())])
    per_chunk = max(1, min(READINGS, CHUNK_ROWS // S))
    injected, rows = [], 0
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(tmp, schema, compression="snappy") as w:
        for c, t0 in enumerate(range(0, READINGS, per_chunk)):
            t1 = min(READINGS, t0 + per_chunk)
            rng = np.random.default_rng([SEED, 3, n_devices, c])
            t_idx = np.repeat(np.arange(t0, t1, dtype=np.int64), S)
            s_idx = np.tile(np.arange(S, dtype=np.int64), t1 - t0)
            v = mu[s_idx] + sigma[s_idx] * rng.standard_normal(t_idx.size)
            spike = rng.random(t_idx.size) < SPIKE_RATE
            k = int(spike.sum())
            sign = np.where(rng.random(k) < 0.5, -1.0, 1.0)
            v[spike] = mu[s_idx[spike]] + sign * rng.uniform(6.0, 10.0, size=k) * sigma[s_idx[spike]]
            level = shifted[s_idx] & (t_idx >= SHIFT_FROM)
            v[level] += shift[s_idx[level]] * sigma[s_idx[level]]
            v = np.round(v, 2)
            injected.append(s_idx[spike | level] * READINGS + t_idx[spike | level])
            table = pa.table({
                "TS": pc.take(ts_dict, pa.array(t_idx)),
                "Device": pc.take(dev_dict, pa.array(s_idx // n_tags)),
                "Tag": pa.array(s_idx % n_tags + 1),
                "Value": pa.array(v),
            }, schema=schema)
            w.write_table(table)
            rows += table.num_rows
            del table, t_idx, s_idx, v
    tmp.replace(path)
    return rows, np.sort(np.concatenate(injected)), n_shift


def ensure_fleet(fleet_dir, n_devices, jobs):
    """The cached fleet for N devices, generated when missing or incomplete."""
    params = fleet_params(n_devices)
    manifest = fleet_dir / "fleet.json"
    models_dir = fleet_dir / "models"
    data_path = fleet_dir / "data.parquet"
    n_models = n_devices * len(TAGS)
    if manifest.exists():
        try:
            m = json.loads(manifest.read_text())
        except ValueError:
            m = None
        if (m and m.get("params") == params and data_path.exists()
                and (fleet_dir / "injected.npy").exists() and models_dir.is_dir()
                and sum(1 for _ in os.scandir(models_dir)) == n_models):
            log(f"N={n_devices}: using the cached fleet in {fleet_dir}")
            m["cached"] = True
            return m
    log(f"N={n_devices}: generating the fleet in {fleet_dir}")
    if fleet_dir.exists():
        shutil.rmtree(fleet_dir)
    models_dir.mkdir(parents=True)
    mu, sigma = sensor_levels(n_devices)

    t = time.perf_counter()
    rows, injected, n_shift = write_data(data_path, n_devices, mu, sigma)
    data_seconds = time.perf_counter() - t
    np.save(fleet_dir / "injected.npy", injected)
    log(f"  data: {rows:,} rows -> {data_path} ({data_path.stat().st_size / 2**20:.0f} MiB, "
        f"{data_seconds:.0f} s); {injected.size:,} injected anomalous readings")

    svs, nbytes, fit_seconds = fit_models(models_dir, n_devices, mu, sigma, jobs)
    m = {
        "params": params,
        "rows": rows,
        "models": int(svs.size),
        "data_bytes": data_path.stat().st_size,
        "model_bytes": nbytes,
        "support_vectors": {"min": int(svs.min()), "median": float(np.median(svs)),
                            "mean": float(svs.mean()), "max": int(svs.max())},
        "injected_readings": int(injected.size),
        "shifted_sensors": n_shift,
        "data_seconds": data_seconds,
        "fit_seconds": fit_seconds,
        "fit_jobs": jobs,
    }
    manifest.write_text(json.dumps(m, indent=2) + "\n")
    m["cached"] = False
    return m


def ensure_csv(fleet_dir):
    """The fleet's readings as CSV (`data.csv`: the same rows and columns, unquoted, as pandas'
    `to_csv` writes them), written from data.parquet when missing or older."""
    import pyarrow.csv as pacsv
    src, dst = fleet_dir / "data.parquet", fleet_dir / "data.csv"
    if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
        return dst
    log(f"  writing {dst} from {src.name}")
    tmp = dst.with_name(dst.name + ".tmp")
    pf = pq.ParquetFile(src)
    with open(tmp, "wb") as f:
        f.write((",".join(pf.schema_arrow.names) + "\n").encode())
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        with pacsv.CSVWriter(f, pf.schema_arrow, write_options=options) as w:
            for batch in pf.iter_batches(batch_size=1_000_000):
                w.write_batch(batch)
    tmp.replace(dst)
    return dst


def pandas_steps(models_dir, data_parquet, data_csv, py_predictions, tmp_dir):
    """The pandas / pickle equivalent of each fleetscore step, timed in this (warm) process:
    read the readings (`pd.read_parquet`, `pd.read_csv`), write the predictions
    (`DataFrame.to_parquet`, `DataFrame.to_csv`), and read + unpickle every model file."""
    import gc
    out = {}

    def timed(name, fn):
        gc.collect()
        load = loadavg()
        t = time.perf_counter()
        result = fn()
        out[name] = {"wall_seconds": time.perf_counter() - t, "loadavg_before": load}
        log(f"  pandas {name}: {out[name]['wall_seconds']:.2f} s")
        return result

    df = timed("read_parquet", lambda: pd.read_parquet(data_parquet))
    out["read_parquet"]["rows"] = len(df)
    del df
    df = timed("read_csv", lambda: pd.read_csv(data_csv))
    out["read_csv"]["rows"] = len(df)
    del df
    df = pd.read_parquet(py_predictions)
    parquet_out, csv_out = tmp_dir / "pandas.parquet", tmp_dir / "pandas.csv"
    timed("to_parquet", lambda: df.to_parquet(parquet_out, index=False))
    out["to_parquet"]["rows"] = len(df)
    timed("to_csv", lambda: df.to_csv(csv_out, index=False))
    out["to_csv"]["rows"] = len(df)
    del df
    parquet_out.unlink()
    csv_out.unlink()

    def unpickle_all():
        n = 0
        for entry in os.scandir(models_dir):
            with open(entry.path, "rb") as f:
                pickle.loads(f.read())
            n += 1
        return n

    n = timed("unpickle_models", unpickle_all)
    out["unpickle_models"]["models"] = n
    gc.collect()
    return out


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

TIME_V = "/usr/bin/time"
_RSS_SHIM = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_measured(cmd, name):
    """Run cmd as a separate process: wall seconds, peak RSS (KiB), exit code, output."""
    log(f"  {name}: {shlex.join(cmd)}")
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        if os.access(TIME_V, os.X_OK):
            full = [TIME_V, "-v", "-o", tf.name] + cmd
        else:  # a fresh shim process, so RUSAGE_CHILDREN covers this one command only
            full = [sys.executable, "-c", _RSS_SHIM] + cmd
        # The files earlier steps wrote go to disk first, not during this one.
        os.sync()
        load = loadavg()
        t = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, text=True)
        wall = time.perf_counter() - t
        timing = Path(tf.name).read_text() if os.access(TIME_V, os.X_OK) else proc.stderr
    m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", timing) or \
        re.search(r"MAXRSS_KIB (\d+)", timing)
    res = {"cmd": shlex.join(cmd), "wall_seconds": wall, "peak_rss_kib": int(m.group(1)) if m else None,
           "rc": proc.returncode, "stdout": proc.stdout[-4000:], "stderr": proc.stderr[-4000:],
           "loadavg_before": load}
    log(f"  {name}: {wall:.2f} s, peak RSS {f_mib(res['peak_rss_kib'])}, exit {proc.returncode}")
    return res, proc.stdout


def best_of(k, name, attempt):
    """The fastest of k tries of a step: attempt(i) makes try i (run_measured's result and
    output); every try must succeed. The kept result lists every try's wall time."""
    tries = []
    for i in range(k):
        res, out = attempt(i)
        check_ok(res, name)
        tries.append((res, out))
    res, out = min(tries, key=lambda t: t[0]["wall_seconds"])
    res = dict(res, walls=[t[0]["wall_seconds"] for t in tries])
    if k > 1:
        log(f"  {name}: best of {k}: {res['wall_seconds']:.2f} s")
    return res, out


def check_ok(step, name):
    if step["rc"] != 0:
        raise SystemExit(f"error: {name} failed (exit {step['rc']}):\n{step['stdout']}\n{step['stderr']}")


def find_parquet(folder):
    files = sorted(Path(folder).rglob("*.parquet"))
    if len(files) != 1:
        raise SystemExit(f"error: expected one Parquet file in {folder}, found {[str(f) for f in files]}")
    return files[0]


def keys_of(device, tag, ts_index, n_devices):
    """Dense key (device*5 + tag-1)*720 + t, or -1 where the row is not one of the fleet's."""
    dev = pc.fill_null(pc.index_in(device, value_set=pa.array(
        [device_name(d) for d in range(n_devices)], pa.string())), -1).to_numpy()
    tag = np.asarray(tag, dtype=np.int64)
    ok = (dev >= 0) & (tag >= 1) & (tag <= len(TAGS)) & (ts_index >= 0) & (ts_index < READINGS)
    return np.where(ok, (dev * len(TAGS) + tag - 1) * READINGS + ts_index, -1)


def dense(keys, total, *cols):
    """Scatter columns into arrays indexed by key; returns (count per key, arrays)."""
    good = keys >= 0
    k = keys[good]
    count = np.bincount(k, minlength=total)
    out = []
    for c, fill in cols:
        a = np.full(total, fill, dtype=np.asarray(c).dtype if fill == 0 else np.float64)
        a[k] = np.asarray(c)[good]
        out.append(a)
    return int((~good).sum()), count, out


def compare_predictions(fs_path, py_path, n_devices, injected):
    """Join fleetscore's export and the Python loop's output by (device, tag, ts)."""
    total = n_devices * len(TAGS) * READINGS
    start_ms = int(START.timestamp() * 1000)

    fs = pq.read_table(fs_path, columns=["device", "tag", "ts", "value", "score", "anomaly"])
    ts_ms = pc.cast(pc.cast(fs["ts"], pa.timestamp("ms", tz="UTC")), pa.int64()).to_numpy()
    off = ts_ms - start_ms
    fs_t = np.where(off % STEP_MS == 0, off // STEP_MS, -1)
    fs_keys = keys_of(fs["device"], pc.cast(fs["tag"], pa.int64()).to_numpy(), fs_t, n_devices)
    fs_rows = fs.num_rows
    fs_bad, fs_count, (fs_value, fs_score, fs_anom) = dense(
        fs_keys, total, (fs["value"].to_numpy(), np.nan), (fs["score"].to_numpy(), np.nan),
        (fs["anomaly"].to_numpy().astype(np.int8), 0))
    del fs, ts_ms, off, fs_t, fs_keys

    py = pq.read_table(py_path, columns=["TS", "Device", "Tag", "Value", "score", "prediction"])
    py_t = pc.fill_null(pc.index_in(py["TS"], value_set=pa.array(ts_strings(), pa.string())), -1).to_numpy()
    py_keys = keys_of(py["Device"], py["Tag"].to_numpy(), py_t, n_devices)
    py_rows = py.num_rows
    py_bad, py_count, (py_value, py_score, py_pred) = dense(
        py_keys, total, (py["Value"].to_numpy(), np.nan), (py["score"].to_numpy(), np.nan),
        (py["prediction"].to_numpy().astype(np.int8), 0))
    del py, py_t, py_keys

    both = (fs_count == 1) & (py_count == 1)
    fs_flag = fs_anom[both] == 1
    py_flag = py_pred[both] == -1
    differ = fs_flag != py_flag
    ref = py_score[both]
    diff = np.abs(fs_score[both] - ref)
    big = np.abs(ref) >= REL_FLOOR
    rel = diff[big] / np.abs(ref[big])
    inj = injected[(injected >= 0) & (injected < total)]
    res = {
        "fleetscore_rows": fs_rows,
        "python_rows": py_rows,
        "expected_rows": total,
        "joined_rows": int(both.sum()),
        "fleetscore_unmatched_rows": fs_bad + int((fs_count[py_count == 0]).sum()),
        "python_unmatched_rows": py_bad + int((py_count[fs_count == 0]).sum()),
        "fleetscore_duplicate_keys": int((fs_count > 1).sum()),
        "python_duplicate_keys": int((py_count > 1).sum()),
        "value_mismatches": int((fs_value[both] != py_value[both]).sum()),
        "fleetscore_anomalies": int(fs_flag.sum()),
        "python_anomalies": int(py_flag.sum()),
        "differing_flags": int(differ.sum()),
        "max_abs_score_where_differing": float(np.abs(ref[differ]).max()) if differ.any() else None,
        "max_abs_diff": float(diff.max()) if diff.size else None,
        "max_rel_diff": float(rel.max()) if rel.size else None,
        "nan_scores": int(np.isnan(fs_score[both]).sum() + np.isnan(ref).sum()),
        "injected_readings": int(inj.size),
        "injected_flagged_fleetscore": int((fs_anom[inj] == 1).sum()),
        "injected_flagged_python": int((py_pred[inj] == -1).sum()),
    }
    res["equal"] = (res["joined_rows"] == total == fs_rows == py_rows and res["differing_flags"] == 0
                    and res["value_mismatches"] == 0 and res["nan_scores"] == 0
                    and (res["max_rel_diff"] or 0.0) <= 1e-9)
    return res


def bench_n(n_devices, fs, out_dir, jobs, keep, repeat):
    fleet_dir = out_dir / f"fleet-{n_devices}"
    fleet = ensure_fleet(fleet_dir, n_devices, jobs)
    models_dir = fleet_dir / "models"
    data_path = fleet_dir / "data.parquet"
    n_models = n_devices * len(TAGS)
    rows = n_devices * len(TAGS) * READINGS
    if fleet["rows"] != rows or fleet["models"] != n_models:
        raise SystemExit(f"error: the fleet in {fleet_dir} has {fleet['rows']} rows / {fleet['models']} models")

    work = out_dir / f"work-{n_devices}"
    if work.exists():
        # Moved aside, deleted once everything is measured (see delete_later).
        delete_later(work)
    work.mkdir(parents=True)
    store = work / "store"
    fsx = [str(fs), "--store", str(store)]
    r = {"devices": n_devices, "models": n_models, "rows": rows, "fleet": fleet, "steps": {}}
    steps = r["steps"]

    log(f"N={n_devices}: fleetscore ({n_models:,} models, {rows:,} rows)")
    steps["models_import"], _ = run_measured(
        fsx + ["models", "import", str(models_dir), "--pattern", "model_{device}_{tag}"], "models import")
    check_ok(steps["models_import"], "models import")
    # The batch path's steps (and the Python loop below) are each the best of `repeat` tries:
    # the first try is the store the rest of the benchmark uses; the other tries of `data import`
    # go into stores of their own, and those of `run` and `predictions export` score and export
    # again under other names.
    def data_import(i):
        into = store if i == 0 else work / f"store-rep{i}"
        return run_measured([str(fs), "--store", str(into), "data", "import", str(data_path),
                             "--time-column", "TS", "--device-column", "Device", "--tag-column", "Tag",
                             "--value-column", "Value"], "data import")
    steps["data_import"], _ = best_of(repeat, "data import", data_import)
    runs, run_rcs = [], []

    def run_once(i):
        res, out = run_measured(fsx + ["run", "--from", WINDOW_FROM, "--to", WINDOW_TO]
                                + ([] if i == 0 else ["--run-id", f"bench-rep{i}"]), "run")
        runs.append(out)
        run_rcs.append(res["rc"])
        # Exit 2 is a run that scored with model failures: reported below, with the record's.
        return (dict(res, rc=0) if res["rc"] == 2 else res), out
    steps["run"], _ = best_of(repeat, "run", run_once)
    out = runs[0]
    m = re.search(r"^run (\S+?):", out, re.M)
    if not m:
        raise SystemExit(f"error: no `run <id>:` line in the run's output:\n{out}")
    run_id = m.group(1)
    show = subprocess.run(fsx + ["runs", "show", run_id, "--json"], capture_output=True, text=True)
    if show.returncode != 0:
        raise SystemExit(f"error: runs show {run_id} failed:\n{show.stderr}")
    rec = json.loads(show.stdout)
    r["run_id"] = run_id
    r["record"] = rec
    problems = []
    if rec.get("models_scored") != n_models:
        problems.append(f"models_scored {rec.get('models_scored')} != {n_models}")
    if rec.get("rows") != rows:
        problems.append(f"rows {rec.get('rows')} != {rows}")
    if rec.get("models_failed") or rec.get("failures") or rec.get("tasks_failed") or rec.get("task_failures"):
        problems.append(f"failures: models_failed {rec.get('models_failed')}, tasks_failed "
                        f"{rec.get('tasks_failed')}, {len(rec.get('failures') or [])} failure records")
    if rec.get("status") != "succeeded":
        problems.append(f"status {rec.get('status')}")
    if any(run_rcs):
        problems.append(f"run exit codes {run_rcs}")
    r["run_problems"] = problems
    log(f"  run {run_id}: {rec.get('models_scored')} models scored, {rec.get('rows')} rows, "
        f"{rec.get('anomalies')} anomalies, execute {rec.get('execute_seconds', 0):.2f} s"
        + (f"; PROBLEMS: {'; '.join(problems)}" if problems else "; verified"))

    export_dir = work / "export"
    steps["export"], _ = best_of(repeat, "predictions export", lambda i: run_measured(
        fsx + ["predictions", "export", "--run", run_id, "--format", "parquet", "--output",
               str(export_dir if i == 0 else work / f"export-rep{i}")], "predictions export"))
    export_csv_dir = work / "export-csv"
    steps["export_csv"], _ = run_measured(
        fsx + ["predictions", "export", "--run", run_id, "--format", "csv", "--output", str(export_csv_dir)],
        "predictions export --format csv")
    check_ok(steps["export_csv"], "predictions export --format csv")
    csv_files = sum(1 for _ in os.scandir(export_csv_dir))
    if csv_files != n_models:
        raise SystemExit(f"error: predictions export --format csv wrote {csv_files} files, not {n_models}")
    delete_later(export_csv_dir)

    # The same readings from CSV, into a store of their own.
    data_csv = ensure_csv(fleet_dir)
    store_csv = work / "store-csv"
    steps["data_import_csv"], _ = run_measured(
        [str(fs), "--store", str(store_csv), "data", "import", str(data_csv), "--time-column", "TS",
         "--device-column", "Device", "--tag-column", "Tag", "--value-column", "Value"], "data import (CSV)")
    check_ok(steps["data_import_csv"], "data import (CSV)")
    if f"imported {rows} readings" not in steps["data_import_csv"]["stderr"]:
        raise SystemExit(f"error: data import (CSV) did not import {rows} readings:\n"
                         f"{steps['data_import_csv']['stderr']}")
    delete_later(store_csv)

    log(f"N={n_devices}: the Python loop")
    py_dir = work / "python"
    steps["python"], _ = best_of(repeat, "python_fleet.py", lambda i: run_measured(
        [sys.executable, str(HERE / "python_fleet.py"), str(models_dir), str(data_path), str(py_dir)],
        "python_fleet.py"))

    log(f"N={n_devices}: the pandas equivalents of each step, in this process")
    r["pandas"] = pandas_steps(models_dir, data_path, data_csv, py_dir / "predictions.parquet", work)

    log(f"N={n_devices}: comparing predictions")
    t = time.perf_counter()
    r["agreement"] = compare_predictions(find_parquet(export_dir), py_dir / "predictions.parquet", n_devices,
                                         np.load(fleet_dir / "injected.npy"))
    a = r["agreement"]
    log(f"  {a['joined_rows']:,} of {rows:,} rows joined, {a['differing_flags']} differing flags, "
        f"max rel score diff {a['max_rel_diff']}, equal: {a['equal']} ({time.perf_counter() - t:.0f} s)")
    r["store_bytes"] = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
    if not keep:
        delete_later(work)
    return r


# Folders to delete once every step is measured. On this machine's file system (ext4 without
# a journal), creating files soon after deleting many others can make the kernel's inode
# allocator search past the recently deleted inodes (`recently_deleted` in ext4): the
# benchmark's own deletions would land in the time of the step after them. So nothing is
# deleted until the end.
_TRASH = []


def delete_later(path):
    trash = path.with_name(f"{path.name}.trash-{os.getpid()}-{len(_TRASH)}")
    path.rename(trash)
    _TRASH.append(trash)


def empty_trash(out_dir):
    """Deletes this run's folders, and those an interrupted run left."""
    _TRASH.extend(out_dir.glob("work-*.trash-*"))
    while _TRASH:
        shutil.rmtree(_TRASH.pop(), ignore_errors=True)


# ---------------------------------------------------------------------------
# Machine and versions
# ---------------------------------------------------------------------------



# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def f_secs(x):
    if x is None:
        return "—"
    if x >= 60:
        return f"{x:.0f} s ({x / 60:.1f} min)"
    if x >= 1:
        return f"{x:.2f} s"
    return f"{x * 1e3:.0f} ms"


def f_mib(kib):
    if kib is None:
        return "—"
    return f"{kib / 2**20:.2f} GiB" if kib >= 2**20 else f"{kib / 1024:.0f} MiB"


def f_bytes(n):
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    return f"{n / (1 << 10):.0f} KiB"


def batch_path_seconds(x):
    """data import (Parquet) + run + predictions export (Parquet): the job once models are registered."""
    s = x["steps"]
    return s["data_import"]["wall_seconds"] + s["run"]["wall_seconds"] + s["export"]["wall_seconds"]


def targets(x):
    """Issue 14's targets for one fleet size: (what, measured value, as shown, goal, higher is better)."""
    s, rows = x["steps"], x["rows"]
    rate = lambda key: rows / s[key]["wall_seconds"]
    out = [
        ("`data import` from Parquet ≥ 5 M readings/s", rate("data_import"),
         f"{f_rate(rate('data_import'))} readings/s", 5e6, True),
        ("`data import` from CSV ≥ 2 M readings/s", rate("data_import_csv"),
         f"{f_rate(rate('data_import_csv'))} readings/s", 2e6, True),
        ("`predictions export` (Parquet) ≥ 5 M rows/s", rate("export"), f"{f_rate(rate('export'))} rows/s", 5e6, True),
        ("`predictions export` (CSV) ≥ 5 M rows/s", rate("export_csv"),
         f"{f_rate(rate('export_csv'))} rows/s", 5e6, True),
    ]
    if x["models"] >= 50_000:
        w = s["models_import"]["wall_seconds"]
        out.append((f"`models import` of {x['models']:,} files < 5 s", w, f_secs(w), 5.0, False))
    if x["devices"] == 1000:
        ratio = s["python"]["wall_seconds"] / batch_path_seconds(x)
        out.append(("batch path ≥ 15× the Python loop", ratio, f_ratio(ratio), 15.0, True))
    return out


def repeats(r):
    """How often the batch path's steps and the Python loop were measured."""
    k, top = r.get("repeat", 1), r.get("repeat_max_devices", 0)
    if k <= 1 or not any(x["devices"] <= top for x in r["results"]):
        return "each measured once"
    return (f"for N ≤ {top:,} the best of {k} tries on both sides (`data import`, `run` and `predictions "
            f"export --format parquet`, and the Python loop; every try's time is in the results JSON), "
            f"above it each measured once")


def render(r):
    L = []
    add = L.append
    c = r["cores"]
    results = r["results"]
    add("## Fleet run: fleetscore vs the Python way")
    add("")
    add(f"Measured on {r['date']} by `scripts/bench/fleet.py` in {f_secs(r['total_seconds'])} "
        f"(including generating and fitting any fleet not cached from an earlier run). Every number below is what that run measured; "
        "rerun the command to refresh this section.")
    la = r["loadavg_start"]
    if la is not None and la[0] > BUSY_LOAD:
        add("")
        add(f"**The machine was not idle when this run started (load average {la[0]:.2f} over 1 min): "
            "other processes shared the cores, so the timings are low and noisy.**")
    if "debug" in Path(r["versions"]["fleetscore_binary"]).parts:
        add("")
        add("**fleetscore was a debug build in this run: its timings say nothing about its speed.**")
    bad = [x for x in results if x["run_problems"] or not x["agreement"]["equal"]]
    for x in bad:
        add("")
        add(f"**N={x['devices']:,}: " + "; ".join(
            x["run_problems"] + ([] if x["agreement"]["equal"] else
                                 ["fleetscore's predictions differ from the Python loop's (see below)"]))
            + ".**")
    add("")
    add("### Machine and versions")
    add("")
    m, v = r["machine"], r["versions"]
    add(f"- CPU: {m['cpu']}, {m['cores']} cores available to the benchmark; memory {m['mem_gib']:.1f} GiB; "
        f"Linux {m['kernel']}")
    la = r["loadavg_start"]
    if la is not None:
        add(f"- Load average when the run started: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1 / 5 / 15 min)")
    per = [f"N={x['devices']:,}: {x['steps']['run']['loadavg_before'][0]:.2f} / "
           f"{x['steps']['python']['loadavg_before'][0]:.2f}"
           for x in results if x["steps"]["run"]["loadavg_before"] and x["steps"]["python"]["loadavg_before"]]
    if per:
        add(f"- Load average (1 min) just before the fleetscore run / the Python loop: {'; '.join(per)} "
            "(these include this benchmark's own preceding steps)")
    add(f"- fleetscore: commit {v['fleetscore_commit']}, `{v['fleetscore_binary']}` ({v['fleetscore_version']}); "
        f"`run` with its default workers (all {c} cores)")
    add(f"- Python {v['python']}, scikit-learn {v['sklearn']}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"pandas {v['pandas']}, pyarrow {v['pyarrow']}")
    add("- Reproduce (builds the venv `.venv/bench` from `scripts/bench/requirements.txt` and the release binary):")
    add("")
    add("  ```sh")
    add(f"  {r['reproduce']}")
    add("  ```")
    add("")
    add(f"  This run: `{r['invocation']}`")
    add("")

    add("### The fleet")
    add("")
    add(f"Synthetic and seeded (seed {SEED}): N devices (`dev00000`, ...) × {len(TAGS)} tags (1–5: "
        + ", ".join(TAGS[t][0] for t in sorted(TAGS))
        + f"), one hour of 5-second readings per sensor ({READINGS} each, {WINDOW_FROM} to {WINDOW_TO}), "
        "each sensor gaussian around its own level, rounded to 2 decimals, with injected anomalies: "
        f"{SPIKE_RATE:.2%} of readings replaced by a 6–10 σ spike, and {SHIFT_SENSORS:.1%} of the sensors "
        f"shifted by 4–6 σ over their last 10 minutes. The readings are one Parquet file in the long shape "
        "`TS` (`'2026-01-01 00:00:05.000'`), `Device`, `Tag`, `Value`, ordered by time then sensor. Each sensor "
        f"has its own `Pipeline(StandardScaler, OneClassSVM(kernel='rbf', nu={NU}, gamma={GAMMA}))`, fitted "
        f"by scikit-learn {v['sklearn']} on {TRAIN_ROWS} training readings of that sensor (separate from the "
        "scored hour) and pickled with protocol 4 as `models/model_{device}_{tag}`. (`gamma='scale'` is 1 "
        "on standardized one-feature data: it gave 20–50 support vectors per model and flagged ~25% of "
        f"normal readings; gamma={GAMMA} keeps the models like the reference fleet's, which have 1–20.)")
    add("")
    add("| N devices | sensors = models | rows | data.parquet | pickles | support vectors per model "
        "(min / median / max) | injected anomalous readings | generated in |")
    add("|---|---|---|---|---|---|---|---|")
    for x in results:
        fl = x["fleet"]
        sv = fl["support_vectors"]
        gen = (f"{f_secs(fl['data_seconds'])} data + {f_secs(fl['fit_seconds'])} fitting "
               f"({fl['fit_jobs']} processes, nice 5)")
        if fl.get("cached"):
            gen += ", cached from an earlier run"
        add(f"| {x['devices']:,} | {x['models']:,} | {x['rows']:,} | {f_bytes(fl['data_bytes'])} "
            f"| {f_bytes(fl['model_bytes'])} | {sv['min']} / {sv['median']:g} / {sv['max']} "
            f"| {fl['injected_readings']:,} | {gen} |")
    add("")

    add("### The scoring job (headline)")
    add("")
    add(f"fleetscore: `fleetscore --store S run --from '{WINDOW_FROM}' --to '{WINDOW_TO}'` on a store that "
        "holds the imported models and readings — plan the shard tasks, read each device bucket's "
        "readings once, load and score every model, write the predictions as Parquet and the run record. "
        "The Python way: `python scripts/bench/python_fleet.py MODELS_DIR data.parquet OUT_DIR` — start "
        "Python, `pd.read_parquet` the whole file, `groupby(['Device', 'Tag'])`, and per sensor "
        "`pickle.load` its model file and call `decision_function` and `predict` on its "
        "`values.reshape(-1, 1)`; then write every row with `score` and `prediction` to one Parquet file. "
        "One process, as a data scientist would (scikit-learn's `OneClassSVM` is single-threaded anyway). "
        "Wall time of the whole process, and its peak RSS (" + r["rss_method"] + "), page cache warm; "
        + repeats(r) + ".")
    add("")
    add("| N devices | rows | models | fleetscore run | rows/s | models/s | peak RSS | Python loop | rows/s "
        "| models/s | peak RSS | speed-up (Python ÷ fleetscore) | Python RSS ÷ fleetscore RSS |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in results:
        s = x["steps"]
        fw, pw = s["run"]["wall_seconds"], s["python"]["wall_seconds"]
        add(f"| {x['devices']:,} | {x['rows']:,} | {x['models']:,} | **{f_secs(fw)}** | {f_rate(x['rows'] / fw)} "
            f"| {f_rate(x['models'] / fw)} | {f_mib(s['run']['peak_rss_kib'])} | {f_secs(pw)} "
            f"| {f_rate(x['rows'] / pw)} | {f_rate(x['models'] / pw)} | {f_mib(s['python']['peak_rss_kib'])} "
            f"| **{f_ratio(div(pw, fw))}** | {f_ratio(div(s['python']['peak_rss_kib'], s['run']['peak_rss_kib']))} |")
    add("")
    add("From the run records (`runs show <id> --json`): "
        + "; ".join(f"N={x['devices']:,}: {x['record'].get('models_scored', 0):,} models scored, "
                    f"{x['record'].get('rows', 0):,} rows, {x['record'].get('anomalies', 0):,} anomalies, "
                    f"{x['record'].get('models_failed', 0)} failed, {x['record'].get('tasks', 0)} shard tasks, "
                    f"planned in {f_secs(x['record'].get('plan_seconds'))} and executed in "
                    f"{f_secs(x['record'].get('execute_seconds'))}"
                    for x in results) + ".")
    add("")
    add("The reference architecture itself is far slower than either: it starts a Docker container per model "
        "on a Batch AI cluster, and each container starts Python, re-reads the data file and scores one "
        "sensor. That is not measured here; the Python loop above is the generous baseline, with the data "
        "read once and every model in one warm process.")
    add("")

    add("### Getting the fleet into the store, and back out")
    add("")
    add("Each a separate process on a fresh local-folder store; the run above scores what these imported "
        "(the CSV import goes into a store of its own). `models import` reads, validates and stores every "
        "pickle; `data import` partitions the readings by hour and device bucket into Parquet files; "
        "`predictions export` writes the run's predictions as one Parquet file, or as one CSV per model in "
        "the reference's shape (`TS,Device,Tag,Val,Prediction`).")
    add("")
    add("| N devices | `models import` | peak RSS | `data import` (Parquet) | peak RSS | `data import` (CSV) "
        "| peak RSS | store size | `predictions export --format parquet` | peak RSS "
        "| `predictions export --format csv` | peak RSS |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in results:
        s = x["steps"]
        cells = [f"{x['devices']:,}"]
        for key in ("models_import", "data_import", "data_import_csv"):
            cells += [f_secs(s[key]["wall_seconds"]), f_mib(s[key]["peak_rss_kib"])]
        cells.append(f_bytes(x["store_bytes"]))
        for key in ("export", "export_csv"):
            cells += [f_secs(s[key]["wall_seconds"]), f_mib(s[key]["peak_rss_kib"])]
        add("| " + " | ".join(cells) + " |")
    add("")

    add("### Each step beside its pandas equivalent")
    add("")
    add("fleetscore: the whole process (start, work, exit), as above. pandas: the same step's equivalent "
        "timed inside a warm Python process that has already imported pandas and scikit-learn — "
        "`pd.read_parquet(data.parquet)`, `pd.read_csv(data.csv)` (default engine), and, on the Python "
        "loop's predictions (every reading with `score` and `prediction`), `DataFrame.to_parquet` and "
        "`DataFrame.to_csv` (one file); for models, reading and `pickle.loads` of every model file. "
        "pandas only reads or writes one file where fleetscore also partitions, validates, or writes one "
        "file per model, so the ratios are generous to pandas. Each measured once, page cache warm.")
    add("")
    add("| N devices | step | fleetscore | throughput | pandas equivalent | pandas | throughput "
        "| fleetscore ÷ pandas |")
    add("|---|---|---|---|---|---|---|---|")
    for x in results:
        s, pd_ = x["steps"], x["pandas"]
        rows_, models_ = x["rows"], x["models"]
        for key, label, pkey, plabel, n, unit in (
                ("data_import", "`data import` (Parquet)", "read_parquet", "`pd.read_parquet`", rows_, "rows"),
                ("data_import_csv", "`data import` (CSV)", "read_csv", "`pd.read_csv`", rows_, "rows"),
                ("run", "`run`", None, "the Python loop (`python_fleet.py`)", rows_, "rows"),
                ("export", "`predictions export` (Parquet)", "to_parquet", "`DataFrame.to_parquet`", rows_, "rows"),
                ("export_csv", "`predictions export` (CSV)", "to_csv", "`DataFrame.to_csv`", rows_, "rows"),
                ("models_import", "`models import`", "unpickle_models", "read + `pickle.loads` each file",
                 models_, "models")):
            fw = s[key]["wall_seconds"]
            pw = s["python"]["wall_seconds"] if pkey is None else pd_[pkey]["wall_seconds"]
            add(f"| {x['devices']:,} | {label} | {f_secs(fw)} | {f_rate(n / fw)} {unit}/s | {plabel} "
                f"| {f_secs(pw)} | {f_rate(n / pw)} {unit}/s | {f_ratio(div(pw, fw))} |")
    add("")

    add("### The batch path end to end")
    add("")
    add("What a scoring job costs once the models are registered (`models import` happens once, not per "
        "job): `data import` (Parquet) + `run` + `predictions export --format parquet`, three processes "
        "one after the other, against the Python loop, which reads the Parquet file and the pickles "
        "directly and writes one Parquet file. Times: " + repeats(r) + ".")
    add("")
    add("| N devices | data import | run | export | fleetscore batch path | Python loop "
        "| Python loop ÷ fleetscore batch path |")
    add("|---|---|---|---|---|---|---|")
    for x in results:
        s = x["steps"]
        tot = batch_path_seconds(x)
        add(f"| {x['devices']:,} | {f_secs(s['data_import']['wall_seconds'])} | {f_secs(s['run']['wall_seconds'])} "
            f"| {f_secs(s['export']['wall_seconds'])} | **{f_secs(tot)}** | {f_secs(s['python']['wall_seconds'])} "
            f"| **{f_ratio(div(s['python']['wall_seconds'], tot))}** |")
    add("")

    add("### Targets (issue 14)")
    add("")
    add("| N devices | target | measured | met |")
    add("|---|---|---|---|")
    for x in results:
        for label, value, shown, goal, higher in targets(x):
            met = value >= goal if higher else value <= goal
            add(f"| {x['devices']:,} | {label} | {shown} | {'yes' if met else '**no**'} |")
    add("")

    if len(results) >= 2:
        a, b = results[0], results[-1]
        add(f"### Growth from N={a['devices']:,} to N={b['devices']:,}")
        add("")
        add(f"Each figure at the largest N divided by the same figure at the smallest; the fleet is "
            f"{b['rows'] / a['rows']:.3g}× larger (rows and models). A ratio equal to that is linear growth.")
        add("")
        add(f"| measure | N={a['devices']:,} | N={b['devices']:,} | ratio |")
        add("|---|---|---|---|")

        def row(label, va, vb, fmt):
            add(f"| {label} | {fmt(va)} | {fmt(vb)} | {f_ratio(div(vb, va))} |")

        row("rows", a["rows"], b["rows"], lambda x: f"{x:,}")
        for key, label in (("run", "fleetscore run"), ("python", "Python loop"),
                           ("models_import", "fleetscore models import"),
                           ("data_import", "fleetscore data import")):
            row(f"{label}: wall", a["steps"][key]["wall_seconds"], b["steps"][key]["wall_seconds"], f_secs)
            row(f"{label}: peak RSS", a["steps"][key]["peak_rss_kib"], b["steps"][key]["peak_rss_kib"], f_mib)
        sa = div(a["steps"]["python"]["wall_seconds"], a["steps"]["run"]["wall_seconds"])
        sb = div(b["steps"]["python"]["wall_seconds"], b["steps"]["run"]["wall_seconds"])
        row("speed-up (Python ÷ fleetscore run)", sa, sb, f_ratio)
        add("")

    add("### Same predictions")
    add("")
    add("`fleetscore predictions export --run ID --format parquet` against the Python loop's output, joined by "
        "(device, tag, ts): anomaly flags (fleetscore `anomaly == 1` ⇔ scikit-learn `predict == -1`) and "
        f"scores (`decision_function`; relative differences over the rows with |score| ≥ {REL_FLOOR:g}). "
        "\"Injected flagged\" counts how many of the injected anomalous readings each flagged.")
    add("")
    add("| N devices | rows joined | unmatched (fleetscore / Python) | differing flags | anomalies (fleetscore / Python) "
        "| max abs score diff | max rel score diff | injected flagged (fleetscore / Python) |")
    add("|---|---|---|---|---|---|---|---|")
    for x in results:
        g = x["agreement"]
        df = str(g["differing_flags"]) if not g["differing_flags"] else (
            f"**{g['differing_flags']:,}** (where differing: |score| ≤ {g['max_abs_score_where_differing']:.1e})")
        add(f"| {x['devices']:,} | {g['joined_rows']:,} of {g['expected_rows']:,} "
            f"| {g['fleetscore_unmatched_rows']:,} / {g['python_unmatched_rows']:,} | {df} "
            f"| {g['fleetscore_anomalies']:,} / {g['python_anomalies']:,} | {f_sci(g['max_abs_diff'])} "
            f"| {f_sci(g['max_rel_diff'])} | {g['injected_flagged_fleetscore']:,} / "
            f"{g['injected_flagged_python']:,} of {g['injected_readings']:,} |")
    add("")
    if all(x["agreement"]["equal"] for x in results):
        add("Every reading was scored by both, once, with the same value; every flag agrees.")
    else:
        add("**Not every prediction agrees: see the table above and fleet-results.json.**")
    add("")
    return "\n".join(L)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, action="append", required=True,
                    help="fleet size in devices (5 sensors each); repeat for several sizes")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "target" / "bench" / "fleet",
                    help="cached fleets, stores and outputs go here (default target/bench/fleet)")
    ap.add_argument("--fleetscore", type=Path, default=ROOT / "target" / "release" / "fleetscore",
                    help="the fleetscore binary (default target/release/fleetscore)")
    ap.add_argument("--jobs", type=int, default=2, help="processes fitting the models (default 2)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="tries of each batch path step and of the Python loop, the best kept (default 3)")
    ap.add_argument("--repeat-max-devices", type=int, default=1000,
                    help="repeat only for fleets of at most this many devices (default 1000: the Python "
                         "loop takes over a minute at 10,000)")
    ap.add_argument("--keep", action="store_true",
                    help="keep each N's store and prediction files (default: deleted once compared)")
    ap.add_argument("--write", type=Path, help="put the report between the markers in this Markdown file")
    args = ap.parse_args()

    sizes = sorted(set(args.devices))
    if sizes[0] < 1 or sizes[-1] > 99_999:
        raise SystemExit("error: --devices must be between 1 and 99,999")
    fs = args.fleetscore.resolve()
    if not os.access(fs, os.X_OK):
        raise SystemExit(f"error: no fleetscore binary at {fs} (build it or pass --fleetscore)")
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)

    r = {
        **run_facts(),
        "versions": {
            "fleetscore_commit": git_commit(),
            "fleetscore_binary": os.path.relpath(fs, ROOT),
            "fleetscore_version": fleetscore_version(fs),
            "python": platform.python_version(),
            "sklearn": sklearn.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "pyarrow": pa.__version__,
        },
        "reproduce": os.environ.get("BENCH_COMMAND") or "bash scripts/bench/run-fleet.sh",
        "invocation": shlex.join(["python", os.path.relpath(__file__, Path.cwd())] + sys.argv[1:]),
        "rss_method": "`/usr/bin/time -v`" if os.access(TIME_V, os.X_OK) else "getrusage(RUSAGE_CHILDREN)",
        "repeat": args.repeat, "repeat_max_devices": args.repeat_max_devices,
        "results": [],
    }
    la = r["loadavg_start"]
    if la and la[0] > BUSY_LOAD:
        log(f"warning: load average {la[0]:.2f}: the machine is not idle, timings will be noisy")

    failed = False
    for n in sizes:
        res = bench_n(n, fs, out, args.jobs, args.keep, args.repeat if n <= args.repeat_max_devices else 1)
        r["results"].append(res)
        failed |= bool(res["run_problems"]) or not res["agreement"]["equal"]
        (out / "fleet-results.json").write_text(json.dumps(r, indent=2, default=str) + "\n")

    empty_trash(out)
    r["total_seconds"] = time.perf_counter() - _T0
    section = render(r)
    (out / "fleet-results.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    print(section)
    if args.write:
        write_section(args.write, section, MARK_START, MARK_END)
        log(f"wrote the report into {args.write}")
    log(f"done in {r['total_seconds']:.0f} s; raw results in {out / 'fleet-results.json'}")
    if failed:
        log("error: a run did not score everything, or the predictions differ (see the report)")
        sys.exit(1)


if __name__ == "__main__":
    main()
