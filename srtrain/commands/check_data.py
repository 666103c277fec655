"""`srtrain check-data SOURCE`: the scan training runs before it starts, on its own, as a table: how many images,
in which modes (converted to 8-bit RGB by `srtrain.data.images.to_8bit`), and every unusable one with the reason."""

from __future__ import annotations

import argparse
from collections import Counter

from rich.console import Console
from rich.table import Table

from srtrain.commands.common import error, parse
from srtrain.config import DataConfig
from srtrain.data import DataError, load_images
from srtrain.models import SCALES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srtrain check-data", description="Scan a data source as training would.")
    p.add_argument("source", help="HR folder, HR_DIR,LR_DIR pair, .parquet/.arrow, save_to_disk folder or Hub id")
    p.add_argument("--scale", type=int, choices=SCALES, default=4)
    p.add_argument("--patch_size", type=int, default=96, help="HR patch side: smaller images are unusable")
    p.add_argument("--split", default="train")
    p.add_argument("--hr_column", default="hr")
    p.add_argument("--lr_column", default="lr")
    return p


def main(argv: list[str]) -> int:
    """Exit 0 when every image is usable, 1 when some are not (listed), 2 when the source cannot be opened."""
    args = parse(parser(), argv)
    cfg = DataConfig(train=args.source, train_split=args.split, hr_column=args.hr_column, lr_column=args.lr_column)
    try:
        images = load_images(cfg, "train")
        bad = dict(images.problems(args.scale, args.patch_size, "lower --patch_size or remove it"))
        modes = Counter(images.mode(i) for i in range(len(images)) if i not in bad)
    except DataError as err:
        return error(err)
    console = Console(width=160)
    summary = Table(title=f"srtrain check-data {args.source} (x{args.scale}, patch {args.patch_size})")
    for column in ("images", "usable", "bad", "modes of the usable (all become 8-bit RGB)"):
        summary.add_column(column, justify="left" if column.startswith("modes") else "right")
    shown = ", ".join(f"{mode} {n}" for mode, n in sorted(modes.items()))
    summary.add_row(str(len(images)), str(len(images) - len(bad)), str(len(bad)), shown)
    console.print(summary)
    if bad:
        listing = Table(title="unusable images")
        listing.add_column("#", justify="right")
        listing.add_column("problem")
        for i, message in sorted(bad.items()):
            listing.add_row(str(i), message)
        console.print(listing)
    return 1 if bad else 0
