#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for tests and CI (Debian 12, Slurm 22.05).
#
#   eval "$(bash tests/infra/slurm/start.sh [DIR])"     # DIR defaults to /tmp/nemo_lite_slurm
#   sinfo; sbatch ...; sacct ...
#   bash tests/infra/slurm/stop.sh [DIR]
#
# Installs the packages when missing (apt-get, non-interactive), then starts, each with its own
# files under DIR and listening on 127.0.0.1 only: munged (own key and socket), mariadbd (for
# accounting), slurmdbd, slurmctld, slurmd (node "localhost", CPUs = this machine's). Adds the
# cluster, account "nemo_lite" and user root with sacctmgr, waits until the node is idle, and
# prints the environment the tests need (SLURM_CONF, NEMO_LITE_SLURM_*) as shell exports on
# stdout; progress goes to stderr. Idempotent: a running cluster in DIR is reused as is.
# Needs root (SlurmUser=root). Ports: NEMO_LITE_SLURM_PORT_BASE (26810) + 0 mariadb, +7 slurmctld,
# +8 slurmd, +9 slurmdbd.
#
# NEMO_LITE_SLURM_NODES=2 (DIR defaults to /tmp/nemo_lite_slurm2): two nodes, n1 and n2, each a
# slurmd in its own network and UTS namespace (10.77.0.11 and .12, veth pairs on a bridge), and
# slurmctld (host name ctl, 10.77.0.1), slurmdbd and mariadbd in a third namespace that holds the
# bridge; all three share a private mount namespace whose /etc/hosts names them. Nothing on this
# machine's own interfaces changes. Slurm's commands reach the cluster only from inside: the
# wrappers in DIR/bin (sbatch, squeue, sacct, scontrol, scancel, sinfo, srun) nsenter first;
# NEMO_LITE_SLURM_BIN names that directory.
set -euo pipefail

NODES=${NEMO_LITE_SLURM_NODES:-1}
case "$NODES" in 1) default_dir=/tmp/nemo_lite_slurm ;; 2) default_dir=/tmp/nemo_lite_slurm2 ;;
  *) echo "NEMO_LITE_SLURM_NODES=$NODES: 1 or 2" >&2; exit 2 ;; esac
DIR=${1:-${NEMO_LITE_SLURM_DIR:-$default_dir}}
PORT_BASE=${NEMO_LITE_SLURM_PORT_BASE:-26810}
DB_PORT=$((PORT_BASE + 0)); CTLD_PORT=$((PORT_BASE + 7)); SLURMD_PORT=$((PORT_BASE + 8))
DBD_PORT=$((PORT_BASE + 9))
ACCOUNT=nemo_lite PARTITION=debug CLUSTER=nemolite
t0=$(date +%s.%N)
say() { echo "[slurm-test-cluster] $*" >&2; }
die() { say "error: $*"; exit 1; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
alive() {  # a live process from a pid file (not a zombie)
  local state
  local pid
  pid=$(cat "$1" 2>/dev/null) && [ -n "$pid" ] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

[ "$(id -u)" = 0 ] || die "run as root (the test cluster runs SlurmUser=root)"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac

print_env() {
  cat <<EOF
export SLURM_CONF=$DIR/etc/slurm.conf
export NEMO_LITE_SLURM_DIR=$DIR
export NEMO_LITE_SLURM_ACCOUNT=$ACCOUNT
export NEMO_LITE_SLURM_PARTITION=$PARTITION
export NEMO_LITE_SLURM_NODES=$NODES
EOF
  [ "$NODES" = 1 ] || echo "export NEMO_LITE_SLURM_BIN=$DIR/bin"
}
NODE_NAMES=localhost
[ "$NODES" = 1 ] || NODE_NAMES="n1 n2"
in_cluster() {  # a command where the cluster's daemons are (inside its namespaces)
  if [ "$NODES" = 1 ] || [ -n "${NEMO_LITE_SLURM_INSIDE:-}" ]; then "$@"
  else alive "$DIR/run/anchor.pid" && nsenter -t "$(cat "$DIR/run/anchor.pid")" --net --mount -- "$@"; fi
}
all_alive() {
  local n
  for n in $NODE_NAMES; do alive "$DIR/run/slurmd-$n.pid" || return 1; done
  alive "$DIR/run/slurmctld.pid" && alive "$DIR/run/slurmdbd.pid"
}

# --- already running? -------------------------------------------------------------------
if [ -z "${NEMO_LITE_SLURM_INSIDE:-}" ] && all_alive \
   && SLURM_CONF="$DIR/etc/slurm.conf" in_cluster timeout 5 scontrol ping >/dev/null 2>&1; then
  say "already running in $DIR"
  print_env
  exit 0
fi

# --- packages ---------------------------------------------------------------------------
PKGS="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  say "installing $PKGS"
  export DEBIAN_FRONTEND=noninteractive
  # one apt-get at a time on this machine: the one- and two-node clusters and dockerd may be
  # started side by side by the two test workers, and dpkg's lock fails a second apt-get
  exec 9>/tmp/nemo_lite_apt.lock
  flock -w 1200 9 || die "waited 20 min for another test daemon's apt-get (/tmp/nemo_lite_apt.lock)"
  # keep the packages' own service scripts from starting system-wide daemons
  created_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    created_policy=1
  fi
  install() { apt-get install -y -q --no-install-recommends $PKGS >"$1" 2>&1; }
  mkdir -p "$DIR"
  if ! install "$DIR/apt.log"; then
    apt-get update -q >>"$DIR/apt.log" 2>&1 || true
    install "$DIR/apt.log" || { [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
                                tail -20 "$DIR/apt.log" >&2; die "apt-get install failed (log: $DIR/apt.log)"; }
  fi
  [ -n "$created_policy" ] && rm -f /usr/sbin/policy-rc.d
  flock -u 9
  say "installed in $(elapsed) s"
fi

# --- leftovers of an earlier, partly running cluster in DIR ----------------------------------
if [ -z "${NEMO_LITE_SLURM_INSIDE:-}" ] && ls "$DIR"/run/*.pid >/dev/null 2>&1; then
  bash "$(dirname "$0")/stop.sh" "$DIR" >/dev/null 2>&1 || true
fi

# --- two nodes: the rest runs inside the cluster's own namespaces -----------------------------
NET=10.77.0
if [ "$NODES" = 2 ] && [ -z "${NEMO_LITE_SLURM_INSIDE:-}" ]; then
  command -v nsenter >/dev/null && command -v ip >/dev/null || die "two nodes need nsenter and ip (util-linux, iproute2)"
  unshare --net --mount --uts true 2>/dev/null || die "two nodes need network, mount and UTS namespaces (unshare as root)"
  NEMO_LITE_SLURM_INSIDE=1 exec unshare --net --mount --uts --propagation private --fork bash "$0" "$DIR"
fi
if [ "$NODES" = 2 ]; then
  mkdir -p "$DIR"/{etc,run,bin}
  sleep infinity </dev/null >/dev/null 2>&1 & echo $! > "$DIR/run/anchor.pid"  # holds the namespaces
  printf '127.0.0.1 localhost\n%s.1 ctl\n%s.11 n1\n%s.12 n2\n' "$NET" "$NET" "$NET" > "$DIR/etc/hosts"
  mount --bind "$DIR/etc/hosts" /etc/hosts
  mkdir -p /run/netns && mount -t tmpfs tmpfs /run/netns
  hostname ctl
  ip link set lo up
  ip link add br0 type bridge && ip link set br0 up && ip addr add "$NET.1/24" dev br0
  for i in 1 2; do
    ip netns add "n$i"
    ip link add "veth$i" type veth peer name eth0 netns "n$i"
    ip link set "veth$i" master br0 up
    ip netns exec "n$i" ip link set lo up
    ip netns exec "n$i" ip addr add "$NET.1$i/24" dev eth0
    ip netns exec "n$i" ip link set eth0 up
  done
  for c in sbatch squeue sacct scontrol scancel sinfo srun sacctmgr; do
    printf '#!/bin/sh\n# %s inside the two-node test cluster (tests/infra/slurm/start.sh)\nexec nsenter -t "$(cat %s)" --net --mount -- %s "$@"\n' \
      "$c" "$DIR/run/anchor.pid" "$(command -v "$c")" > "$DIR/bin/$c"
    chmod +x "$DIR/bin/$c"
  done
  say "namespaces up: ctl $NET.1, n1 $NET.11, n2 $NET.12 ($(elapsed) s)"
fi

mkdir -p "$DIR"/{etc,run,log,munge,ctld,spool,mysql}
chmod 700 "$DIR" "$DIR/munge" "$DIR/etc"
ETC=$DIR/etc RUN=$DIR/run LOG=$DIR/log
NCPU=$(nproc)
# the node's layout as slurmd will report it (CPUs alone would leave one core per node until
# slurmd registers, and a job of NCPU tasks would be refused in the meantime)
HW=$(slurmd -C 2>/dev/null | head -1 | grep -o -E '(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' | tr '\n' ' ')
[ -n "$HW" ] || HW="CPUs=$NCPU"
NCPU=$(echo "$HW" | grep -o -E 'CPUs=[0-9]+' | cut -d= -f2)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.7}' /proc/meminfo)

# --- munge: own key and socket --------------------------------------------------------------
[ -s "$DIR/munge/munge.key" ] || { dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
                                   chmod 400 "$DIR/munge/munge.key"; }
MUNGE_SOCKET=$DIR/munge/munge.socket
munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
  --pid-file="$RUN/munged.pid" --log-file="$LOG/munged.log" --seed-file="$DIR/munge/munged.seed"

# --- mariadb on 127.0.0.1:DB_PORT -----------------------------------------------------------
DB_PASS_FILE=$ETC/db.pass
[ -s "$DB_PASS_FILE" ] || { head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DB_PASS_FILE"; chmod 600 "$DB_PASS_FILE"; }
DB_PASS=$(cat "$DB_PASS_FILE")
fresh_db=
if [ ! -d "$DIR/mysql/mysql" ]; then
  mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --skip-test-db \
    >"$LOG/mariadb-install.log" 2>&1 || { tail -20 "$LOG/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fresh_db=1
fi
DB_SOCKET=$RUN/mysql.sock
mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$DB_SOCKET" \
  --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$RUN/mariadbd.pid" \
  --log-error="$LOG/mariadbd.log" --skip-name-resolve --innodb-buffer-pool-size=32M \
  --innodb-log-file-size=16M --performance-schema=OFF >/dev/null 2>&1 &
for _ in $(seq 100); do
  mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping >/dev/null 2>&1 && break
  sleep 0.1
done
mariadb-admin --no-defaults --socket="$DB_SOCKET" -u root ping >/dev/null 2>&1 \
  || { tail -20 "$LOG/mariadbd.log" >&2; die "mariadbd did not start (log: $LOG/mariadbd.log)"; }
say "mariadbd up ($(elapsed) s)"
if [ -n "$fresh_db" ]; then
  mariadb --no-defaults --socket="$DB_SOCKET" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
fi

# --- config ---------------------------------------------------------------------------------
if [ "$NODES" = 1 ]; then  # everything on 127.0.0.1 of this machine
  SLURMD_TIMEOUT=300  # Slurm's default
  CTLD_HOST="localhost(127.0.0.1)" COMM_PARAMS="CommunicationParameters=NoInAddrAny,NoCtldInAddrAny"
  NODE_LINES="NodeName=localhost NodeAddr=127.0.0.1 $HW RealMemory=$MEM_MB State=UNKNOWN"
else  # private namespaces: listening on any address reaches nothing else
  SLURMD_TIMEOUT=20  # a dead node is DOWN (its job requeued) within ~20-40 s, not 5 minutes
  CTLD_HOST="ctl($NET.1)" COMM_PARAMS="" NODE_LINES=""
  for i in 1 2; do
    NODE_LINES+="NodeName=n$i NodeAddr=$NET.1$i $HW RealMemory=$((MEM_MB / 2)) State=UNKNOWN"$'\n'
  done
fi
cat > "$ETC/slurm.conf" <<EOF
# $NODES-node test cluster (tests/infra/slurm/start.sh)
ClusterName=$CLUSTER
SlurmctldHost=$CTLD_HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
$COMM_PARAMS
SrunPortRange=$((PORT_BASE + 20))-$((PORT_BASE + 89))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageEnforce=associations
JobCompType=jobcomp/none
ReturnToService=2
KillWait=30
SlurmdTimeout=$SLURMD_TIMEOUT
MinJobAge=300
InactiveLimit=0
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
$NODE_LINES
PartitionName=$PARTITION Nodes=$(echo $NODE_NAMES | tr ' ' ,) Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
cat > "$ETC/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
CommunicationParameters=NoInAddrAny
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
chmod 600 "$ETC/slurmdbd.conf"
export SLURM_CONF=$ETC/slurm.conf

# --- daemons ------------------------------------------------------------------------------
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what not ready after ${limit}s (logs: $LOG)"
}
# Slurm's daemons bind to the address their host name resolves to (NoInAddrAny): run them with
# the host name "localhost" (own UTS namespace) so that they and the job steps' srun listen on
# 127.0.0.1 only, whatever this machine's name resolves to.
if unshare --uts true 2>/dev/null; then
  as_localhost() { unshare --uts sh -c 'hostname localhost && exec "$@"' sh "$@"; }
elif getent hosts "$(hostname)" | grep -q '^127\.'; then
  as_localhost() { "$@"; }
else
  die "cannot bind Slurm to loopback only: 'unshare --uts' is not permitted and this host's name ($(hostname)) does not resolve to 127.x"
fi
# slurmdbd reads slurmdbd.conf beside slurm.conf (SLURM_CONF's directory)
as_localhost slurmdbd
wait_for 20 slurmdbd sacctmgr -n -i list cluster
say "slurmdbd up ($(elapsed) s)"
sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
if [ "$NODES" = 1 ]; then as_localhost slurmctld -c -i; else slurmctld -c -i; fi  # ctl: its own name
wait_for 20 slurmctld scontrol ping
say "slurmctld up ($(elapsed) s)"
sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=tests Organization=nemo_lite >/dev/null 2>&1 || true
sacctmgr -i add user root Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null 2>&1 || true
for node in $NODE_NAMES; do
  mkdir -p "$DIR/spool/slurmd-$node"
  if [ "$NODES" = 1 ]; then as_localhost slurmd -N localhost
  else  # (nsenter, not `ip netns exec`: that mounts a /sys without the cgroup tree slurmd reads)
    nsenter --net="/run/netns/$node" unshare --uts sh -c 'hostname "$1" && exec slurmd -N "$1"' sh "$node"
  fi
done
nodes_idle() { [ "$(sinfo -h -N -o %t 2>/dev/null | sort -u)" = idle ]; }
wait_for 30 "nodes $NODE_NAMES (idle)" nodes_idle
# ready when slurmctld accepts a job using every CPU: slurmd has registered its layout and the
# account association is known (sbatch --test-only submits nothing)
wait_for 30 "a $NCPU-task job on $NODES node(s)" sbatch --test-only -A "$ACCOUNT" -p "$PARTITION" \
  -N "$NODES" --ntasks-per-node="$NCPU" --wrap true
say "cluster up in $DIR ($(elapsed) s): partition $PARTITION, account $ACCOUNT, $NODES node(s) of $NCPU CPUs"
print_env
