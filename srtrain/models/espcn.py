"""ESPCN (Shi et al., 2016): features computed in LR space, then one sub-pixel convolution (pixel shuffle)."""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.registry import register


@register("espcn")
class ESPCN(nn.Module):
    def __init__(self, scale: int, channels: int = 64, mid_channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(channels, mid_channels, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(mid_channels, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.body(lr)
