#!/usr/bin/env bash
# Podman (Debian's package) and runc, to build fleetscore's image and run it in the container
# tests: installs both if missing and prints the podman to use. Nothing is started: podman has
# no daemon.
#
#   bash scripts/services/podman.sh install    # prints: <podman>
#
# runc, not the crun that Debian's podman brings, is the runtime the tests and scripts/image
# use (`podman --runtime runc`): crun fails on some kernels' cgroup setups where runc works.
set -euo pipefail

find_bins() {
  podman="$(command -v podman || true)"
  runc="$(command -v runc || true)"
  [ -n "$podman" ] && [ -n "$runc" ]
}

case "${1:-}" in
  install)
    if ! find_bins; then
      sudo=
      if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo > /dev/null; then sudo="sudo -n"; else
          echo "podman.sh: install the podman and runc packages" >&2
          exit 1
        fi
      fi
      echo "podman.sh: installing podman and runc (apt-get)" >&2
      export DEBIAN_FRONTEND=noninteractive
      if ! $sudo apt-get install -y --no-install-recommends podman runc >&2; then
        $sudo apt-get update >&2
        $sudo apt-get install -y --no-install-recommends podman runc >&2
      fi
      find_bins || { echo "podman.sh: podman or runc not found after installing" >&2; exit 1; }
    fi
    echo "$podman"
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
