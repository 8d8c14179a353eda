#!/usr/bin/env python3
"""Score a table with a pickled scikit-learn model, the way a data scientist would.

    python scripts/bench/python_score.py MODEL INPUT OUTPUT FEATURES

MODEL is a pickle file, INPUT and OUTPUT are .csv or .parquet tables (chosen by
extension) and FEATURES is a comma-separated list of the input columns that feed
the model, in the model's order. OUTPUT gets every input column plus `score`
(decision_function) and `anomaly` (1 where predict gives -1, else 0), like
`fleetscore models score`.

This is the Python baseline of the end-to-end benchmark in scripts/bench/models.py:
it deliberately does the plain, obvious thing (import pandas and scikit-learn,
unpickle, read the whole table, decision_function + predict, add two columns,
write the table) with no tuning.
"""

import pickle
import sys
import time

import pandas as pd
import sklearn  # noqa: F401  (imported as a scoring script would; the pickle needs it)


def read_table(path):
    if path.endswith(".parquet"):
        return pd.read_parquet(path)
    if path.endswith(".csv"):
        return pd.read_csv(path)
    raise SystemExit(f"error: {path}: expected a .csv or .parquet file")


def write_table(df, path):
    if path.endswith(".parquet"):
        df.to_parquet(path, index=False)
    elif path.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        raise SystemExit(f"error: {path}: expected a .csv or .parquet file")


def main(argv):
    if len(argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    model_path, input_path, output_path, features = argv
    features = [f.strip() for f in features.split(",") if f.strip()]
    started = time.perf_counter()

    with open(model_path, "rb") as f:
        model = pickle.load(f)
    df = read_table(input_path)
    for taken in ("score", "anomaly"):
        if taken in df.columns:
            raise SystemExit(f"error: {input_path} already has a column `{taken}`")
    X = df[features]
    df["score"] = model.decision_function(X)
    df["anomaly"] = (model.predict(X) == -1).astype("int8")
    write_table(df, output_path)

    print(
        f"scored {len(df)} rows with {type(model).__name__} "
        f"({int(df['anomaly'].sum())} anomalies) in {time.perf_counter() - started:.2f}s "
        f"-> {output_path}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
