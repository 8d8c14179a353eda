#!/usr/bin/env bash
# Benchmark a whole fleet run — fleetscore vs the Python way (pandas + one pickled
# scikit-learn model per sensor) — on this machine and write the results into
# BENCHMARKS.md (between the bench:fleet markers).
#
#   bash scripts/bench/run-fleet.sh [extra fleet.py options, e.g. --keep]
#
# - creates or updates the venv .venv/bench from scripts/bench/requirements.txt
#   (rebuilt from scratch when the requirements or the Python version change)
# - cargo build --release -p fleetscore   (skipped when SKIP_BUILD=1)
# - python scripts/bench/fleet.py --devices 1000 --devices 10000 --write BENCHMARKS.md "$@"
#
# The synthetic fleets (Parquet readings and one pickled model per sensor; 50,000
# models at N=10,000) are cached in target/bench/fleet/fleet-N and reused by later
# runs; the first run fits the models with 2 processes at nice 5.
#
# Environment: PYTHON chooses the interpreter for the venv (default python3.11,
# else python3); SKIP_BUILD=1 uses the release binary as it is.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine (older
# OpenBLAS builds need them); they slow a current numpy, so they are unset for
# the benchmark command only.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"

echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  BENCH_COMMAND="bash scripts/bench/run-fleet.sh" \
  "$VENV/bin/python" "$HERE/fleet.py" --devices 1000 --devices 10000 --write BENCHMARKS.md "$@"
