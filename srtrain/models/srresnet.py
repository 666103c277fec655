"""SRResNet (Ledig et al., 2017): the MSE-trained generator of SRGAN, residual blocks with batch norm and PReLU."""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.edsr import shuffle_factors
from srtrain.models.registry import register


def conv_bn(channels: int) -> list[nn.Module]:
    """A 3x3 conv then batch norm; the conv has no bias since batch norm's shift makes it redundant."""
    return [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)]


class ResBlock(nn.Module):
    """conv-BN-PReLU-conv-BN plus skip; PReLU learns one slope per channel, as He et al. (2015) define it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*conv_bn(channels), nn.PReLU(channels), *conv_bn(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register("srresnet")
class SRResNet(nn.Module):
    def __init__(self, scale: int, n_blocks: int = 16, channels: int = 64) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.body = nn.Sequential(*(ResBlock(channels) for _ in range(n_blocks)), *conv_bn(channels))
        up: list[nn.Module] = []
        for factor in shuffle_factors(scale):
            up += [
                nn.Conv2d(channels, channels * factor * factor, 3, padding=1),
                nn.PixelShuffle(factor),
                nn.PReLU(channels),
            ]
        self.tail = nn.Sequential(*up, nn.Conv2d(channels, 3, 9, padding=4))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(lr)
        return self.tail(x + self.body(x))
