#!/usr/bin/env bash
# Start a private Docker engine for the executor tests: tests/infra/docker/start.sh DIR
#
# Installs Debian's docker.io and debootstrap when missing (root), then starts dockerd by hand
# (no systemd here) on its own socket, data root and exec root under DIR. Flags keep the host
# network as it was: no iptables rules, no ip_forward change, no docker0 bridge; stop.sh
# removes the bridges of networks created later. Prints `export DOCKER_HOST=...` on stdout.
# If a daemon is already answering on DIR/docker.sock it is reused ("already running" on stderr).
set -euo pipefail
DIR=${1:-/tmp/nemo_lite_docker}
mkdir -p "$DIR"
SOCK="$DIR/docker.sock"
export DOCKER_HOST="unix://$SOCK"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "== installing docker.io and debootstrap (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  exec 9>/tmp/nemo_lite_apt.lock  # one apt-get at a time (the Slurm clusters install too)
  flock -w 1200 9 || { echo "waited 20 min for another apt-get (/tmp/nemo_lite_apt.lock)" >&2
                       exit 1; }
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >&2
  flock -u 9
fi
DOCKER=$(command -v docker)

if [ -S "$SOCK" ] && "$DOCKER" version >/dev/null 2>&1; then
  echo "dockerd already running on $SOCK" >&2
else
  rm -f "$SOCK" "$DIR/dockerd.pid"
  # setsid: the daemon outlives this script and the test process that started it
  setsid dockerd --data-root "$DIR/data" --exec-root "$DIR/exec" --pidfile "$DIR/dockerd.pid" \
    -H "unix://$SOCK" --iptables=false --ip-forward=false --ip-masq=false --bridge=none \
    >"$DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do
    "$DOCKER" version >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! "$DOCKER" version >/dev/null 2>&1; then
    echo "dockerd did not answer on $SOCK; its log:" >&2
    tail -30 "$DIR/dockerd.log" >&2
    exit 1
  fi
fi
echo "export DOCKER_HOST=unix://$SOCK"
