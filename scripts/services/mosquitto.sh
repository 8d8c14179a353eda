#!/usr/bin/env bash
# Mosquitto (Debian's package) for the MQTT ingest tests: installs the broker and its clients if
# missing and prints the two paths the tests need. The tests start and restart their own brokers
# on loopback ports (a broker restart is part of what they check), so nothing is started here.
#
#   bash scripts/services/mosquitto.sh install    # prints: <mosquitto> <mosquitto_pub>
set -euo pipefail

find_bins() {
  broker="$(command -v mosquitto || true)"
  [ -n "$broker" ] || { [ -x /usr/sbin/mosquitto ] && broker=/usr/sbin/mosquitto; } || true
  pub="$(command -v mosquitto_pub || true)"
  [ -n "$broker" ] && [ -n "$pub" ]
}

case "${1:-}" in
  install)
    if ! find_bins; then
      sudo=
      if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo > /dev/null; then sudo="sudo -n"; else
          echo "mosquitto.sh: install the mosquitto and mosquitto-clients packages" >&2
          exit 1
        fi
      fi
      echo "mosquitto.sh: installing mosquitto and mosquitto-clients (apt-get)" >&2
      export DEBIAN_FRONTEND=noninteractive
      if ! $sudo apt-get install -y --no-install-recommends mosquitto mosquitto-clients >&2; then
        $sudo apt-get update >&2
        $sudo apt-get install -y --no-install-recommends mosquitto mosquitto-clients >&2
      fi
      find_bins || { echo "mosquitto.sh: mosquitto not found after installing" >&2; exit 1; }
    fi
    echo "$broker $pub"
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
