#!/usr/bin/env bash
# Clean release build time of the fleetscore binary at one or more git revisions, each in a
# temporary worktree with a target folder of its own (crates already downloaded are reused;
# nothing else is). Run on an idle machine; the revisions build one after the other.
#
#   bash scripts/bench/build-time.sh REV [REV ...]     e.g. d3861dc HEAD
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
for rev in "$@"; do
  dir="$(mktemp -d)"
  git -C "$root" worktree add -q --detach "$dir/src" "$rev"
  start=$(date +%s.%N)
  CARGO_TARGET_DIR="$dir/target" cargo build --quiet --release --locked -p fleetscore \
    --manifest-path "$dir/src/Cargo.toml"
  end=$(date +%s.%N)
  size=$(stat -c %s "$dir/target/release/fleetscore")
  printf '%s (%s): %s s, binary %s MB, %d crates compiled\n' "$rev" \
    "$(git -C "$root" rev-parse --short "$rev")" "$(awk "BEGIN{printf \"%.0f\", $end - $start}")" \
    "$(awk "BEGIN{printf \"%.1f\", $size / 1000000}")" "$(ls "$dir/target/release/deps" | grep -c '\.rlib$')"
  git -C "$root" worktree remove --force "$dir/src"
  rm -rf "$dir"
done
