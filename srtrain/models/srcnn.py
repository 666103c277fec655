"""SRCNN (Dong et al., 2014): the basic CNN, three convolutions (9-5-5) on the bicubic-upscaled input."""

from __future__ import annotations

import torch
from torch import nn

from srtrain.degradation import imresize
from srtrain.models.registry import register


@register("srcnn")
class SRCNN(nn.Module):
    def __init__(self, scale: int, channels: int = 64, mid_channels: int = 32) -> None:
        super().__init__()
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, mid_channels, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, 3, 5, padding=2),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.body(imresize(lr, self.scale))
