#!/usr/bin/env bash
# How often does a finished 2-process CPU training end in an abort? Runs N tiny trainings (4 Set5 crops, 2 epochs,
# a checkpoint every step, as tests/test_stopping.py) under `accelerate launch` and prints each one's status and
# whether stderr holds "terminate called" (docs/faults.md, the row on a multi-process launch exiting).
#   bash benchmarks/two_process_exits.sh [N=100]        (about 10 s a run on 2 cores)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${1:-100}
work=$(mktemp -d)
python3 - "$root/../shared/data/Set5" "$work/hr" <<'PY'
import sys
from pathlib import Path
from PIL import Image
out = Path(sys.argv[2])
out.mkdir()
for name in ("baby", "bird", "head", "woman"):
    Image.open(Path(sys.argv[1]) / f"{name}.png").convert("RGB").crop((0, 0, 120, 120)).save(out / f"{name}.png")
PY
aborts=0
for i in $(seq 1 "$n"); do
    port=$(python3 -c "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])")
    WANDB_MODE=disabled ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 \
        --mixed_precision no --dynamo_backend no --main_process_port "$port" "$root/srtrain/main.py" \
        --data.train="$work/hr" --data.val="$root/../shared/data/Set5" --data.max_val_images=2 --data.repeat=8 \
        --batch_size=4 --patch_size=48 --lr=0.002 --num_samples=2 --scheduler=cosine --min_lr=0.0001 --epochs=2 \
        --checkpoint_every=1 --output_dir="$work/run$i" >"$work/out" 2>"$work/err"
    status=$?
    grep -q "terminate called" "$work/err" && aborts=$((aborts + 1))
    echo "run $i: status $status, aborts so far $aborts"
    rm -rf "$work/run$i"
done
echo "$aborts aborts in $n runs"
rm -rf "$work"
