"""Validation: per-image SR metrics computed on each process's share, gathered without duplicates.

Training validation and `srtrain eval` share this code path, so a figure logged during training is
the figure the evaluation command reports for the same weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from srtrain.metrics import psnr_rgb, psnr_y, ssim_y

PER_IMAGE_KEYS = ("index", "loss", "psnr_y", "ssim_y", "psnr_rgb")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    accelerator: Accelerator,
    scale: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Per-image metrics over the whole (sharded) loader, gathered on every process in image order.

    The model runs under the accelerator's autocast; its output is scored in float32 after
    rounding to uint8, as the SR literature scores saved images.
    """
    model.eval()
    rows = []
    for batch in loader:
        lr, hr = batch["lr"], batch["hr"]
        sr = model(lr).float()
        per_image = torch.stack(
            [
                batch["index"].to(torch.float64),
                torch.stack([loss_fn(s[None], h[None]) for s, h in zip(sr, hr, strict=True)]).double(),
                psnr_y(sr, hr, shave=scale),
                ssim_y(sr, hr, shave=scale),
                psnr_rgb(sr, hr),
            ],
            dim=1,
        )
        rows.append(accelerator.gather_for_metrics(per_image))
    table = torch.cat(rows).cpu()
    table = table[table[:, 0].argsort()]
    out = dict(zip(PER_IMAGE_KEYS, table.unbind(1), strict=True))
    out["index"] = out["index"].long()
    return out
