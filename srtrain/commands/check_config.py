"""`srtrain check-config [--config FILE] [--key=value ...]`: validate a job as training does, without training.

`accelerate launch` turns every error of its workers into its own status 1 and a traceback, so batch scripts run
this first and stop with 2 and one line."""

from __future__ import annotations

from rich.console import Console

from srtrain.commands.common import error, wants_help
from srtrain.config import ConfigError, load_config, parse_overrides
from srtrain.data import missing_source

HELP = """usage: srtrain check-config [--config jobs/NAME.yaml] [--key=value | --section.key=value ...]

Validate a job's configuration as training would, without loading data or training: status 0 and
one line when it is valid, status 2 and one line naming the problem when not (`srtrain --help` lists
the keys)."""


def main(argv: list[str]) -> int:
    if wants_help(argv):
        print(HELP)
        return 0
    try:
        config_file, overrides = parse_overrides(argv)
        cfg = load_config(config_file, overrides)
        for key, spec in (("data.train", cfg.data.train), ("data.val", cfg.data.val)):
            if problem := missing_source(spec):
                raise ConfigError(f"{key}: {problem}")
        from srtrain.train import checked_model

        checked_model(cfg)  # every option the model cannot use, as training would find it
    except ConfigError as err:
        return error(err)
    Console().print(f"configuration valid: {cfg.model.name} x{cfg.scale}, {cfg.epochs} epochs", highlight=False)
    return 0
