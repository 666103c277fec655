"""CARN (Ahn et al., 2018): cascading residual blocks whose outputs are concatenated and fused by 1x1 convolutions.

`mobile=True` is CARN-M: efficient residual blocks (grouped convolutions, one block shared three times per
cascade) and grouped upsamplers. Module names follow the authors' release (nmhkahn/CARN-pytorch): their
multi-scale `carn_m.pth` holds upsamplers for x2, x3 and x4, and loading it fills the branch of `scale`
(`upsample.up{scale}`). The fixed mean shift is part of the network, stored as buffers.
"""

from __future__ import annotations

import torch
from torch import nn

from srtrain.models.edsr import DIV2K_RGB_MEAN
from srtrain.models.registry import SCALES, register


class MeanShift(nn.Module):
    """Adds `sign` times the DIV2K mean as a fixed 1x1 convolution (the release stores its weights)."""

    def __init__(self, sign: int) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        self.shifter.weight.data = torch.eye(3).view(3, 3, 1, 1)
        self.shifter.bias.data = sign * torch.tensor(DIV2K_RGB_MEAN)
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


def conv_relu(c_in: int, c_out: int, kernel: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups), nn.ReLU(inplace=True))


class Fuse(nn.Module):
    """A 1x1 conv-ReLU that fuses concatenated features (the release's `BasicBlock`, hence `body`)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.body = conv_relu(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """CARN: conv-ReLU-conv plus skip, then ReLU. CARN-M (`groups > 1`): two grouped 3x3 convs and a 1x1."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        layers = [*conv_relu(channels, channels, 3, groups), nn.Conv2d(channels, channels, 3, padding=1, groups=groups)]
        if groups > 1:
            layers += [nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + x)


class Cascade(nn.Module):
    """Three steps, each concatenating all earlier outputs with the step's block output and fusing them with a
    1x1 conv (`c1`..`c3`). Distinct blocks are named `b1`..`b3`; CARN-M passes one block three times (`b1`)."""

    def __init__(self, channels: int, blocks: list[nn.Module]) -> None:
        super().__init__()
        for i, block in enumerate(dict.fromkeys(blocks), start=1):
            self.add_module(f"b{i}", block)
        self.steps = blocks  # a plain list: the blocks are registered above, once each
        for i in range(1, 4):
            self.add_module(f"c{i}", Fuse(channels * (i + 1), channels))

    def cascade(self, x: torch.Tensor) -> torch.Tensor:
        concat = out = x
        for i, block in enumerate(self.steps, start=1):
            concat = torch.cat([concat, block(out)], dim=1)
            out = getattr(self, f"c{i}")(concat)
        return out


class Block(Cascade):
    """A cascading block of residual blocks: three (CARN) or one with shared weights (CARN-M)."""

    def __init__(self, channels: int, groups: int) -> None:
        blocks = [ResidualBlock(channels, groups)] * 3 if groups > 1 else [ResidualBlock(channels, 1) for _ in range(3)]
        super().__init__(channels, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cascade(x)


class Upsampler(nn.Module):
    """`up{scale}`: grouped conv-ReLU-shuffle stages (x2 twice for x4), under the release's multi-scale names."""

    def __init__(self, channels: int, scale: int, groups: int) -> None:
        super().__init__()
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        layers: list[nn.Module] = []
        for f in factors:
            layers += [*conv_relu(channels, channels * f * f, 3, groups), nn.PixelShuffle(f)]
        branch = nn.Module()
        branch.body = nn.Sequential(*layers)
        self.add_module(f"up{scale}", branch)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"up{self.scale}").body(x)


@register("carn")
class CARN(Cascade):
    branch_prefix = "upsample.up"  # a multi-scale weight file fills `upsample.up{scale}` (models/weights.py)

    def __init__(self, scale: int, mobile: bool = False, channels: int = 64) -> None:
        if scale not in SCALES:
            raise ValueError(f"carn has upsamplers for x2, x3 and x4, not x{scale}")
        groups = 4 if mobile else 1
        super().__init__(channels, [Block(channels, groups) for _ in range(3)])
        self.scale = scale
        self.sub_mean, self.add_mean = MeanShift(-1), MeanShift(1)
        self.entry = nn.Conv2d(3, channels, 3, padding=1)
        self.upsample = Upsampler(channels, scale, groups)
        self.exit = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return self.add_mean(self.exit(self.upsample(self.cascade(self.entry(self.sub_mean(lr))))))
