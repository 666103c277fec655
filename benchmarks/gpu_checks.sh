#!/usr/bin/env bash
# Run ON THE GPU MACHINE, in two parts, each one device call that ends within 9 minutes (device run with timeout_s
# 600; docs/performance.md, "GPU"):
#   here:   bash benchmarks/gpu_wheels.sh        (wheels the image lacks and the benchmark images, into .whl/)
#   device: bash benchmarks/gpu_checks.sh 1      (carry [".whl"]; logs come back from $OUT)
#   device: bash benchmarks/gpu_checks.sh 2      (carry [".whl"]: a machine given back between the calls starts bare)
# Each part first installs the carried wheels (datasets, wandb; seconds when they are in already), links the carried
# images to ../shared/data, where the tests and throughput.py look for them, and logs the card, the driver and the
# versions, stopping there without CUDA. Every step then runs under its own time limit, cut to what is left of the
# part's DEADLINE_S (default 520 s from the start; set it lower when less device time is left): a step cut short
# still logs the rows it measured, and the steps run most important first.
# Part 1 (about 5 minutes):
#   the CUDA tests, `-m gpu` (fp32, bf16, fp16 with loss scaling, compiled bf16, 2 GPUs where there are 2, eval,
#   degradation and upscale equal to the CPU's, data.on_device batches equal to the host path's in GPU and pinned
#   memory; tests/test_agreement.py has no test marked gpu yet: the lag-2 agreement runs in every CUDA training);
#   throughput.py --gpu --proxy --quick: srtrain's own cost per step with a tiny model (host path, data.on_device,
#   prepared) against a bare loop, with the GPU busy %.
# Part 2 (about 8 minutes): throughput.py --gpu, srtrain against a bare loop with the GPU busy %, batch 16:
#   1. ESPCN, bf16, from a prepared set, with data.on_device and from the HR folder (host path), and the data path
#      alone (pipeline rows);
#   2. EDSR-baseline and IMDN, bf16, prepared and data.on_device;
#   3. ESPCN, bf16, prepared, eager against torch.compile in mode reduce-overhead (CUDA graphs);
#   4. ESPCN, EDSR-baseline and IMDN in fp32 (mixed_precision no), prepared;
#   5. ESPCN at batch 64, bf16, prepared and data.on_device.
# Cut to fit (a srtrain run costs 10-15 s of start-up on top of its epochs): one round, --quick (a quarter of the GPU
# epochs, about a second each, 0 loader workers); the HR folder for ESPCN only; fp32 from the prepared set only; batch
# 64 in bf16 only; no pipeline rows after step 1; no HR/LR pairs; no bf16 + channels_last outside the proxy.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-}
if [[ $part != 1 && $part != 2 ]]; then
    echo "usage: bash benchmarks/gpu_checks.sh 1|2   (part 1: CUDA tests and proxy; part 2: the throughput matrix)" >&2
    exit 2
fi
deadline=$((SECONDS + ${DEADLINE_S:-520}))
out=${OUT:-/tmp/srtrain_gpu_checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD WANDB_MODE=offline

# step LOG LIMIT COMMAND...: COMMAND under LIMIT seconds, or what is left before the deadline; output to $out/P-LOG.
step() {
    local log=$out/$part-$1 limit=$2
    shift 2
    local left=$((deadline - SECONDS - 10)) # 10: timeout's grace between TERM and KILL
    ((left < limit)) && limit=$left
    echo "== $* ($(date -u +%H:%M:%S) UTC, at most $limit s)"
    if ((limit < 30)); then
        echo "skipped: the part's time is up" | tee "$log"
        return
    fi
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$log"
}

if [ -d .whl ]; then
    echo "== install the carried wheels"
    python3 -m pip install -q --disable-pip-version-check --no-index --find-links .whl datasets wandb \
        >"$out/$part-install.log" 2>&1 || { cat "$out/$part-install.log"; exit 1; }
fi
if [ -d .whl/data ] && [ ! -e ../shared/data ]; then
    mkdir -p ../shared && ln -s "$PWD/.whl/data" ../shared/data
fi
echo "== machine"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    echo "../shared/data: $(ls ../shared/data 2>/dev/null | tr '\n' ' ' || true)" # empty: the image tests skip
    python3 -c 'import sys, torch, accelerate, datasets, wandb
print("python", sys.version.split()[0], "torch", torch.__version__, "accelerate", accelerate.__version__,
      "datasets", datasets.__version__, "wandb", wandb.__version__, "GPUs", torch.cuda.device_count())
sys.exit(0 if torch.cuda.is_available() else "no CUDA device: nothing to check")'
} 2>&1 | tee "$out/$part-machine.log" || exit 1

tp=(python3 benchmarks/throughput.py --gpu --quick)
if [ "$part" = 1 ]; then
    step pytest.log 300 python3 -m pytest -v -p no:cacheprovider -m gpu tests/test_gpu.py \
        tests/test_commands_upscale.py tests/test_data_device.py tests/test_agreement.py
    step throughput_proxy.log 180 "${tp[@]}" --proxy
else
    step throughput_espcn.log 130 "${tp[@]}" --models espcn --precisions bf16 --sources prepared,device,folder
    step throughput_edsr_imdn.log 130 "${tp[@]}" --models edsr,imdn --precisions bf16 --sources prepared,device \
        --no-pipeline
    step throughput_compile.log 150 "${tp[@]}" --models espcn --precisions bf16 --sources prepared --no-pipeline \
        --compile --compile-mode reduce-overhead
    step throughput_fp32.log 110 "${tp[@]}" --models espcn,edsr,imdn --precisions no --sources prepared --no-pipeline
    step throughput_espcn_b64.log 80 "${tp[@]}" --models espcn --batch 64 --precisions bf16 \
        --sources prepared,device --no-pipeline
fi
echo "== part $part done in $SECONDS s ($(date -u +%H:%M:%S) UTC)"
