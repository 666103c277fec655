"""Shared fixtures: the real SR benchmark images in ../shared/data, and small real-photo folders."""

import os
import socket
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.exists(), reason="../shared/data (the SR benchmark images) is absent")

# Tests never reach W&B servers: offline runs are real files we read back.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("SRTRAIN_DATA", str(DATA))  # jobs name data sets relative to this root
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture(autouse=True)
def no_environment_leaks():
    """W&B used in-process (the sweep agent test, the report's W&B Table) exports its service's socket as
    WANDB_SERVICE; once that service is gone, every later training subprocess would fail to start W&B."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


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


def read_rgb(path: Path) -> np.ndarray:
    return np.array(PIL.Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real photographs (Set5 crops), a small HR folder that trains in seconds (read-only)."""
    folder = tmp_path_factory.mktemp("hr")
    for name in ("baby", "bird", "head", "woman"):
        img = PIL.Image.open(DATA / "Set5" / f"{name}.png").convert("RGB")
        img.crop((0, 0, 120, 120)).save(folder / f"{name}.png")
    return folder
