"""`srtrain upscale`: super-resolve image files with a trained or published model, tile by tile.

Inference goes through evaluation's `super_resolve`, so an upscaled file is exactly what `srtrain eval` scores
(tiling included: with an overlap at least the model's receptive radius, tiles equal whole-image inference; the
x8 self-ensemble too).
Each output keeps its input's mode and format: RGB through the model, gray through the model as its luma,
alpha by MATLAB bicubic. Outputs are planned before any compute, so an existing file stops the run up front.
"""

from __future__ import annotations

import functools
import glob
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from srtrain.data.sources import IMAGE_SUFFIXES
from srtrain.degradation import imresize
from srtrain.evaluation import super_resolve
from srtrain.files import write_atomically
from srtrain.metrics import quantize
from srtrain.precision import autocast

SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
MODES = {"RGB": "RGB", "RGBA": "RGBA", "L": "L", "LA": "LA", "P": "RGB", "1": "L", "CMYK": "RGB"}  # input -> output


class UpscaleError(ValueError):
    """The inputs or outputs of an upscale run are wrong as a whole (nothing was computed)."""


@dataclass
class Job:
    source: Path
    target: Path


def find_inputs(specs: Iterable[str]) -> list[Path]:
    """Image files named by `specs`: files, folders (searched recursively) and glob patterns, in order, once each."""
    found: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise UpscaleError(f"the pattern '{spec}' matches no file")
            found += matches
        else:
            raise UpscaleError(f"input '{spec}' is neither a file, a folder nor a glob pattern that matches files")
    return list(dict.fromkeys(found))


def plan(inputs: list[Path], out_dir: Path, force: bool) -> list[Job]:
    """One output per input, under `out_dir` with the input's file name; refuses name clashes and, without
    `force`, files that already exist (a user's files are never overwritten unasked)."""
    if not inputs:
        raise UpscaleError("no input images: pass files, folders or glob patterns")
    if out_dir.exists() and not out_dir.is_dir():
        raise UpscaleError(f"-o {out_dir} is a file; -o names the folder the upscaled files go to")
    jobs = [Job(p, out_dir / p.name) for p in inputs]
    if any(j.target.resolve() == j.source.resolve() for j in jobs):
        raise UpscaleError(f"-o {out_dir} holds the inputs themselves; choose another output folder")
    by_target: dict[Path, Path] = {}
    for job in jobs:
        if job.target in by_target:
            raise UpscaleError(
                f"'{job.source}' and '{by_target[job.target]}' would both be written to '{job.target}'; "
                "upscale them into different output folders"
            )
        by_target[job.target] = job.source
    existing = [str(j.target) for j in jobs if j.target.exists()]
    if existing and not force:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        raise UpscaleError(f"{shown} already exist(s); pass --force to overwrite or choose another -o folder")
    return jobs


def _to_tensor(pixels: np.ndarray, device: torch.device) -> torch.Tensor:
    """HxW or HxWxC uint8 pixels as a (1, C, H, W) float tensor in [0, 1]."""
    t = torch.from_numpy(np.array(pixels)).to(device)  # a writable copy
    return (t[..., None] if t.dim() == 2 else t).permute(2, 0, 1)[None].float() / 255


def upscale_image(
    model: nn.Module,
    image: PIL.Image.Image,
    scale: int,
    tile: int,
    overlap: int,
    device: torch.device,
    precision: str = "no",
    ensemble: bool = False,
) -> PIL.Image.Image:
    """The SR image in the input's mode: colour (or gray) through the model (or its x8 self-ensemble), alpha by
    bicubic."""
    mode = "RGBA" if image.mode == "P" and "transparency" in image.info else MODES.get(image.mode)
    if mode is None:
        raise UpscaleError(f"image mode {image.mode} is not supported ({', '.join(MODES)} are)")
    pixels = np.asarray(image.convert(mode))
    color, alpha = (pixels[..., :-1], pixels[..., -1]) if mode in ("RGBA", "LA") else (pixels, None)
    with torch.no_grad(), autocast(precision, device):
        sr = super_resolve(model, _to_tensor(color, device), scale, tile, overlap, ensemble)
    channels = [quantize(sr)[0]]
    if alpha is not None:
        channels.append(quantize(imresize(_to_tensor(alpha, device), scale))[0])
    out = torch.cat(channels).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return PIL.Image.fromarray(out.squeeze(-1) if out.shape[-1] == 1 else out, mode)


def run(
    model: nn.Module,
    jobs: list[Job],
    scale: int,
    tile: int,
    overlap: int,
    device: torch.device,
    precision: str = "no",
    ensemble: bool = False,
) -> list[tuple[Path, str]]:
    """Upscale every job with a progress bar; a file that fails is reported and skipped. Returns the failures."""
    failures: list[tuple[Path, str]] = []
    model.to(device).eval()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("upscaling", total=len(jobs))
        for job in jobs:
            progress.update(task, description=f"x{scale} {job.source.name}")
            try:
                with PIL.Image.open(job.source) as image:
                    image.load()
                    fmt = image.format
                    sr = upscale_image(model, image, scale, tile, overlap, device, precision, ensemble)
                job.target.parent.mkdir(parents=True, exist_ok=True)
                write_atomically(job.target, functools.partial(sr.save, format=fmt, **SAVE_OPTIONS.get(fmt, {})))
            except (OSError, PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, UpscaleError) as err:
                failures.append((job.source, str(err)))
                progress.console.print(f"[red]skipped[/] {job.source}: {err}", highlight=False)
            progress.advance(task)
    return failures
