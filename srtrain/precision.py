"""Mixed precision, decided in one place for every command.

`bf16` runs on CPUs and GPUs, `fp16` on GPUs only: refused on a CPU, where accelerate would silently train in
float32 and autocast would fail. Training applies the choice through accelerate (autocast around the training
forward, fp16's loss scaling); `eval` and `upscale` apply it with `autocast` around inference. Validation during
training stays float32, so that it scores what `srtrain eval` scores for the saved weights.
"""

from __future__ import annotations

import contextlib
import os

import torch

from srtrain.config import ConfigError

PRECISIONS = ("no", "bf16", "fp16")
FLAG = "--mixed_precision"


def checked_precision(precision: str) -> str:
    """`precision` when this machine runs it, else a ConfigError naming the alternative."""
    if precision not in PRECISIONS:
        raise ConfigError(f"{FLAG}={precision}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(f"{FLAG}=fp16 needs a GPU; on CPU use {FLAG}=bf16 or no")
    return precision


def launcher_disagrees(precision: str) -> str:
    """The note for an `accelerate launch --mixed_precision` other than the job's (the job decides), or ''."""
    launched = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # `accelerate launch`'s default is "no"
    if launched in ("no", precision):
        return ""
    return (
        f"accelerate launch --mixed_precision={launched} is ignored: the job's mixed_precision={precision} decides "
        f"(set --mixed_precision={launched} in the job instead)"
    )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Inference in `precision`: autocast to bfloat16 or float16 on `device`, or nothing for 'no'."""
    if checked_precision(precision) == "no":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
