#!/usr/bin/env bash
# A real two-node SLURM cluster on this one host, for tests and for trying the sbatch scripts:
#   slurm/testing/cluster.sh up     install slurmctld, slurmd, slurm-client and munge from apt if missing, write a
#                                   config, start munged, slurmctld and two slurmd (nodes n1, n2) and wait until idle
#   slurm/testing/cluster.sh down   stop the daemons by their pid files
# Exit code 3: apt-get could not install the packages (the tests skip with that reason; nothing else skips them).
# Then `export SLURM_CONF=$SRTRAIN_SLURM_DIR/slurm.conf` (printed by `up`) and use sbatch, squeue, scontrol.
# Needs root. State, logs and the config live in $SRTRAIN_SLURM_DIR (default /tmp/srtrain-slurm).
set -euo pipefail
DIR=${SRTRAIN_SLURM_DIR:-/tmp/srtrain-slurm}
CONF=$DIR/slurm.conf
CTLD_PORT=${SRTRAIN_SLURMCTLD_PORT:-16817}
NODES=(n1 n2)

install() {
  local missing=()
  for cmd in slurmctld slurmd sbatch munged; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
  [ ${#missing[@]} -eq 0 ] && return
  echo "cluster.sh: installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge; }; then
    echo "cluster.sh: apt-get could not install slurmctld slurmd slurm-client munge" >&2
    exit 3
  fi
}

write_config() {
  mkdir -p "$DIR/state" "$DIR/spool"
  cat >"$CONF" <<CONF
# Written by slurm/testing/cluster.sh: two nodes (two slurmd) on this host. See docs/clusters.md.
ClusterName=srtrain-test
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=5
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobRequeue=1
ReturnToService=2
KillWait=5
SchedulerParameters=bf_interval=1,sched_interval=2
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=$(nproc) RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
CONF
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
  [ "$(id -u)" -eq 0 ] || { echo "cluster.sh: needs root (to install packages and run the daemons as root)" >&2; exit 1; }
  install
  write_config
  if ! running /run/munge/munged.pid; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -f /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- munged
    touch "$DIR/munged.ours"
  fi
  running "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
  for node in "${NODES[@]}"; do running "$DIR/slurmd-$node.pid" || slurmd -f "$CONF" -N "$node"; done
  for _ in $(seq 300); do
    states=$(SLURM_CONF=$CONF sinfo -h -N -o %T 2>/dev/null | sort -u | tr '\n' ' ')
    if [ "$states" = "idle " ]; then
      echo "cluster.sh: nodes ${NODES[*]} idle; export SLURM_CONF=$CONF"
      return
    fi
    sleep 0.1
  done
  echo "cluster.sh: nodes not idle after 30 s (states: ${states:-none}); logs in $DIR" >&2
  exit 1
}

down() {
  local pids=()
  local files=("$DIR"/slurmd-n*.pid "$DIR/slurmctld.pid")
  [ -f "$DIR/munged.ours" ] && files+=(/run/munge/munged.pid) && rm "$DIR/munged.ours"
  for f in "${files[@]}"; do
    if running "$f"; then pids+=("$(cat "$f")"); kill "$(cat "$f")"; fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  done
  echo "cluster.sh: stopped ${#pids[@]} daemon(s)"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
