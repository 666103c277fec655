"""ESPCN (Shi et al., 2016): features computed in LR space, then one sub-pixel convolution (pixel shuffle)."""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.registry import register


class Tanh(nn.Module):
    """``tanh``, computed for float32 inference on CPU as ``2 sigmoid(2x) - 1``.

    torch's CPU ``tanh`` calls MKL's high-accuracy ``vsTanh``, which on the AMD EPYC we measure on is 5-10x slower
    than torch's own ``sigmoid`` and made a third of ESPCN's forward pass (docs/performance.md, "Evaluation
    speed"). The identity is exact in real arithmetic; in float32 it is within 2e-7 of ``torch.tanh``
    (tests/test_models.py). Training (autograd on), reduced precision, where cancellation near 0 would cost
    digits, and GPUs, whose ``tanh`` is one fast kernel, keep ``torch.tanh``. Parameter-free, so checkpoints
    are those of ``nn.Tanh``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32:
            return torch.tanh(x)
        return x.mul(2).sigmoid_().mul_(2).sub_(1)  # one new tensor, worked on in place


@register("espcn")
class ESPCN(nn.Module):
    def __init__(self, scale: int, channels: int = 64, mid_channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 5, padding=2),
            Tanh(),
            nn.Conv2d(channels, mid_channels, 3, padding=1),
            Tanh(),
            nn.Conv2d(mid_channels, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.body(lr)
