"""Checkpoints: model weights as safetensors plus everything else a resume needs, written atomically.

A checkpoint is a folder: `model.safetensors`, with `ema` `ema.safetensors` (the weight average), `training_state.pt`
(optimizer, grad scaler, TrainState; loaded with `weights_only=True`, so nothing arbitrary is unpickled),
`config.yaml` and, written last, `manifest.json` (each file's size and SHA-256). It is written to a temporary
sibling and swapped in with renames (`last` -> `last.old`, tmp -> `last`), so a crash or a full disk mid-write
leaves the previous checkpoint intact; `last.old` stays as the fallback for a damaged `last`: a checkpoint whose
manifest does not match its files is never resumed from.
Data order and augmentation are pure functions of (seed, epoch, index) and the learning rate is a function of
the TrainState, so no RNG or scheduler state is needed for an exact continuation, also from inside an epoch.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from srtrain.config import CONFIG_FILE
from srtrain.faults import inject
from srtrain.files import first_line, fsync, remove
from srtrain.manifest import manifest_problem, write_manifest
from srtrain.models.weights import EMA_FILE, MODEL_FILE, load_model_weights

STATE_FILE = "training_state.pt"
MANIFEST_FILE = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the folder and what to do."""


@dataclass
class TrainState:
    """Every scalar of training progress, in one place: what `--resume` restores."""

    epoch: int = 0
    step: int = 0
    best_psnr_y: float = -math.inf
    best_epoch: int = 0
    train_seconds: float = 0.0
    wandb_run_id: str = ""
    global_batch: int = 0  # batch_size x processes x grad_accum: a resume may change the factors, not the product
    # Inside epoch `epoch + 1`: loader batches consumed, and the epoch's running loss sum over its patches (all
    # processes), so that a resumed epoch draws the same next batches and reports the same mean loss.
    batches_done: int = 0
    epoch_loss_sum: float = 0.0
    epoch_patches: int = 0
    epoch_seconds: float = 0.0
    lowest_loss: float = math.inf  # the lowest step loss so far: a loss far above it means divergence
    epoch_batches: int = 0  # loader batches per epoch (per process): a resume says when the data changed it
    # The metrics row of epoch `epoch` and its last step's W&B values, saved with it: a resume logs them if a kill
    # came before the metrics line.
    epoch_row: dict[str, float] = dataclasses.field(default_factory=dict)
    step_values: dict[str, float] = dataclasses.field(default_factory=dict)


def previous(path: Path) -> Path:
    """Where a save keeps the checkpoint it replaced (`last.old`): the fallback of a resume whose `last` is damaged."""
    return path.with_name(path.name + ".old")


def temporary(path: Path) -> Path:
    """Where a save writes before it swaps in (`last.tmp`): complete once its manifest matches."""
    return path.with_name(path.name + ".tmp")


def _swap_in(tmp: Path, final: Path, keep_old: bool = False) -> None:
    """Replace `final` by the complete `tmp` so that one complete version exists at every instant; the previous
    version stays as `previous(final)` or goes after the swap."""
    old = previous(final)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
    tmp.rename(final)
    fsync(final.parent)
    if old.exists() and not keep_old:
        shutil.rmtree(old)


def checkpoint_problem(path: Path) -> str:
    """What is wrong with checkpoint folder `path` ('' when its files match its manifest)."""
    return manifest_problem(path, MANIFEST_FILE)


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config_yaml: str,
    scaler: Any = None,
    average: nn.Module | None = None,
) -> None:
    """Write a checkpoint folder atomically (main process only), with the weight average `average` where there is
    one; refuse non-finite weights."""
    files = {MODEL_FILE: model} | ({EMA_FILE: average} if average is not None else {})
    weights = {name: {k: v.detach().contiguous().cpu() for k, v in m.state_dict().items()} for name, m in files.items()}
    bad = [k for w in weights.values() for k, v in w.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"not saving {path}: weights {bad[:3]} hold NaN/inf; the previous checkpoint is kept")
    tmp = temporary(path)
    try:
        remove(tmp)
        tmp.mkdir(parents=True)
        for name, tensors in weights.items():
            save_file(tensors, str(tmp / name), metadata={"epoch": str(state.epoch)})
        inject("checkpoint", state.step, True)
        torch.save(
            {
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "state": dataclasses.asdict(state),
            },
            tmp / STATE_FILE,
        )
        (tmp / CONFIG_FILE).write_text(config_yaml)
        write_manifest(tmp, MANIFEST_FILE)  # last: fsyncs every file, then records it
    except (OSError, SafetensorError, RuntimeError) as err:  # safetensors and torch's zip writer: their own errors
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write checkpoint {path} ({first_line(err)}); the previous one, if any, is intact: free space "
            f"on {path.parent} and resume with --resume=auto"
        ) from err
    _swap_in(tmp, path, keep_old=True)


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Atomically make `dst` a copy of checkpoint `src` (e.g. `last` becoming `best`)."""
    tmp = temporary(dst)
    try:
        remove(tmp)
        shutil.copytree(src, tmp)
        for f in tmp.iterdir():  # on the disk before the swap, as a saved checkpoint's files are
            fsync(f)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not copy {src} to {dst} ({first_line(err)}); {dst} is unchanged: free space"
        ) from err
    _swap_in(tmp, dst)


def read_state(path: Path) -> TrainState:
    return TrainState(**torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)["state"])


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any = None, average: nn.Module | None = None
) -> TrainState:
    """Restore model, optimizer, scaler and the weight average (`average`, with `ema`) in place; return the saved
    TrainState."""
    load_model_weights(model, path, raw=True)
    if average is not None:
        load_model_weights(average, path)
    saved = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    if scaler is not None and saved["scaler"] is not None:
        scaler.load_state_dict(saved["scaler"])
    return TrainState(**saved["state"])


def is_checkpoint(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / STATE_FILE).is_file()
