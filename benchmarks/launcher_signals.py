"""What `accelerate launch` does with a stop signal, and what the trainer then does: docs/faults.md's launcher table.

For each launch (1 process; 2 processes; each with and without PET_SIGNALS_TO_HANDLE) and signal (SIGTERM, SIGINT,
SIGUSR1), a small real training (ESPCN on four Set5 crops) is paused at step 3 by the fault hook, the signal is
sent to the launcher's pid alone, and the table row says: the launcher's exit status (as a shell shows it), the
checkpoint's step and the marker, how many stop lines reached the launcher's stderr,
any process left running, and the seconds from the signal to the last of them gone (the launcher, the trainer,
a checkpoint writer it forked). Run it once per accelerate version:

    SRTRAIN_DATA=../shared/data python benchmarks/launcher_signals.py
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import accelerate
import PIL.Image
import torch

from srtrain.checkpoint import read_state
from srtrain.faults import READY_FILE
from srtrain.rundir import RunDir

MAIN = str(Path(__file__).resolve().parents[1] / "srtrain" / "main.py")
PET = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


def photos(folder: Path) -> Path:
    data = Path(os.environ.get("SRTRAIN_DATA", "data"))
    folder.mkdir()
    for name in ("baby", "bird", "head", "woman"):
        PIL.Image.open(data / "Set5" / f"{name}.png").convert("RGB").crop((0, 0, 120, 120)).save(folder / f"{name}.png")
    return folder


def launch(folder: Path, processes: int, pet: bool, hr: Path) -> subprocess.Popen:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world = ["--num_processes", "1"] if processes == 1 else ["--multi_gpu", "--num_processes", "2"]
    quiet = ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    job = [f"--data.train={hr}", "--data.val=Set5", "--data.max_val_images=2", "--data.repeat=8", "--patch_size=48"]
    job += ["--batch_size=4", "--epochs=2", f"--output_dir={folder / 'run'}"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "WANDB_MODE": "disabled", "SRTRAIN_FAULT": "pause:step:3"}
    env |= {"PET_SIGNALS_TO_HANDLE": PET} if pet else {}
    cmd = ["accelerate", "launch", *world, *quiet, "--main_process_port", str(port), MAIN, *job]
    log = open(folder / "launcher.log", "w")  # noqa: SIM115 (closed with the launch)
    return subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=log)


def running_in(folder: Path) -> list[int]:
    """The live processes working in `folder`: the launcher, its trainers, a checkpoint writer they forked (which
    outlives its parent when the launcher SIGKILLs it, no longer its descendant)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if os.readlink(proc / "cwd") == str(folder) and "zombie" not in (proc / "status").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def one(processes: int, sig: signal.Signals, pet: bool, hr: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        launcher = launch(folder, processes, pet, hr)
        ready = folder / READY_FILE
        while not ready.exists() or not ready.read_text():
            assert launcher.poll() is None, (folder / "launcher.log").read_text()[-2000:]
            time.sleep(0.1)
        start = time.monotonic()
        launcher.send_signal(sig)
        status = launcher.wait(timeout=180)
        while running_in(folder) and time.monotonic() - start < 120:
            time.sleep(0.1)
        gone_s, left = time.monotonic() - start, running_in(folder)
        out = folder / "run"
        marker = json.loads(RunDir(out).stopped.read_text()) if RunDir(out).stopped.exists() else {}
        step = read_state(RunDir(out).last).step if RunDir(out).last.exists() else "-"
        lines = (folder / "launcher.log").read_text().count("srtrain: stopped by")
        shown = 128 - status if status < 0 else status
        return (
            f"| {processes} | {sig.name} | {'yes' if pet else 'no'} | {shown} | {step} | "
            f"{marker.get('signal', '-')} {marker.get('exit_code', '')} | {lines}/{processes} | {len(left)} | "
            f"{gone_s:.1f} s |"
        )


def main() -> None:
    print(f"accelerate {accelerate.__version__}, torch {torch.__version__}, python {sys.version.split()[0]}\n")
    print(
        "| processes | signal | PET_SIGNALS_TO_HANDLE | launcher status | checkpoint step | marker | stop lines "
        "in the log | left running | signal to all gone |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        hr = photos(Path(tmp) / "hr")
        for processes, pet in ((1, False), (1, True), (2, False), (2, True)):
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
                print(one(processes, sig, pet, hr), flush=True)


if __name__ == "__main__":
    main()
