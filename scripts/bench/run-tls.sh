#!/usr/bin/env bash
# Benchmark the cost of encryption on ingest — HTTPS against HTTP, Kafka through TLS + SASL
# against plaintext — and write the results into BENCHMARKS.md (between the bench:tls markers).
#
#   bash scripts/bench/run-tls.sh [--seconds 8]
#
# The Kafka rows need tansu and kafka-python: FLEETSCORE_TEST_TANSU (scripts/services/tansu.sh
# install prints it) and FLEETSCORE_TEST_PYTHON (a Python with kafka-python, e.g. the one
# scripts/test makes in .venv/test). SKIP_BUILD=1 uses the binaries as they are.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
: "${FLEETSCORE_TEST_TANSU:=$(bash scripts/services/tansu.sh install)}"
: "${FLEETSCORE_TEST_PYTHON:=$ROOT/.venv/test/bin/python}"
export FLEETSCORE_TEST_TANSU FLEETSCORE_TEST_PYTHON
if [ "${SKIP_BUILD:-0}" != "1" ]; then
  echo "== cargo build --release: fleetscore, loadgen, kafka_gate" >&2
  cargo build --release -p fleetscore
  cargo build --release -p fleetscore-ingest --example loadgen
  cargo build --release -p fleetscore --example kafka_gate
fi
echo "== benchmark" >&2
python3 scripts/bench/tls.py --write BENCHMARKS.md "$@"
