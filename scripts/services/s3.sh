#!/usr/bin/env bash
# Starts an S3-compatible server (moto, from PyPI, in the test virtualenv) on 127.0.0.1 and
# creates a bucket.
#
#   scripts/services/s3.sh start BUCKET PYTHON_VENV
#   scripts/services/s3.sh stop
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$root/target/services/s3"
port="${S3_TEST_PORT:-10090}"

case "${1:-}" in
  start)
    bucket="${2:?bucket name}"
    venv="${3:?virtualenv with moto[server]}"
    mkdir -p "$dir"
    if ! (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      nohup "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$dir/moto.log" 2>&1 &
      echo $! > "$dir/pid"
      for _ in $(seq 1 100); do
        (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
      done
    fi
    "$venv/bin/python" - "$port" "$bucket" <<'PY'
import sys, urllib.request
port, bucket = sys.argv[1], sys.argv[2]
req = urllib.request.Request(f"http://127.0.0.1:{port}/{bucket}", method="PUT")
with urllib.request.urlopen(req, timeout=10) as r:
    print(f"bucket {bucket} ready ({r.status})", file=sys.stderr)
PY
    ;;
  stop)
    if [ -f "$dir/pid" ]; then kill "$(cat "$dir/pid")" 2>/dev/null || true; rm -f "$dir/pid"; fi
    ;;
  *)
    echo "usage: $0 start BUCKET VENV | stop" >&2
    exit 2
    ;;
esac
