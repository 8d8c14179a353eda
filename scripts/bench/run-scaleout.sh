#!/usr/bin/env bash
# Benchmark scaling a fleet run past one object store's request rate (issue 19) — the store
# requests a run makes with model packs and without, at N=1,000 and N=10,000 devices, and the run's
# throughput with 1, 2, 4 and 8 worker processes sharing one simulated cloud store — and write the
# results into BENCHMARKS.md (between the bench:scaleout markers). About 15 minutes on 2 cores.
#
#   bash scripts/bench/run-scaleout.sh [extra scaleout.py options, e.g. --repeats 3 --scale 100]
#
# Builds nothing: it runs the release binary at $FLEETSCORE, by default
# ${CARGO_TARGET_DIR:-target}/release/fleetscore (cargo build --release -p fleetscore first).
# - creates or updates the venv .venv/bench from scripts/bench/requirements.txt (fleet.py's
#   generator needs numpy, pyarrow and scikit-learn)
# - python scripts/bench/scaleout.py --fleetscore "$FLEETSCORE" --write BENCHMARKS.md "$@"
#
# It uses the N=1,000 fleet run-fleet.sh caches in target/bench/fleet/fleet-1000 (generated when
# missing: about 2 minutes), makes the N=10,000 one from it, and keeps its stores, coordinator
# files and results in target/bench/scaleout (the stores are deleted at the end unless --keep).
# Run it on an otherwise idle machine: the scale-out runs up to 8 worker processes at once.
#
# OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE may be set on this machine (older OpenBLAS builds need
# them); they slow a current numpy, so they are unset for the benchmark command only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
FLEETSCORE="${FLEETSCORE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fleetscore}"
if [ ! -x "$FLEETSCORE" ]; then
  echo "run-scaleout.sh: no release binary at $FLEETSCORE: build it (cargo build --release -p fleetscore) or set FLEETSCORE" >&2
  exit 1
fi

SKIP_BUILD=1 source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"

echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE -u FLEETSCORE_STORE_SIM \
  BENCH_COMMAND="bash scripts/bench/run-scaleout.sh" \
  "$VENV/bin/python" "$HERE/scaleout.py" --fleetscore "$FLEETSCORE" --write BENCHMARKS.md "$@"
