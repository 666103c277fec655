"""Plain functions the tests share (fixtures are in conftest.py): paths, tiny jobs, how a command is started,
and how its outputs (metrics.jsonl, checkpoints, W&B's offline files) are read back. `from helpers import ...`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import accelerate
import numpy as np
import PIL.Image
import pytest
import torch
from packaging.version import Version
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
MAIN = str(ROOT / "srtrain" / "main.py")  # what `accelerate launch` starts: the training command
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data (the SR benchmark images) is absent")


# Starting commands: each returns the CompletedProcess; `check` asserts status 0 (with the output's tail).


def free_port() -> int:
    """A TCP port nobody listens on now, so that concurrent test runs never share accelerate's default 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_launch(processes: int) -> list[str]:
    """`accelerate launch` for N processes on one machine, quiet and non-interactive, on a free port."""
    world = ["--multi_gpu", "--num_processes", str(processes)] if processes > 1 else ["--num_processes", "1"]
    quiet = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return ["accelerate", "launch", *world, *quiet, "--main_process_port", str(free_port())]


def finished(proc: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    """`proc`, asserted to have ended with 0 when `check` (the failure shows the end of its output)."""
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def launch(args: list[str], cwd: Path, processes: int = 1, check: bool = True, **env: str):
    """`accelerate launch` (N processes) of `args` (a script or `-m srtrain ...` and its arguments), W&B offline
    unless `env` says otherwise; `env` (e.g. ACCELERATE_USE_CPU="1") is added to this process's environment."""
    full_env = {**os.environ, "WANDB_MODE": "offline", **env}
    cmd = [*accelerate_launch(processes), *args]
    return finished(subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=600), check)


def python(args: list[str], cwd: Path | None = None, check: bool = True, **env: str):
    """This interpreter on `args` (a script, `-c CODE` or `-m MODULE` and its arguments), `env` added."""
    cmd = [sys.executable, *args]
    full_env = {**os.environ, **env}
    return finished(subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=300), check)


def srtrain(args: list[str], cwd: Path, fault: str = "", wandb: str = "offline", check: bool = False, **env: str):
    """`python -m srtrain ARGS`: one process, no launcher, the fault hook set to `fault` (srtrain/faults.py), `env`
    added. Unchecked by default: most callers assert a status other than 0."""
    return python(["-m", "srtrain", *args], cwd, check, WANDB_MODE=wandb, SRTRAIN_FAULT=fault, **env)


# Tiny jobs on the `photo_folder` fixture's four 120x120 Set5 crops: 4 steps an epoch, seconds on a CPU.


def tiny_job(train_dir: Path, out: Path, *extra: str) -> list[str]:
    """Training arguments: ESPCN x4, 4 images x repeat 8 / batch 8 = 4 steps an epoch, 2 validation images."""
    return [
        f"--data.train={train_dir}",
        f"--data.val={DATA / 'Set5'}",
        "--data.max_val_images=2",
        "--data.repeat=8",
        "--batch_size=8",
        "--patch_size=48",
        "--lr=0.002",
        "--num_samples=2",
        "--scheduler=constant",
        f"--output_dir={out}",
        *extra,
    ]


STEPS = 8  # checkpointed_job's optimizer steps: 4 an epoch, 2 epochs


def checkpointed_job(photos: Path, out: Path, *extra: str) -> list[str]:
    """tiny_job for 2 epochs with a cosine schedule (a resumed learning rate must continue exactly), the weight
    average (`ema`: a resume must restore it exactly too; two processes must keep it identical) and a checkpoint
    every step: what the stop, kill and resume tests run (the `reference` fixture is it, never interrupted)."""
    args = ["--epochs=2", "--scheduler=cosine", "--min_lr=0.0001", "--ema=0.99", "--checkpoint_every=1", *extra]
    return tiny_job(photos, out, *args)


def tiny_grid(train_dir: Path) -> dict:
    """A sweep: two models x two learning rates, one short epoch each on four Set5 crops (validated on two)."""
    fixed = {
        "epochs": 1,
        "data.train": str(train_dir),
        "data.val": str(train_dir),
        "data.max_val_images": 2,
        "data.repeat": 8,
        "batch_size": 8,
        "patch_size": 32,
        "num_samples": 1,
        "resume": "auto",
    }
    return {
        "name": "tiny",
        "program": "srtrain/main.py",
        "method": "grid",
        "metric": {"name": "best_psnr_y", "goal": "maximize"},
        "parameters": {"model": {"values": ["espcn", "srcnn"]}, "lr": {"values": [0.001, 0.002]}}
        | {k: {"value": v} for k, v in fixed.items()},
        "command": ["${env}", "accelerate", "launch", "${program}", "${args}"],
    }


# Reading a run's outputs back.


def metrics(out: Path) -> list[dict]:
    """The rows of a run directory's metrics.jsonl."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def last_weights(out: Path, file: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """The weights (or with `file="ema.safetensors"` the weight average) of a run directory's `checkpoints/last`."""
    return load_file(str(out / "checkpoints" / "last" / file))


def assert_identical(a: Path, b: Path) -> None:
    """Two runs' last checkpoints hold the same weights and weight averages (where they keep one), bit for bit."""
    averaged = any((out / "checkpoints" / "last" / "ema.safetensors").exists() for out in (a, b))
    for file in ("model.safetensors", "ema.safetensors") if averaged else ("model.safetensors",):
        wa, wb = (last_weights(out, file) for out in (a, b))
        assert wa.keys() == wb.keys(), file
        for name in wa:
            assert torch.equal(wa[name], wb[name]), (file, name)


def wandb_segments(out: Path) -> list[Path]:
    """A run directory's offline W&B runs (one per process that logged: a resume adds one), oldest first."""
    return sorted((out / "wandb").glob("offline-run-*"))


def wandb_records(run_dir: Path) -> list[dict]:
    """Every record of an offline W&B run's `.wandb` file, as W&B's own reader decodes it."""
    proc = subprocess.run(
        ["wandb", "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True, check=True, timeout=120
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def wandb_history(run_dir: Path) -> list[dict]:
    return [r["history"]["item"] for r in wandb_records(run_dir) if r.get("type") == "history"]


def wandb_run_record(run_dir: Path) -> dict:
    return next(r["run"] for r in wandb_records(run_dir) if r.get("type") == "run")


def wandb_summary(run_dir: Path) -> dict:
    proc = subprocess.run(
        ["wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(proc.stdout)


def eval_on_tiny_val(out: Path, tmp_path: Path, *flags: str, **env: str) -> dict:
    """`srtrain eval` of run `out`'s best checkpoint on the tiny job's two validation images (max_val_images=2),
    with `flags` (e.g. --ensemble); `env` added to its environment (CUDA_VISIBLE_DEVICES="" for a run trained on
    the CPU)."""
    val = tmp_path / "val"
    val.mkdir(exist_ok=True)
    for name in ("baby", "bird"):
        (val / f"{name}.png").write_bytes((DATA / "Set5" / f"{name}.png").read_bytes())
    report = tmp_path / f"eval{''.join(flags)}.json"
    args = ["eval", "--checkpoint", str(out), "--data", str(val), "--json", str(report), *flags]
    python(["-m", "srtrain", *args], tmp_path, **env)
    (result,) = json.loads(report.read_text())["results"]
    return result


def make_model(name: str, scale: int, **options):
    """A model of the zoo built without external weights (the ResNet-50 backbone's download is off)."""
    from srtrain.models import build_model, weights_free_options

    return build_model(name, scale, **weights_free_options(name), **options)


# Images.


def read_rgb(path: Path) -> np.ndarray:
    return np.array(PIL.Image.open(path).convert("RGB"))


def load_png(path: Path) -> torch.Tensor:
    """A PNG as a uint8 (C, H, W) tensor; 8-bit gray (mode L) gives C = 1."""
    pixels = np.array(PIL.Image.open(path))
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def photo(size: int = 96) -> PIL.Image.Image:
    """The top left `size` pixels square of Set5's baby, RGB."""
    return PIL.Image.open(DATA / "Set5" / "baby.png").convert("RGB").crop((0, 0, size, size))


def png_bytes() -> bytes:
    """`photo()` as a PNG file's bytes (cut some off for a truncated file)."""
    buffer = io.BytesIO()
    photo().save(buffer, "PNG")
    return buffer.getvalue()


def paired_parquet(folder: Path, scale: int) -> Path:
    """Baby and butterfly as a Parquet file of HR images and their MATLAB-bicubic x`scale` LR images."""
    import datasets

    from srtrain.degradation import imresize, modcrop

    hr, lr = [], []
    for name in ("baby", "butterfly"):
        hr_img = modcrop(torch.from_numpy(read_rgb(DATA / "Set5" / f"{name}.png")).permute(2, 0, 1), scale)
        hr.append(PIL.Image.fromarray(hr_img.permute(1, 2, 0).numpy()))
        lr.append(PIL.Image.fromarray(imresize(hr_img, 1 / scale).permute(1, 2, 0).numpy()))
    features = datasets.Features({"hr": datasets.Image(), "lr": datasets.Image()})
    path = folder / f"paired_x{scale}.parquet"
    datasets.Dataset.from_dict({"hr": hr, "lr": lr}, features=features).to_parquet(str(path))
    return path


# Processes stopped on purpose: the fault hook's `pause` (srtrain/faults.py) holds a run where a test wants it.

NEW_LAUNCHER = Version(accelerate.__version__) >= Version("1.16")  # ends its process tree on SIGTERM, SIGKILL 5 s on


def launcher_status(processes: int, sig: signal.Signals) -> int:
    """`accelerate launch`'s exit status after `sig` (as Popen reports it: -N for a death by signal N), by version:
    docs/faults.md's launcher table."""
    if not NEW_LAUNCHER:  # 1.15: the 1-process launcher dies by the signal, torchrun's agent raises (status 1)
        return -sig if processes == 1 else 1
    if processes == 1:  # 1.16: SIGTERM ends it with 128 + 15 after its process tree; SIGUSR1 still kills it
        return 128 + sig if sig == signal.SIGTERM else -sig
    return 128 + sig  # torchrun's SignalException, passed on as 128 + N


def paused_launch(processes: int, args: list[str], cwd: Path, fault: str) -> tuple[int, subprocess.Popen]:
    """`accelerate launch` of the training command paused at a step by the fault hook: (the main worker's pid, the
    launcher, whose stderr is a pipe)."""
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "ACCELERATE_USE_CPU": "1",
        "SRTRAIN_FAULT": fault,
        "PET_SIGNALS_TO_HANDLE": "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1",
    }
    launcher = subprocess.Popen(
        [*accelerate_launch(processes), MAIN, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return wait_paused(launcher, cwd), launcher


def wait_paused(proc: subprocess.Popen, cwd: Path) -> int:
    """Poll until the fault hook has paused the run (it writes its pid to READY_FILE in `cwd`); that pid."""
    from srtrain.faults import READY_FILE

    ready, deadline = cwd / READY_FILE, time.monotonic() + 180
    while not ready.exists() or not ready.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.1)
    return int(ready.read_text())


def paused_srtrain(args: list[str], cwd: Path, fault: str, wandb: str) -> subprocess.Popen:
    """`python -m srtrain` (one process, no launcher) paused at `fault` by the fault hook; stdout and stderr pipes."""
    env = {**os.environ, "WANDB_MODE": wandb, "SRTRAIN_FAULT": fault}
    cmd = [sys.executable, "-m", "srtrain", *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_paused(proc, cwd)
    return proc


def wait_gone(pid: int) -> None:
    """The trainer exits on its own (no orphan left training): poll until its pid is gone."""
    deadline = time.monotonic() + 120
    while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, f"trainer {pid} still running: an orphan"
        time.sleep(0.1)


def children_named(pid: int, name: str) -> list[int]:
    """The pids of process `pid`'s children whose command is `name` (/proc: no pgrep needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            comm, rest = stat.read_text().rsplit(")", 1)  # "PID (COMM) STATE PPID ..."
            if comm.split("(", 1)[1] == name and int(rest.split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found
