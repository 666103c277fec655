#!/usr/bin/env bash
# Run HERE (a machine that reaches PyPI) before a device call: the wheels the GPU machine's image lacks, for its
# Python (CPython 3.12, manylinux x86_64), into .whl/ (in .gitignore) for the call to carry, and the benchmark images
# (../shared/data's T91 and Set5, 10 MiB) into .whl/data, which gpu_checks.sh links to ../shared/data there.
#   bash benchmarks/gpu_wheels.sh      then: device run `bash benchmarks/gpu_checks.sh 1` (and 2), carry [".whl"]
# datasets and wandb at the versions installed here (CI's) with their dependencies, and datasets 4.0.0 with its
# pins as the fallback for an image whose pyarrow is older than the newer datasets needs. numpy, pandas and pyarrow
# are left out: the image has them, and with them the folder would pass the 64 MiB a call carries.
set -euo pipefail
cd "$(dirname "$0")/.."
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
target=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
    --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
rm -rf .whl
python3 -m pip download -q --disable-pip-version-check "${target[@]}" -d .whl \
    "datasets==$(version datasets)" "wandb==$(version wandb)"
python3 -m pip download -q --disable-pip-version-check "${target[@]}" -d .whl "datasets==4.0.0"
rm -f .whl/numpy-*.whl .whl/pandas-*.whl .whl/pyarrow-*.whl
if [ -d ../shared/data/T91 ]; then
    mkdir .whl/data && cp -r ../shared/data/T91 ../shared/data/Set5 .whl/data/
fi
size=$(du -sm .whl | cut -f1)
echo ".whl: $size MiB"
((size < 60)) || echo "warning: a device call carries 64 MiB in all, the working tree included" >&2
