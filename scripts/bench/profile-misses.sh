#!/usr/bin/env bash
# Where the time of issue 14's missed targets goes: the figures BENCHMARKS.md's "where they
# stand" note quotes.
#
#   bash scripts/bench/profile-misses.sh
#
# Needs `perf`, the release binary, the model benchmark's files in target/bench (run
# scripts/bench/run-models.sh first) and the fleet benchmark's N=1,000 fleet in
# target/bench/fleet/fleet-1000 (scripts/bench/run-fleet.sh). Prints:
# 1. mimalloc's committed and purged memory of one `models score` of 200,000 rows with
#    ocsvm20, for batch sizes from 8,192 to 65,536 rows (MIMALLOC_SHOW_STATS=1), and the page
#    faults of that process with transparent huge pages and without (MIMALLOC_ALLOW_THP=0);
# 2. the share of that process's CPU samples in the kernel zeroing fresh pages
#    (clear_page_erms), over 10 runs, and how many of the 2 cores the process keeps busy on
#    average (perf stat, 10 more runs);
# 3. the wall time of `models import` of the N=1,000 fleet's 5,000 files into a new store, the
#    share of its samples under ext4's inode creation (__ext4_new_inode), and the files and
#    folders the store holds after it;
# 4. the share of the samples of `data import` of that fleet's hour, and of one `run` of it, in
#    clear_page_erms.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
fs="$root/target/release/fleetscore"
bench="$root/target/bench"
fleet="$bench/fleet/fleet-1000/models"
readings="$bench/fleet/fleet-1000/data.parquet"
for need in "$fs" "$bench/ocsvm20.pkl" "$bench/data-200000.parquet" "$fleet" "$readings"; do
  [[ -e "$need" ]] || { echo "profile-misses: $need is missing (see the header)" >&2; exit 1; }
done
command -v perf >/dev/null || { echo "profile-misses: needs perf" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
score=("$fs" models score "$bench/ocsvm20.pkl" --input "$bench/data-200000.parquet"
  --output "$work/out.parquet" --features f0,f1,f2,f3)

echo "== 1. committed memory of one models score (200,000 rows, ocsvm20)"
for rows in 8192 16384 32768 65536; do
  stats="$(MIMALLOC_SHOW_STATS=1 "${score[@]}" --batch-rows "$rows" 2>&1)"
  committed="$(awk '$1 == "committed" {print $3, $4}' <<<"$stats")"
  purged="$(awk '$1 == "purged" {print $3, $4}' <<<"$stats")"
  echo "batch $rows rows: $committed committed, $purged purged"
done
faults() {
  perf stat -x, -e page-faults "${score[@]}" 2>&1 >/dev/null | awk -F, '/page-faults/ {print $1}'
}
echo "page faults: $(faults) with huge pages, $(MIMALLOC_ALLOW_THP=0 faults) without"

# The share of samples whose stack holds `symbol`, from a perf.data file.
share() {
  perf report -i "$1" --stdio --children --sort sym 2>/dev/null |
    awk -v s="$2" '$0 ~ ("\\] " s "$") {print $1; exit}'
}

echo "== 2. the kernel zeroing fresh pages in models score (10 runs)"
perf record -q -F 10000 -g -o "$work/score.data" -- \
  bash -c 'for i in 1 2 3 4 5 6 7 8 9 10; do "$@" >/dev/null 2>&1; done' _ "${score[@]}" 2>/dev/null
echo "clear_page_erms: $(share "$work/score.data" clear_page_erms) of the samples"
perf stat -r 10 -e task-clock "${score[@]}" 2>&1 >/dev/null |
  awk '/task-clock/ {print "cores busy on average:", $5, "(task-clock", $1, "ms a run)"}
       /elapsed/ {print "wall:", $1 * 1000, "ms a run (mean of 10)"}'

echo "== 3. models import of 5,000 files into a new store"
start=$(date +%s.%N)
perf record -q -F 5000 -g -o "$work/import.data" -- \
  "$fs" --store "$work/store" models import "$fleet" --pattern 'model_{device}_{tag}' \
  >/dev/null 2>&1
end=$(date +%s.%N)
echo "wall (under perf): $(echo "$end - $start" | bc) s"
echo "__ext4_new_inode: $(share "$work/import.data" __ext4_new_inode) of the samples"
echo "the store: $(find "$work/store" | wc -l) files and folders"

echo "== 4. the kernel zeroing fresh pages in data import and in one run of the fleet's hour"
perf record -q -F 10000 -g -o "$work/data.data" -- \
  "$fs" --store "$work/store" data import "$readings" --time-column TS --device-column Device \
  --tag-column Tag --value-column Value >/dev/null 2>&1
echo "data import: clear_page_erms $(share "$work/data.data" clear_page_erms) of the samples"
perf record -q -F 10000 -g -o "$work/run.data" -- \
  "$fs" --store "$work/store" run --from '2026-01-01 00:00:00' --to '2026-01-01 01:00:00' \
  >/dev/null 2>&1
echo "run: clear_page_erms $(share "$work/run.data" clear_page_erms) of the samples"
