"""Checkpoints: model weights as safetensors plus everything else a resume needs, written atomically.

A checkpoint is a folder: `model.safetensors`, `training_state.pt` (optimizer, grad scaler,
TrainState; loaded with `weights_only=True`, so nothing arbitrary is unpickled) and `config.yaml`. It is
written to a temporary sibling and swapped in with renames, so a crash mid-write leaves the previous
checkpoint intact. Data order and augmentation are pure functions of (seed, epoch, index) and the learning rate
is a function of the TrainState, so no RNG or scheduler state is needed for an exact continuation.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

from srtrain.models import build_model, weights_free_options
from srtrain.models.weights import MODEL_FILE, load_model_weights

STATE_FILE = "training_state.pt"


@dataclass
class TrainState:
    """Every scalar of training progress, in one place: what `--resume` restores."""

    epoch: int = 0
    step: int = 0
    best_psnr_y: float = -math.inf
    best_epoch: int = 0
    train_seconds: float = 0.0
    wandb_run_id: str = ""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` by `tmp` so that one complete version exists at every instant."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config_yaml: str,
    scaler: Any = None,
) -> None:
    """Write a checkpoint folder atomically (main process only)."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / MODEL_FILE), metadata={"epoch": str(state.epoch)})
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "state": dataclasses.asdict(state),
        },
        tmp / STATE_FILE,
    )
    (tmp / "config.yaml").write_text(config_yaml)
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _swap_in(tmp, path)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Atomically make `dst` a copy of checkpoint `src` (e.g. `last` becoming `best`)."""
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    _swap_in(tmp, dst)


def find_checkpoint(path: Path) -> Path:
    """A checkpoint folder from itself, or from a run directory (its `best`, else its `last`)."""
    for candidate in (path, path / "checkpoints" / "best", path / "checkpoints" / "last"):
        if is_checkpoint(candidate):
            return candidate
    raise ValueError(f"'{path}' is not a run directory or checkpoint folder (no {MODEL_FILE} + {STATE_FILE})")


def model_from_checkpoint(path: Path) -> tuple[nn.Module, int]:
    """Rebuild a trained model from a run directory or checkpoint folder: (model, scale)."""
    ckpt = find_checkpoint(path)
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    name = config["model"]["name"]
    options = {k: v for k, v in config["model"].items() if k != "name"} | weights_free_options(name)
    model = build_model(name, config["scale"], **options)
    load_model_weights(model, ckpt)
    return model, config["scale"]


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None) -> TrainState:
    """Restore model, optimizer and scaler in place; return the saved TrainState."""
    load_model_weights(model, path)
    saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    return TrainState(**saved["state"])


def is_checkpoint(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file()
