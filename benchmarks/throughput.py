"""Training throughput of srtrain against a bare PyTorch loop, interleaved (A B A B ...) on one machine.

    PYTHONPATH=. python benchmarks/throughput.py --quick      # CPU, a few minutes: 0 loader workers, 1 round
    PYTHONPATH=. python benchmarks/throughput.py              # CPU: 0, 1, 2 loader workers, 2 rounds
    PYTHONPATH=. python benchmarks/throughput.py --gpu        # one GPU: bf16, and bf16 + channels_last
    PYTHONPATH=. python benchmarks/throughput.py --compile    # each variant eager and with `compile: true`
    PYTHONPATH=. python benchmarks/throughput.py --proxy      # srtrain's own cost per step: a model that costs ~0

Rows, for ESPCN (tiny, data-bound) and EDSR-baseline (compute-bound), x4, batch 16, 96 px HR patches:
- `bare loop`: forward, L1 loss, backward, Adam step on patches already in memory (the ceiling);
- srtrain's own training loop (`srtrain/main.py`, one process) from (a) a folder of HR images, LR made on the fly;
  (b) HR/LR folder pairs; (c) a `srtrain prepare`d dataset; with N loader workers;
- `pipeline only`: srtrain's loader and `training_pair`, no model.
`--proxy` is a CPU stand-in for a fast GPU, where the model step is small next to everything around it: model
`espcn4` (ESPCN with 4 channels in both hidden layers, a step that costs almost nothing), 48 px patches, 0 workers,
runs (a), (c) and (d), the HR folder with `data.on_device` (the images held where the model trains, each batch cut
there by one gather), so that a row's ms/step over the bare loop is srtrain's own cost per step (data, loop,
bookkeeping). On a GPU (`--gpu --proxy`) it measures whether srtrain keeps the GPU busy.
The data are the T91 images at least 96 px on a side (scikit-image's bundled photographs where ../shared is
absent); LR pairs and the prepared set are made from them once.
Every run trains `EPOCHS` epochs, the first a warm-up; each figure is the median patches/s over the timed epochs
of all rounds (this VM's speed wanders by +-15 % from one second to the next, so one epoch per round is not enough);
ratio = figure / bare loop's. Every run computes on OMP_NUM_THREADS threads (default: all cores; srtrain through
`--cpu_threads`); on a machine others share, OMP_NUM_THREADS=1 keeps a run from waiting on a busy second core.
`--compile` adds every variant again with torch.compile (srtrain's `--compile=true`), from the HR folder with 0
loader workers only (compiling changes the model step, not the data path); its warm-up is excluded from the
rates (epoch 1, and the bare loop's warm-up epoch) and reported on its own: the bare loop's first step, compile
included, from an empty inductor cache (a first run; later runs reuse the cache).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T91 = ROOT.parent / "shared" / "data" / "T91"
VAL = ROOT.parent / "shared" / "data" / "Set5"
SCALE, BATCH = 4, 16
MIN_SIDE = 96  # training images at least this large: every model's patch fits
EPOCHS = 5  # the first warms up; the median of the other four is a run's figure
THREADS = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))  # every run's, srtrain's too (its cpu_threads)


@dataclass(frozen=True)
class Model:
    """A benchmarked model: its registered name and options, its HR patch side, patches per epoch (about 4-10 s
    each on 2 quiet CPU cores)."""

    name: str
    patch: int
    patches: int
    options: tuple[tuple[str, int], ...] = ()


MODELS = {
    "espcn": Model("espcn", 96, 1600),
    "edsr": Model("edsr", 96, 320),
    "espcn4": Model("espcn", 48, 16000, (("channels", 4), ("mid_channels", 4))),  # the proxy (--proxy)
}


def make_data(work: Path) -> dict[str, list[str]]:
    """The `data.*` arguments of each run: HR folder, HR/LR folder pair, prepared dataset (made once), and the HR
    folder cut on the device."""
    import numpy as np
    import PIL.Image
    import torch

    from srtrain.config import DataConfig
    from srtrain.data import load_images
    from srtrain.data.prepare import prepare
    from srtrain.degradation import imresize, modcrop

    hr, lr, prepared = work / "hr", work / "lr", work / "prepared"
    if not prepared.exists():
        hr.mkdir(parents=True)
        lr.mkdir()
        photos = [(p.name, np.array(PIL.Image.open(p).convert("RGB"))) for p in sorted(T91.glob("*.png"))]
        if not photos:  # no ../shared (a bare GPU machine): scikit-image's bundled photographs instead
            bundled = load_images(DataConfig(), "train")
            photos = [(f"{bundled.name(i)}.png", bundled.hr(i).permute(1, 2, 0).numpy()) for i in range(len(bundled))]
        for name, array in photos:
            if min(array.shape[:2]) < MIN_SIDE:
                continue
            pixels = modcrop(torch.from_numpy(array).permute(2, 0, 1), SCALE)
            PIL.Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(hr / name)
            PIL.Image.fromarray(imresize(pixels, 1 / SCALE).permute(1, 2, 0).numpy()).save(lr / name)
        prepare(str(hr), prepared)
    return {
        "folder": [f"--data.train={hr}"],
        "pairs": [f"--data.train={hr},{lr}"],
        "prepared": [f"--data.train={prepared}"],
        "device": [f"--data.train={hr}", "--data.on_device=true"],
    }


def job(model: str, data: list[str], images: int, workers: int, extra: list[str]) -> list[str]:
    spec = MODELS[model]
    repeat = -(-spec.patches // images)  # the prepared set holds one tile per image (all are under 480 px)
    return [
        f"--model={spec.name}",
        *(f"--model.{key}={value}" for key, value in spec.options),
        f"--scale={SCALE}",
        f"--patch_size={spec.patch}",
        f"--batch_size={BATCH}",
        *data,
        f"--data.repeat={repeat}",
        f"--data.num_workers={workers}",
        f"--cpu_threads={THREADS}",
        f"--data.val={VAL if VAL.exists() else 'default'}",
        "--data.max_val_images=1",
        f"--epochs={EPOCHS}",
        "--val_every=1",  # a row per epoch in metrics.jsonl (one validation image: validation is not timed)
        "--num_samples=0",
        "--scheduler=constant",
        *extra,
    ]


def srtrain_rate(args: list[str]) -> list[float]:
    """Patches/s of each timed epoch of srtrain's own loop (`srtrain/main.py`, one process)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
        cmd += ["--dynamo_backend", "no", str(ROOT / "srtrain" / "main.py"), *args, f"--output_dir={tmp}/run"]
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        env.setdefault("OMP_NUM_THREADS", THREADS)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"srtrain failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        from srtrain.rundir import RunDir, read_metrics

        rows, _ = read_metrics(RunDir(Path(tmp) / "run").metrics)
    return [row["patches_per_s"] for row in rows[1:]]


def bare_rate(model: str, precision: str, channels_last: bool, patches: int, compile: bool) -> list[float]:
    """The ceiling: the same model, batch and patch on tensors already on the device, no data pipeline.
    Returns the seconds of the first step (with `compile`, the compilation), then each timed epoch's patches/s."""
    import torch

    from srtrain.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    spec = MODELS[model]
    net = build_model(spec.name, SCALE, **dict(spec.options)).to(device, memory_format=fmt)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)  # as srtrain's: one kernel per update
    lr = torch.rand(BATCH, 3, spec.patch // SCALE, spec.patch // SCALE, device=device).contiguous(memory_format=fmt)
    hr = torch.rand(BATCH, 3, spec.patch, spec.patch, device=device)
    steps = patches // BATCH
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    forward = torch.compile(net) if compile else net

    def epoch(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(device.type, dtype=dtype, enabled=precision == "bf16"):
                sr = forward(lr)
            loss = torch.nn.functional.l1_loss(sr.float(), hr)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        loss.item()  # waits for the device
        return steps * BATCH / (time.perf_counter() - start)

    first_step = BATCH / epoch(1)
    epoch(steps)  # warm-up, as srtrain's epoch 1
    return [first_step, *(epoch(steps) for _ in range(EPOCHS - 1))]


def pipeline_rate(patch: int, workers: int, data: list[str]) -> list[float]:
    """srtrain's loader and device-side degradation alone: patches/s of each timed epoch, no model."""
    import torch
    from accelerate import Accelerator

    from srtrain.config import load_config
    from srtrain.data import training_pair
    from srtrain.train import make_train_loader

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    overrides = dict(arg.split("=", 1) for arg in data)  # `data.train=...`: `data` arguments without their "--"
    overrides |= {"data.num_workers": workers, "data.repeat": 40, "scale": SCALE, "patch_size": patch}
    loader = make_train_loader(load_config(overrides=overrides), accelerator)
    rates = []
    for epoch in range(1, EPOCHS + 1):
        loader.dataset.set_epoch(epoch)
        start, patches = time.perf_counter(), 0
        for batch in loader:
            patches += len(training_pair(batch, SCALE)["lr"])
        rates.append(patches / (time.perf_counter() - start))
    return rates[1:]


def child(kind: str, args: list[str]) -> list[float]:
    """Run one measurement in a fresh process (same conditions for every row), with an empty inductor cache."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": cache}
        env.setdefault("OMP_NUM_THREADS", THREADS)
        cmd = [sys.executable, __file__, "--child", kind, *args]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    return [float(x) for x in out.stdout.strip().splitlines()[-1].split()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="on a CUDA device: bf16, and bf16 + channels_last")
    p.add_argument("--compile", action="store_true", help="every variant also with torch.compile (HR folder only)")
    p.add_argument("--quick", action="store_true", help="0 loader workers, one round, a quarter of the patches")
    p.add_argument("--proxy", action="store_true", help="srtrain's own cost per step: model espcn4, 0 workers")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2; 1 with --quick)")
    p.add_argument("--models", default="espcn,edsr")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts (--quick and --compile: 0)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "srtrain_throughput")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "bare":
            print(*bare_rate(rest[0], rest[1], rest[2] == "1", int(rest[3]), rest[4] == "1"))
        else:
            print(*pipeline_rate(int(rest[0]), int(rest[1]), rest[2:]))
        return
    import torch

    if args.quick:
        MODELS.update({key: replace(model, patches=model.patches // 4) for key, model in MODELS.items()})
    sources = make_data(args.work)
    images = len(list((args.work / "hr").glob("*.png")))
    models = ["espcn4"] if args.proxy else args.models.split(",")
    fixed = args.quick or args.compile or args.proxy
    workers = (0,) if fixed else tuple(int(w) for w in args.workers.split(","))
    if args.compile:  # compiling changes the model step, not the data path
        sources = {"folder": sources["folder"]}
    elif args.proxy:
        sources = {mode: sources[mode] for mode in ("folder", "device", "prepared")}
    else:
        del sources["device"]
    rounds = args.rounds or (1 if args.quick else 2)
    precisions = [("bf16", False), ("bf16", True)] if args.gpu else [("no", False)]
    precisions = precisions[-1:] if args.quick else precisions
    variants = [(p, cl, c) for p, cl in precisions for c in ((False, True) if args.compile else (False,))]
    rows: dict[tuple, list[float]] = {}
    compile_s: dict[tuple, list[float]] = {}
    for _ in range(rounds):  # interleaved: every variant once per round
        for model in models:
            for precision, cl, compiled in variants:
                extra = [f"--mixed_precision={precision}", f"--channels_last={str(cl).lower()}"]
                extra += [f"--compile={str(compiled).lower()}"]
                tag = precision + (" + channels_last" if cl else "") + (" + compile" if compiled else "")
                first_step, *rates = child(
                    "bare", [model, precision, str(int(cl)), str(MODELS[model].patches), str(int(compiled))]
                )
                rows.setdefault((model, tag, "bare loop", "-"), []).extend(rates)
                compile_s.setdefault((model, tag), []).append(first_step)
                for mode, data in sources.items():
                    for w in workers:
                        rates = srtrain_rate(job(model, data, images, w, extra))
                        rows.setdefault((model, tag, f"srtrain, {mode}", str(w)), []).extend(rates)
        for patch in sorted({MODELS[model].patch for model in models}):
            for mode, data in sources.items():
                for w in workers:
                    rows.setdefault(("-", "-", f"pipeline only, {mode}, {patch} px", str(w)), []).extend(
                        child("pipe", [str(patch), str(w), *(arg.removeprefix("--") for arg in data)])
                    )
    device = torch.cuda.get_device_name() if args.gpu else f"{platform.processor() or platform.machine()} CPU"
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    print(f"\n{stamp}; {device}, {os.cpu_count()} cores; torch {torch.__version__}")
    print(f"threads {THREADS}; command: python {' '.join(sys.argv)}\n")
    print(
        "| model | precision | run | loader workers | patches/s | steps/s | slowest-fastest epoch, patches/s "
        "| ratio to bare loop | ms/step over bare loop |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, tag, run, w), rates in rows.items():
        rate = statistics.median(rates)
        bare = rows.get((model, tag, "bare loop", "-"))
        ratio, extra_ms = "-", "-"
        if bare and model != "-":
            ceiling = statistics.median(bare)
            ratio, extra_ms = f"{rate / ceiling:.2f}", f"{1000 * BATCH * (1 / rate - 1 / ceiling):.2f}"
        print(
            f"| {model} | {tag} | {run} | {w} | {rate:.0f} | {rate / BATCH:.1f} | {min(rates):.0f}-{max(rates):.0f} "
            f"| {ratio} | {extra_ms} |"
        )
    print("\nbare loop's first step, s (compilation included where compiled; an empty inductor cache each time):")
    for (model, tag), seconds in compile_s.items():
        print(f"  {model}, {tag}: {', '.join(f'{s:.1f}' for s in seconds)}")


if __name__ == "__main__":
    main()
