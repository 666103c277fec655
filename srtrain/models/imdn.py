"""IMDN (Hui et al., 2019): information multi-distillation blocks, contrast-aware channel attention, pixel shuffle.

Module names and shapes follow the authors' release (Zheng222/IMDN), so their `IMDN_x{2,3,4}.pth` files load
as they are (`--weights` / `--init_from`). RGB in [0, 1], no mean shift. The channel attention pools over the
whole image, so tiled inference differs slightly from whole-image inference.
"""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.registry import register

SLOPE = 0.05  # the LeakyReLU slope of the release


def conv(c_in: int, c_out: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2)


class ContrastChannelAttention(nn.Module):
    """Channel weights from each channel's standard deviation plus mean (contrast), squeezed and excited."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class DistillationBlock(nn.Module):
    """Three steps each keep a quarter of the channels (distilled) and refine the rest; the four quarters are
    fused by attention and a 1x1 convolution, plus the block's input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.kept = channels // 4
        self.rest = rest = channels - self.kept
        self.c1, self.c2, self.c3 = conv(channels, channels, 3), conv(rest, channels, 3), conv(rest, channels, 3)
        self.c4 = conv(rest, self.kept, 3)
        self.act = nn.LeakyReLU(SLOPE, inplace=True)
        self.c5 = conv(self.kept * 4, channels, 1)
        self.cca = ContrastChannelAttention(self.kept * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, rest = [], x
        for layer in (self.c1, self.c2, self.c3):
            distilled, rest = self.act(layer(rest)).split([self.kept, self.rest], 1)
            kept.append(distilled)
        out = torch.cat([*kept, self.c4(rest)], dim=1)
        return self.c5(self.cca(out)) + x


@register("imdn")
class IMDN(nn.Module):
    def __init__(self, scale: int, n_blocks: int = 6, channels: int = 64) -> None:
        super().__init__()
        self.n_blocks = n_blocks
        self.fea_conv = conv(3, channels, 3)
        for i in range(1, n_blocks + 1):  # the release names them IMDB1..IMDB6
            self.add_module(f"IMDB{i}", DistillationBlock(channels))
        self.c = nn.Sequential(conv(channels * n_blocks, channels, 1), nn.LeakyReLU(SLOPE, inplace=True))
        self.LR_conv = conv(channels, channels, 3)
        self.upsampler = nn.Sequential(conv(channels, 3 * scale * scale, 3), nn.PixelShuffle(scale))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        features = self.fea_conv(lr)
        outs, x = [], features
        for i in range(1, self.n_blocks + 1):
            x = getattr(self, f"IMDB{i}")(x)
            outs.append(x)
        return self.upsampler(self.LR_conv(self.c(torch.cat(outs, dim=1))) + features)
