"""The configuration-key table, generated from the config dataclasses and the model registry so it cannot go stale.

`srtrain train --help` prints it; `docs/configuration.md` holds it between two markers, rewritten by
`python -m srtrain.config_doc docs/configuration.md` (a test fails when the committed table differs).
Keys, types and defaults come from the code; only the one-line meanings are written here.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from srtrain.config import Config, DataConfig, WandbConfig
from srtrain.models import available_models, model_options

BEGIN, END = "<!-- config-keys:begin (generated: python -m srtrain.config_doc) -->", "<!-- config-keys:end -->"

MEANING = {
    "scale": "upscale factor: 2, 3 or 4",
    "epochs": "epochs; one epoch draws `data.repeat` random patches from every training image",
    "batch_size": "patches per process per step; the global batch (batch x processes x `grad_accum`) is printed",
    "grad_accum": "batches accumulated per optimizer step; an epoch of n batches has ceil(n / grad_accum) steps",
    "patch_size": "HR patch side in pixels (a multiple of `scale`)",
    "lr": "learning rate; never rescaled for the number of processes behind your back",
    "optimizer": "Adam or AdamW",
    "weight_decay": "weight decay",
    "scheduler": "LR over training progress 0..1 (steps done of `epochs` worth, or minutes of `time_budget_min`)",
    "warmup": "fraction of training with a linear warm-up",
    "min_lr": "the cosine schedule's final learning rate",
    "step_every": "step schedule: decay every this fraction of training",
    "gamma": "step schedule: decay factor",
    "time_budget_min": "train for this many minutes of training time (validation excluded); `epochs` becomes a cap",
    "init_from": "start from these weights: a checkpoint folder, `.safetensors` or weights-only torch file "
    "(official files too), also of another scale: all but the upsampler loads (models.md)",
    "loss": "L1, MSE or Charbonnier (mean sqrt(error^2 + 1e-3^2)); the validation loss uses the same",
    "grad_clip": "gradient-norm clipping (0 = off)",
    "seed": "seeds model init, data order and augmentation",
    "mixed_precision": "`bf16` on CPU and GPU, `fp16` on GPU only (refused on CPU rather than silently fp32)",
    "channels_last": "NHWC memory format",
    "compile": "torch.compile the training forward (validation stays eager); performance.md says where it pays",
    "compile_mode": "torch.compile's mode with `compile: true`; `reduce-overhead` replays the step as CUDA graphs",
    "cpu_threads": "CPU threads per process (0 = the cores divided among this node's processes)",
    "output_dir": "the run directory (empty: `runs/<model>_x<scale>_<time>`)",
    "resume": "`auto` continues from `OUTPUT_DIR/checkpoints/last`, or a checkpoint path",
    "checkpoint_every": "also save `checkpoints/last` every N optimizer steps inside an epoch (0 = epoch ends only)",
    "checkpoint_every_min": "also save `checkpoints/last` every N minutes of training (0 = off; faults.md)",
    "nan_policy": "a NaN/inf loss `stop`s the run, or is `skip`ped and counted",
    "nan_max_skips": "with `nan_policy: skip`, this many skipped steps in a row stop the run",
    "ema": (
        "decay of an exponential moving average of the weights (0.999 as BasicSR, SwinIR, HAT; 0 = off), "
        "validated beside the trained weights each epoch; `best`, eval, upscale and report use it "
        "(`--raw_weights`: the trained ones)"
    ),
    "val_every": "validate (and update `best`) every N epochs; `last` is checkpointed every epoch",
    "val_ensemble": "validate the x8 self-ensemble (`srtrain eval --ensemble`'s scores, `best` follows them, SR+ "
    "in the sample grids), 8 times slower",
    "num_samples": "sample grids of the first N validation images",
    "data.train": "`default`, an image folder, `.parquet`/`.arrow`, a `save_to_disk` folder or a Hub id (data.md)",
    "data.val": "validation source, same forms as `data.train`",
    "data.train_split": "split of a Hub id or dataset dict for training",
    "data.val_split": "split of a Hub id or dataset dict for validation",
    "data.hr_column": "HR image column",
    "data.lr_column": "LR image column, used when it exists (`--data.lr_column=` ignores it)",
    "data.repeat": "random patches per training image per epoch",
    "data.num_workers": "data loader workers per process",
    "data.cache": "keep decoded training images in memory",
    "data.max_val_images": "cap on validation images (0 = all)",
    "data.gray": "how gray validation images are scored: `replicate` to RGB, or `direct` (gray level as Y)",
    "data.skip_bad": "skip unusable images with a warning naming each, instead of stopping before training",
    "data.max_bad_fraction": "with `skip_bad`, stop when more than this fraction of a source is unusable",
    "data.streaming": "stream the training source, split across processes and workers (data.md)",
    "data.on_device": "hold the decoded training images on the GPU (or CPU) and cut each batch there, one gather "
    "(data.md)",
    "wandb.project": "W&B project",
    "wandb.entity": "W&B entity (team or user)",
    "wandb.name": "W&B run name",
    "wandb.group": "W&B group (a sweep's runs sit together; `srtrain sweep` sets it)",
    "wandb.mode": "empty: online with an API key, offline without; or `online`, `offline`, `disabled`",
}


def _type(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " \\| ".join(f"`{a}`" if a else '`""`' for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _rows(cls: type, prefix: str) -> list[tuple[str, str, str]]:
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in ("model", "data", "wandb", "args"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = (default or '""') if isinstance(default, str) else repr(default)
        rows.append((f"{prefix}{f.name}", _type(hints[f.name]), shown))
    return rows


def key_table() -> str:
    """Every configuration key as a Markdown table: key, type, default, meaning."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines.append(f"| `model` | str | `{Config().model.name}` | a registered model: {', '.join(available_models())} |")
    for name in available_models():
        options = ", ".join(f"`{k}` ({_type(tp)})" for k, tp in model_options(name).items()) or "none"
        lines.append(f"| `model.<option>` of `{name}` | | the model's | options: {options} |")
    for cls, prefix in ((Config, ""), (DataConfig, "data."), (WandbConfig, "wandb.")):
        for key, tp, default in _rows(cls, prefix):
            lines.append(f"| `{key}` | {tp} | `{default}` | {MEANING.get(key, '-')} |")
    return "\n".join(lines)


def with_table(page: str) -> str:
    """`page` with the text between the markers replaced by the current table."""
    if BEGIN not in page or END not in page:
        raise ValueError(f"the page needs the markers {BEGIN} and {END}")
    head, rest = page.split(BEGIN, 1)
    return f"{head}{BEGIN}\n{key_table()}\n{END}{rest.split(END, 1)[1]}"


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["docs/configuration.md"]:
        path = Path(arg)
        path.write_text(with_table(path.read_text()))
