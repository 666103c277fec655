# Sourced by every slurm/*.sbatch script (not run on its own): where the code is, how many processes the
# allocation holds, and the preemption flow (forward the signal to training, requeue the job if it stopped early).
set -euo pipefail
SRTRAIN=${SLURM_SUBMIT_DIR:?submit with sbatch from the srtrain repository root}
export PYTHONPATH="$SRTRAIN${PYTHONPATH:+:$PYTHONPATH}"  # the code of the checkout the job was submitted from
echo "srtrain: job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST} in $PWD, SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"
# Signals are trapped from here on (USR1 would otherwise end this shell); run_preemptible says what to do with them.
SIGNALLED="" CHILD="" DEPTH=0 PENDING=""
trap 'SIGNALLED=USR1; [ -z "$CHILD" ] || forward USR1' USR1
trap 'SIGNALLED=${SIGNALLED:-TERM}' TERM

# One process per GPU that this node's allocation shows torch; a CPU-only allocation trains one process per node,
# and accelerate must be told it is on CPU or it runs unconnected copies instead of distributed training.
GPUS_PER_NODE=$(python -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS_PER_NODE" -eq 0 ]; then
  export ACCELERATE_USE_CPU=1
  PROCS_PER_NODE=1
else
  PROCS_PER_NODE=$GPUS_PER_NODE
fi
# torchrun's agent (each node's launcher under multinode) forwards USR1 to the training processes only when asked.
export PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1

# `accelerate launch` flags for NODES nodes of this allocation (rank and address are added per node by multinode).
launch_flags() {
  local total=$(($1 * PROCS_PER_NODE))
  local world=(--num_processes "$total")
  [ "$total" -gt 1 ] && world=(--multi_gpu "${world[@]}")
  echo "${world[@]}" --num_machines "$1" --mixed_precision no --dynamo_backend no
}

# A file named on the sbatch line, relative to the submit directory (the job may run elsewhere: sbatch --chdir).
submit_path() { if [[ $1 = /* ]]; then echo "$1"; else echo "$SLURM_SUBMIT_DIR/$1"; fi; }

# The training arguments: `JOB.yaml --key=value ...` becomes JOB_ARGS=(--config /path/JOB.yaml --key=value ...),
# checked before anything launches: a configuration error ends the job with status 2 and one line (the launcher
# would turn it into status 1 and a traceback, after the allocation's start-up).
job_args() {
  JOB_ARGS=("$@")
  if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    JOB_ARGS=(--config "$(submit_path "$1")" "${@:2}")
  fi
  python -m srtrain check-config "${JOB_ARGS[@]}"
}

# Run "$@" in the background and wait for it; DEPTH says where the training processes sit below it: 0 the command
# itself (srun, which passes USR1 on to each node's launcher, which passes it on as PET_SIGNALS_TO_HANDLE asks),
# 1 the children of `accelerate launch` (its one-process launcher forwards nothing), 2 those of `wandb agent`.
# USR1 (the time-limit or preemption warning of `--signal=B:USR1@120`, or `scancel --batch --signal=USR1`) is sent
# to the training processes, which save a checkpoint at their current step and exit early; a run that did not
# finish is then requeued: the same job id, so the same run directory, and `--resume=auto` continues it. TERM
# (scancel, the hard time limit) reaches every process of the job from SLURM itself: the shell only waits.
run_preemptible() {
  DEPTH=$1
  shift
  if [ "$SIGNALLED" = USR1 ]; then  # warned before training started: nothing to save, come back later
    requeue "before training started"
    return 0
  fi
  "$@" &
  CHILD=$!
  local rc=0
  while :; do
    set +e
    if [ -n "$PENDING" ] && kill -0 "$CHILD" 2>/dev/null; then  # a signal came before training processes existed
      sleep 1
      forward "$PENDING"
      set -e
      continue
    fi
    wait "$CHILD"
    rc=$?
    set -e
    kill -0 "$CHILD" 2>/dev/null || break  # still running: the wait was cut short by a trapped signal
  done
  if [ "$SIGNALLED" = USR1 ] && [ "$rc" -ne 0 ]; then
    requeue "training stopped with exit code $rc"
  fi
  return "$rc"
}

requeue() {
  echo "srtrain: USR1 received, $1; requeueing job $SLURM_JOB_ID"
  scontrol requeue "$SLURM_JOB_ID"
}

# Send signal $1 to the processes DEPTH levels below the background command. None there yet (the launcher is still
# starting them): keep it PENDING, and run_preemptible passes it on once they exist.
forward() {
  local pids=$CHILD
  for _ in $(seq "$DEPTH"); do pids=$(pgrep -d , -P "$pids" || true); done
  if [ -z "$pids" ]; then
    [ -n "$PENDING" ] || echo "srtrain: $1 came before training started; passing it on when it does"
    PENDING=$1
    return 0
  fi
  PENDING=""
  echo "srtrain: passing $1 on to process(es) $pids"
  kill -s "$1" ${pids//,/ } 2>/dev/null || true
}
