"""`srtrain eval`: score trained models or published weights as the SR literature does (srtrain.evaluation),
one table per run and, with --json, every figure per image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from srtrain.commands.common import ENSEMBLE_HELP, add_model_arguments, error, file_in_the_way, load_model, parse
from srtrain.config import ConfigError, DataConfig
from srtrain.data import DataError
from srtrain.files import write_text_atomically
from srtrain.models import SCALES
from srtrain.precision import PRECISIONS


def parser() -> argparse.ArgumentParser:
    from srtrain.evaluation import SCORES

    p = argparse.ArgumentParser(
        prog="srtrain eval",
        description="Score SR models with MATLAB bicubic LR, Y-channel PSNR/SSIM and border shave.",
    )
    add_model_arguments(p)
    p.add_argument(
        "--data",
        action="append",
        required=True,
        help="HR image folder (LR made by MATLAB bicubic), HR_DIR,LR_DIR folder pair, .parquet/.arrow, "
        "save_to_disk folder or Hub id; repeat for several sets",
    )
    p.add_argument("--scale", type=int, choices=SCALES, help="upscale factor (default: the checkpoint's)")
    p.add_argument("--json", type=Path, help="write the results, per image too, to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite the --json file if it exists")
    p.add_argument("--gray", choices=("replicate", "direct"), default="replicate", help="how gray images are scored")
    p.add_argument("--metrics", default="psnr_y,ssim_y,psnr_rgb", help=f"comma list of {', '.join(SCORES)}")
    p.add_argument("--tile", type=int, default=0, help="LR tile size for tiled inference (0 = whole image)")
    p.add_argument("--tile_overlap", type=int, default=16, help="LR pixels of context around each tile")
    p.add_argument("--ensemble", action="store_true", help=ENSEMBLE_HELP)
    p.add_argument("--split", default="validation", help="split of a Hub id or dataset dict")
    p.add_argument("--hr_column", default="hr")
    p.add_argument("--lr_column", default="lr")
    p.add_argument("--mixed_precision", choices=PRECISIONS, default="no", help="autocast for the model's forward")
    return p


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from srtrain.evaluation import SCORES, evaluate_source
    from srtrain.launch import make_accelerator
    from srtrain.precision import autocast, checked_precision

    scores = [s.strip() for s in args.metrics.split(",") if s.strip()]
    try:
        unknown = [s for s in scores if s not in SCORES]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; choose from {', '.join(SCORES)}")
        checked_precision(args.mixed_precision)
        if args.json and args.json.exists() and not args.force:
            raise ConfigError(f"{args.json} already exists; pass --force to overwrite it or choose another --json")
        if args.json and (blocker := file_in_the_way(args.json.parent)):
            raise ConfigError(f"--json {args.json}: {blocker} is a file, not a folder; choose another --json")
        model, scale = load_model(args)
        accelerator = make_accelerator(args.mixed_precision)
        # The device only, not `prepare_model`, whose check for distributed tensors imports
        # torch.distributed.tensor (about 1 s of every eval's start-up).
        model = model.to(accelerator.device)
        results = []
        for source in args.data:
            data = DataConfig(
                val=source, val_split=args.split, hr_column=args.hr_column, lr_column=args.lr_column, gray=args.gray
            )
            with autocast(args.mixed_precision, accelerator.device):
                results.append(
                    evaluate_source(
                        model, data, scale, accelerator, scores, args.tile, args.tile_overlap, args.ensemble
                    )
                )
    except (ConfigError, DataError, ValueError) as err:
        return error(err)
    if not accelerator.is_main_process:
        return 0
    ensemble = ", x8 self-ensemble" if args.ensemble else ""
    table = Table(
        title=f"srtrain eval: {args.checkpoint or args.model}{ensemble}, {accelerator.num_processes} process(es)"
    )
    for column in ("set", "scale", *scores, "images", "seconds"):
        table.add_column(column, justify="left" if column == "set" else "right")
    for r in results:
        figures = [f"{r[s]:.2f}" if s.startswith("psnr") else f"{r[s]:.4f}" for s in scores]
        table.add_row(r["dataset"], f"x{r['scale']}", *figures, str(r["n_images"]), f"{r['seconds']:.1f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # logs keep every column readable
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(args.json, json.dumps({"results": results}, indent=2))
        except OSError as err:
            return error(f"could not write {args.json} ({err.strerror}); the table above has the results", 1)
    return 0
