"""Evaluation: per-image SR scores computed on each process's share, gathered without duplicates.

Training validation and `srtrain eval` share `evaluate`, so a figure logged during training is the
figure the evaluation command reports for the same weights and images.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor
from torch.utils.data import DataLoader

from srtrain.config import DataConfig
from srtrain.data import ValImages, load_images
from srtrain.ensemble import ensemble_forward
from srtrain.metrics import GrayMode, Scored, rgb_to_y

SCORES: dict[str, Callable[[Scored], Tensor]] = {
    "psnr_y": Scored.psnr_y,
    "ssim_y": Scored.ssim_y,
    "psnr_rgb": Scored.psnr_rgb,
    "ssim_rgb": Scored.ssim_rgb,
    "mse": Scored.mse,
    "nrmse": Scored.nrmse,
    "fsim": Scored.fsim,
}
DEFAULT_SCORES = ("psnr_y", "ssim_y", "psnr_rgb")


def _tiled(model: Callable[[Tensor], Tensor], lr: Tensor, scale: int, tile: int, overlap: int) -> Tensor:
    """Run the model tile by tile (each with `overlap` LR pixels of context) and stitch the centres.

    Memory is bounded by one tile plus the output. With an overlap at least the model's receptive
    radius (in LR pixels), a convolutional model's output equals whole-image inference (its self-ensemble's too:
    the ensemble of a convolutional model is one with the same radius).
    """
    h, w = lr.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        return model(lr)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            sr = model(lr[..., py0 : min(y1 + overlap, h), px0 : min(x1 + overlap, w)])
            if out is None:
                out = sr.new_empty(*sr.shape[:2], h * scale, w * scale)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[..., y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
                ..., oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    return out


def super_resolve(
    model: torch.nn.Module, lr: Tensor, scale: int, tile: int = 0, overlap: int = 16, ensemble: bool = False
) -> Tensor:
    """SR output in float32. A gray (1-channel) image goes through the RGB model replicated and comes
    back as its luma (the rgb2ycbcr weights), so that it can be scored as gray. With `ensemble`, each tile is the
    x8 self-ensemble's (srtrain.ensemble), averaged before the caller quantizes.

    The model is fed channels_last (NHWC) input: on CPU the zoo's CNNs run 10-45 % faster (SwinIR and SRCNN
    the same; docs/performance.md), and its output comes back channels_last (`quantize` makes the scored copy
    contiguous). Every consumer of SR output comes through here, so validation, `srtrain eval`, `upscale` and
    `report` compute the same pixels."""
    rgb = (lr.expand(-1, 3, -1, -1) if lr.shape[1] == 1 else lr).contiguous(memory_format=torch.channels_last)
    forward = functools.partial(ensemble_forward, model) if ensemble else model
    sr = _tiled(forward, rgb, scale, tile, overlap).float()
    if lr.shape[1] == 1:
        sr = ((rgb_to_y(sr * 255) - 16) / 219).float()
    return sr


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    accelerator: Accelerator,
    scale: int,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    scores: Sequence[str] = DEFAULT_SCORES,
    gray: GrayMode = "replicate",
    tile: int = 0,
    overlap: int = 16,
    ensemble: bool = False,
) -> dict[str, Tensor]:
    """Per-image `index`, `loss` (with a loss function) and scores over the whole sharded loader,
    gathered on every process in image order; with `ensemble`, of the x8 self-ensemble's output.

    The model runs in the caller's precision (training validates in float32; `srtrain eval --mixed_precision`
    runs this under autocast); its float32 output is scored in float64 after rounding to uint8, as the SR
    literature scores saved images.
    """
    model.eval()
    keys = ["index", *(["loss"] if loss_fn else []), *scores]
    rows = []
    for batch in loader:
        lr, hr = batch["lr"], batch["hr"]
        sr = super_resolve(model, lr, scale, tile, overlap, ensemble)
        columns = [batch["index"].to(torch.float64)]
        if loss_fn:
            target = hr.float().div_(255)
            columns.append(torch.stack([loss_fn(s[None], h[None]) for s, h in zip(sr, target, strict=True)]).double())
        pair = Scored(sr, hr, scale, gray)  # quantized and converted to Y once for every score
        columns += [SCORES[name](pair) for name in scores]
        rows.append(accelerator.gather_for_metrics(torch.stack(columns, dim=1)))
    table = torch.cat(rows).cpu()
    table = table[table[:, 0].argsort()]
    out = dict(zip(keys, table.unbind(1), strict=True))
    out["index"] = out["index"].long()
    return out


def evaluate_source(
    model: torch.nn.Module,
    data: DataConfig,
    scale: int,
    accelerator: Accelerator,
    scores: Sequence[str] = DEFAULT_SCORES,
    tile: int = 0,
    overlap: int = 16,
    ensemble: bool = False,
) -> dict[str, Any]:
    """Score one validation source (`data.val`): the means and the per-image figures, JSON-ready. `seconds` covers
    loading, the model and scoring, so that a user sees what `ensemble` costs (its model share is 8 times longer)."""
    start = time.perf_counter()
    images = load_images(data, "val")
    images.check(scale, 8 * scale, "remove it from the evaluation set")
    loader = accelerator.prepare_data_loader(DataLoader(ValImages(images, scale), batch_size=1))
    per_image = evaluate(model, loader, accelerator, scale, None, scores, data.gray, tile, overlap, ensemble)
    rows = [
        {"name": images.name(i), **{k: per_image[k][n].item() for k in scores}}
        for n, i in enumerate(per_image["index"].tolist())
    ]
    return {
        "dataset": Path(data.val.split(",")[0]).name or data.val,
        "source": data.val,
        "scale": scale,
        "ensemble": ensemble,
        **{k: per_image[k].mean().item() for k in scores},
        "n_images": len(rows),
        "seconds": time.perf_counter() - start,
        "per_image": rows,
    }
