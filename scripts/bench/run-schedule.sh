#!/usr/bin/env bash
# Benchmark scheduling — overhead per tick, a backfill of 24 hourly windows against one run over
# the same day, and the watermark trigger's latency from a window's close to its predictions —
# and write the results into BENCHMARKS.md (between the bench:schedule markers).
#
#   bash scripts/bench/run-schedule.sh [extra schedule.py options, e.g. --minutes 5 (default 2)]
#
# Uses the venv and release build of prelude.sh, and the N=1,000 fleet fleet.py caches in
# target/bench/fleet (generated on first use). SKIP_BUILD=1 uses the release binary as it is.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"

echo "== benchmark" >&2
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
  BENCH_COMMAND="bash scripts/bench/run-schedule.sh" \
  "$VENV/bin/python" "$HERE/schedule.py" --write BENCHMARKS.md "$@"
