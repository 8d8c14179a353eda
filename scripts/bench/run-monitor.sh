#!/usr/bin/env bash
# The monitor on a large store: builds the release binary and the store builder, writes a store
# of 50,000 models and 10,000 hourly runs (about 1 GB, in out/bench-monitor/ unless BENCH_OUT
# says otherwise), serves it and times every page, API call and /metrics scrape, and reports
# serve's memory. With --write, replaces the monitor's section of BENCHMARKS.md.
#
#   bash scripts/bench/run-monitor.sh [--write]
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="${BENCH_OUT:-$root/out/bench-monitor}"
target="${CARGO_TARGET_DIR:-$root/target}"
runs="${BENCH_RUNS:-10000}" models="${BENCH_MODELS:-50000}"

cargo build --release -p fleetscore
cargo build --release -p fleetscore-monitor --example bench_store
echo "== building the store in $out ($runs runs, $models models)"
"$target/release/examples/bench_store" "$out" "$runs" "$models" 48 48
du -sh "$out/store"
write=()
[ "${1:-}" = "--write" ] && write=(--write BENCHMARKS.md)
python3 scripts/bench/monitor.py --bin "$target/release/fleetscore" --store "$out/store" "${write[@]}"
