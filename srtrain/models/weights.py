"""Reading weight files into models: safetensors or weights-only torch files, never arbitrary pickles.

Used for checkpoints, `--init_from`, `srtrain eval --weights`, `srtrain upscale --weights` and pretrained
backbones alike, so every weight file gets the same safety and the same error that lists missing and unexpected
keys. Published files load as their authors saved them: a DataParallel `module.` prefix is stripped, and a
multi-scale file fills the upsampler branch of the model's scale. Only `--init_from` also takes a file of another
scale (cross-scale fine-tuning), leaving the upsampler fresh.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from srtrain.models.registry import SCALES, build_model, weights_free_options

MODEL_FILE = "model.safetensors"
EMA_FILE = "ema.safetensors"  # a checkpoint's weight average (`ema`): what a checkpoint is evaluated with, if there


class WeightsError(ValueError):
    """A weight file is missing, unreadable, or does not fit the model."""


def load_weights(path: Path, raw: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint folder (its weight average where it has one, unless `raw`), a `.safetensors`
    file or a weights-only torch file."""
    file = path / (MODEL_FILE if raw or not (path / EMA_FILE).is_file() else EMA_FILE) if path.is_dir() else path
    if not file.is_file() and (path / "checkpoints").is_dir():
        raise WeightsError(
            f"'{path}' is a run directory: name one of its checkpoints, {path / 'checkpoints' / 'best'} or "
            f"{path / 'checkpoints' / 'last'}"
        )
    if not file.is_file():
        raise WeightsError(f"weights file '{file}' does not exist")
    try:
        weights = load_file(str(file)) if file.suffix == ".safetensors" else torch.load(file, "cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"'{file}' is a pickled object (a whole model?), not a state dict; srtrain reads weights-only files "
            "and never unpickles code. "
            'If you trust the file, save its state dict once: python -c "import torch; '
            f"torch.save(torch.load('{file}', weights_only=False).state_dict(), '{file.with_suffix('.state.pth')}')\" "
            "(the model's class must be importable there)"
        ) from err
    except Exception as err:
        raise WeightsError(
            f"cannot read weights from '{file}' (safetensors or weights-only torch file): {err}"
        ) from err
    for key in ("state_dict", "model", "params"):  # common wrappers of published weight files
        if isinstance(weights, dict) and isinstance(weights.get(key), dict):
            weights = weights[key]
    if not isinstance(weights, dict):
        raise WeightsError(f"'{file}' holds a {type(weights).__name__}, not a state dict")
    if weights and all(k.startswith("module.") for k in weights):  # saved from DataParallel
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


def scale_branch(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a multi-scale weight file that `model` uses: a model with `branch_prefix` (CARN's
    `upsample.up`) holds only the upsampler `{branch_prefix}{scale}.`, so the other scales' are dropped."""
    prefix = getattr(model, "branch_prefix", None)
    if prefix is None:
        return state
    own = f"{prefix}{model.scale}."
    return {k: v for k, v in state.items() if not k.startswith(prefix) or k.startswith(own)}


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path, ignore: Iterable[str] = ()) -> None:
    """Load strictly (keys starting with an `ignore` prefix dropped); a mismatch lists the keys."""
    ignore = tuple(ignore)
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(ignore))}
    expected = model.state_dict().keys()
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise WeightsError(
            f"weights in '{source}' do not fit {type(model).__name__}: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys {unexpected[:10]}"
            f"{' ...' if len(unexpected) > 10 else ''}; check the model and its options"
        )
    own = model.state_dict()
    differ = [
        f"{k}: file {list(v.shape)}, model {list(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape
    ]
    if differ:
        raise WeightsError(
            f"weights in '{source}' do not fit {type(model).__name__}: {len(differ)} tensor(s) of other shapes "
            f"({'; '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}). A file for another scale differs in its "
            "upsampler: pass the scale it was trained for (--scale); otherwise check the model and its options"
        )
    model.load_state_dict(state)


def load_model_weights(model: nn.Module, path: Path, raw: bool = False) -> None:
    """Load a weight file (or checkpoint folder: its weight average, unless `raw`) into `model`."""
    load_state(model, scale_branch(model, load_weights(path, raw)), path)


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _shown(shape: tuple[int, ...] | None, where: str) -> str:
    return f"{where} {list(shape)}" if shape is not None else f"not in the {where}"


def load_init_weights(model: nn.Module, path: Path, name: str, scale: int, options: dict[str, Any]) -> str:
    """`--init_from`: a file that fits `model` (registered `name`, built at `scale` with `options`) loads strictly,
    as `load_model_weights`. A file trained at another scale, as EDSR and SwinIR start x3/x4 models from x2 ones,
    fills every tensor but those whose shape differs between the two scales (the upsampler), which keep their fresh
    initialisation (and the file's own upsampler tensors are left out); anything else that does not fit (another
    width, another model) is refused. Returns the line that names what was left fresh or left out ('' when the file
    fits exactly)."""
    state = scale_branch(model, load_weights(path))
    file, own = _shapes(state), _shapes(model.state_dict())
    differ = [k for k in [*own, *sorted(file.keys() - own.keys())] if file.get(k) != own.get(k)]
    if not differ:
        load_state(model, state, path)
        return ""
    with torch.device("meta"):  # shapes only: no memory, and the seeded RNG is left as it was
        others = {
            s: _shapes(build_model(name, s, **{**options, **weights_free_options(name)}).state_dict())
            for s in SCALES
            if s != scale
        }
    unfit = {s: [k for k in differ if file.get(k) != shapes.get(k)] for s, shapes in others.items()}
    nearest = min(unfit, key=lambda s: len(unfit[s]))  # the scale the file most likely comes from
    if unfit[nearest]:
        shown = [f"{k}: {_shown(file.get(k), 'file')}, {_shown(own.get(k), 'model')}" for k in unfit[nearest]]
        raise WeightsError(
            f"init_from '{path}' does not fit {name} x{scale}, not even as a file of another scale (which differs in "
            f"the upsampler only): {len(shown)} tensor(s) differ ({'; '.join(shown[:3])}"
            f"{' ...' if len(shown) > 3 else ''}); train the model and options the file was made with (--model, "
            "--model.KEY=VALUE; a checkpoint folder's config.yaml lists them)"
        )
    fresh, unused = [k for k in differ if k in own], [k for k in differ if k not in own]
    model.load_state_dict({k: v for k, v in state.items() if k in own and k not in differ}, strict=False)
    return (
        f"init_from: {len(own) - len(fresh)} tensors loaded"
        + (f", left fresh for x{scale}: {', '.join(fresh)}" if fresh else "")
        + (f"; the file's {', '.join(unused)} left out (not used at x{scale})" if unused else "")
    )
