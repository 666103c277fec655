"""`srtrain report RUN_DIR... -o DIR`: a leaderboard, curves and crop comparisons of finished runs in one Markdown
file (srtrain.report), and the leaderboard as a W&B Table when the runs ran online."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from srtrain.commands.common import error, file_in_the_way, parse
from srtrain.config import ConfigError
from srtrain.data import DataError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srtrain report", description="Compare runs: report.md plus the PNGs it links.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories (output_dir of training)")
    p.add_argument("-o", "--output", type=Path, required=True, help="folder for report.md and images/")
    p.add_argument("--images", type=int, default=2, help="validation images in the crop comparison")
    p.add_argument("--force", action="store_true", help="overwrite a report written before")
    p.add_argument(
        "--wandb_project",
        help="also log the leaderboard as a W&B Table here (default: the runs' project when they ran online)",
    )
    return p


def main(argv: list[str]) -> int:
    args = parse(parser(), argv)
    from srtrain.report import ReportError, build_report, log_leaderboard, online_project, read_run

    try:
        if blocker := file_in_the_way(args.output):
            raise ConfigError(f"-o {args.output}: {blocker} is a file, not a folder; choose another -o")
        runs = [read_run(path) for path in args.runs]
        report = build_report(runs, args.output, args.images, args.force)
    except (ReportError, DataError, ValueError, ConfigError) as err:
        return error(err)
    Console().print(f"report: {report}")
    project = args.wandb_project or online_project(runs)
    if not project:
        return 0
    try:
        run_id = log_leaderboard(runs, project)
    except Exception as err:  # W&B unreachable or refusing: the report on disk is complete all the same
        return error(
            f"the leaderboard was not logged to W&B project {project} ({err}); the report is complete. Rerun with "
            "--force when W&B is reachable, or with WANDB_MODE=offline to keep the table in a local W&B run",
            1,
        )
    Console().print(f"leaderboard logged to W&B project {project}, run {run_id}")
    return 0
