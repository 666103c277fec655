"""Command line: `srtrain [COMMAND] ...` dispatches to the command's module in srtrain/commands/; without a
command it trains. Each command is imported only when asked for."""

from __future__ import annotations

import difflib
import importlib
import sys

from srtrain.commands.common import error, wants_help
from srtrain.launch import close_process_group, end_process

USAGE = """usage: srtrain [train] [--config jobs/NAME.yaml] [--key=value | --section.key=value ...]
       srtrain prepare SOURCE OUT [--tile 480 --stride 240 --scales 2,3,4 --num_proc N]
       srtrain eval (--checkpoint RUN_DIR_OR_FOLDER | --model NAME) --data SOURCE [--data ...] --scale N
       srtrain upscale IN... -o OUT (--checkpoint RUN | --model NAME [--weights FILE]) [--scale N]
       srtrain report RUN_DIR... -o DIR

  train   train a model (the default command); e.g. srtrain --model=espcn --lr=0.001 --scale=4
          runs under `accelerate launch srtrain/main.py ...` for several processes or GPUs
  eval    score a trained model or the bicubic baseline as the SR literature does (srtrain eval -h)
  prepare cut HR images into memory-mapped Arrow tiles for fast training (srtrain prepare -h)
  upscale super-resolve image files: srtrain upscale IN... -o OUT (--checkpoint RUN | --model NAME --weights F)
  report  compare runs: srtrain report RUN_DIR... -o DIR writes report.md with curves and crop comparisons
  models  list the model zoo: parameters, multiply-adds, latency on this machine (srtrain models -h)
  check-config  validate a job's configuration without training (what slurm/ scripts run first)
  check-data  scan a data source as training does, listing unusable images (srtrain check-data -h)
  sweep   list, check, run or submit (SLURM array) the points of a W&B grid sweep YAML (srtrain sweep -h)
  run-dir print the run directory srtrain names a SLURM job's run (what slurm/*.sbatch train into)

Flags are spelled with underscores (--tile_overlap, as the configuration keys); the hyphenated spelling
(--tile-overlap) is accepted too.
"""

COMMANDS = {  # command -> its module in srtrain/commands/
    "train": "train",
    "eval": "eval",
    "prepare": "prepare",
    "upscale": "upscale",
    "report": "report",
    "models": "models",
    "check-config": "check_config",
    "check-data": "check_data",
    "sweep": "sweep",
    "run-dir": "run_dir",
}


def run_command(argv: list[str]) -> int:
    """Dispatch on the first argument; without a command (only --key=value overrides, or nothing) it is training."""
    command, args = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("train", argv)
    if command not in COMMANDS:
        guess = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        return error(f"unknown command '{command}': {hint}commands: {', '.join(COMMANDS)} (srtrain -h)")
    if command == "train" and wants_help(args):
        from srtrain.config_doc import key_table

        print(USAGE + "\nconfiguration keys (--key=value; docs/configuration.md):\n\n" + key_table())
        return 0
    return importlib.import_module(f"srtrain.commands.{COMMANDS[command]}").main(args)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its status. A process that held a process group (a worker of a multi-process launch)
    does not return: it ends here with the status (`end_process`)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        status = run_command(argv)
    finally:
        distributed = close_process_group()
    if distributed:
        end_process(status)
    return status
