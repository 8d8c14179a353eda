#!/usr/bin/env python3
"""Benchmark `fleetscore train` against the scikit-learn loop that fits and pickles one model
per sensor, on the same machine, and check that the models are the same.

For each N (devices; 5 sensors each): every sensor gets TRAIN_ROWS readings (one every 5 s,
rounded to 2 decimals, levels and noise as scripts/bench/fleet.py's fleet). Then:

1. the Python way: a loop over the sensors fitting the benchmark fleet's model
   (Pipeline(StandardScaler, OneClassSVM(nu=0.03, gamma=0.05))) and pickling it to a file,
   in --jobs processes (the data already in memory: the loop is given its input for free);
2. those files are imported as the fleet's current models and the readings with
   `fleetscore data import` (not timed);
3. `fleetscore train` with the same hyper-parameters refits every model from the store: one
   process, its default threads, reading the readings, fitting, writing the pickles and
   importing them as new versions;
4. a sample of the trained models is exported and compared with the Python fits in
   scikit-learn: decision_function on the training rows, the support vectors' count.

    bash scripts/bench/run-train.sh        # N=1,000 and N=10,000, writes BENCHMARKS.md
"""

import argparse
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

ROOT = common.ROOT
SEED = 20261129
LEVELS = [(20.0, 1.5), (1013.0, 4.0), (45.0, 5.0), (3.0, 0.4), (60.0, 6.0)]
TRAIN_ROWS = 300
STEP_MS = 5_000
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
NU, GAMMA = 0.03, 0.05
SAMPLE = 200


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def device(d):
    return f"dev{d:05d}"


def sensor_rows(d, t):
    """The training rows of sensor (d, t): the same in both processes that need them."""
    rng = np.random.default_rng([SEED, d, t])
    level, noise = LEVELS[t - 1]
    mu = level * (1 + 0.1 * rng.standard_normal())
    sigma = noise * (0.5 + rng.random())
    return np.round(mu + sigma * rng.standard_normal(TRAIN_ROWS), 2)


def write_readings(path, n):
    ts = START_MS + STEP_MS * np.arange(TRAIN_ROWS, dtype=np.int64)
    cols = {"ts": [], "device": [], "tag": [], "value": []}
    for d in range(n):
        for t in range(1, 6):
            cols["ts"].append(ts)
            cols["device"].append(np.full(TRAIN_ROWS, device(d), dtype=object))
            cols["tag"].append(np.full(TRAIN_ROWS, str(t), dtype=object))
            cols["value"].append(sensor_rows(d, t))
    table = pa.table({
        "ts": pa.array(np.concatenate(cols["ts"]), pa.timestamp("ms", tz="UTC")),
        "device": pa.array(np.concatenate(cols["device"]), pa.string()),
        "tag": pa.array(np.concatenate(cols["tag"]), pa.string()),
        "value": pa.array(np.concatenate(cols["value"]), pa.float64()),
    })
    pq.write_table(table, path)
    return table.num_rows


def make_model():
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM
    return Pipeline([("scaler", StandardScaler()),
                     ("ocsvm", OneClassSVM(kernel="rbf", nu=NU, gamma=GAMMA))])


def _fit_chunk(task):
    """The Python way, for devices [lo, hi): fit, pickle, write; rows are in memory already."""
    out_dir, lo, hi, rows = task
    n = 0
    for d in range(lo, hi):
        for t in range(1, 6):
            x = rows[(d - lo) * 5 + t - 1].reshape(-1, 1)
            pipe = make_model().fit(x)
            with open(os.path.join(out_dir, f"model_{device(d)}_{t}"), "wb") as f:
                f.write(pickle.dumps(pipe, protocol=4))
            n += 1
    return n


def python_loop(out_dir, n, jobs):
    per = 25
    tasks = [(str(out_dir), lo, min(lo + per, n),
              [sensor_rows(d, t) for d in range(lo, min(lo + per, n)) for t in range(1, 6)])
             for lo in range(0, n, per)]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(processes=jobs) as pool:
        # The pool's processes are started before the clock: only the loop is timed.
        pool.map(abs, range(jobs))
        t = time.perf_counter()
        done = sum(pool.imap_unordered(_fit_chunk, tasks))
        took = time.perf_counter() - t
    assert done == n * 5, done
    return took


def solver_share(n_sample=500):
    """Per model, on one core: scikit-learn's whole fit + pickle, and its libsvm solver alone
    (sklearn.svm._libsvm.fit on the already scaled rows, as OneClassSVM.fit calls it): the
    solver is the part no implementation that takes libsvm's steps can skip."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import _libsvm
    rows = [sensor_rows(d, t).reshape(-1, 1) for d in range(n_sample // 5) for t in range(1, 6)]
    t = time.perf_counter()
    for x in rows:
        pickle.dumps(make_model().fit(x), protocol=4)
    whole = (time.perf_counter() - t) / len(rows)
    scaled = [StandardScaler().fit_transform(x) for x in rows]
    ones = np.ones(TRAIN_ROWS)
    t = time.perf_counter()
    for x in scaled:
        _libsvm.fit(x, ones, svm_type=2, kernel="rbf", nu=NU, gamma=GAMMA, tol=1e-3,
                    cache_size=200.0, sample_weight=ones, coef0=0.0, degree=3,
                    class_weight=np.empty(0), shrinking=1, probability=0, max_iter=-1, random_seed=0)
    solver = (time.perf_counter() - t) / len(rows)
    return whole, solver


def fs(binary, store, *args, capture=True):
    cmd = [str(binary), "--store", str(store), *args]
    r = subprocess.run(cmd, capture_output=capture, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


def compare(binary, store, models_dir, n, workdir):
    """Exports SAMPLE trained models and compares them with the Python fits."""
    rng = np.random.default_rng(1)
    picks = sorted({(int(d), int(t)) for d, t in zip(rng.integers(0, n, SAMPLE), rng.integers(1, 6, SAMPLE))})
    worst, sv_equal = 0.0, 0
    for d, t in picks:
        out = workdir / "exported.pkl"
        fs(binary, store, "models", "export", f"{device(d)}/{t}", "--output", str(out))
        with open(out, "rb") as f:
            got = pickle.load(f)
        with open(models_dir / f"model_{device(d)}_{t}", "rb") as f:
            want = pickle.load(f)
        x = sensor_rows(d, t).reshape(-1, 1)
        a, b = got.decision_function(x), want.decision_function(x)
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1.0))))
        sv_equal += int(np.array_equal(got[-1].support_vectors_, want[-1].support_vectors_)
                        and np.array_equal(got[-1].dual_coef_, want[-1].dual_coef_))
    return len(picks), worst, sv_equal


def bench(binary, n, jobs, out_dir):
    work = out_dir / f"train-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log(f"N={n:,}: {n * 5:,} sensors x {TRAIN_ROWS} readings")
    rows = write_readings(work / "readings.parquet", n)
    models_dir = work / "models"
    models_dir.mkdir()
    load = common.loadavg()
    log("  the Python loop (fit + pickle each model)")
    py = python_loop(models_dir, n, jobs)
    store = work / "store"
    log("  importing the Python models and the readings")
    fs(binary, store, "models", "import", str(models_dir), "--pattern", "model_{device}_{tag}")
    fs(binary, store, "data", "import", str(work / "readings.parquet"), "--time-column", "ts",
       "--device-column", "device", "--tag-column", "tag", "--value-column", "value")
    frm = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(START_MS / 1000))
    to = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((START_MS + TRAIN_ROWS * STEP_MS) / 1000))
    log("  fleetscore train")
    t = time.perf_counter()
    out = fs(binary, store, "train", "--from", frm, "--to", to, "--estimator", "ocsvm",
             "--nu", str(NU), "--gamma", str(GAMMA), "--scaler", "standard")
    took = time.perf_counter() - t
    log("  " + out.strip().splitlines()[-1])
    record = json.loads(fs(binary, store, "runs", "show", out.split()[2].rstrip(":"), "--json"))
    record = record.get("record", record)
    log("  comparing a sample with scikit-learn")
    sampled, worst, sv_equal = compare(binary, store, models_dir, n, work)
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)
    return {
        "n": n, "models": n * 5, "rows": rows, "load": load[0] if isinstance(load, (list, tuple)) else load, "python_s": py, "fleetscore_s": took,
        "trained": record["models_scored"], "fit_s": record.get("execute_seconds"),
        "sampled": sampled, "worst": worst, "sv_equal": sv_equal,
    }


def report(results, share, facts, version, command, jobs):
    lines = [
        "## Training: `fleetscore train` vs the scikit-learn loop",
        "",
        f"Measured on {facts['date']} by `scripts/bench/train.py` ({facts['machine']['cpu']}, "
        f"{facts['cores']} cores, {facts['machine']['mem_gib']:.0f} GiB), fleetscore {version} "
        f"at commit {common.git_commit()}. Reproduce: `{command}`.",
        "",
        f"Each of the fleet's sensors has {TRAIN_ROWS} readings; every model is the benchmark "
        f"fleet's `Pipeline(StandardScaler, OneClassSVM(kernel='rbf', nu={NU}, gamma={GAMMA}))`. "
        f"**Python**: a loop fitting each model with scikit-learn and pickling it to a file, in {jobs} "
        "processes (the readings already in memory; starting the processes not timed). "
        "**fleetscore**: one `fleetscore train --estimator ocsvm` process, wall time, from reading "
        "the readings out of the store to the new versions imported into the registry (written "
        "as pickles, packed, catalogs committed). The Python fits are then the fleet's current "
        "models, and a sample of fleetscore's is exported and compared with them in scikit-learn.",
        "",
        "| N | models | load at start | Python loop | fleetscore train | speed-up | models compared | support vectors and coefficients equal | worst relative difference of decision_function |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['n']:,} | {r['models']:,} | {r['load']:.2f} | {r['python_s']:.2f} s | "
            f"{r['fleetscore_s']:.2f} s | **{common.f_ratio(common.div(r['python_s'], r['fleetscore_s']))}** | "
            f"{r['sampled']} | {r['sv_equal']} of {r['sampled']} | {r['worst']:.1e} |")
    whole, solver = share
    lines += [
        "",
        "Target (issue 20): at least 20× at N=1,000, equal models.",
        "",
        f"**Where the ceiling is.** Per model, on one core, scikit-learn's whole fit + pickle took "
        f"{whole * 1e3:.3f} ms, of which its libsvm solver alone (`sklearn.svm._libsvm.fit` on the "
        f"scaled rows) {solver * 1e3:.3f} ms: a fit that takes libsvm's steps — as one that gives "
        f"libsvm's support vectors bit for bit must, its `exp` calls included — is at most "
        f"{whole / solver:.1f}× scikit-learn per core even if nothing else cost anything. "
    ]
    for r in results:
        per = r["fleetscore_s"] * facts["cores"] / r["models"]
        lines[-1] += (f"At N={r['n']:,}, fleetscore spent {per * 1e3:.3f} ms of a core per model, "
                      "the whole process included (reading, fitting, writing each model's file, "
                      "metadata and pack, committing). ")
    lines[-1] = lines[-1].rstrip()
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, action="append", required=True)
    ap.add_argument("--fleetscore", type=Path, default=ROOT / "target" / "release" / "fleetscore")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "target" / "bench" / "train")
    ap.add_argument("--jobs", type=int, default=2, help="processes of the Python loop (default 2)")
    ap.add_argument("--write", type=Path, help="put the report between the markers in this Markdown file")
    a = ap.parse_args()
    facts = common.run_facts()
    results = [bench(a.fleetscore, n, a.jobs, a.out_dir) for n in a.devices]
    log("scikit-learn per model on one core: whole fit + pickle, and libsvm's solver alone")
    share = solver_share()
    text = report(results, share, facts, common.fleetscore_version(a.fleetscore),
                  os.environ.get("BENCH_COMMAND", "python3 scripts/bench/train.py " + " ".join(sys.argv[1:])),
                  a.jobs)
    print(text)
    if a.write:
        common.write_section(a.write, text, "<!-- bench:train:start -->", "<!-- bench:train:end -->")


if __name__ == "__main__":
    main()
