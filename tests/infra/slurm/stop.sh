#!/usr/bin/env bash
# Stop the test cluster started by start.sh in DIR (default /tmp/nemo_lite_slurm), by PID:
# slurmd(s), slurmctld, slurmdbd, mariadbd, munged (running jobs are cancelled first), and for two
# nodes every process left in their namespaces, then the process holding them. Keeps DIR
# (its database and key make the next start take about 3 s instead of 9); `stop.sh DIR --purge`
# removes it too.
set -uo pipefail
DIR=${1:-${NEMO_LITE_SLURM_DIR:-/tmp/nemo_lite_slurm}}
RUN=$DIR/run
running() {  # a live process, not a zombie waiting for its parent to reap it
  local state
  [ -n "$1" ] || return 1
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}
stop() {  # stop NAME: TERM, then KILL after 10 s
  local pidfile=$RUN/$1.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile" 2>/dev/null)
  if [ -n "$pid" ] && running "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
    running "$pid" && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$pidfile"
}
if [ -f "$RUN/slurmctld.pid" ] && running "$(cat "$RUN/slurmctld.pid")" && command -v scancel >/dev/null; then
  scancel=scancel
  [ -x "$DIR/bin/scancel" ] && scancel=$DIR/bin/scancel  # two nodes: from inside
  SLURM_CONF=$DIR/etc/slurm.conf timeout 5 "$scancel" --user=root >/dev/null 2>&1 || true
fi
for pidfile in "$RUN"/slurmd*.pid; do [ -e "$pidfile" ] && stop "$(basename "$pidfile" .pid)"; done
for name in slurmctld slurmdbd mariadbd; do stop "$name"; done
if [ -f "$RUN/anchor.pid" ] && running "$(cat "$RUN/anchor.pid")"; then
  # what is left in the nodes' namespaces (job steps of a killed node), then the holder
  mnt=$(readlink "/proc/$(cat "$RUN/anchor.pid")/ns/mnt")
  for proc in /proc/[0-9]*; do
    [ "$(readlink "$proc/ns/mnt" 2>/dev/null)" = "$mnt" ] && [ "${proc#/proc/}" != "$(cat "$RUN/anchor.pid")" ] \
      && kill -KILL "${proc#/proc/}" 2>/dev/null
  done
  stop anchor
fi
stop munged
if [ "${2:-}" = --purge ]; then rm -rf "$DIR"; fi
echo "[slurm-test-cluster] stopped ($DIR)" >&2
