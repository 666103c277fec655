# Sourced by every slurm/*.sbatch script (not run on its own): where the code is, how many processes the
# allocation holds, and the preemption flow (forward the signal to training, requeue the job if it stopped early).
set -euo pipefail
SRTRAIN=${SLURM_SUBMIT_DIR:?submit with sbatch from the srtrain repository root}
export PYTHONPATH="$SRTRAIN${PYTHONPATH:+:$PYTHONPATH}"  # the code of the checkout the job was submitted from
echo "srtrain: job ${SLURM_JOB_ID} on ${SLURM_JOB_NODELIST} in $PWD, SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}"

# One process per GPU that this node's allocation shows torch; a CPU-only allocation trains one process per node,
# and accelerate must be told it is on CPU or it runs unconnected copies instead of distributed training.
GPUS_PER_NODE=$(python -c 'import torch; print(torch.cuda.device_count())')
if [ "$GPUS_PER_NODE" -eq 0 ]; then
  export ACCELERATE_USE_CPU=1
  PROCS_PER_NODE=1
else
  PROCS_PER_NODE=$GPUS_PER_NODE
fi
# torchrun's agent forwards only TERM, INT, HUP and QUIT to the training processes unless told to forward USR1 too.
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

# The training arguments: `JOB.yaml --key=value ...` becomes JOB_ARGS=(--config /path/JOB.yaml --key=value ...).
job_args() {
  JOB_ARGS=("$@")
  if [ $# -gt 0 ] && [[ $1 != --* ]]; then
    JOB_ARGS=(--config "$(submit_path "$1")" "${@:2}")
  fi
}

# Run "$@" (the launcher) in the background and wait for it. USR1 (the time-limit or preemption warning from
# `--signal=B:USR1@120`, or `scancel --batch --signal=USR1`) and TERM are passed on; the trainer then saves a
# checkpoint at its current step and exits early. After USR1, a run that did not finish is requeued: the same
# job id, the same run directory, `--resume=auto` continues it.
run_preemptible() {
  SIGNALLED=""
  trap 'SIGNALLED=USR1; kill -USR1 "$CHILD" 2>/dev/null || true' USR1
  trap 'SIGNALLED=${SIGNALLED:-TERM}; kill -TERM "$CHILD" 2>/dev/null || true' TERM
  "$@" &
  CHILD=$!
  local rc
  while :; do
    set +e
    wait "$CHILD"
    rc=$?
    set -e
    kill -0 "$CHILD" 2>/dev/null || break  # still running: the wait was cut short by a trapped signal
  done
  if [ "$SIGNALLED" = USR1 ] && [ "$rc" -ne 0 ]; then
    echo "srtrain: USR1 received, training stopped with exit code $rc; requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
  fi
  return "$rc"
}
