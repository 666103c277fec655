"""How long a checkpoint write takes for the zoo's largest models: the time a stop signal's save needs.

For each job, the model is built as the job says, one Adam step fills the optimizer state (two moments per
weight, as in training), then `srtrain.checkpoint.save_checkpoint` writes `last` (safetensors weights, optimizer
state, manifest with SHA-256, fsync) ROUNDS times; the median and the folder's size are printed.

    python benchmarks/checkpoint_save.py jobs/zoo/edsr_full_x4.yaml jobs/zoo/rcan_x4.yaml jobs/zoo/swinir_x4.yaml
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from srtrain.checkpoint import TrainState, save_checkpoint
from srtrain.config import load_config
from srtrain.models import build_model


def save_seconds(job: Path, rounds: int) -> tuple[float, int, int]:
    """(median seconds per save, bytes on disk, parameters) for `job`'s model."""
    cfg = load_config(job)
    model = build_model(cfg.model.name, cfg.scale, **cfg.model.args)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    model(torch.rand(1, 3, 16, 16)).mean().backward()
    optimizer.step()
    times = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        last = Path(tmp) / "last"
        for _ in range(rounds):
            start = time.perf_counter()
            save_checkpoint(last, model, optimizer, TrainState(), "{}\n")
            times.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in last.iterdir())
    return statistics.median(times), size, sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| job | parameters | checkpoint | save (median) |\n|---|---|---|---|")
    for job in args.jobs:
        seconds, size, params = save_seconds(job, args.rounds)
        print(f"| {job} | {params / 1e6:.1f} M | {size / 2**20:.0f} MiB | {seconds:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
