"""Model statistics for `srtrain models`: parameters, multiply-adds (counted, not typed in) and latency."""

from __future__ import annotations

import inspect
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from srtrain.models.registry import SCALES, available_models, build_model, weights_free_options


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def multiply_adds(name: str, scale: int, output_hw: tuple[int, int] = (720, 1280)) -> int:
    """Multiply-adds of one forward pass producing an `output_hw` image, counted by torch's FLOP counter
    on meta tensors (no memory, no compute), as SR papers report them (convolutions and matmuls)."""
    with torch.device("meta"):
        model = build_model(name, scale, **weights_free_options(name)).eval()
        lr = torch.empty(1, 3, output_hw[0] // scale, output_hw[1] // scale)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(lr)
    return counter.get_total_flops() // 2


def latency_ms(model: nn.Module, lr_size: int = 128, repeats: int = 3) -> float:
    """Median wall time of a no-grad forward pass on a (1, 3, lr_size, lr_size) input, after one warm-up.

    The input is channels_last, as `evaluation.super_resolve` feeds every model in eval, upscale and validation."""
    model.eval()
    lr = torch.rand(1, 3, lr_size, lr_size).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(lr)
            times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2] * 1000


def model_rows(scale: int = 4, with_latency: bool = True, lr_size: int = 128) -> list[dict[str, object]]:
    """One row per registered model at `scale` with its default options."""
    rows = []
    for name in available_models():
        model = build_model(name, scale, **weights_free_options(name))
        doc = inspect.getdoc(inspect.getmodule(type(model))) or ""
        rows.append(
            {
                "name": name,
                "scales": SCALES,
                "parameters": trainable_parameters(model),
                "gmacs_720p": multiply_adds(name, scale) / 1e9,
                "latency_ms": latency_ms(model, lr_size) if with_latency else None,
                "description": doc.splitlines()[0] if doc else "",
            }
        )
    return rows
