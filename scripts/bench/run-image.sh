#!/usr/bin/env bash
# Benchmark the container image — its size, a container's start to the first request served,
# and a worker's throughput in a container against the same binary on the host — and write the
# results into BENCHMARKS.md (between the bench:image markers).
#
#   bash scripts/bench/run-image.sh [extra image.py options, e.g. --copies 500 --repeats 3]
#
# - scripts/image: the static release build and the image fleetscore:VERSION (skipped when
#   SKIP_BUILD=1: the image and target/image/context-release/fleetscore as they are)
# - python3 scripts/bench/image.py (standard library only) against PostgreSQL started by
#   scripts/services/postgres.sh; the fleet is generated into target/bench/image/ once
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  image="$(bash scripts/image | tail -n 1)"
fi
podman="$(bash scripts/services/podman.sh install)"
# The binary exactly as scripts/image put it in the image (static, debug info stripped), so
# that the host runs the same bytes.
binary="${CARGO_TARGET_DIR:-$root/target}/image/context-release/fleetscore"
[ -x "$binary" ] || { echo "run-image.sh: no $binary; run without SKIP_BUILD=1" >&2; exit 1; }
version="$("$binary" --version | awk '{print $2}')"
image="${image:-fleetscore:$version}"
python3 scripts/bench/image.py --podman "$podman" --image "$image" --binary "$binary" \
  --archive "out/image/fleetscore-$version.oci.tar" --write BENCHMARKS.md "$@"
