"""RCAN (Zhang et al., 2018): residual-in-residual groups of blocks with channel attention, on the EDSR frame."""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.edsr import MeanShiftedSR
from srtrain.models.registry import register


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: rescales each channel by a gate computed from global average statistics."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class RCAB(nn.Module):
    """Residual channel attention block: conv-ReLU-conv, channel attention on the residual, plus skip."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
            ChannelAttention(channels, reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    """RCABs and a conv under a group skip, so low-frequency content bypasses the group."""

    def __init__(self, n_blocks: int, channels: int, reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(RCAB(channels, reduction) for _ in range(n_blocks)),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register("rcan")
class RCAN(MeanShiftedSR):
    def __init__(
        self, scale: int, n_groups: int = 10, n_blocks: int = 20, channels: int = 64, reduction: int = 16
    ) -> None:
        super().__init__(scale, channels, [ResidualGroup(n_blocks, channels, reduction) for _ in range(n_groups)])
