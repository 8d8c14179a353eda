"""Loads the pickles fleetscore-train wrote and checks them with real scikit-learn.

    python check_pickles.py PICKLE_DIR GOLDEN_DIR

For every PICKLE_DIR/CASE.pkl, with GOLDEN_DIR/CASE.json (from scripts/fixtures/gen_train.py):

- ``pickle.load`` gives the estimator, with no warning (but an older scikit-learn's notice that
  the pickle comes from 1.9.1);
- its ``decision_function`` and ``score_samples`` on the held-out rows agree with the golden
  values within 1e-9 relative (near zero, relative to the terms the value is the difference
  of), and ``predict`` on the training rows equals scikit-learn's;
- when this scikit-learn is the version the pickles name (1.9.1), it also fits the same pipeline itself
  and checks that every estimator's state has the same keys in the same order, the same Python
  and numpy types, dtypes and shapes, and the same values (floats within 1e-9 relative).

Prints one summary line; exits non-zero with the list of differences.
"""

import glob
import json
import os
import pickle
import sys
import warnings

import numpy as np
import sklearn
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.svm import OneClassSVM

TOL = 1e-9
# The scikit-learn version fleetscore-train writes pickles as.
WRITTEN_VERSION = "1.9.1"


def close(got, want, floor=0.0):
    got = np.asarray(got, dtype=float)
    want = np.asarray(want, dtype=float)
    if got.shape != want.shape:
        return False, np.inf
    diff = np.abs(got - want)
    scale = np.maximum(np.abs(want), floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / scale)
    worst = float(rel.max()) if rel.size else 0.0
    return worst <= TOL, worst


def same_value(a, b):
    """Whether two state values agree: type, dtype, shape, and value (floats within TOL)."""
    if type(a) is not type(b):
        return f"type {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, np.ndarray):
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"array {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.kind == "f":
            ok, worst = close(a, b)
            return None if ok else f"values differ (relative {worst:.3e})"
        return None if np.array_equal(a, b) else "values differ"
    if isinstance(a, (float, np.floating)):
        ok, worst = close(a, b)
        return None if ok else f"{a!r} vs {b!r}"
    if isinstance(a, (list, tuple)) and a and isinstance(a[0], tuple):
        return None  # a Pipeline's steps: compared estimator by estimator
    return None if a == b else f"{a!r} vs {b!r}"


def compare_state(name, got, want, errors):
    gs, ws = got.__getstate__(), want.__getstate__()
    if list(gs) != list(ws):
        errors.append(f"{name}: state keys {list(gs)} vs scikit-learn's {list(ws)}")
    for k in ws:
        if k in gs:
            why = same_value(gs[k], ws[k])
            if why:
                errors.append(f"{name}: {k}: {why}")


def term_scale(model, x):
    """|rho| + sum |alpha_i K(x, sv_i)| for each row: the size of the terms a decision value is
    the difference of. Another scikit-learn sums them in another order (its BLAS), so a value
    near zero is compared in these units."""
    svm = model.steps[-1][1] if isinstance(model, Pipeline) else model
    if isinstance(model, Pipeline):
        x = model[:-1].transform(x)
    sv, g = svm.support_vectors_, svm._gamma
    dot = x @ sv.T
    k = {
        "rbf": lambda: np.exp(-g * ((x[:, None, :] - sv[None, :, :]) ** 2).sum(axis=2)),
        "linear": lambda: dot,
        "poly": lambda: (g * dot + svm.coef0) ** svm.degree,
        "sigmoid": lambda: np.tanh(g * dot + svm.coef0),
    }[svm.kernel]()
    return np.abs(k) @ np.abs(svm.dual_coef_[0]) + abs(svm.intercept_[0])


def refit(case):
    params = dict(case["params"])
    svm = OneClassSVM(**params)
    spec = case["scaler"]
    if spec is None:
        model = svm
    elif spec["kind"] == "standard":
        model = make_pipeline(StandardScaler(with_mean=spec["with_mean"], with_std=spec["with_std"]), svm)
    else:
        model = make_pipeline(MinMaxScaler(feature_range=(spec["min"], spec["max"])), svm)
    return model.fit(np.asarray(case["X"], dtype=float))


def main():
    pickles, goldens = sys.argv[1], sys.argv[2]
    errors = []
    worst = 0.0
    refitted = 0
    files = sorted(glob.glob(os.path.join(pickles, "*.pkl")))
    for path in files:
        name = os.path.basename(path)[: -len(".pkl")]
        with open(os.path.join(goldens, name + ".json")) as f:
            case = json.load(f)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # Only an older scikit-learn's notice that the pickle comes from 1.9.1 is expected.
            warnings.filterwarnings("ignore", message="Trying to unpickle estimator")
            try:
                with open(path, "rb") as f:
                    model = pickle.load(f)
            except Exception as e:  # noqa: BLE001 - reported, not hidden
                errors.append(f"{name}: pickle.load: {type(e).__name__}: {e}")
                continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = np.asarray(case["X"], dtype=float)
            xt = np.asarray(case["X_test"], dtype=float)
            expected = case["expected"]
            floor = term_scale(model, xt)
            for what, got in (
                ("decision_function", model.decision_function(xt)),
                ("score_samples", model.score_samples(xt)),
            ):
                ok, w = close(got, expected[what], floor)
                worst = max(worst, w)
                if not ok:
                    errors.append(f"{name}: {what} differs from the golden values (relative {w:.3e})")
            if list(model.predict(x)) != expected["predict_train"]:
                errors.append(f"{name}: predict on the training rows differs")
            if sklearn.__version__ != WRITTEN_VERSION:
                continue
            refitted += 1
            ref = refit(case)
            if type(model) is not type(ref):
                errors.append(f"{name}: {type(model).__name__}, scikit-learn fits a {type(ref).__name__}")
                continue
            if isinstance(ref, Pipeline):
                got_names = [n for n, _ in model.steps]
                want_names = [n for n, _ in ref.steps]
                if got_names != want_names:
                    errors.append(f"{name}: steps {got_names} vs {want_names}")
                    continue
                compare_state(name + " Pipeline", model, ref, errors)
                pairs = [(n, g, w) for (n, g), (_, w) in zip(model.steps, ref.steps)]
            else:
                pairs = [("oneclasssvm", model, ref)]
            for step, got, want in pairs:
                if type(got) is not type(want):
                    errors.append(f"{name}: step {step} is a {type(got).__name__}")
                    continue
                compare_state(f"{name} {step}", got, want, errors)
            ok, w = close(model.decision_function(xt), ref.decision_function(xt), floor)
            worst = max(worst, w)
            if not ok:
                errors.append(f"{name}: decision_function differs from scikit-learn's own fit ({w:.3e})")
    print(
        f"scikit-learn {sklearn.__version__} / numpy {np.__version__}: {len(files)} pickles loaded, "
        f"{refitted} compared state by state with its own fit; largest relative difference {worst:.3e}"
    )
    if errors:
        print("\n".join(errors[:60]))
        sys.exit(1)


if __name__ == "__main__":
    main()
