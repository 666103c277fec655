"""Command line: `srtrain [train] [--config FILE] [--key=value ...]`."""

from __future__ import annotations

import sys

from rich.console import Console

from srtrain.config import ConfigError, load_config, parse_overrides
from srtrain.data import DataError

USAGE = """usage: srtrain [train] [--config jobs/NAME.yaml] [--key=value | --section.key=value ...]

  train   train a model (the default command); e.g. srtrain --model=espcn --lr=0.001 --scale=4
          runs under `accelerate launch srtrain/main.py ...` for several processes or GPUs
"""


def train_main(argv: list[str]) -> int:
    """Parse, validate, train; configuration and data errors end with one clear line, not a traceback."""
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    from srtrain.train import NonFiniteLossError, train

    try:
        config_file, overrides = parse_overrides(argv)
        train(load_config(config_file, overrides))
    except (ConfigError, DataError, NonFiniteLossError) as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "train":
        argv = argv[1:]
    return train_main(argv)
