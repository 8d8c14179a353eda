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

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/bench"
VENV="$ROOT/.venv/bench"
REQ="$HERE/requirements.txt"
cd "$ROOT"

if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$pyver" != "3.11" ]; then
  echo "warning: $PYTHON is Python $pyver; the pins were made for 3.11" >&2
fi

stamp="$pyver $(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -f "$VENV/.bench-stamp" ] || [ "$(cat "$VENV/.bench-stamp")" != "$stamp" ]; then
  echo "== building $VENV from $(basename "$REQ")" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --only-binary=:all: -r "$REQ"
  "$VENV/bin/python" -m pip check
  echo "$stamp" > "$VENV/.bench-stamp"
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== cargo build --release -p fleetscore" >&2
  cargo build --release -p fleetscore
fi

echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  BENCH_COMMAND="bash scripts/bench/run-fleet.sh" \
  "$VENV/bin/python" "$HERE/fleet.py" --devices 1000 --devices 10000 --write BENCHMARKS.md "$@"
