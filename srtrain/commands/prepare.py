"""`srtrain prepare SOURCE OUT`: cut HR images into memory-mapped Arrow tiles (srtrain.data.prepare) under a
progress bar, then print what was written and verified."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from srtrain.commands.common import error, parse
from srtrain.data import DataError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="srtrain prepare",
        description="Cut HR images into decoded uint8 tiles in sharded, memory-mapped Arrow files (docs/data.md). "
        "Rerun the same command to resume an interrupted run or to verify a finished one.",
    )
    p.add_argument("source", help="any data source: image folder, .parquet/.arrow, save_to_disk folder, Hub id")
    p.add_argument("out", type=Path, help="new or empty output folder (or one this command started)")
    p.add_argument("--tile", type=int, default=480, help="HR tile side in pixels")
    p.add_argument("--stride", type=int, default=240, help="pixels between tile origins")
    p.add_argument("--scales", default="", help="comma list of scales to store MATLAB-exact LR tiles for, e.g. 2,3,4")
    p.add_argument("--num_proc", type=int, default=1, help="processes writing shards")
    p.add_argument("--split", default="train", help="split of a Hub id or dataset dict")
    p.add_argument("--hr_column", default="hr")
    p.add_argument("--push_to_hub", metavar="REPO_ID", help="then upload it as a Hub dataset (needs a Hub token)")
    return p


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from srtrain.data.prepare import prepare
    from srtrain.data.prepared import load_prepared

    try:
        scales = tuple(int(s) for s in args.scales.split(",") if s.strip())
        with Progress(
            TextColumn(f"preparing {args.out}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        ) as bar:
            task = bar.add_task("images", total=None)
            manifest = prepare(
                args.source,
                args.out,
                args.tile,
                args.stride,
                scales,
                args.num_proc,
                args.split,
                args.hr_column,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
        if args.push_to_hub:
            load_prepared(args.out).push_to_hub(args.push_to_hub)
    except (DataError, ValueError) as err:
        return error(err)
    shards = manifest["shards"].values()
    Console().print(
        f"[bold]{args.out}[/]: {sum(e['tiles'] for e in shards):,} tiles from {sum(e['images'] for e in shards)} "
        f"images in {len(shards)} shards, counts and SHA-256 checksums verified"
        + (f"; pushed to the Hub as {args.push_to_hub}" if args.push_to_hub else "")
    )
    return 0
