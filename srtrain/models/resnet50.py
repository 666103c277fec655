"""U-Net-like SR on a torchvision ResNet-50 encoder (ImageNet weights, conv1 to layer3).

The encoder gives features at strides 2, 4, 8 and 16 of the ImageNet-normalised LR image; the decoder climbs
back to LR resolution one x2 step at a time (conv + pixel shuffle, concatenate the skip of that stride, conv-ReLU),
then pixel-shuffles to HR and convolves to RGB. That output is added to the bicubic upscale and its last conv starts
at zero, so the untrained model is exactly bicubic.

Weights are never downloaded: they come from `--model.weights=PATH` or from a file already in the torch hub
cache; anything else raises `PretrainedWeightsError`, which says how to provide them.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from srtrain.degradation import imresize
from srtrain.models.edsr import upsampler
from srtrain.models.registry import register
from srtrain.models.weights import WeightsError, load_state, load_weights

if TYPE_CHECKING:
    from torchvision.models import ResNet50_Weights

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
UNUSED_PREFIXES = ("fc.", "layer4.")  # parts of torchvision's resnet50 this encoder leaves out
STRIDE = 16  # of the deepest feature (layer3)
MIN_SIZE = 32  # padded LR size at least this, so layer3 (stride 16) is 2x2: batch norm needs >1 value per channel


class PretrainedWeightsError(WeightsError):
    """The encoder weights asked for are missing or do not fit torchvision's resnet50."""


def imagenet_weights() -> tuple[ResNet50_Weights, ...]:
    """torchvision's ImageNet weights, preferred first (either file in the hub cache is used). torchvision is
    imported here, not with the module: its import costs seconds that every `srtrain` command would pay."""
    from torchvision.models import ResNet50_Weights

    return ResNet50_Weights.IMAGENET1K_V2, ResNet50_Weights.IMAGENET1K_V1


def cached_weights_path(weights: ResNet50_Weights) -> Path:
    """Where torch.hub keeps these weights: <torch.hub.get_dir()>/checkpoints/<file name of the weights' URL>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urllib.parse.urlparse(weights.url).path).name


def missing_weights_message() -> str:
    weights, *rest = imagenet_weights()
    path = cached_weights_path(weights)
    others = ", ".join(cached_weights_path(w).name for w in rest)
    return (
        f"model 'resnet50' wants ImageNet weights (--model.pretrained=true), but they are not in the torch hub cache "
        f"and srtrain never downloads them. Either:\n"
        f"  - put them in the cache (on a machine with network): curl -L --create-dirs -o {path} {weights.url}\n"
        f"    ({others} in the same folder works too);\n"
        f"  - or pass a local copy: --model.weights=PATH (a safetensors file or weights-only torch state dict of "
        f"torchvision's resnet50);\n"
        f"  - or train from random initialisation: --model.pretrained=false"
    )


def cached_imagenet_state() -> tuple[dict[str, Tensor], Path]:
    """The ImageNet state dict from the hub cache, without the network; PretrainedWeightsError if it is not there."""
    for weights in imagenet_weights():
        path = cached_weights_path(weights)
        if path.is_file():
            return load_weights(path), path
    raise PretrainedWeightsError(missing_weights_message())


class ResNetEncoder(nn.Module):
    """ResNet-50 from conv1 to layer3, under torchvision's attribute names so its state dicts load unchanged."""

    def __init__(self) -> None:
        super().__init__()
        import torchvision  # see imagenet_weights

        net = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at strides 2, 4, 8, 16 (64, 256, 512, 1024 channels)."""
        s2 = self.relu(self.bn1(self.conv1(x)))
        s4 = self.layer1(self.maxpool(s2))
        s8 = self.layer2(s4)
        return [s2, s4, s8, self.layer3(s8)]


class UpStep(nn.Module):
    """Up x2 (conv + pixel shuffle), concatenate the skip feature of the new stride, fuse with conv-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.Conv2d(in_channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2))
        self.fuse = nn.Sequential(nn.Conv2d(channels + skip_channels, channels, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


def pad_input(x: Tensor) -> Tensor:
    """Pad bottom/right to a multiple of the encoder stride (and MIN_SIZE): reflect, replicate if too small."""
    h, w = x.shape[-2:]
    pad_h = max(-(-h // STRIDE) * STRIDE, MIN_SIZE) - h
    pad_w = max(-(-w // STRIDE) * STRIDE, MIN_SIZE) - w
    if pad_h == 0 and pad_w == 0:
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


@register("resnet50")
class ResNet50SR(nn.Module):
    def __init__(
        self,
        scale: int,
        pretrained: bool = True,
        weights: str = "",
        decoder_channels: int = 64,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.freeze_encoder = freeze_encoder
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.encoder = ResNetEncoder()
        if weights:
            load_state(self.encoder, load_weights(Path(weights)), Path(weights), ignore=UNUSED_PREFIXES)
        elif pretrained:
            state, source = cached_imagenet_state()
            load_state(self.encoder, state, source, ignore=UNUSED_PREFIXES)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

        c = decoder_channels
        self.input_skip = nn.Conv2d(3, c, 3, padding=1)
        # From stride 16 to 1; skips at strides 8, 4, 2 (layer2, layer1, conv1) and 1 (input_skip).
        self.steps = nn.ModuleList([UpStep(1024, 512, c), UpStep(c, 256, c), UpStep(c, 64, c), UpStep(c, c, c)])
        self.upsample = upsampler(c, scale)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)

    def train(self, mode: bool = True) -> ResNet50SR:
        """A frozen encoder also keeps its batch-norm statistics: it stays in eval mode."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, lr: Tensor) -> Tensor:
        h, w = lr.shape[-2:]
        x = (pad_input(lr) - self.mean) / self.std
        s2, s4, s8, y = self.encoder(x)
        for step, skip in zip(self.steps, (s8, s4, s2, self.input_skip(x)), strict=True):
            y = step(y, skip)
        residual = self.to_rgb(self.upsample(y))[..., : h * self.scale, : w * self.scale]
        return imresize(lr, self.scale) + residual
