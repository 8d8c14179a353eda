#!/usr/bin/env bash
# Benchmark fleetscore against scikit-learn and ONNX Runtime on this machine and
# write the results into BENCHMARKS.md (between the bench:models markers).
#
#   bash scripts/bench/run-models.sh [extra models.py options, e.g. --rows 200000]
#
# - creates or updates the venv .venv/bench from scripts/bench/requirements.txt
#   (rebuilt from scratch when the requirements or the Python version change)
# - cargo build --release -p fleetscore   (skipped when SKIP_BUILD=1)
# - python scripts/bench/models.py --write BENCHMARKS.md "$@"
#
# Environment: PYTHON chooses the interpreter for the venv (default python3.11,
# else python3); SKIP_BUILD=1 uses the release binary as it is.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine (older
# OpenBLAS builds need them); they slow a current numpy, so they are unset for
# the benchmark command only. models.py records which BLAS kernel numpy runs.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"

echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  BENCH_COMMAND="bash scripts/bench/run-models.sh" \
  "$VENV/bin/python" "$HERE/models.py" --write BENCHMARKS.md "$@"
