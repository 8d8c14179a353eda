#!/usr/bin/env bash
# Benchmark `fleetscore up --demo` at fleet scale — CPU, memory, readings per second and the time
# from each window's close to its predictions — and write the results into BENCHMARKS.md
# (between the bench:up markers).
#
#   bash scripts/bench/run-up.sh [up.py options, e.g. --devices 10000 --devices 20000 --minutes 4]
#
# Builds the release binary first (SKIP_BUILD=1 uses it as it is). Needs only the standard
# library's Python.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== cargo build --release -p fleetscore" >&2
  cargo build --release -p fleetscore
fi
echo "== benchmark" >&2
BENCH_COMMAND="bash scripts/bench/run-up.sh $*" python3 scripts/bench/up.py --write BENCHMARKS.md "$@"
