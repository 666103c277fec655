"""Comparison pictures a person can read: labelled panels side by side and a zoomed crop row.

Training's sample grids (`sample_grid`, written by the tracker) and the report's crop comparisons
(`crop_comparison`) are made here, from the same pieces: a detailed crop chosen from the HR image, each method's
PSNR-Y on the whole image or on the crop, labels drawn above each panel.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
import torch
import torch.nn.functional as F
from torch import Tensor

from srtrain.evaluation import super_resolve
from srtrain.metrics import psnr_y, quantize, rgb_to_y
from srtrain.models.bicubic import Bicubic

LABEL_HEIGHT = 22
GAP = 4
MARK = (255, 40, 40)  # the crop's frame on the whole images


def to_uint8(image: Tensor) -> np.ndarray:
    """A (1, C, H, W) or (C, H, W) image in [0, 1] (or uint8) as HxWx3 uint8 (gray replicated)."""
    image = image[0] if image.dim() == 4 else image
    return quantize(image).expand(3, -1, -1).permute(1, 2, 0).to(torch.uint8).cpu().numpy()


def detailed_crop(hr: Tensor, size: int) -> tuple[int, int, int]:
    """(top, left, side) of the `size`-pixel square of the HR image with the most luma variance: where SR methods
    differ (edges, texture), not a flat sky. Deterministic, so every run of a report shows the same crop."""
    y = rgb_to_y(quantize(hr[None] if hr.dim() == 3 else hr))
    side = min(size, *y.shape[-2:])
    stride = max(side // 4, 1)
    mean = F.avg_pool2d(y, side, stride)
    var = F.avg_pool2d(y * y, side, stride) - mean * mean
    row, col = divmod(int(var.flatten().argmax()), var.shape[-1])
    return row * stride, col * stride, side


def crop_psnr(sr: Tensor, hr: Tensor, box: tuple[int, int, int]) -> float:
    """PSNR-Y (no shave: the crop is inside the image) of one crop of two (1, C, H, W) images."""
    top, left, side = box
    window = (..., slice(top, top + side), slice(left, left + side))
    return psnr_y(sr[window], hr[window], shave=0).item()


def zoom(image: np.ndarray, box: tuple[int, int, int], width: int) -> np.ndarray:
    """The crop enlarged (nearest neighbour, pixels stay visible) to `width` pixels square."""
    top, left, side = box
    crop = PIL.Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize((width, width), PIL.Image.Resampling.NEAREST))


def frame(image: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """The image with a red square around the crop."""
    top, left, side = box
    out = PIL.Image.fromarray(image)
    PIL.ImageDraw.Draw(out).rectangle((left, top, left + side - 1, top + side - 1), outline=MARK, width=2)
    return np.asarray(out)


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    """The image under a white strip carrying `text`."""
    canvas = PIL.Image.new("RGB", (image.shape[1], image.shape[0] + LABEL_HEIGHT), "white")
    canvas.paste(PIL.Image.fromarray(image), (0, LABEL_HEIGHT))
    PIL.ImageDraw.Draw(canvas).text((3, 3), text, fill="black", font=PIL.ImageFont.load_default(size=14))
    return np.asarray(canvas)


def row(panels: list[np.ndarray]) -> np.ndarray:
    """Panels left to right, top-aligned on white, `GAP` pixels apart."""
    height = max(p.shape[0] for p in panels)
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, GAP), (0, 0)), constant_values=255) for p in panels]
    return np.concatenate(padded, axis=1)[:, :-GAP]


def stack(rows: list[np.ndarray]) -> np.ndarray:
    """Rows top to bottom, left-aligned on white, `GAP` pixels apart."""
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)[:-GAP]


def crop_size(hr: Tensor) -> int:
    """A crop an eighth of the shorter HR side, at least 24 pixels: small enough that zooming shows pixels."""
    return max(24, min(hr.shape[-2:]) // 8)


@torch.no_grad()
def sample_grid(model: torch.nn.Module, sample: dict[str, Tensor], scale: int, ensemble: bool = False) -> np.ndarray:
    """LR (nearest) | bicubic | SR | HR, each labelled (with its PSNR-Y against HR), above the same detailed crop
    of each, zoomed to the panel width, so the difference between bicubic and SR is visible at a glance. With
    `ensemble` the SR panel is the x8 self-ensemble's, labelled SR+ as the SR tables do, as validation scores it."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    lr, hr = sample["lr"][None].to(device), sample["hr"][None].to(device)
    sr = super_resolve(model, lr, scale, ensemble=ensemble)
    bicubic = Bicubic(scale)(lr).float()
    nearest = F.interpolate(lr, scale_factor=scale, mode="nearest")
    box = detailed_crop(hr[0], crop_size(hr))
    sr_name = "SR+" if ensemble else "SR"
    images = [("LR (nearest)", nearest), ("bicubic", bicubic), (sr_name, sr), ("HR", hr)]
    pixels = [to_uint8(image) for _, image in images]
    width = pixels[0].shape[1]
    top, bottom = [], []
    for (name, image), p in zip(images, pixels, strict=True):
        scored = name in ("bicubic", sr_name)
        top.append(labelled(frame(p, box), f"{name} {psnr_y(image, hr, scale).item():.2f} dB" if scored else name))
        bottom.append(labelled(zoom(p, box, width), f"crop {crop_psnr(image, hr, box):.2f} dB" if scored else "crop"))
    return stack([row(top), row(bottom)])


def crop_comparison(
    hr: Tensor, methods: list[tuple[str, Tensor]], box: tuple[int, int, int], width: int = 192
) -> np.ndarray:
    """One row: the HR crop, then each method's same crop, zoomed, labelled with the method and its crop PSNR-Y.
    `hr` and every method's output are (1, C, H, W) in [0, 1] (or uint8) of one size."""
    panels = [labelled(zoom(to_uint8(hr), box, width), "HR")]
    for name, sr in methods:
        panels.append(labelled(zoom(to_uint8(sr), box, width), f"{name} {crop_psnr(sr, hr, box):.2f} dB"))
    return row(panels)
