"""Training throughput of srtrain against a bare PyTorch loop, interleaved (A B A B ...) on one machine.

    PYTHONPATH=. python benchmarks/throughput.py --quick      # CPU, a few minutes: 0 loader workers, 1 round
    PYTHONPATH=. python benchmarks/throughput.py              # CPU: 0, 1, 2 loader workers, 2 rounds
    PYTHONPATH=. python benchmarks/throughput.py --gpu        # one GPU: bf16, and bf16 + channels_last
    PYTHONPATH=. python benchmarks/throughput.py --compile    # each variant eager and with `compile: true`
    PYTHONPATH=. python benchmarks/throughput.py --proxy      # srtrain's own cost per step: a model that costs ~0
    PYTHONPATH=. python benchmarks/throughput.py --gpu --models espcn,imdn,edsr --precisions bf16,no \\
        --sources folder,prepared,device                      # the GPU matrix (benchmarks/gpu_checks.sh 2)
    PYTHONPATH=. python benchmarks/throughput.py --quick --sources prepared --ema 0.999   # the weight average's cost

Rows, for ESPCN (tiny, data-bound), IMDN (`--models imdn`, small, many small kernels) and EDSR-baseline
(compute-bound), x4, batch `--batch` (16), 96 px HR patches:
- `bare loop`: forward, L1 loss, backward, Adam step on patches already in memory (the ceiling);
- srtrain's own training loop (`srtrain/main.py`, one process) from (a) a folder of HR images, LR made on the fly;
  (b) HR/LR folder pairs; (c) a `srtrain prepare`d dataset; (d) the HR folder with `data.on_device` (the images
  held where the model trains, each batch cut there by one gather); with N loader workers (`--sources` picks; (d)
  takes 0 workers only);
- `pipeline only`: srtrain's loader and `training_pair`, no model (`--no-pipeline` leaves these rows out).
`--proxy` is a CPU stand-in for a fast GPU, where the model step is small next to everything around it: model
`espcn4` (ESPCN with 4 channels in both hidden layers, a step that costs almost nothing), 48 px patches, 0 workers,
runs (a), (d) and (c), so that a row's ms/step over the bare loop is srtrain's own cost per step (data, loop,
bookkeeping). On a GPU (`--gpu --proxy`) it measures whether srtrain keeps the GPU busy.
The data are the T91 images at least 96 px on a side (scikit-image's bundled photographs where ../shared is
absent); LR pairs and the prepared set are made from them once.
Every run trains `EPOCHS` epochs, the first a warm-up; each figure is the median patches/s over the timed epochs
of all rounds (this VM's speed wanders by +-15 % from one second to the next, so one epoch per round is not enough);
ratio = figure / bare loop's. An epoch has as many steps at every `--batch` (its patches scale with the batch);
`--gpu` epochs are longer than the CPU's (`Model.gpu_patches`: sized from the models' costs, not yet measured).
Every run computes on OMP_NUM_THREADS threads (default: all cores; srtrain through `--cpu_threads`); on a machine
others share, OMP_NUM_THREADS=1 keeps a run from waiting on a busy second core.
`GPU busy %` (`--gpu`): the mean of nvidia-smi's utilization.gpu (the share of time a kernel ran), sampled every
100 ms, over a run's timed epochs: for srtrain from the appearance of epoch 1's metrics.jsonl row to the last
epoch's (so the one-image validation and the checkpoint of each timed epoch count as idle time: a lower bound).
`--compile` adds every variant again with torch.compile (srtrain's `--compile=true`) in `--compile-mode`
(`reduce-overhead`: CUDA graphs), from the HR folder with 0 loader workers unless `--sources` says otherwise
(compiling changes the model step, not the data path); its warm-up is excluded from the rates (epoch 1, and the
bare loop's warm-up epoch) and reported on its own: the bare loop's first step, compile included, from an empty
inductor cache (a first run; later runs reuse the cache).
Each row is printed as it is measured, and the table at the end, also when a time limit stops the run (SIGTERM).
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T91 = ROOT.parent / "shared" / "data" / "T91"
VAL = ROOT.parent / "shared" / "data" / "Set5"
SCALE = 4
BATCH = 16  # the batch `Model.patches` are counted for
MIN_SIDE = 96  # training images at least this large: every model's patch fits
EPOCHS = 5  # the first warms up; the median of the other four is a run's figure
THREADS = os.environ.get("OMP_NUM_THREADS", str(os.cpu_count()))  # every run's, srtrain's too (its cpu_threads)
SOURCES = ("folder", "pairs", "prepared", "device")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # as `compile_mode`'s
Window = tuple[float, float]  # wall-clock start and end (time.time()) of a run's timed epochs


@dataclass(frozen=True)
class Model:
    """A benchmarked model: its registered name and options, its HR patch side, patches per epoch at batch 16 on 2
    quiet CPU cores (about 4-10 s each) and on one GPU (`gpu_patches`: about a second each with `--quick` on an
    H100, estimated from the models' multiply-adds and kernel counts before any GPU run)."""

    name: str
    patch: int
    patches: int
    gpu_patches: int
    options: tuple[tuple[str, int], ...] = ()


MODELS = {
    "espcn": Model("espcn", 96, 1600, 96000),
    "imdn": Model("imdn", 96, 640, 16000),
    "edsr": Model("edsr", 96, 320, 32000),
    "espcn4": Model("espcn", 48, 16000, 96000, (("channels", 4), ("mid_channels", 4))),  # the proxy (--proxy)
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


def job(model: str, data: list[str], images: int, workers: int, batch: int, extra: list[str]) -> list[str]:
    spec = MODELS[model]
    repeat = -(-spec.patches // images)  # the prepared set holds one tile per image (all are under 480 px)
    return [
        f"--model={spec.name}",
        *(f"--model.{key}={value}" for key, value in spec.options),
        f"--scale={SCALE}",
        f"--patch_size={spec.patch}",
        f"--batch_size={batch}",
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


def srtrain_rate(args: list[str]) -> tuple[Window, list[float]]:
    """Patches/s of each timed epoch of srtrain's own loop (`srtrain/main.py`, one process), and the wall-clock
    times at which epoch 1's and the last epoch's metrics.jsonl rows appeared (polled every 20 ms)."""
    from srtrain.rundir import RunDir, read_metrics

    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["accelerate", "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no"]
        cmd += ["--dynamo_backend", "no", str(ROOT / "srtrain" / "main.py"), *args, f"--output_dir={tmp}/run"]
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        env.setdefault("OMP_NUM_THREADS", THREADS)
        metrics, seen = RunDir(Path(tmp) / "run").metrics, {}
        with open(Path(tmp) / "log", "w+") as log:  # a file, not a pipe: nothing blocks while the file is polled
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            while proc.poll() is None:
                now = time.time()
                for row in range(1, len(read_metrics(metrics)[0]) + 1):
                    seen.setdefault(row, now)
                time.sleep(0.02)
            if proc.returncode:
                log.seek(0)
                sys.exit(f"srtrain failed: {' '.join(cmd)}\n{log.read()[-3000:]}")
        rows, _ = read_metrics(metrics)
    window = (seen.get(1, 0.0), seen.get(len(rows), 0.0))  # 0: a row that came too late to be seen (no window)
    return window, [row["patches_per_s"] for row in rows[1:]]


def bare_rate(
    model: str, precision: str, channels_last: bool, patches: int, compile_mode: str, batch: int
) -> list[float]:
    """The ceiling: the same model, batch and patch on tensors already on the device, no data pipeline. Returns the
    wall-clock start and end of the timed epochs, the seconds of the first step (with a `compile_mode`, the
    compilation), then each timed epoch's patches/s."""
    import torch

    from srtrain.models import build_model

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    spec = MODELS[model]
    net = build_model(spec.name, SCALE, **dict(spec.options)).to(device, memory_format=fmt)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, fused=True)  # as srtrain's: one kernel per update
    lr = torch.rand(batch, 3, spec.patch // SCALE, spec.patch // SCALE, device=device).contiguous(memory_format=fmt)
    hr = torch.rand(batch, 3, spec.patch, spec.patch, device=device)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    forward = torch.compile(net, mode=compile_mode) if compile_mode != "eager" else net

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
        return steps * batch / (time.perf_counter() - start)

    first_step = batch / epoch(1)
    epoch(patches // batch)  # warm-up, as srtrain's epoch 1
    start = time.time()
    rates = [epoch(patches // batch) for _ in range(EPOCHS - 1)]
    return [start, time.time(), first_step, *rates]


def pipeline_rate(patch: int, workers: int, batch: int, data: list[str]) -> list[float]:
    """srtrain's loader and device-side degradation alone, no model: the wall-clock start and end of the timed
    epochs, then each one's patches/s."""
    import torch
    from accelerate import Accelerator

    from srtrain.config import load_config
    from srtrain.data import training_pair
    from srtrain.train import make_train_loader

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    overrides = dict(arg.split("=", 1) for arg in data)  # `data.train=...`: `data` arguments without their "--"
    overrides |= {"data.num_workers": workers, "data.repeat": 40, "scale": SCALE, "patch_size": patch}
    loader = make_train_loader(load_config(overrides=overrides | {"batch_size": batch}), accelerator)
    rates, start = [], 0.0
    for epoch in range(1, EPOCHS + 1):
        loader.dataset.set_epoch(epoch)
        began, patches = time.perf_counter(), 0
        if epoch == 2:
            start = time.time()
        for batch_ in loader:
            patches += len(training_pair(batch_, SCALE)["lr"])
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the last batches' copies and resizes, queued on the device, are done
        rates.append(patches / (time.perf_counter() - began))
    return [start, time.time(), *rates[1:]]


def child(kind: str, args: list[str]) -> tuple[Window, list[float]]:
    """Run one measurement in a fresh process (same conditions for every row), with an empty inductor cache: the
    window of its timed epochs and what it measured."""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCHINDUCTOR_CACHE_DIR": cache}
        env.setdefault("OMP_NUM_THREADS", THREADS)
        cmd = [sys.executable, __file__, "--child", kind, *args]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    start, end, *values = (float(x) for x in out.stdout.strip().splitlines()[-1].split())
    return (start, end), values


def sample_gpu() -> list[tuple[float, float]]:
    """Samples of the GPU's utilization.gpu, (time, %), appended every 100 ms by nvidia-smi and a reader thread
    until this process ends. Each sample carries nvidia-smi's own timestamp, so that a pipe that delivers lines in
    bursts does not shift them. Without nvidia-smi it says so once and the list stays empty."""
    samples: list[tuple[float, float]] = []
    if shutil.which("nvidia-smi") is None:
        print("nvidia-smi not found: no GPU busy figures", flush=True)
        return samples
    gpu = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]  # the GPU the runs use
    query = ["--query-gpu=timestamp,utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100", "-i", gpu]
    proc = subprocess.Popen(["nvidia-smi", *query], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    atexit.register(proc.terminate)

    def read() -> None:
        for line in proc.stdout:
            stamp, _, utilization = line.rpartition(",")
            try:
                when = datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f").timestamp()
            except ValueError:
                when = time.time()  # another timestamp format: when the line arrived
            try:
                samples.append((when, float(utilization)))
            except ValueError:
                continue  # "[N/A]": not supported on this device

    threading.Thread(target=read, daemon=True).start()
    return samples


def busy(samples: list[tuple[float, float]], window: Window) -> float | None:
    """The mean GPU utilization over a run's timed epochs; None without samples in that window."""
    inside = [percent for when, percent in samples if window[0] <= when <= window[1]]
    return statistics.mean(inside) if inside else None


def precision_variants(text: str) -> list[tuple[str, bool]]:
    """`bf16,no,bf16+channels_last` -> [(precision, channels_last)]."""
    variants = []
    for item in text.split(","):
        precision, _, layout = item.partition("+")
        if precision not in ("no", "bf16") or layout not in ("", "channels_last"):
            sys.exit(f"--precisions: '{item}' is not no or bf16, with an optional +channels_last")
        variants.append((precision, layout == "channels_last"))
    return variants


def print_table(rows: dict[tuple, list[float]], busy_pc: dict[tuple, list[float]], batch: int) -> None:
    print(
        "\n| model | precision | run | loader workers | patches/s | steps/s | slowest-fastest epoch, patches/s "
        "| ratio to bare loop | ms/step over bare loop | GPU busy % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (model, tag, run, w), rates in rows.items():
        rate = statistics.median(rates)
        bare = rows.get((model, tag, "bare loop", "-"))
        ratio, extra_ms = "-", "-"
        if bare and model != "-":
            ceiling = statistics.median(bare)
            ratio, extra_ms = f"{rate / ceiling:.2f}", f"{1000 * batch * (1 / rate - 1 / ceiling):.2f}"
        measured = busy_pc.get((model, tag, run, w))
        gpu = f"{statistics.median(measured):.0f}" if measured else "-"
        print(
            f"| {model} | {tag} | {run} | {w} | {rate:.0f} | {rate / batch:.1f} | {min(rates):.0f}-{max(rates):.0f} "
            f"| {ratio} | {extra_ms} | {gpu} |",
            flush=True,
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="on a CUDA device: GPU-sized epochs, GPU busy %%")
    p.add_argument("--compile", action="store_true", help="every variant also compiled (HR folder unless --sources)")
    p.add_argument("--compile-mode", default="default", choices=COMPILE_MODES, help="torch.compile's mode")
    p.add_argument("--quick", action="store_true", help="0 loader workers, one round, a quarter of the patches")
    p.add_argument("--proxy", action="store_true", help="srtrain's own cost per step: model espcn4, 0 workers")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 2; 1 with --quick)")
    p.add_argument("--batch", type=int, default=BATCH, help="the batch of the bare loop and of srtrain")
    p.add_argument("--models", default="espcn,edsr", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--precisions", help="comma list of no, bf16, bf16+channels_last (default: no; --gpu: the two bf16)")
    p.add_argument("--sources", help=f"comma list of {', '.join(SOURCES)} (default: see above)")
    p.add_argument("--ema", type=float, default=0.0, help="every srtrain run again with --ema=DECAY, interleaved")
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True, help="pipeline-only rows")
    p.add_argument("--workers", default="0,1,2", help="loader worker counts (--quick, --compile and --proxy: 0)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "srtrain_throughput")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "bare":
            print(*bare_rate(rest[0], rest[1], rest[2] == "1", int(rest[3]), rest[4], int(rest[5])))
        else:
            print(*pipeline_rate(int(rest[0]), int(rest[1]), int(rest[2]), rest[3:]))
        return
    import torch

    models = ["espcn4"] if args.proxy else args.models.split(",")
    sources = args.sources.split(",") if args.sources else None
    unknown = ({*models} - {*MODELS}) | ({*(sources or ())} - {*SOURCES})
    if unknown:
        sys.exit(f"unknown --models or --sources: {', '.join(sorted(unknown))}")
    if sources is None:  # compiling changes the model step, not the data path; the proxy compares the cuts
        sources = ["folder"] if args.compile else ["folder", "device", "prepared"] if args.proxy else SOURCES[:3]
    for key, model in MODELS.items():  # every batch the same steps an epoch; --quick: a quarter
        patches = (model.gpu_patches if args.gpu else model.patches) * args.batch // BATCH
        MODELS[key] = replace(model, patches=max(args.batch, patches // 4 if args.quick else patches))
    if args.precisions:
        precisions = precision_variants(args.precisions)
    else:
        precisions = [("bf16", False), ("bf16", True)] if args.gpu else [("no", False)]
        precisions = precisions[-1:] if args.quick else precisions
    data = make_data(args.work)
    images = len(list((args.work / "hr").glob("*.png")))
    fixed = args.quick or args.compile or args.proxy
    workers = (0,) if fixed else tuple(int(w) for w in args.workers.split(","))
    rounds = args.rounds or (1 if args.quick else 2)
    compiles = ("eager", args.compile_mode) if args.compile else ("eager",)
    variants = [(p, cl, c) for p, cl in precisions for c in compiles]
    samples = sample_gpu() if args.gpu else []
    rows: dict[tuple, list[float]] = {}
    busy_pc: dict[tuple, list[float]] = {}  # GPU busy % of each run that has nvidia-smi samples
    compile_s: dict[tuple, list[float]] = {}

    def record(key: tuple, window: Window, rates: list[float]) -> None:
        rows.setdefault(key, []).extend(rates)
        percent = busy(samples, window)
        if percent is not None:
            busy_pc.setdefault(key, []).append(percent)
        gpu = "-" if percent is None else f"{percent:.0f}"
        print(f"{' | '.join(key)}: {' '.join(f'{r:.0f}' for r in rates)} patches/s; GPU busy {gpu} %", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM: the rows measured so far"))
    started = datetime.now(timezone.utc)
    try:
        for _ in range(rounds):  # interleaved: every variant once per round
            for model in models:
                for precision, cl, compiled in variants:
                    extra = [f"--mixed_precision={precision}", f"--channels_last={str(cl).lower()}"]
                    if compiled != "eager":
                        extra += ["--compile=true", f"--compile_mode={compiled}"]
                    tag = precision + (" + channels_last" if cl else "")
                    tag += "" if compiled == "eager" else f" + compile ({compiled})"
                    spec = [model, precision, str(int(cl)), str(MODELS[model].patches), compiled, str(args.batch)]
                    window, (first_step, *rates) = child("bare", spec)
                    record((model, tag, "bare loop", "-"), window, rates)
                    compile_s.setdefault((model, tag), []).append(first_step)
                    for mode in sources:
                        for w in (0,) if mode == "device" else workers:  # the device path cuts in the main process
                            for ema in (0.0, args.ema) if args.ema else (0.0,):
                                run = job(model, data[mode], images, w, args.batch, [*extra, f"--ema={ema}"])
                                name = f"srtrain, {mode}" + (f", ema {ema:g}" if ema else "")
                                window, rates = srtrain_rate(run)
                                record((model, tag, name, str(w)), window, rates)
            for patch in sorted({MODELS[model].patch for model in models} if args.pipeline else ()):
                for mode in sources:
                    for w in (0,) if mode == "device" else workers:
                        pipe = [str(patch), str(w), str(args.batch), *(arg.removeprefix("--") for arg in data[mode])]
                        window, rates = child("pipe", pipe)
                        record(("-", "-", f"pipeline only, {mode}, {patch} px", str(w)), window, rates)
    finally:
        gpu = torch.cuda.is_available()
        device = torch.cuda.get_device_name() if gpu else f"{platform.processor() or platform.machine()} CPU"
        print(f"\n{started:%Y-%m-%d %H:%M}-{datetime.now(timezone.utc):%H:%M} UTC; {device}, {os.cpu_count()} cores")
        print(f"torch {torch.__version__}; threads {THREADS}; batch {args.batch}; command: python {' '.join(sys.argv)}")
        if args.gpu and not samples:
            print("GPU busy %: no nvidia-smi samples")
        print_table(rows, busy_pc, args.batch)
        print("\nbare loop's first step, s (compilation included where compiled; an empty inductor cache each time):")
        for (model, tag), seconds in compile_s.items():
            print(f"  {model}, {tag}: {', '.join(f'{s:.1f}' for s in seconds)}")


if __name__ == "__main__":
    main()
