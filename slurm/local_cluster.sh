#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for the launcher's tests and for trying grids on one machine
# (Debian 12 / Slurm 22.05, as root, no systemd or cgroups): munge, MariaDB + slurmdbd (so that sacct works and
# submitit sees failed jobs), slurmctld and slurmd.
#
#   slurm/local_cluster.sh start    # install the Debian packages once, write the configs, start the daemons
#   slurm/local_cluster.sh stop     # stop the daemons by their recorded PIDs
#   slurm/local_cluster.sh status   # sinfo
#
# State, logs and PID files live in $INVOLUTION_SLURM_STATE (default /var/tmp/involution-slurm).
set -euo pipefail

STATE=${INVOLUTION_SLURM_STATE:-/var/tmp/involution-slurm}
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
  mkdir -p "$STATE"/{slurmd,slurmctld,mysql} /etc/slurm /run/munge /run/mysqld
  local memory_mb
  memory_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  cat >/etc/slurm/slurm.conf <<EOF
ClusterName=involution
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# Requeued jobs are held until their credential expires (120 s by default).
AuthInfo=cred_expire=10
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
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
}

start() {
  install_packages
  if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
    log "already running"
    return
  fi
  write_configs
  chown munge:munge /run/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- /usr/sbin/mungekey --create
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  cp /run/munge/munged.pid "$STATE/munged.pid"

  chown mysql:mysql "$STATE/mysql" /run/mysqld
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --user=mysql --datadir="$STATE/mysql" >/dev/null
  fi
  mariadbd --user=mysql --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock \
    --pid-file="$STATE/mysql/mariadb.pid" --skip-networking=0 --bind-address=127.0.0.1 >"$STATE/mariadb.log" 2>&1 &
  wait_for 60 "MariaDB" mariadb -e "SELECT 1"
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

  slurmdbd
  wait_for 60 "slurmdbd" sacctmgr -n list cluster
  sacctmgr -i -Q add cluster involution >/dev/null 2>&1 || true
  slurmctld
  slurmd
  wait_for 60 "the node to be idle" bash -c "sinfo -h -o %T | grep -qx idle"
  log "up: $(sinfo -h -o '%P %D %T %C')"
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
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
