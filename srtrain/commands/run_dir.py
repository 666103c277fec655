"""`srtrain run-dir slurm`: the run directory srtrain names a SLURM job's run (srtrain.rundir.NAMES), printed for
batch scripts, so that a requeued job trains on in the directory it started."""

from __future__ import annotations

import argparse
import os

from srtrain.commands.common import error, parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="srtrain run-dir", description="Print the run directory of this batch job.")
    p.add_argument("scheme", choices=("slurm",), help="slurm: runs/<job name>-<job id> of the SLURM job it runs in")
    return p


def main(argv: list[str]) -> int:
    parse(parser(), argv)
    from srtrain.rundir import run_dir_name

    missing = [name for name in ("SLURM_JOB_NAME", "SLURM_JOB_ID") if not os.environ.get(name)]
    if missing:
        return error(f"{' and '.join(missing)} not set: `srtrain run-dir slurm` runs inside a SLURM job (sbatch)")
    print(run_dir_name("slurm", job_name=os.environ["SLURM_JOB_NAME"], job_id=os.environ["SLURM_JOB_ID"]))
    return 0
