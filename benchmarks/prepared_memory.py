"""Resident memory per training process: a prepared (memory-mapped) dataset vs an image folder with data.cache.

Makes a synthetic DIV2K-sized set (2040x1356 PNGs; smooth gradients plus noise), prepares it, then for 1 and
2 processes (`accelerate launch`, CPU DDP) draws one epoch of training batches through srtrain's own loader
and reads each process's /proc/self/smaps_rollup: Rss (what `top` shows: mapped file pages count in every
process that touches them), Anonymous (private memory) and Pss (shared pages split among the processes).

    PYTHONPATH=. python benchmarks/prepared_memory.py --images 48 --work /tmp/srtrain_mem
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, size: tuple[int, int] = (2040, 1356)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    w, h = size
    ramp = np.add.outer(np.linspace(0, 160, h), np.linspace(0, 80, w))
    for i in range(n):
        path = folder / f"{i:04d}.png"
        if not path.exists():
            noise = rng.integers(0, 64, (h, w, 3))
            pixels = (ramp[..., None] * rng.uniform(0.5, 1.0, 3) + noise).clip(0, 255).astype(np.uint8)
            PIL.Image.fromarray(pixels).save(path, compress_level=1)


def worker(source: str, cache: bool, repeat: int) -> None:
    """One process of the launch: an epoch of batches, then its memory, gathered on the main process."""
    import torch
    from accelerate import Accelerator

    from srtrain.config import load_config
    from srtrain.data import training_pair
    from srtrain.launch import close_process_group, end_process
    from srtrain.train import make_train_loader

    accelerator = Accelerator(cpu=True)
    overrides = {"data.train": source, "data.cache": cache, "data.repeat": repeat}
    cfg = load_config(overrides={**overrides, "scale": 4, "patch_size": 96, "batch_size": 16})
    loader = make_train_loader(cfg, accelerator)
    loader.dataset.set_epoch(1)
    start, patches = time.perf_counter(), 0
    for batch in loader:
        patches += len(training_pair(batch, 4)["lr"])
    seconds = time.perf_counter() - start
    fields = dict(line.split(":")[:2] for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    kib = [int(fields[k].split()[0]) for k in ("Rss", "Anonymous", "Pss")]
    row = torch.tensor([*kib, patches, seconds], dtype=torch.float64)
    rows = accelerator.gather(row[None]).tolist()
    if accelerator.is_main_process:
        print("RESULT " + json.dumps(rows))
    if close_process_group():  # end as srtrain's commands do, past gloo's threads (docs/faults.md)
        end_process(0)


def launch(processes: int, source: Path, cache: bool, repeat: int) -> list[list[float]]:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    world = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    with socket.socket() as free:  # not 29500: other runs on this machine may hold it
        free.bind(("127.0.0.1", 0))
        port = str(free.getsockname()[1])
    cmd = ["accelerate", "launch", *world, "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", port]
    cmd += [__file__, "--worker", str(source), "--cache", str(int(cache)), "--repeat", str(repeat)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--work", type=Path, default=Path("/tmp/srtrain_mem"))
    p.add_argument("--worker")
    p.add_argument("--cache", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, bool(args.cache), args.repeat)
    from srtrain.data.prepare import prepare

    folder, prepared = args.work / "hr", args.work / "prepared"
    start = time.perf_counter()
    make_images(folder, args.images)
    print(f"{args.images} synthetic 2040x1356 PNGs in {folder}: {time.perf_counter() - start:.0f} s")
    start = time.perf_counter()
    manifest = prepare(str(folder), prepared, num_proc=2)
    tiles = sum(e["tiles"] for e in manifest["shards"].values())
    size = sum(f.stat().st_size for f in prepared.glob("*.arrow")) / 2**30
    print(f"prepared {tiles} tiles of 480x480 ({size:.2f} GiB) in {time.perf_counter() - start:.0f} s")
    tiles_per_image = tiles // args.images
    print("\n| data | processes | Rss MiB/process | Anonymous MiB/process | Pss MiB/process | patches/process |")
    print("|---|---|---|---|---|---|")
    for label, source, cache, repeat in (
        ("prepared (memory-mapped)", prepared, False, 1),
        ("image folder, data.cache=true", folder, True, tiles_per_image),
    ):
        for processes in (1, 2):
            rows = launch(processes, source, cache, repeat)
            rss, anon, pss = (np.mean([r[k] for r in rows]) / 1024 for k in range(3))
            print(f"| {label} | {processes} | {rss:.0f} | {anon:.0f} | {pss:.0f} | {rows[0][3]:.0f} |", flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs; command: {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
