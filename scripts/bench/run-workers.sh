#!/usr/bin/env bash
# Benchmark stateless workers on a PostgreSQL coordinator — per-task coordination overhead, and
# the 5,000-model fleet run's wall time with 1, 2 and 4 `fleetscore worker` processes — on this
# machine, and write the results into BENCHMARKS.md (between the bench:workers markers).
#
#   bash scripts/bench/run-workers.sh [extra workers.py options, e.g. --repeats 3]
#
# - creates or updates the venv .venv/bench from scripts/bench/requirements.txt
#   (rebuilt from scratch when the requirements or the Python version change)
# - cargo build --release -p fleetscore   (skipped when SKIP_BUILD=1)
# - cargo build --release -p fleetscore -p fleetscore-jobs --example coordinator_overhead
#   (skipped when SKIP_BUILD=1)
# - python scripts/bench/workers.py --write BENCHMARKS.md "$@"
#
# workers.py starts PostgreSQL with scripts/services/postgres.sh (installing the Debian package
# if needed) and stops it again at the end unless it was already running. It uses the fleet
# cached by run-fleet.sh in target/bench/fleet/fleet-1000, and generates it when missing.
#
# Environment: PYTHON chooses the interpreter for the venv (default python3.11, else python3);
# SKIP_BUILD=1 uses the release binaries as they are; POSTGRES_TEST_PORT picks the server's port
# (default 10432).
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine (older OpenBLAS builds need
# them); they slow a current numpy (used if the fleet has to be generated), so they are unset
# for the benchmark command only.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== cargo build --release -p fleetscore -p fleetscore-jobs --example coordinator_overhead" >&2
  cargo build --release -p fleetscore -p fleetscore-jobs --example coordinator_overhead
fi

echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  BENCH_COMMAND="bash scripts/bench/run-workers.sh" \
  "$VENV/bin/python" "$HERE/workers.py" --write BENCHMARKS.md "$@"
