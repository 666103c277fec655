"""`srtrain upscale IN... -o OUT`: super-resolve image files (srtrain.upscale). Exit 0 when every file was
upscaled, 1 when some were skipped, 2 on a usage error."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from srtrain.commands.common import ENSEMBLE_HELP, add_model_arguments, error, load_model, parse
from srtrain.config import ConfigError
from srtrain.models import SCALES
from srtrain.precision import PRECISIONS


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srtrain upscale",
        description="Super-resolve image files (any size, tile by tile) with a trained run or a published model.",
    )
    p.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders (recursive) or glob patterns")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (files keep their names)")
    add_model_arguments(p)
    p.add_argument("--scale", type=int, choices=SCALES, help="upscale factor (default: the checkpoint's)")
    p.add_argument("--tile", type=int, default=256, help="LR tile size bounding memory (0 = whole image)")
    p.add_argument("--tile_overlap", type=int, default=32, help="LR pixels of context around each tile")
    p.add_argument("--ensemble", action="store_true", help=ENSEMBLE_HELP)
    p.add_argument(
        "--mixed_precision", choices=PRECISIONS, default="no", help="autocast (GPU: faster, slightly different output)"
    )
    p.add_argument("--bf16", dest="mixed_precision", action="store_const", const="bf16", help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="overwrite output files that already exist")
    return p


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    import torch

    from srtrain.precision import checked_precision
    from srtrain.upscale import UpscaleError, find_inputs, plan, run

    try:
        checked_precision(args.mixed_precision)
        jobs = plan(find_inputs(args.inputs), args.output, args.force)
        model, scale = load_model(args)
    except (ConfigError, UpscaleError, ValueError) as err:
        return error(err)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    failures = run(model, jobs, scale, args.tile, args.tile_overlap, device, args.mixed_precision, args.ensemble)
    done, ensemble = len(jobs) - len(failures), " with the x8 self-ensemble" if args.ensemble else ""
    Console().print(
        f"{done} of {len(jobs)} image(s) upscaled x{scale}{ensemble} into {args.output} on {device} "
        f"in {time.perf_counter() - start:.1f} s",
        soft_wrap=True,
    )
    if failures:
        Console(stderr=True).print(
            f"[bold red]{len(failures)} failed:[/] " + "; ".join(f"{path} ({why})" for path, why in failures),
            highlight=False,
            soft_wrap=True,
        )
    return 1 if failures else 0
