"""The SR literature's scores: PSNR and SSIM on MATLAB's Y channel after shaving, and PSNR on RGB.

Scores are only comparable with published tables if computed the same way, so every function scores
what the protocol scores: the output clamped to [0, 1] and rounded to uint8 levels. Inputs are batched
(N, C, H, W) float images in [0, 1] (C = 3 RGB or C = 1 gray); outputs are float64 (N,) per-image
values on the input's device.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

GrayMode = Literal["direct", "replicate"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)  # MATLAB rgb2ycbcr, for RGB in [0, 1]
_SSIM_SIZE = 11
_SSIM_SIGMA = 1.5
_SSIM_C1 = (0.01 * 255) ** 2
_SSIM_C2 = (0.03 * 255) ** 2


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 256 uint8 levels, as float64 in 0..255.

    Rounding is half away from zero, like MATLAB's ``im2uint8``, because the protocol scores the saved
    8-bit image, not the raw network output.
    """
    return torch.floor(x.double().clamp(0, 1) * 255 + 0.5)


def rgb_to_y(x255: Tensor, gray: GrayMode = "replicate") -> Tensor:
    """MATLAB ``rgb2ycbcr`` luma (16..235, not rounded) of (N, C, H, W) images in 0..255, as (N, 1, H, W).

    For gray images (C = 1), ``"replicate"`` copies the channel to RGB first, as papers scoring their own
    models do; ``"direct"`` uses the gray levels as Y, as the code behind the published bicubic tables did.
    """
    x255 = x255.double()
    channels = x255.shape[1]
    if channels == 1:
        if gray == "direct":
            return x255
        if gray != "replicate":
            raise ValueError(f"gray must be 'direct' or 'replicate', got {gray!r}")
        x255 = x255.expand(-1, 3, -1, -1)
    elif channels != 3:
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    weights = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=x255.device).view(1, 3, 1, 1)
    return 16 + (x255 * weights).sum(dim=1, keepdim=True) / 255


def shave(x: Tensor, border: int) -> Tensor:
    """Drop ``border`` pixels on every side of H and W, where resizing is least reliable."""
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border}")
    h, w = x.shape[-2:]
    return x[..., border : h - border, border : w - border]


def _check_pair(sr: Tensor, hr: Tensor) -> None:
    """Fail loudly on mismatched shapes rather than let broadcasting score the wrong pixels."""
    if sr.shape != hr.shape or sr.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {sr.shape} and {hr.shape}")


def _scored_y(sr: Tensor, hr: Tensor, border: int, gray: GrayMode) -> tuple[Tensor, Tensor]:
    """The quantized, shaved Y channels of both images: what PSNR-Y and SSIM-Y compare."""
    _check_pair(sr, hr)
    return shave(rgb_to_y(quantize(sr), gray), border), shave(rgb_to_y(quantize(hr), gray), border)


def _psnr(a: Tensor, b: Tensor, peak: float) -> Tensor:
    """Per-image PSNR; identical images give MSE 0 and so +inf."""
    mse = (a - b).square().flatten(1).mean(dim=1)
    return 10 * torch.log10(peak**2 / mse)


def psnr_y(sr: Tensor, hr: Tensor, shave: int, gray: GrayMode = "replicate") -> Tensor:
    """PSNR in dB on the quantized Y channel after shaving ``shave`` pixels; +inf for identical images."""
    y_sr, y_hr = _scored_y(sr, hr, shave, gray)
    return _psnr(y_sr, y_hr, 255.0)


def _gaussian_1d(device: torch.device) -> Tensor:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', 11, 1.5)`` (the 2-D window is its outer product)."""
    x = torch.arange(_SSIM_SIZE, dtype=torch.float64, device=device) - (_SSIM_SIZE - 1) / 2
    g = torch.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _ssim(x: Tensor, y: Tensor) -> Tensor:
    """Mean SSIM map of (N, 1, H, W) images in 0..255, Gaussian window, 'valid' filtering."""
    if min(x.shape[-2:]) < _SSIM_SIZE:
        size = tuple(x.shape[-2:])
        raise ValueError(f"SSIM needs images of at least {_SSIM_SIZE}x{_SSIM_SIZE} after shaving, got {size}")
    g = _gaussian_1d(x.device)
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    n = moments.shape[1]
    moments = F.conv2d(moments, g.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    moments = F.conv2d(moments, g.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    mu_x, mu_y, xx, yy, xy = moments.unbind(dim=1)
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)) / (
        (mu_x**2 + mu_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    )
    return ssim_map.flatten(1).mean(dim=1)


def ssim_y(sr: Tensor, hr: Tensor, shave: int, gray: GrayMode = "replicate") -> Tensor:
    """SSIM on the quantized Y channel after shaving ``shave`` pixels, as Wang et al.'s ``ssim_index.m``."""
    y_sr, y_hr = _scored_y(sr, hr, shave, gray)
    return _ssim(y_sr, y_hr)


def psnr_rgb(sr: Tensor, hr: Tensor) -> Tensor:
    """PSNR in dB over all channels of the quantized images in [0, 1], no shave; +inf for identical images."""
    _check_pair(sr, hr)
    return _psnr(quantize(sr) / 255, quantize(hr) / 255, 1.0)
