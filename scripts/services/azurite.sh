#!/usr/bin/env bash
# Installs (from npm) and starts Azurite's blob service on 127.0.0.1, and creates a container.
#
#   scripts/services/azurite.sh start CONTAINER   # prints the env lines to use it
#   scripts/services/azurite.sh stop
#
# Azurite 3.35 is the newest release that runs on Node 20.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/target/services/azurite"
port="${AZURITE_BLOB_PORT:-10000}"

case "${1:-}" in
  start)
    container="${2:?container name}"
    mkdir -p "$dir"
    if [ ! -x "$dir/node_modules/.bin/azurite-blob" ]; then
      (cd "$dir" && npm install --silent --no-audit --no-fund --prefix "$dir" azurite@3.35.0 >/dev/null)
    fi
    if ! (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      rm -rf "$dir/data" && mkdir -p "$dir/data"
      nohup "$dir/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" \
        --location "$dir/data" --silent --skipApiVersionCheck --disableTelemetry \
        > "$dir/azurite.log" 2>&1 &
      echo $! > "$dir/pid"
      for _ in $(seq 1 100); do
        (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
      done
    fi
    python3 "$root/scripts/services/azurite-container.py" "$container" \
      --endpoint "http://127.0.0.1:$port" >&2
    ;;
  stop)
    if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; rm -f "$dir/pid"; fi
    ;;
  *)
    echo "usage: $0 start CONTAINER | stop" >&2
    exit 2
    ;;
esac
