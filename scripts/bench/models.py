#!/usr/bin/env python3
"""Benchmark fleetscore against scikit-learn and ONNX Runtime on this machine.

    python scripts/bench/models.py [--rows 1000000] [--out-dir DIR] [--skip-fleetscore]
                                   [--fleetscore PATH] [--write BENCHMARKS.md]

Normally run through scripts/bench/run-models.sh, which builds the venv and the
release binary first. Steps:

1. Deterministic data: --rows rows x 4 float64 features (f0..f3; ~1% outliers)
   written to DIR/data.parquet; the models are fitted on separate training rows.
2. Models, pickled with protocol 5 into DIR: ocsvm20 and ocsvm1000
   (Pipeline(StandardScaler, OneClassSVM(rbf)) with about 20 / 1,000 support
   vectors) and iforest100 (IsolationForest(n_estimators=100, random_state=0)).
3. In-process kernel timings, best of --repeat, on the same rows:
   scikit-learn decision_function and predict (timed separately), ONNX Runtime
   (skl2onnx conversion, float32 input) with all cores and with one thread, and
   `fleetscore models bench` with all cores and with --threads 1.
4. Model load time: pickle.loads(bytes) (timeit, mean) vs fleetscore's load_seconds.
5. End to end, best of --repeat, separate processes: `fleetscore models score`
   vs scripts/bench/python_score.py, with wall time and peak RSS; the outputs
   are checked against scikit-learn's in-process decision_function / predict.
6. A Markdown report: printed, and with --write, put between the markers
   <!-- bench:models:start --> and <!-- bench:models:end --> of that file.

Every number in the report is measured by this run; raw results go to
DIR/results.json.
"""

import argparse
import gc
import json
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
import timeit
import warnings
from pathlib import Path

from common import (
    git_commit,
    run_facts,
    cores,
    div,
    f_rate,
    f_ratio,
    f_sci,
    fleetscore_version,
    write_section,
)

import joblib
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pyarrow
import scipy
import skl2onnx
import sklearn
import threadpoolctl
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import IsolationForest
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
FEATURES = ["f0", "f1", "f2", "f3"]
MARK_START = "<!-- bench:models:start -->"
MARK_END = "<!-- bench:models:end -->"
OUTLIER_FRACTION = 0.01
TRAIN_ROWS = 20_000
DATA_SEED = 2
TRAIN_SEED = 1
ONNX_OPSETS = {"": 17, "ai.onnx.ml": 3}
REL_FLOOR = 1e-6  # relative differences are taken over rows with |score| >= this

_T0 = time.perf_counter()


def log(msg):
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Data and models
# ---------------------------------------------------------------------------

def make_data(n, seed):
    """n rows of 4 correlated sensor-like features; ~1% of them are outliers.

    Inliers are correlated gaussians; outliers are uniform over a box of +-6
    standard units (a few land inside the inlier cloud, as in real data). The
    columns get sensor-like offsets and scales so that the StandardScaler step
    matters.
    """
    mix = np.random.default_rng(12345).uniform(-0.4, 0.4, size=(4, 4)) + np.eye(4)
    loc = np.array([20.0, 1013.0, 0.5, 60.0])
    scale = np.array([2.0, 5.0, 0.1, 10.0])
    rng = np.random.default_rng(seed)
    n_out = int(round(n * OUTLIER_FRACTION))
    inliers = rng.standard_normal((n - n_out, 4)) @ mix
    outliers = rng.uniform(-6.0, 6.0, size=(n_out, 4))
    z = np.vstack([inliers, outliers])[rng.permutation(n)]
    x = z * scale + loc
    return pd.DataFrame(x, columns=FEATURES)


def ocsvm(nu, gamma):
    return Pipeline([("scaler", StandardScaler()), ("ocsvm", OneClassSVM(kernel="rbf", nu=nu, gamma=gamma))])


def n_sv(pipe):
    return int(pipe[-1].support_vectors_.shape[0])


def fit_models(train):
    """Fit the three models; the OCSVMs are tuned towards their support-vector targets."""
    models = {}

    # ocsvm20: 1,000 training rows, nu=0.01; a smooth boundary (small gamma)
    # needs few support vectors: pick the gamma of a fixed grid that lands
    # closest to 20 (ties: the larger gamma).
    small = train.iloc[:1000]
    best = None
    for gamma in np.geomspace(0.005, 0.5, 31):
        pipe = ocsvm(0.01, float(gamma)).fit(small)
        key = (abs(n_sv(pipe) - 20), -gamma)
        if best is None or key < best[0]:
            best = (key, float(gamma), pipe)
    _, gamma, pipe = best
    models["ocsvm20"] = {
        "model": pipe,
        "estimator": "Pipeline(StandardScaler, OneClassSVM(rbf))",
        "params": f"nu=0.01, gamma={gamma:.4g}",
        "trained_rows": len(small),
        "size": f"{n_sv(pipe)} support vectors",
        "n_support_vectors": n_sv(pipe),
    }
    log(f"ocsvm20: nu=0.01 gamma={gamma:.4g} -> {n_sv(pipe)} support vectors")

    # ocsvm1000: 10,000 training rows, gamma='scale'; nu sets the fraction of
    # support vectors, so rescale it towards 1,000 (at most 4 fits).
    big = train.iloc[:10000]
    nu = 0.1
    for _ in range(4):
        pipe = ocsvm(nu, "scale").fit(big)
        got = n_sv(pipe)
        if abs(got - 1000) <= 50:
            break
        nu = float(np.clip(nu * 1000 / got, 1e-3, 0.9))
    models["ocsvm1000"] = {
        "model": pipe,
        "estimator": "Pipeline(StandardScaler, OneClassSVM(rbf))",
        "params": f"nu={pipe[-1].nu:.4g}, gamma='scale' ({pipe[-1]._gamma:.4g})",
        "trained_rows": len(big),
        "size": f"{n_sv(pipe)} support vectors",
        "n_support_vectors": n_sv(pipe),
    }
    log(f"ocsvm1000: nu={pipe[-1].nu:.4g} gamma=scale -> {n_sv(pipe)} support vectors")

    forest = IsolationForest(n_estimators=100, random_state=0).fit(train)
    models["iforest100"] = {
        "model": forest,
        "estimator": "IsolationForest",
        "params": "n_estimators=100, random_state=0 (max_samples='auto' = 256)",
        "trained_rows": len(train),
        "size": f"{len(forest.estimators_)} trees",
        "n_support_vectors": None,
    }
    log("iforest100: 100 trees")
    return models


# ---------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------

def best_of(fn, repeat):
    best, result = float("inf"), None
    for _ in range(repeat):
        gc.collect()
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def sklearn_kernel(model, X, repeat):
    df_s, df = best_of(lambda: model.decision_function(X), repeat)
    pr_s, pr = best_of(lambda: model.predict(X), repeat)
    return {"decision_seconds": df_s, "predict_seconds": pr_s}, df, pr


def sklearn_iforest_threaded(model, X, repeat, threads):
    """IsolationForest scores with a joblib threading context (its documented way to parallelize)."""
    with joblib.parallel_backend("threading", n_jobs=threads):
        df_s, _ = best_of(lambda: model.decision_function(X), repeat)
        pr_s, _ = best_of(lambda: model.predict(X), repeat)
    return {"decision_seconds": df_s, "predict_seconds": pr_s, "threads": threads}


def to_onnx(model):
    return convert_sklearn(
        model,
        initial_types=[("X", FloatTensorType([None, len(FEATURES)]))],
        target_opset=ONNX_OPSETS,
    )


def ort_kernel(onx_bytes, X32, threads, repeat):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onx_bytes, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    secs, out = best_of(lambda: sess.run(None, {"X": X32}), repeat)
    del sess
    gc.collect()
    res = dict(zip(names, out))
    return secs, np.asarray(res["scores"], dtype=np.float64).ravel(), np.asarray(res["label"]).ravel()


def fleetscore_bench(fs, model_path, data_path, threads, repeat):
    cmd = [
        str(fs), "models", "bench", str(model_path),
        "--input", str(data_path),
        "--features", ",".join(FEATURES),
        "--repeat", str(repeat),
        "--threads", str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: {shlex.join(cmd)} failed:\n{proc.stderr}")
    lines = [l for l in proc.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        raise SystemExit(f"error: no JSON from {shlex.join(cmd)}:\n{proc.stdout}")
    return json.loads(lines[-1])


def pickle_load_mean(data):
    pickle.loads(data)  # warm-up: the first call imports the estimators' modules
    timer = timeit.Timer(lambda: pickle.loads(data))
    number, _ = timer.autorange()  # enough loops for >= 0.2 s, like fleetscore bench
    totals = timer.repeat(repeat=3, number=number)
    return sum(totals) / (3 * number), 3 * number


TIME_V = "/usr/bin/time"
_RSS_SHIM = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[1:])\n"
    "print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def run_measured(cmd):
    """Run cmd as a separate process; returns (wall seconds, peak RSS KiB, stderr)."""
    if os.access(TIME_V, os.X_OK):
        full = [TIME_V, "-v"] + cmd
        pattern = r"Maximum resident set size \(kbytes\):\s*(\d+)"
    else:  # a fresh shim process, so RUSAGE_CHILDREN covers this one command only
        full = [sys.executable, "-c", _RSS_SHIM] + cmd
        pattern = r"MAXRSS_KIB (\d+)"
    t = time.perf_counter()
    proc = subprocess.run(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"error: {shlex.join(cmd)} failed:\n{proc.stderr}")
    m = re.search(pattern, proc.stderr)
    rss = int(m.group(1)) if m else None
    return wall, rss, proc.stderr


def end_to_end(cmds, repeat):
    """cmds: {engine: argv}. Runs are interleaved; best wall time and max peak RSS per engine."""
    res = {k: {"walls": [], "rss_kib": []} for k in cmds}
    for _ in range(repeat):
        for engine, cmd in cmds.items():
            wall, rss, _ = run_measured(cmd)
            res[engine]["walls"].append(wall)
            if rss is not None:
                res[engine]["rss_kib"].append(rss)
    for r in res.values():
        r["wall_seconds"] = min(r["walls"])
        r["peak_rss_kib"] = max(r["rss_kib"]) if r["rss_kib"] else None
    return res


def python_job_warm(model_path, in_path, out_path, feats, repeat):
    """python_score.py's job inside this process, which has already imported pandas and
    scikit-learn (a warm Python): unpickle, read_parquet, decision_function + predict, to_parquet.
    Each part timed; the best of `repeat` by total."""
    best = None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        with open(model_path, "rb") as f:
            model = pickle.load(f)
        t1 = time.perf_counter()
        df = pd.read_parquet(in_path)
        t2 = time.perf_counter()
        X = df[feats]
        df["score"] = model.decision_function(X)
        df["anomaly"] = (model.predict(X) == -1).astype("int8")
        t3 = time.perf_counter()
        df.to_parquet(out_path, index=False)
        t4 = time.perf_counter()
        run = {"unpickle": t1 - t0, "read_parquet": t2 - t1, "score": t3 - t2, "to_parquet": t4 - t3,
               "total": t4 - t0}
        if best is None or run["total"] < best["total"]:
            best = run
    return best


def process_start_seconds(fs, repeat=5):
    """Best wall time of `fleetscore --version`: starting and ending a process, nothing else."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([str(fs), "--version"], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def compare(ref_score, ref_pred, score, anomaly):
    """Scores and predictions of an engine vs scikit-learn's."""
    ref_score = np.asarray(ref_score, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    diff = np.abs(score - ref_score)
    big = np.abs(ref_score) >= REL_FLOOR
    rel = diff[big] / np.abs(ref_score[big])
    differ = (np.asarray(anomaly) != 0) != (np.asarray(ref_pred) == -1)
    n_differ = int(differ.sum())
    return {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "max_rel_diff": float(rel.max()) if rel.size else 0.0,
        "rows_below_rel_floor": int((~big).sum()),
        "differing_predictions": n_differ,
        "max_abs_score_where_differing": float(np.abs(ref_score[differ]).max()) if n_differ else None,
        "nan_scores": int(np.isnan(score).sum()),
    }


def check_output_table(path, data):
    """Read an engine's output table; check it carries the input columns, unchanged and in order."""
    out = pd.read_parquet(path)
    expected = list(data.columns) + ["score", "anomaly"]
    if list(out.columns) != expected:
        raise SystemExit(f"error: {path} has columns {list(out.columns)}, expected {expected}")
    if len(out) != len(data) or not np.array_equal(out[FEATURES].to_numpy(), data[FEATURES].to_numpy()):
        raise SystemExit(f"error: {path} does not carry the input rows unchanged and in order")
    return out["score"].to_numpy(), out["anomaly"].to_numpy()


# ---------------------------------------------------------------------------
# Machine and versions
# ---------------------------------------------------------------------------



def blas_info():
    """Which BLAS numpy uses, and with which kernel (threadpoolctl)."""
    infos = threadpoolctl.threadpool_info()
    numpy_blas = [i for i in infos if i.get("user_api") == "blas" and "numpy" in i.get("filepath", "")]
    chosen = numpy_blas or [i for i in infos if i.get("user_api") == "blas"]
    if not chosen:
        return {"summary": "none found by threadpoolctl", "all": infos}
    i = chosen[0]
    summary = (
        f"{i.get('internal_api')} {i.get('version')} ({i.get('prefix')}), "
        f"kernel {i.get('architecture', 'n/a')}, {i.get('num_threads')} threads"
    )
    return {"summary": summary, "all": infos}


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def f_secs(x):
    if x is None:
        return "—"
    if x >= 1:
        return f"{x:.2f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} µs"


def f_mib(kib):
    return "—" if kib is None else f"{kib / 1024:.0f} MiB"


def f_bytes(n):
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"


def rate_cell(rows, secs):
    return "—" if secs is None else f"{f_rate(rows / secs)} ({f_secs(secs)})"


def model_targets(r):
    """Issue 14's scoring targets: (what, measured ratio, goal)."""
    out = []
    k = r["kernel"].get("iforest100")
    if k and k.get("fleetscore_all"):
        both = k["sklearn"]["decision_seconds"] + k["sklearn"]["predict_seconds"]
        out.append(("IsolationForest in process ≥ 25× scikit-learn's decision_function + predict",
                    div(both, k["fleetscore_all"]["score_seconds"]), 25.0))
    pr = min(r["process_rows"], r["rows"])
    for name, goal in (("iforest100", 20.0), ("ocsvm20", 10.0)):
        p_ = r["process"].get(name)
        if p_ and p_.get("fleetscore"):
            out.append((f"`{name}`: a whole `models score` process on {pr:,} rows ≥ {goal:g}× a warm Python",
                        div(p_["python_warm"]["total"], p_["fleetscore"]["wall_seconds"]), goal))
    return out


def render(r):
    n = r["rows"]
    c = r["cores"]
    fs_on = not r["skip_fleetscore"]
    L = []
    add = L.append
    add("## Model scoring: fleetscore vs scikit-learn and ONNX Runtime")
    add("")
    add(f"Measured on {r['date']} by `scripts/bench/models.py` in {r['total_seconds'] / 60:.1f} min. "
        "Every number below is what that run measured; rerun the command to refresh this section.")
    if not fs_on:
        add("")
        add("**fleetscore was not measured in this run (`--skip-fleetscore`): its columns are empty.**")
    elif "debug" in Path(r["versions"]["fleetscore_binary"]).parts:
        add("")
        add("**fleetscore was a debug build in this run: its timings say nothing about its speed.**")
    la = r["loadavg_start"]
    if la is not None and la[0] > r["busy_load"]:
        add("")
        add(f"**The machine was not idle when this run started (load average {la[0]:.2f} over 1 min): "
            "other processes shared the cores, so the timings are low and noisy.**")
    add("")
    add("### Machine and versions")
    add("")
    m = r["machine"]
    v = r["versions"]
    add(f"- CPU: {m['cpu']}, {m['cores']} cores available to the benchmark; memory {m['mem_gib']:.1f} GiB; "
        f"Linux {m['kernel']}")
    la = r["loadavg_start"]
    if la is not None:
        add(f"- Load average when the run started: {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1 / 5 / 15 min)")
    add(f"- numpy BLAS (threadpoolctl): {r['blas']['summary']}; "
        f"OPENBLAS_CORETYPE {r['env']['OPENBLAS_CORETYPE']}, OPENBLAS_L2_SIZE {r['env']['OPENBLAS_L2_SIZE']}")
    add(f"- fleetscore: commit {v['fleetscore_commit']}, `{v['fleetscore_binary']}` ({v['fleetscore_version']})")
    add(f"- Python {v['python']}, scikit-learn {v['sklearn']}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"pandas {v['pandas']}, pyarrow {v['pyarrow']}, onnxruntime {v['onnxruntime']}, "
        f"skl2onnx {v['skl2onnx']}, onnx {v['onnx']}")
    add("- Reproduce (builds the venv `.venv/bench` from `scripts/bench/requirements.txt` and the release binary):")
    add("")
    add("  ```sh")
    add(f"  {r['reproduce']}")
    add("  ```")
    add("")
    add(f"  This run: `{r['invocation']}`")
    add("")
    add("### Data and models")
    add("")
    add(f"{n:,} rows × {len(FEATURES)} float64 features (`{','.join(FEATURES)}`) in Parquet, "
        f"{OUTLIER_FRACTION:.0%} outliers (correlated gaussian inliers, uniform outliers), seeded; "
        f"the models are fitted on separate rows from the same generator and pickled with protocol 5.")
    add("")
    add("| model | estimator | parameters | size | fitted on | pickle |")
    add("|---|---|---|---|---|---|")
    for name, mm in r["models"].items():
        add(f"| `{name}` | {mm['estimator']} | {mm['params']} | {mm['size']} | {mm['trained_rows']:,} rows "
            f"| {f_bytes(mm['file_bytes'])} |")
    add("")

    add(f"### Kernel throughput, in process ({n:,} rows, best of {r['repeat']})")
    add("")
    add("Rows per second (seconds per pass in brackets). scikit-learn's `decision_function` and `predict` are "
        "timed separately; fleetscore computes both in one pass, so its main ratio is against their sum "
        "(\"both\"). ONNX Runtime runs the skl2onnx conversion of the same fitted model on float32 input "
        "(its SVM and tree operators compute in float32), one `sess.run` over the whole batch, outputs "
        f"`label` and `scores`; the float64→float32 cast is not timed. All engines get all {c} cores "
        "where they can use them.")
    add("")
    add(f"| model | scikit-learn decision_function | scikit-learn predict | scikit-learn both | "
        f"ONNX Runtime ({c} threads) | fleetscore ({c} threads) | fleetscore ÷ sklearn both | "
        f"fleetscore ÷ sklearn decision_function | fleetscore ÷ ORT |")
    add("|---|---|---|---|---|---|---|---|---|")
    for name, k in r["kernel"].items():
        sk = k["sklearn"]
        both = sk["decision_seconds"] + sk["predict_seconds"]
        fs = k.get("fleetscore_all", {}).get("score_seconds")
        add(f"| `{name}` | {rate_cell(n, sk['decision_seconds'])} | {rate_cell(n, sk['predict_seconds'])} "
            f"| {rate_cell(n, both)} | {rate_cell(n, k['ort_all_seconds'])} | {rate_cell(n, fs)} "
            f"| {f_ratio(div(both, fs))} | {f_ratio(div(sk['decision_seconds'], fs))} "
            f"| {f_ratio(div(k['ort_all_seconds'], fs))} |")
    add("")
    add("scikit-learn runs these models on one core: `OneClassSVM` calls libsvm, which is single-threaded, and "
        "`IsolationForest` scores its trees sequentially unless the caller wraps the call in a joblib context.")
    for name, k in r["kernel"].items():
        t = k.get("sklearn_threaded")
        if not t:
            continue
        both = t["decision_seconds"] + t["predict_seconds"]
        fs = k.get("fleetscore_all", {}).get("score_seconds")
        add(f"With `joblib.parallel_backend(\"threading\", n_jobs={t['threads']})` around the calls, `{name}` "
            f"in scikit-learn does decision_function at {f_rate(n / t['decision_seconds'])} rows/s and "
            f"predict at {f_rate(n / t['predict_seconds'])} rows/s (both: {f_rate(n / both)} rows/s; "
            f"fleetscore ÷ that: {f_ratio(div(both, fs))}).")
    add("")

    add("### Per core (one thread each)")
    add("")
    add("| model | scikit-learn both (1 thread) | ONNX Runtime (1 thread) | fleetscore (`--threads 1`) "
        f"| fleetscore ÷ sklearn | fleetscore ÷ ORT | fleetscore {c} threads ÷ 1 thread |")
    add("|---|---|---|---|---|---|---|")
    for name, k in r["kernel"].items():
        sk = k["sklearn"]
        both = sk["decision_seconds"] + sk["predict_seconds"]
        fs1 = k.get("fleetscore_1", {}).get("score_seconds")
        fsa = k.get("fleetscore_all", {}).get("score_seconds")
        add(f"| `{name}` | {rate_cell(n, both)} | {rate_cell(n, k['ort_1_seconds'])} | {rate_cell(n, fs1)} "
            f"| {f_ratio(div(both, fs1))} | {f_ratio(div(k['ort_1_seconds'], fs1))} | {f_ratio(div(fs1, fsa))} |")
    add("")

    add("### Model load")
    add("")
    add("Mean time to turn the model file's bytes (already in memory) into a usable model: Python "
        "`pickle.loads(bytes)` (timeit: 3 × as many loops as fill 0.2 s, after one warm-up call that imports scikit-learn) vs fleetscore's "
        "`load_seconds` from `models bench` (same idea, repeated for at least 0.2 s).")
    add("")
    add("| model | file | pickle.loads | fleetscore | fleetscore ÷ pickle (speed) |")
    add("|---|---|---|---|---|")
    for name, ld in r["load"].items():
        fs = ld.get("fleetscore_seconds")
        add(f"| `{name}` | {f_bytes(r['models'][name]['file_bytes'])} | {f_secs(ld['pickle_seconds'])} "
            f"| {f_secs(fs)} | {f_ratio(div(ld['pickle_seconds'], fs))} |")
    add("")

    add(f"### End to end, separate processes ({n:,} rows, Parquet in and out, best of {r['repeat']})")
    add("")
    add("Wall time of the whole command, from process start to output written: `fleetscore models score MODEL "
        f"--input data.parquet --output out.parquet --features {','.join(FEATURES)}` vs "
        "`python scripts/bench/python_score.py MODEL data.parquet out.parquet "
        f"{','.join(FEATURES)}` (start Python, import pandas and scikit-learn, unpickle, `pd.read_parquet`, "
        "decision_function + predict, add the two columns, `to_parquet`). Peak RSS: the largest "
        f"maximum resident set size of the runs ({r['rss_method']}). The page cache is warm for both.")
    add("")
    add("| model | Python wall | Python rows/s | Python peak RSS | fleetscore wall | fleetscore rows/s "
        "| fleetscore peak RSS | fleetscore speed-up | Python RSS ÷ fleetscore RSS |")
    add("|---|---|---|---|---|---|---|---|---|")
    for name, e in r["e2e"].items():
        py = e["python"]
        fs = e.get("fleetscore")
        fs_wall = fs["wall_seconds"] if fs else None
        fs_rss = fs["peak_rss_kib"] if fs else None
        add(f"| `{name}` | {f_secs(py['wall_seconds'])} | {f_rate(n / py['wall_seconds'])} "
            f"| {f_mib(py['peak_rss_kib'])} | {f_secs(fs_wall)} | {f_rate(div(n, fs_wall))} | {f_mib(fs_rss)} "
            f"| {f_ratio(div(py['wall_seconds'], fs_wall))} | {f_ratio(div(py['peak_rss_kib'], fs_rss))} |")
    add("")

    pr = min(r["process_rows"], n)
    add(f"### A whole `models score` process vs a warm Python ({pr:,} rows, Parquet in and out, best of {r.get('process_repeat', r['repeat'])})")
    add("")
    add("fleetscore: the whole `models score` process as above, on the first "
        f"{pr:,} rows. Python: `python_score.py`'s job timed inside this benchmark's own process, which has "
        "already imported pandas and scikit-learn (so neither interpreter start nor imports count): "
        "`pickle.load`, `pd.read_parquet`, decision_function + predict, `to_parquet`. fleetscore's parts: "
        "process start and exit is the wall time of `fleetscore --version` (best of 5); load and score are "
        "`models bench`'s `load_seconds` and `score_seconds` on the same rows; Parquet in and out is what "
        "remains of the wall time.")
    add("")
    add("| model | warm Python | unpickle | read_parquet | score | to_parquet | fleetscore process "
        "| start + exit | load | score | Parquet in + out | fleetscore speed-up |")
    add("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, p_ in r["process"].items():
        py = p_["python_warm"]
        fsw = p_.get("fleetscore", {}).get("wall_seconds")
        if fsw is None:
            cells = ["—"] * 5
        else:
            b = p_["fleetscore_bench"]
            st = p_["fleetscore_start_seconds"]
            rest = fsw - st - b["load_seconds"] - b["score_seconds"]
            cells = [f"**{f_secs(fsw)}**", f_secs(st), f_secs(b["load_seconds"]), f_secs(b["score_seconds"]),
                     f_secs(max(rest, 0.0))]
        add(f"| `{name}` | {f_secs(py['total'])} | {f_secs(py['unpickle'])} | {f_secs(py['read_parquet'])} "
            f"| {f_secs(py['score'])} | {f_secs(py['to_parquet'])} | " + " | ".join(cells)
            + f" | **{f_ratio(div(py['total'], fsw))}** |")
    add("")

    add("### Targets (issue 14)")
    add("")
    add("| target | measured | met |")
    add("|---|---|---|")
    for label, value, goal in model_targets(r):
        add(f"| {label} | {f_ratio(value)} | {'—' if value is None else ('yes' if value >= goal else '**no**')} |")
    add("")

    add("### Accuracy against scikit-learn")
    add("")
    add("Scores compared with scikit-learn's float64 `decision_function` on all rows; predictions with its "
        f"`predict` (anomaly ⇔ -1). Relative differences are over the rows with |score| ≥ {REL_FLOOR:g}. "
        "fleetscore's figures come from the output table of `models score`; ONNX Runtime's from its float32 "
        "`scores` and `label` outputs. \"Where differing\" is the largest |scikit-learn score| among rows "
        "whose prediction differs, i.e. how far from the decision boundary a disagreement happens.")
    add("")
    add("| model | fleetscore max abs diff | fleetscore max rel diff | fleetscore differing predictions "
        "| ORT (float32) max abs diff | ORT max rel diff | ORT differing predictions |")
    add("|---|---|---|---|---|---|---|")

    def differing(a):
        if a is None:
            return "—"
        if a["differing_predictions"] == 0:
            return "0"
        return f"{a['differing_predictions']:,} (where differing: |score| ≤ {a['max_abs_score_where_differing']:.1e})"

    for name, a in r["accuracy"].items():
        fs = a.get("fleetscore")
        o = a["ort"]
        add(f"| `{name}` | {f_sci(fs and fs['max_abs_diff'])} | {f_sci(fs and fs['max_rel_diff'])} "
            f"| {differing(fs)} | {f_sci(o['max_abs_diff'])} | {f_sci(o['max_rel_diff'])} | {differing(o)} |")
    add("")
    py_ok = all(a["python_script"]["max_abs_diff"] == 0 and a["python_script"]["differing_predictions"] == 0
                for a in r["accuracy"].values())
    add("`python_score.py`'s output matches the in-process scikit-learn results exactly." if py_ok else
        "**`python_score.py`'s output differs from the in-process scikit-learn results** (see results.json).")
    add("")
    return "\n".join(L)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows to score (default 1,000,000)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "target" / "bench",
                    help="data, models and outputs go here (default target/bench)")
    ap.add_argument("--skip-fleetscore", action="store_true", help="measure only the Python engines")
    ap.add_argument("--fleetscore", type=Path, default=ROOT / "target" / "release" / "fleetscore",
                    help="the fleetscore binary (default target/release/fleetscore)")
    ap.add_argument("--process-rows", type=int, default=200_000,
                    help="rows of the whole-process comparison with a warm Python (default 200,000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions, best taken (default 3)")
    ap.add_argument("--process-repeat", type=int, default=10,
                    help="repetitions of the whole-process comparison on --process-rows rows, "
                         "both sides, best taken (default 10)")
    ap.add_argument("--models", default="ocsvm20,ocsvm1000,iforest100",
                    help="comma-separated subset of ocsvm20,ocsvm1000,iforest100")
    ap.add_argument("--write", type=Path, help="put the report between the markers in this Markdown file")
    args = ap.parse_args()

    cores_n = cores()
    fs = args.fleetscore.resolve() if args.fleetscore else None
    if not args.skip_fleetscore and not (fs and os.access(fs, os.X_OK)):
        raise SystemExit(f"error: no fleetscore binary at {fs} (build it, pass --fleetscore, "
                         "or use --skip-fleetscore)")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    out = args.out_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    feats = ",".join(FEATURES)
    warnings.filterwarnings("ignore", message=".*feature names.*")

    r = {
        **run_facts(),
        "rows": args.rows,
        "repeat": args.repeat,
        "process_repeat": args.process_repeat,
        "skip_fleetscore": args.skip_fleetscore,
        "busy_load": 0.5,
        "env": {k: (f"={os.environ[k]}" if k in os.environ else "unset")
                for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "blas": blas_info(),
        "versions": {
            "fleetscore_commit": git_commit(),
            "fleetscore_binary": os.path.relpath(fs, ROOT) if fs and not args.skip_fleetscore else "not used",
            "fleetscore_version": fleetscore_version(fs) if not args.skip_fleetscore else "not run",
            "python": platform.python_version(),
            "sklearn": sklearn.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "pandas": pd.__version__, "pyarrow": pyarrow.__version__, "onnxruntime": ort.__version__,
            "skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__,
        },
        "reproduce": os.environ.get("BENCH_COMMAND") or "bash scripts/bench/run-models.sh",
        "invocation": shlex.join(["python", os.path.relpath(__file__, Path.cwd())] + sys.argv[1:]),
        "rss_method": "`/usr/bin/time -v`" if os.access(TIME_V, os.X_OK) else "getrusage(RUSAGE_CHILDREN)",
        "process_rows": args.process_rows,
        "models": {}, "kernel": {}, "load": {}, "e2e": {}, "process": {}, "accuracy": {},
    }
    log(f"numpy BLAS: {r['blas']['summary']}; OPENBLAS_CORETYPE {r['env']['OPENBLAS_CORETYPE']}, "
        f"OPENBLAS_L2_SIZE {r['env']['OPENBLAS_L2_SIZE']}")
    if r["loadavg_start"] and r["loadavg_start"][0] > r["busy_load"]:
        log(f"warning: load average {r['loadavg_start'][0]:.2f}: the machine is not idle, timings will be noisy")

    # 1. data
    data = make_data(args.rows, DATA_SEED)
    data_path = out / "data.parquet"
    data.to_parquet(data_path, index=False)
    X = data[FEATURES].to_numpy(dtype=np.float64)
    X32 = X.astype(np.float32)
    small_path = out / f"data-{args.process_rows}.parquet"
    data.iloc[:args.process_rows].to_parquet(small_path, index=False)
    train = make_data(TRAIN_ROWS, TRAIN_SEED)
    log(f"data: {args.rows:,} rows -> {data_path}; training rows: {TRAIN_ROWS:,}")

    # 2. models
    models = fit_models(train)
    models = {k: v for k, v in models.items() if k in wanted}
    for name, mm in models.items():
        path = out / f"{name}.pkl"
        with open(path, "wb") as f:
            pickle.dump(mm["model"], f, protocol=5)
        mm["path"] = path
        mm["file_bytes"] = path.stat().st_size
        r["models"][name] = {k: v for k, v in mm.items() if k not in ("model", "path")}
        if mm["n_support_vectors"] is not None:
            print(f"{name}: n_support_vectors = {mm['n_support_vectors']}", flush=True)

    for name, mm in models.items():
        model, path = mm["model"], mm["path"]

        # 3. kernels
        log(f"{name}: scikit-learn decision_function / predict")
        sk, sk_df, sk_pred = sklearn_kernel(model, X, args.repeat)
        k = {"sklearn": sk}
        if isinstance(model, IsolationForest) and cores_n > 1:
            log(f"{name}: scikit-learn with joblib threading, n_jobs={cores_n}")
            k["sklearn_threaded"] = sklearn_iforest_threaded(model, X, args.repeat, cores_n)

        log(f"{name}: ONNX Runtime ({cores_n} threads, then 1)")
        onx = to_onnx(model)
        onx_bytes = onx.SerializeToString()
        (out / f"{name}.onnx").write_bytes(onx_bytes)
        k["ort_all_seconds"], ort_scores, ort_labels = ort_kernel(onx_bytes, X32, cores_n, args.repeat)
        k["ort_1_seconds"], _, _ = ort_kernel(onx_bytes, X32, 1, args.repeat)
        ort_acc = compare(sk_df, sk_pred, ort_scores, (ort_labels == -1).astype(np.int8))
        del ort_scores, ort_labels

        if not args.skip_fleetscore:
            log(f"{name}: fleetscore models bench ({cores_n} threads, then 1)")
            k["fleetscore_all"] = fleetscore_bench(fs, path, data_path, cores_n, args.repeat)
            k["fleetscore_1"] = fleetscore_bench(fs, path, data_path, 1, args.repeat)
            for key in ("fleetscore_all", "fleetscore_1"):
                if k[key]["rows"] != args.rows:
                    raise SystemExit(f"error: fleetscore bench scored {k[key]['rows']} rows, not {args.rows}")
        r["kernel"][name] = k

        # 4. load
        log(f"{name}: load times")
        pk_s, pk_n = pickle_load_mean(path.read_bytes())
        r["load"][name] = {"pickle_seconds": pk_s, "pickle_loops": pk_n}
        if not args.skip_fleetscore:
            r["load"][name]["fleetscore_seconds"] = k["fleetscore_all"]["load_seconds"]

        # 5. end to end
        log(f"{name}: end to end, {args.repeat} runs each")
        py_out = out / f"e2e_python_{name}.parquet"
        fs_out = out / f"e2e_fleetscore_{name}.parquet"
        cmds = {"python": [sys.executable, str(HERE / "python_score.py"), str(path), str(data_path),
                           str(py_out), feats]}
        if not args.skip_fleetscore:
            cmds["fleetscore"] = [str(fs), "models", "score", str(path), "--input", str(data_path),
                                  "--output", str(fs_out), "--features", feats]
        r["e2e"][name] = end_to_end(cmds, args.repeat)

        # 5b. a whole fleetscore process vs a warm Python on fewer rows, and what each part costs
        pr = min(args.process_rows, args.rows)
        log(f"{name}: {pr:,} rows, a fleetscore process vs a warm Python")
        # Both sides best of --process-repeat: a 50 ms process varies by 20% from run to run here.
        proc = {"python_warm": python_job_warm(path, small_path, out / f"warm_python_{name}.parquet",
                                               FEATURES, args.process_repeat)}
        if not args.skip_fleetscore:
            small_out = out / f"process_fleetscore_{name}.parquet"
            proc["fleetscore"] = end_to_end(
                {"fleetscore": [str(fs), "models", "score", str(path), "--input", str(small_path),
                                "--output", str(small_out), "--features", feats]},
                args.process_repeat)["fleetscore"]
            proc["fleetscore_start_seconds"] = process_start_seconds(fs)
            proc["fleetscore_bench"] = fleetscore_bench(fs, path, small_path, cores_n, args.repeat)
            small_score, small_anom = check_output_table(small_out, data.iloc[:pr])
            small_acc = compare(sk_df[:pr], sk_pred[:pr], small_score, small_anom)
            if small_acc["differing_predictions"] or small_acc["max_rel_diff"] > 1e-9:
                raise SystemExit(f"error: {small_out} differs from scikit-learn: {small_acc}")
        r["process"][name] = proc

        acc = {"ort": ort_acc}
        py_score, py_anom = check_output_table(py_out, data)
        acc["python_script"] = compare(sk_df, sk_pred, py_score, py_anom)
        if not args.skip_fleetscore:
            fs_score, fs_anom = check_output_table(fs_out, data)
            acc["fleetscore"] = compare(sk_df, sk_pred, fs_score, fs_anom)
        r["accuracy"][name] = acc

        line = (f"{name}: sklearn df {args.rows / sk['decision_seconds']:,.0f} rows/s, "
                f"predict {args.rows / sk['predict_seconds']:,.0f} rows/s; "
                f"ORT {args.rows / k['ort_all_seconds']:,.0f} rows/s ({cores_n} thr), "
                f"{args.rows / k['ort_1_seconds']:,.0f} rows/s (1 thr), max|d| {ort_acc['max_abs_diff']:.2e}")
        if not args.skip_fleetscore:
            line += (f"; fleetscore {k['fleetscore_all']['rows_per_second']:,.0f} rows/s ({cores_n} thr), "
                     f"{k['fleetscore_1']['rows_per_second']:,.0f} rows/s (1 thr), "
                     f"max|d| {acc['fleetscore']['max_abs_diff']:.2e}, "
                     f"{acc['fleetscore']['differing_predictions']} differing predictions")
        log(line)
        del sk_df, sk_pred
        gc.collect()

    r["total_seconds"] = time.perf_counter() - _T0
    section = render(r)
    (out / "results.json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    print(section)
    if args.write:
        write_section(args.write, section, MARK_START, MARK_END)
        log(f"wrote the report into {args.write}")
    log(f"done in {r['total_seconds']:.0f} s; raw results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
