"""`srtrain models`: the zoo with parameters, multiply-adds and latency measured on this machine
(srtrain.models.profile)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from srtrain.commands.common import parse
from srtrain.models import SCALES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srtrain models", description="List the registered SR models.")
    p.add_argument("--scale", type=int, choices=SCALES, default=4)
    p.add_argument("--latency_size", type=int, default=128, help="LR side of the latency input")
    p.add_argument("--no_latency", action="store_true", help="skip the (slow for big models) latency runs")
    return p


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    import torch

    from srtrain.models.profile import model_rows

    rows = model_rows(args.scale, not args.no_latency, args.latency_size)
    table = Table(
        title=f"srtrain models, x{args.scale}: multiply-adds for a 1280x720 output, latency for a "
        f"{args.latency_size}x{args.latency_size} LR input ({torch.get_num_threads()} CPU threads)"
    )
    for column in ("model", "scales", "parameters", "GMACs (720p)", "latency ms", "description"):
        table.add_column(column, justify="left" if column in ("model", "description") else "right")
    for r in rows:
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}"
        table.add_row(
            r["name"],
            ",".join(map(str, r["scales"])),
            f"{r['parameters']:,}",
            f"{r['gmacs_720p']:.1f}",
            latency,
            r["description"],
        )
    Console().print(table)
    return 0
