"""Training throughput (patches/s) for 1 and 2 CPU processes, and on a GPU for fp32, bf16 and channels_last.

    python benchmarks/scaling.py            # CPU: 1 process (2 threads) vs 2 processes (1 thread each)
    python benchmarks/scaling.py --gpu      # one GPU: fp32, bf16, bf16 + channels_last

Each variant trains the default job (ESPCN x4, 96x96 patches, batch 16 per process) for 3 epochs of
2,200 patches with W&B off, and reports the patches/s of epoch 3 (epochs 1 and 2 warm up).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def throughput(processes: int, threads: int, extra: list[str], gpu: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        world = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
        cmd = ["accelerate", "launch", *world, "--num_machines", "1", "--mixed_precision", "no"]
        cmd += ["--dynamo_backend", "no", str(ROOT / "srtrain" / "main.py"), "--epochs=3", "--data.repeat=200"]
        cmd += ["--scheduler=constant", "--val_every=3", "--num_samples=0", f"--output_dir={tmp}/run", *extra]
        env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(threads)}
        if processes > 1 and not gpu:
            env["ACCELERATE_USE_CPU"] = "1"
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        from srtrain.rundir import RunDir, read_metrics

        rows, _ = read_metrics(RunDir(Path(tmp) / "run").metrics)
    return rows[-1]["patches_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.gpu:
        variants = [
            ("1 GPU, fp32", 1, cores, []),
            ("1 GPU, bf16", 1, cores, ["--mixed_precision=bf16"]),
            ("1 GPU, bf16 + channels_last", 1, cores, ["--mixed_precision=bf16", "--channels_last=true"]),
        ]
    else:
        variants = [("1 process x 2 threads", 1, 2, []), ("2 processes x 1 thread", 2, 1, [])]
    for label, processes, threads, extra in variants:
        print(f"{label:<32} {throughput(processes, threads, extra, args.gpu):8.0f} patches/s", flush=True)


if __name__ == "__main__":
    main()
