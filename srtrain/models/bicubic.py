"""Bicubic upscaling (MATLAB-compatible): the parameter-free baseline every SR model must beat."""

from __future__ import annotations

import torch
from torch import nn

from srtrain.degradation import imresize
from srtrain.models.registry import register


@register("bicubic")
class Bicubic(nn.Module):
    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return imresize(lr, self.scale)
