"""Time the full Set14 x4 evaluation, split into its stages, so that metrics never dominate validation.

    python benchmarks/eval_speed.py [--data ../shared/data/Set14] [--scale 4] [--repeats 5] [--model bicubic]
        [--metrics psnr_y,ssim_y,psnr_rgb,ssim_rgb,mse,nrmse,fsim]

Prints the median process CPU seconds (stable under other users' load) and wall seconds over the repeats of:
PNG decoding, MATLAB bicubic LR creation, the model's inference alone (`super_resolve`, as evaluation runs it),
each metric (each pays its own quantization of SR; HR is uint8, as validation hands it over), and the end-to-end
`evaluate_source` (what `srtrain eval` runs, default metrics, images decoded once and cached as there).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from srtrain.config import DataConfig
from srtrain.data import load_images
from srtrain.degradation import imresize, modcrop
from srtrain.evaluation import SCORES, evaluate_source, super_resolve
from srtrain.metrics import Scored
from srtrain.models import build_model


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (CPU, wall) seconds of `fn`."""
    times = []
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        fn()
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
    return statistics.median(t[0] for t in times), statistics.median(t[1] for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "Set14"))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="bicubic", help="the model timed as the SR step (random weights)")
    parser.add_argument("--metrics", default=",".join(SCORES), help="comma list of the metrics timed one by one")
    args = parser.parse_args()
    s, n = args.scale, args.repeats
    data = DataConfig(val=args.data, gray="direct", cache=False)
    images = load_images(data, "val")
    decode = median_seconds(lambda: [images.hr(i) for i in range(len(images))], n)
    hr = [modcrop(images.hr(i), s) for i in range(len(images))]
    resize = median_seconds(lambda: [imresize(x, 1 / s) for x in hr], n)
    lr = [(imresize(x, 1 / s).float() / 255)[None] for x in hr]
    torch.manual_seed(0)
    model = build_model(args.model, s).eval()
    with torch.no_grad():
        upscale = median_seconds(lambda: [super_resolve(model, x, s) for x in lr], n)
        sr = [super_resolve(model, x, s) for x in lr]
    pairs = list(zip(sr, (x[None] for x in hr), strict=True))
    metric = {
        name: median_seconds(lambda fn=fn: [fn(Scored(a, b, s, "direct")) for a, b in pairs], n)
        for name, fn in SCORES.items()
        if name in args.metrics.split(",")
    }
    accelerator = Accelerator(cpu=True)
    cached = DataConfig(val=args.data, gray="direct")
    end_to_end = median_seconds(lambda: evaluate_source(model, cached, s, accelerator), n)

    print(
        f"{Path(args.data).name} x{s}: {len(hr)} images, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); median of {n} runs, CPU and wall seconds"
    )
    rows = [("decode PNGs", decode), ("LR by MATLAB imresize (uint8)", resize)]
    rows += [(f"{args.model} upscale (model)", upscale)]
    rows += [(f"metric {name}", t) for name, t in metric.items()]
    rows += [("end to end: evaluate_source (psnr_y, ssim_y, psnr_rgb)", end_to_end)]
    for label, (cpu, wall) in rows:
        print(f"  {label:<58} {cpu:8.3f} {wall:8.3f}")


if __name__ == "__main__":
    main()
