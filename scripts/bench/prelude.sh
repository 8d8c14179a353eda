# Sourced by the run-*.sh benchmarks: creates or updates the venv .venv/bench from
# requirements.txt (or BENCH_VENV from BENCH_REQ; rebuilt from scratch when the requirements or
# the Python version change) and builds the release binary unless SKIP_BUILD=1. Sets ROOT,
# HERE and VENV.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/scripts/bench"
VENV="${BENCH_VENV:-$ROOT/.venv/bench}"
REQ="${BENCH_REQ:-$HERE/requirements.txt}"
cd "$ROOT"

if [ -z "${PYTHON:-}" ]; then
  if command -v python3.11 >/dev/null 2>&1; then PYTHON=python3.11; else PYTHON=python3; fi
fi
pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [ "$pyver" != "3.11" ]; then
  echo "warning: $PYTHON is Python $pyver; the pins were made for 3.11" >&2
fi

stamp="$pyver $(sha256sum "$REQ" | cut -d' ' -f1)"
if [ ! -f "$VENV/.bench-stamp" ] || [ "$(cat "$VENV/.bench-stamp")" != "$stamp" ]; then
  echo "== building $VENV from $(basename "$REQ")" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet --only-binary=:all: -r "$REQ"
  "$VENV/bin/python" -m pip check
  echo "$stamp" > "$VENV/.bench-stamp"
fi

if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== cargo build --release -p fleetscore" >&2
  cargo build --release -p fleetscore
fi
