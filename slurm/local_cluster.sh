#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for the launcher's tests and for trying grids on one machine
# (Debian 12 / Slurm 22.05, as root, no systemd or cgroups): munge, MariaDB + slurmdbd (so that sacct works and
# submitit sees failed jobs), slurmctld and slurmd.
#
#   slurm/local_cluster.sh start    # install the Debian packages once, write the configs, start the daemons
#   slurm/local_cluster.sh stop     # stop the daemons by their recorded PIDs
#   slurm/local_cluster.sh status   # sinfo
#   eval "$(slurm/local_cluster.sh env)"   # point this shell's sbatch/squeue/sacct (and submitit) at it
#   slurm/local_cluster.sh check    # exit 3, naming it, if a SLURM configuration is visible here (start refuses)
#
# Everything it writes lives in $INVOLUTION_SLURM_STATE (default /var/tmp/involution-slurm): the configs (the
# daemons and clients find them through SLURM_CONF), its own munge key and socket, the database and its
# password, logs and PIDs. Its daemons listen on their own ports (INVOLUTION_SLURM_PORT, default 36817, and the
# next two; MariaDB on INVOLUTION_SLURM_DB_PORT, default 36306, on 127.0.0.1), not SLURM's 6817-6819. It never
# touches the system's SLURM, munge or MariaDB configuration, and it refuses to start wherever a SLURM
# configuration is visible (SLURM_CONF set to another file, a *.conf in /etc/slurm or /etc/slurm-llnl other than
# the plugstack.conf Debian's packages ship, /usr/local/etc/slurm.conf): use that cluster instead.
set -euo pipefail

STATE=${INVOLUTION_SLURM_STATE:-/var/tmp/involution-slurm}
CALLERS_SLURM_CONF=${SLURM_CONF:-}
export SLURM_CONF=$STATE/etc/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket
DB_SOCKET=$STATE/mysql/mysqld.sock  # in the folder the mysql user owns
DB_PORT=${INVOLUTION_SLURM_DB_PORT:-36306}
DB_PASSWORD_FILE=$STATE/etc/db_password
PORT=${INVOLUTION_SLURM_PORT:-36817}  # slurmctld; slurmd and slurmdbd on the next two
HOST=$(hostname -s)
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

log() { echo "[local_cluster] $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq $((seconds * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "timed out waiting for $what"
  return 1
}

refuse_beside_a_configured_cluster() {
  local found=()
  if [ -n "$CALLERS_SLURM_CONF" ] && [ "$CALLERS_SLURM_CONF" != "$SLURM_CONF" ]; then
    found+=("SLURM_CONF=$CALLERS_SLURM_CONF")
  fi
  local folder conf
  for folder in /etc/slurm /etc/slurm-llnl; do
    for conf in "$folder"/*.conf; do
      if [ -e "$conf" ] && [ "$(basename "$conf")" != plugstack.conf ]; then found+=("$conf"); fi
    done
  done
  if [ -e /usr/local/etc/slurm.conf ]; then found+=(/usr/local/etc/slurm.conf); fi
  if [ ${#found[@]} -gt 0 ]; then
    log "a SLURM configuration is visible here (${found[*]}): use that cluster; not starting another"
    exit 3
  fi
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; then
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    log "needs root to install ${PACKAGES[*]}"
    exit 2
  fi
  log "installing ${PACKAGES[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_configs() {
  mkdir -p "$STATE"/{etc,slurmd,slurmctld,mysql,munge}
  if [ ! -s "$DB_PASSWORD_FILE" ]; then  # this state folder's own database password
    (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$DB_PASSWORD_FILE")
  fi
  local memory_mb
  memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  # The node's CPUs from getconf, not nproc: nproc follows OMP_NUM_THREADS, which would shrink it to one CPU.
  cat >"$SLURM_CONF" <<EOF
ClusterName=involution
SlurmctldHost=${HOST}(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# Our own munge socket; requeued jobs are held until their credential expires (120 s by default).
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=sched_interval=2,bf_interval=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
# Clients and slurmctld reach slurmdbd through our munge socket too.
AccountingStoragePass=$MUNGE_SOCKET
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=$(getconf _NPROCESSORS_ONLN) RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # slurmdbd reads slurmdbd.conf from SLURM_CONF's folder.
  cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$(cat "$DB_PASSWORD_FILE")
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$STATE/etc/slurmdbd.conf"
}

start_munge() {
  chown munge:munge "$STATE/munge"
  chmod 755 "$STATE/munge"  # munged: others may reach the socket; the key itself is 0600
  [ -f "$STATE/munge/munge.key" ] || runuser -u munge -- mungekey --create --keyfile="$STATE/munge/munge.key"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" --seed-file="$STATE/munge/munged.seed"
  cp "$STATE/munge/munged.pid" "$STATE/munged.pid"
}

start_database() {
  chown mysql:mysql "$STATE/mysql"
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" >/dev/null
  fi
  mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCKET" --port="$DB_PORT" \
    --bind-address=127.0.0.1 --pid-file="$STATE/mysql/mariadb.pid" >"$STATE/mariadb.log" 2>&1 &
  wait_for 60 "MariaDB" mariadb --no-defaults --socket="$DB_SOCKET" -e "SELECT 1"
  local password
  password=$(cat "$DB_PASSWORD_FILE")
  mariadb --no-defaults --socket="$DB_SOCKET" -e "
    CREATE OR REPLACE USER 'slurm'@'localhost' IDENTIFIED BY '$password';
    CREATE OR REPLACE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    FLUSH PRIVILEGES;"
}

start() {
  refuse_beside_a_configured_cluster
  install_packages
  if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    log "already running"
    return
  fi
  write_configs
  start_munge
  start_database
  slurmdbd
  wait_for 60 "slurmdbd" sacctmgr -n list cluster
  sacctmgr -i -Q add cluster involution >/dev/null 2>&1 || true
  slurmctld
  slurmd
  wait_for 60 "the node to be idle" bash -c "sinfo -h -o %T | grep -qx idle"
  log "up: $(sinfo -h -o '%P %D %T %C'); use it with: export SLURM_CONF=$SLURM_CONF"
}

stop() {
  for pidfile in "$STATE"/{slurmd,slurmctld,slurmdbd}.pid "$STATE/mysql/mariadb.pid" "$STATE/munged.pid"; do
    if [ -f "$pidfile" ]; then
      local pid
      pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$pidfile"
    fi
  done
  log "stopped"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  check) refuse_beside_a_configured_cluster ;;
  *) echo "usage: $0 start|stop|status|env|check" >&2; exit 2 ;;
esac
