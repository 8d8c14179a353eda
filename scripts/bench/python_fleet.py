#!/usr/bin/env python3
"""Score a whole fleet with its pickled scikit-learn models, the way a data scientist would.

    python scripts/bench/python_fleet.py MODELS_DIR DATA.parquet OUTPUT_DIR

MODELS_DIR holds one pickle per sensor, named `model_{device}_{tag}`; DATA.parquet
holds the readings in the long shape (`TS`, `Device`, `Tag`, `Value`). The script
reads the Parquet file once with pandas, groups the rows by (Device, Tag), and for
each sensor unpickles its model and calls `decision_function` and `predict` on that
sensor's values (`values.reshape(-1, 1)`). It writes every input row plus `score`
(decision_function) and `prediction` (predict: -1 outlier, +1 inlier) to
OUTPUT_DIR/predictions.parquet, one file.

This is the Python baseline of scripts/bench/fleet.py: one process, plain pandas and
scikit-learn, no tuning. It is not a straw man: the groupby is computed once and the
results are written back by row position, so no per-sensor DataFrame is built.
"""

import os
import pickle
import sys
import time

import numpy as np
import pandas as pd
import sklearn  # noqa: F401  (imported as a scoring script would; the pickles need it)


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    models_dir, data_path, output_dir = argv
    started = time.perf_counter()

    df = pd.read_parquet(data_path)
    values = df["Value"].to_numpy(dtype=np.float64)
    scores = np.full(len(df), np.nan)
    predictions = np.zeros(len(df), dtype=np.int8)

    n_models = 0
    for (device, tag), idx in df.groupby(["Device", "Tag"], sort=True).indices.items():
        with open(os.path.join(models_dir, f"model_{device}_{tag}"), "rb") as f:
            model = pickle.load(f)
        X = values[idx].reshape(-1, 1)
        scores[idx] = model.decision_function(X)
        predictions[idx] = model.predict(X)
        n_models += 1

    df["score"] = scores
    df["prediction"] = predictions
    os.makedirs(output_dir, exist_ok=True)
    out_path = os.path.join(output_dir, "predictions.parquet")
    df.to_parquet(out_path, index=False)

    print(
        f"scored {len(df)} rows with {n_models} models "
        f"({int((predictions == -1).sum())} anomalies) in {time.perf_counter() - started:.2f}s "
        f"-> {out_path}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
