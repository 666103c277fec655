#!/usr/bin/env bash
# Run ON THE GPU MACHINE, as one device call: every GPU check the docs ask for, each under its own time limit, so
# that the whole ends within 9 minutes (device run with timeout_s 600; docs/performance.md, "GPU").
#   here:   bash benchmarks/gpu_wheels.sh
#   device: bash benchmarks/gpu_checks.sh        (carry [".whl"]; logs come back from $OUT)
# 1. installs the carried wheels (datasets, wandb) into the image's Python, resolving against what it holds;
# 2. the card, the driver and the versions; stops there without CUDA;
# 3. the CUDA tests (fp32, bf16, fp16 with loss scaling, compiled bf16, 2 GPUs where there are 2, eval, degradation
#    and upscale equal to the CPU's, data.on_device batches equal to the host path's in GPU and pinned memory);
# 4. benchmarks/throughput.py --gpu --quick: srtrain against a bare loop in bf16 and bf16 + channels_last;
# 5. --gpu --proxy --quick: srtrain's own cost per step (host path, data.on_device, prepared) with a tiny model;
# 6. the same as 4 with torch.compile.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/srtrain_gpu_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD WANDB_MODE=offline
step() { echo "== $1 ($(date -u +%H:%M:%S) UTC)"; }
if [ -d .whl ]; then
    step "install the carried wheels"
    python3 -m pip install -q --disable-pip-version-check --no-index --find-links .whl datasets wandb \
        >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 1; }
fi
step "machine"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import sys, torch, accelerate, datasets, wandb
print("python", sys.version.split()[0], "torch", torch.__version__, "accelerate", accelerate.__version__,
      "datasets", datasets.__version__, "wandb", wandb.__version__, "GPUs", torch.cuda.device_count())
sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing to check")'
} 2>&1 | tee "$out/machine.log" || exit 1
step "CUDA tests"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/test_commands_upscale.py \
    tests/test_data_device.py 2>&1 |
    tee "$out/pytest.log"
step "throughput, bf16, against a bare loop"
timeout 110 python3 benchmarks/throughput.py --gpu --quick 2>&1 | tee "$out/throughput.log"
step "throughput proxy: srtrain's own cost per step, host path, data.on_device, prepared"
timeout 100 python3 benchmarks/throughput.py --gpu --proxy --quick 2>&1 | tee "$out/throughput_proxy.log"
step "throughput, bf16, eager and compiled"
timeout 110 python3 benchmarks/throughput.py --gpu --compile --quick 2>&1 | tee "$out/throughput_compile.log"
step "done"
