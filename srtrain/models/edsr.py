"""EDSR (Lim et al., 2017): residual blocks without batch norm, residual scaling, sub-pixel upsampling.

The defaults are EDSR-baseline (16 blocks, 64 channels); the full EDSR is `n_blocks=32, channels=256,
res_scale=0.1`. RCAN reuses the frame (`MeanShiftedSR`) defined here, SRResNet the shuffle stages.
"""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.registry import register

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def shuffle_factors(scale: int) -> list[int]:
    """Pixel-shuffle stages for an upscale factor: x2 stages for powers of two (x4 = two x2), one x3 stage for x3."""
    if scale == 3:
        return [3]
    if scale >= 1 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"scale must be 3 or a power of two, got {scale}")


def upsampler(channels: int, scale: int) -> nn.Sequential:
    """Sub-pixel convolutions: each stage multiplies the channels by factor**2, then shuffles them into space."""
    layers: list[nn.Module] = []
    for factor in shuffle_factors(scale):
        layers += [nn.Conv2d(channels, channels * factor * factor, 3, padding=1), nn.PixelShuffle(factor)]
    return nn.Sequential(*layers)


def rgb_mean() -> torch.Tensor:
    """The DIV2K RGB mean as a (1, 3, 1, 1) tensor, subtracted from the input and added back to the output."""
    return torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1)


class ResBlock(nn.Module):
    """conv-ReLU-conv plus skip; scaling the residual (0.1 in the full model) keeps wide models stable."""

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class MeanShiftedSR(nn.Module):
    """The EDSR frame: mean shift, head conv, a residual body (its last layer a conv) under a long skip,
    sub-pixel upsampler and tail conv. EDSR and RCAN differ only in the body."""

    def __init__(self, scale: int, channels: int, body: list[nn.Module]) -> None:
        super().__init__()
        # A non-persistent buffer: moves with the model, but is neither trained nor checkpointed.
        self.register_buffer("rgb_mean", rgb_mean(), persistent=False)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*body, nn.Conv2d(channels, channels, 3, padding=1))
        self.tail = nn.Sequential(upsampler(channels, scale), nn.Conv2d(channels, 3, 3, padding=1))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.head(lr - self.rgb_mean)
        return self.tail(x + self.body(x)) + self.rgb_mean


@register("edsr")
class EDSR(MeanShiftedSR):
    def __init__(self, scale: int, n_blocks: int = 16, channels: int = 64, res_scale: float = 1.0) -> None:
        super().__init__(scale, channels, [ResBlock(channels, res_scale) for _ in range(n_blocks)])
