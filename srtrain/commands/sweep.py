"""`srtrain sweep FILE`: a W&B grid without a W&B server (srtrain.sweep): listed, checked, run point by point
here, or submitted as a SLURM array."""

from __future__ import annotations

import argparse
from pathlib import Path

from srtrain.commands.common import error, parse
from srtrain.config import ConfigError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srtrain sweep", description="Run the points of a W&B grid sweep YAML.")
    p.add_argument("file", type=Path, help="a sweep YAML, e.g. sweeps/grid.yaml")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--list", action="store_true", help="print every point with its index, in W&B's grid order")
    what.add_argument("--dry_run", action="store_true", help="resolve every point's config and build its model")
    what.add_argument("--run", type=int, metavar="I", help="train point I here, into runs/<sweep>/<I>")
    what.add_argument("--args", type=int, metavar="I", help="print point I's srtrain/main.py arguments, one a line")
    what.add_argument("--slurm", action="store_true", help="submit slurm/grid_array.sbatch as an array over all points")
    p.add_argument("--sbatch", default="", metavar="OPTIONS", help="extra sbatch options with --slurm, e.g. '-p gpu'")
    return p


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from srtrain import sweep

    try:
        spec = sweep.load_sweep(args.file)
        name = sweep.sweep_name(args.file, spec)
        points = sweep.grid_points(spec)
        index = args.run if args.run is not None else args.args
        if index is not None and not 0 <= index < len(points):
            raise ConfigError(
                f"{args.file} has {len(points)} points, 0 to {len(points) - 1}; there is no point {index}"
            )
        if args.list:
            for i, point in enumerate(points):
                print(i, " ".join(f"{k}={v}" for k, v in point.items()))
        elif args.dry_run:
            for i, point in enumerate(points):
                sweep.check_point(sweep.point_args(name, i, point))
            print(f"{args.file}: {len(points)} points, every config valid and every model builds")
        elif args.args is not None:
            print("\n".join(sweep.point_args(name, index, points[index])))
        elif args.run is not None:
            return sweep.run_point(sweep.point_args(name, index, points[index]))
        else:
            return sweep.submit_array(args.file, len(points), args.sbatch)
    except ConfigError as err:
        return error(err)
    return 0
