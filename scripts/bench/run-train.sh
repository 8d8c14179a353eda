#!/usr/bin/env bash
# Benchmark `fleetscore train` against the scikit-learn loop that fits and pickles each model,
# and write the results into BENCHMARKS.md (between the bench:train markers).
#
#   bash scripts/bench/run-train.sh [train.py options; default --devices 1000 --devices 10000]
#
# - creates or updates the venv .venv/bench from scripts/bench/requirements.txt
# - cargo build --release -p fleetscore   (skipped when SKIP_BUILD=1)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"

args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--devices 1000 --devices 10000)
echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  BENCH_COMMAND="bash scripts/bench/run-train.sh ${args[*]}" \
  "$VENV/bin/python" "$HERE/train.py" --write BENCHMARKS.md "${args[@]}"
