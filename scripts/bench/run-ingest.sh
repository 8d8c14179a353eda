#!/usr/bin/env bash
# Benchmark ingest — readings/s and acknowledgement latency over HTTP with durable acks, memory
# under overload, and Mosquitto with persistence as the peer — and write the results into
# BENCHMARKS.md (between the bench:ingest markers).
#
#   bash scripts/bench/run-ingest.sh [--seconds 8]
#
# Needs mosquitto and mosquitto-clients for the MQTT rows (scripts/services/mosquitto.sh
# install, which scripts/test runs, installs them). SKIP_BUILD=1 uses the binaries as they are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash scripts/services/mosquitto.sh install > /dev/null
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== cargo build --release -p fleetscore, and the load generators" >&2
  cargo build --release -p fleetscore
  cargo build --release -p fleetscore-ingest --example loadgen --example mqttgen
fi
echo "== benchmark" >&2
python3 scripts/bench/ingest.py --write BENCHMARKS.md "$@"
