"""An exponential moving average of the weights (`ema`), what SR papers since EDSR evaluate: a copy of the model
whose weights follow the trained ones, w_ema <- w_ema + (1 - d) (w - w_ema) after every update, with the decay
d = min(ema, (1 + step) / (10 + step)) so that a short run's average is not held at the initial weights.

It runs on every process after each optimizer step on the device, without the host looking (a skipped update, a
non-finite loss, moves it by nothing), so the replicas' averages stay identical as their weights do; a checkpoint
holds it (`EMA_FILE`), and `srtrain eval`, `upscale` and `report` use it where it is there.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def decay_at(ema: float, step: int) -> float:
    """The decay of the update after optimizer step `step` (counted from 1)."""
    return min(ema, (1 + step) / (10 + step))


class WeightAverage:
    """The average of `trained`'s weights: `model`, a copy of it (eval mode, no gradients, on the same device)."""

    def __init__(self, trained: nn.Module, ema: float) -> None:
        self.ema = ema
        self.model = copy.deepcopy(trained).eval().requires_grad_(False)
        self._pairs = [list(m.parameters()) for m in (self.model, trained)]
        self._buffers = [list(m.buffers()) for m in (self.model, trained)]

    def update(self, step: int, skipped: torch.Tensor) -> None:
        """Move toward the trained weights after step `step`; by nothing where `skipped` (a 0-d 1.0 on the device)."""
        averaged, weights = self._pairs
        with torch.no_grad():
            torch._foreach_lerp_(averaged, weights, (1 - skipped) * (1 - decay_at(self.ema, step)))
            for mine, theirs in zip(*self._buffers, strict=True):  # (normalisation statistics, where a model has them)
                mine.copy_(theirs)
