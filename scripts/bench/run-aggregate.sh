#!/usr/bin/env bash
# Benchmark aggregation — fleetscore against DuckDB and Polars computing the same 1-minute
# windows from the same Parquet readings, and fleetscore from its durable log — and write the
# results into BENCHMARKS.md (between the bench:aggregate markers).
#
#   bash scripts/bench/run-aggregate.sh [--series 20000] [--minutes 60] [--repeat 3]
#
# - creates or updates the venv .venv/bench-aggregate from requirements-aggregate.txt
# - cargo build --release -p fleetscore, and the fill_log example (skipped when SKIP_BUILD=1)
# - generates the readings once into target/bench/aggregate/ (reused by later runs)
set -euo pipefail

BENCH_VENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bench-aggregate"
BENCH_REQ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/requirements-aggregate.txt"
source "$(dirname "${BASH_SOURCE[0]}")/prelude.sh"
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  cargo build --release -p fleetscore-aggregate --example fill_log
fi

echo "== benchmark" >&2
"$VENV/bin/python" "$HERE/aggregate.py" --write BENCHMARKS.md "$@"
