#!/usr/bin/env bash
# Stop the engine started by start.sh DIR: remove its containers and networks (their bridge
# interfaces), then stop dockerd by PID. Images stay in DIR/data for the next start.
set -uo pipefail
DIR=${1:-/tmp/nemo_lite_docker}
export DOCKER_HOST="unix://$DIR/docker.sock"
if docker version >/dev/null 2>&1; then
  ids=$(docker ps -aq)
  [ -n "$ids" ] && docker rm -f $ids >/dev/null
  docker network prune -f >/dev/null
fi
if [ -f "$DIR/dockerd.pid" ]; then
  pid=$(cat "$DIR/dockerd.pid")
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null
fi
# dockerd bind-mounts its data root (and containers' layers) and can leave them mounted
grep -o " $DIR/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
# containerd started by dockerd exits with it; any bridge left behind by a crash goes too
for br in $(ip -o link show type bridge 2>/dev/null | awk -F': ' '{print $2}' | grep '^br-'); do
  ip link delete "$br" 2>/dev/null
done
exit 0
